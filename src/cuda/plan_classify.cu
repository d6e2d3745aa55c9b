// Steps B and C of DESIGN.md section 2 on the device (classify): block means of K, the mean of
// the last query rows, the pooled estimate and its JS distance to the vertical block profile
// (the query-aware test), the sharing gates against the per-prompt state, and the per-head
// decisions in ascending head order by one thread (a handful of comparisons per head, on inputs
// all threads first gathered into shared memory), which also update the state exactly as the
// host planner does: first eligible non-query-aware head of a shared cluster without a pivot
// becomes the pivot; a later layer's head shares when the gates pass; dense layers keep their
// pivots and make every other head dense, as do dense heads. With a state carried from an
// earlier chunk (device_planner::begin_chunk) a cluster's pivot is the pivot again at its layer
// and the gates compare profiles of different lengths over their common range, as on the host.
// Means and the estimate are fp64 in the host's order (bitwise equal inputs give equal means);
// the means read their tokens through a shared tile filled by cp.async (one wait for memory per
// block), the estimate's dot products read k_pool 16 bytes at a time.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "cuda_check.h"
#include "plan_common.cuh"
#include "plan_layout.h"
#include "ptx_sm80.cuh"

namespace sp::cuda {
namespace {

constexpr int max_mean_dim = 128;  // head dims of the planner: 64, 128

template <class T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}

// Sum over tokens [ta, tb) (tb - ta <= plan_block) of column d = threadIdx.x < dim of src (row 0
// is token `first`, token rows token_stride apart), added in token order as the host does. The
// tokens' rows first go into a shared tile by cp.async, all at once (16 bytes a copy), so the
// block waits for memory once instead of once per few tokens; blockDim.x == dim.
template <class T>
__device__ double column_sum(T (&tile)[plan_block * max_mean_dim], const T* src,
                             int64_t token_stride, int64_t ta, int64_t tb, int64_t first,
                             int dim) {
  constexpr int vec = 8;  // 16 bytes
  const int rows = static_cast<int>(tb - ta), per_row = dim / vec;
  for (int idx = threadIdx.x; idx < rows * per_row; idx += blockDim.x) {
    const int r = idx / per_row, c = (idx % per_row) * vec;
    cp_async_16(tile + r * dim + c, src + (ta + r - first) * token_stride + c, true);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  double acc = 0.0;
  for (int r = 0; r < rows; ++r) acc += to_float(tile[r * dim + threadIdx.x]);
  return acc;
}

// out[b, x, d] = mean over the real tokens of block b of src[t, x, d]; skips heads whose kind
// is not `only` when kinds is given. src's row 0 is token `first` (a chunk's queries); tokens
// before it count as zeros. grid (nb, X), block D threads.
template <class T>
__global__ void block_mean_kernel(float* out, const T* src, int64_t token_stride,
                                  int64_t head_stride, int64_t n, int64_t x_count, int64_t dim,
                                  const uint8_t* kinds, uint8_t only, int64_t first) {
  const int64_t b = blockIdx.x, x = blockIdx.y, d = threadIdx.x;
  if (kinds != nullptr && kinds[x] != only) return;
  const int64_t t0 = b * plan_block, t1 = min(n, t0 + plan_block);
  __shared__ __align__(16) T tile[plan_block * max_mean_dim];
  // Adding the zeros before `first` would not change the sum.
  const double acc = column_sum(tile, src + x * head_stride, token_stride, max(t0, first), t1,
                                first, static_cast<int>(dim));
  const double inv = 1.0 / static_cast<double>(t1 - t0);
  out[(b * x_count + x) * dim + d] = static_cast<float>(acc * inv);
}

// q_mean[h, d] = mean of the last rows, scaled by 1/sqrt(D); q's row 0 is token `first` (a
// chunk's queries), tokens before it count as zeros. grid (H), block D.
template <class T>
__global__ void last_rows_mean_kernel(float* out, const T* q, int64_t token_stride,
                                      int64_t head_stride, int64_t n, int64_t rows, int64_t dim,
                                      int64_t first) {
  const int64_t h = blockIdx.x, d = threadIdx.x;
  const double scale = 1.0 / (sqrt(static_cast<double>(dim)) * static_cast<double>(rows));
  __shared__ __align__(16) T tile[plan_block * max_mean_dim];
  const double acc = column_sum(tile, q + h * head_stride, token_stride, max(n - rows, first), n,
                                first, static_cast<int>(dim));
  out[h * dim + d] = static_cast<float>(acc * scale);
}

// Section 2B: est = softmax over c of q_mean . k_pool[c] (fp64), JSd(est, v_blk) < tau_qa.
// The logits go through `logits` ([H, nb] fp64). grid (H), 256 threads.
__global__ void query_aware_test_kernel(plan_pointers p, plan_rules r, double* logits) {
  __shared__ double scratch[32];
  const plan_sizes& s = p.s;
  const int64_t h = blockIdx.x, nb = s.nb, dim = s.dim, kvh = h / s.group;
  double* lg = logits + h * nb;
  float* est = p.big_keys + h * nb;  // free until the query-aware tiles
  const float* qm = p.q_mean + h * dim;
  double mx = -HUGE_VAL;
  for (int64_t c = threadIdx.x; c < nb; c += blockDim.x) {
    const float* kc = p.k_pool + (c * s.kv_heads + kvh) * dim;
    double dot = 0.0;  // in d order; 16-byte loads (dim % 4 == 0, rows 16-byte aligned)
    for (int64_t d = 0; d < dim; d += 4) {
      const float4 k4 = *reinterpret_cast<const float4*>(kc + d);
      dot += static_cast<double>(qm[d]) * k4.x;
      dot += static_cast<double>(qm[d + 1]) * k4.y;
      dot += static_cast<double>(qm[d + 2]) * k4.z;
      dot += static_cast<double>(qm[d + 3]) * k4.w;
    }
    lg[c] = dot;
    mx = fmax(mx, dot);
  }
  mx = block_reduce<true>(mx, scratch);
  double sum = 0.0;
  for (int64_t c = threadIdx.x; c < nb; c += blockDim.x) sum += (lg[c] = exp(lg[c] - mx));
  sum = block_reduce<false>(sum, scratch);
  for (int64_t c = threadIdx.x; c < nb; c += blockDim.x) est[c] = static_cast<float>(lg[c] / sum);
  __syncthreads();
  const double js = block_js_distance(est, p.blk + h * nb, nb, scratch);
  if (threadIdx.x == 0) {
    p.qa[h] = js < r.tau_qa ? 1 : 0;
    p.qa_dist[h] = static_cast<float>(js);
  }
}

// JS distances of head h's vertical and slash block profiles to those of its cluster slot's
// pivot: the state's, except for heads after a pivot carried into this layer (begin_chunk),
// which the host gates against the profiles the pivot just took from this chunk (its rows of
// blk). Profiles of another length (carried from an earlier chunk) are compared over their common
// range, renormalised (the host's carried_sharing_gate). All threads of the block call it.
__device__ void gate_distances(const plan_pointers& p, const state_pointers& st,
                               const plan_rules& r, int64_t h, int32_t slot, double* scratch,
                               double& js_v, double& js_s) {
  const int64_t nb = p.s.nb, heads = p.s.heads;
  const float* pivot_v = st.pivot_v_blk + slot * nb;
  const float* pivot_s = st.pivot_s_blk + slot * nb;
  int64_t m = st.profile_blocks[slot];
  if (st.has_pivot[slot] != 0 && st.pivot_layer[slot] == r.layer && st.pivot_head[slot] < h) {
    const int64_t ph = st.pivot_head[slot];
    pivot_v = p.blk + ph * nb;
    pivot_s = p.blk + (heads + ph) * nb;
    m = nb;
  }
  const float* v = p.blk + h * nb;
  const float* s = p.blk + (heads + h) * nb;
  if (m == nb) {
    js_v = block_js_distance(pivot_v, v, nb, scratch, 0.0, 0.0, r.gate_bins);
    js_s = block_js_distance(pivot_s, s, nb, scratch, 0.0, 0.0, r.gate_bins);
  } else {  // key blocks [0, common); slash offsets [0, common): the last `common` chunks
    const int64_t common = min(m, nb);
    const float* pivot_s_end = pivot_s + m - common;
    const float* s_end = s + nb - common;
    js_v = block_js_distance(pivot_v, v, common, scratch, block_sum(pivot_v, common, scratch),
                             block_sum(v, common, scratch), r.gate_bins);
    js_s = block_js_distance(pivot_s_end, s_end, common, scratch,
                             block_sum(pivot_s_end, common, scratch),
                             block_sum(s_end, common, scratch), r.gate_bins);
  }
}

// Section 2C gates for heads whose shared cluster has a published pattern: the distances above,
// the pivot's vs_ratio and, with gate_coverage, the pattern's last row. grid (H), 256.
__global__ void sharing_gates_kernel(plan_pointers p, state_pointers st, plan_rules r) {
  __shared__ double scratch[32];
  const int64_t h = blockIdx.x, nb = p.s.nb, heads = p.s.heads;
  const int32_t slot = r.slot_of[r.layer * heads + h];
  const bool applies = r.mode == mode_shareprefill && slot >= 0 && st.has_pattern[slot] != 0;
  if (!applies) {
    if (threadIdx.x == 0) {
      p.gate_ok[h] = 0;
      p.gate_dist[2 * h] = p.gate_dist[2 * h + 1] = -1.0f;
    }
    return;
  }
  double js_v = 0.0, js_s = 0.0;
  gate_distances(p, st, r, h, slot, scratch, js_v, js_s);
  const float* v = p.blk + h * nb;
  bool covered = true;
  if (r.gate_coverage > 0.0) {  // the pattern's last row against the head's key-block masses
    const uint32_t* last_row = st.pattern_bits + (slot * nb + nb - 1) * p.s.words;
    double sum = 0.0;
    for (int64_t c = threadIdx.x; c < nb; c += blockDim.x)
      if ((last_row[c / 32] >> (c % 32)) & 1u) sum += v[c];
    covered = block_reduce<false>(sum, scratch) >= r.gate_coverage;
  }
  if (threadIdx.x == 0) {
    p.gate_ok[h] = js_v < r.tau_sim && js_s < r.tau_sim && st.vs_ratio[slot] < r.tau_fb && covered;
    p.gate_dist[2 * h] = static_cast<float>(js_v);
    p.gate_dist[2 * h + 1] = static_cast<float>(js_s);
  }
}

// pivot_publishing::deferred: a member (not query-aware) of a cluster whose pivot deferred its A
// marks the pivot needed when its profile distances pass the similarity gate (the gate's other
// tests read the pattern, so they run once it is published). grid (H), 256.
__global__ void needed_pivots_kernel(plan_pointers p, state_pointers st, plan_rules r) {
  __shared__ double scratch[32];
  const int64_t h = blockIdx.x;
  const int32_t slot = r.slot_of[r.layer * p.s.heads + h];
  if (slot < 0 || p.qa[h] != 0 || st.deferred[slot] == 0) return;
  double js_v = 0.0, js_s = 0.0;
  gate_distances(p, st, r, h, slot, scratch, js_v, js_s);
  if (threadIdx.x == 0 && js_v < r.tau_sim && js_s < r.tau_sim) st.needed[slot] = 1;
}

// The per-head decisions, heads ascending: kinds, pivot slots, the state's pivots and the plan's
// walked heads. The inputs of every head are read at once (one thread a head), the decisions are
// taken by one thread in head order from shared memory (a head becomes its cluster's pivot when
// the slot had none before the layer and no earlier head of the layer took it, or when it is the
// slot's pivot carried from an earlier chunk; a pivot r.unpublished marks, and with
// r.defer_pivots every pivot, gets no A slot and is walked, the latter deferred in the state),
// and the results are written by all threads. grid (1), classify_threads, dynamic shared memory
// classify_smem_bytes(H, slots).
constexpr int classify_threads = 256;
struct head_decision {
  int32_t slot;         // shared cluster slot or -1 (shareprefill, not query-aware unless carried)
  int32_t pivot_slot;   // this layer's pivot number or -1
  // carried: the slot's pivot from an earlier chunk (begin_chunk) is this head: the pivot again,
  // query-aware or not, eligible or not (the host's carried_pivot).
  uint8_t qa, eligible, slot_had_pivot, gate_passes, dense, carried, kind;
  // walk_listed: in the layer's static walk list (dense, never a pivot); walked: walked in this
  // plan (listed, or a pivot without A: r.unpublished); deferred: a pivot whose A waits for a
  // member (r.defer_pivots).
  uint8_t walk_listed, walked, deferred;
};
size_t classify_smem_bytes(int64_t heads, int64_t slots) {
  return static_cast<size_t>(heads) * sizeof(head_decision) + static_cast<size_t>(slots);
}

__global__ void classify_kernel(plan_pointers p, state_pointers st, plan_rules r) {
  extern __shared__ head_decision decision[];  // [H], then taken [slots]
  const int64_t heads = p.s.heads;
  uint8_t* taken = reinterpret_cast<uint8_t*>(decision + heads);  // slot's pivot is this layer's
  for (int64_t i = threadIdx.x; i < st.slots; i += blockDim.x) taken[i] = 0;
  for (int64_t h = threadIdx.x; h < heads; h += blockDim.x) {
    head_decision d{};
    d.qa = p.qa[h] != 0;
    d.slot = -1;
    const int64_t at = r.layer * heads + h;
    const int32_t slot = r.mode == mode_shareprefill ? r.slot_of[at] : -1;
    d.carried = slot >= 0 && st.has_pivot[slot] != 0 && st.pivot_layer[slot] == r.layer &&
                st.pivot_head[slot] == h;
    if (slot >= 0 && (!d.qa || d.carried)) {
      d.slot = slot;
      d.slot_had_pivot = st.has_pivot[slot] != 0;
      d.eligible = r.eligible[at] != 0;
      d.gate_passes = st.has_pattern[slot] != 0 && p.gate_ok[h] != 0;
    }
    d.dense = r.dense_layer || r.dense_head[at] != 0;
    for (int32_t i = 0; i < r.walk_head_count; ++i) d.walk_listed |= r.walk_heads[i] == h;
    decision[h] = d;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t count = 0;
    for (int64_t h = 0; h < heads; ++h) {
      head_decision& d = decision[h];
      uint8_t kind = d.qa ? kind_query_aware : kind_vertical_slash;
      d.pivot_slot = -1;
      d.walked = d.walk_listed;
      if (d.slot >= 0) {
        const bool free = !d.slot_had_pivot && !taken[d.slot];
        if (d.carried || (free && d.eligible)) {
          kind = kind_pivot;
          taken[d.slot] = 1;
          const bool unpublished =
              r.unpublished != nullptr && r.unpublished[r.layer * heads + h] != 0;
          if (unpublished || (r.unpublished != nullptr && r.defer_pivots)) {
            d.walked = 1;  // dense without A: nobody could take its pattern, or not yet
            d.deferred = !unpublished;
          } else {
            d.pivot_slot = count;
            p.slot_head[count++] = static_cast<int32_t>(h);
          }
        } else if (!free && d.gate_passes) {
          kind = kind_shared;
        }
      }
      if (d.dense && kind != kind_pivot) kind = kind_dense;
      d.kind = kind;
    }
    *p.pivot_count = count;
    int32_t walked = 0;
    for (int64_t h = 0; h < heads; ++h)
      if (decision[h].walked) p.walk_list[walked++] = static_cast<int32_t>(h);
    *p.walk_count = walked;
  }
  __syncthreads();
  for (int64_t h = threadIdx.x; h < heads; h += blockDim.x) {
    const head_decision& d = decision[h];
    p.kinds[h] = d.kind;
    p.pivot_slot[h] = d.pivot_slot;
    if (d.kind == kind_pivot) {
      st.has_pivot[d.slot] = 1;
      st.pivot_layer[d.slot] = r.layer;
      st.pivot_head[d.slot] = static_cast<int32_t>(h);
      st.deferred[d.slot] = d.deferred;
    }
  }
}

// A new (or carried) pivot's block profiles into its cluster's slot. grid (H), 256.
__global__ void pivot_profiles_kernel(plan_pointers p, state_pointers st, plan_rules r) {
  const int64_t h = blockIdx.x, nb = p.s.nb;
  if (p.kinds[h] != kind_pivot) return;
  const int32_t slot = r.slot_of[r.layer * p.s.heads + h];
  if (threadIdx.x == 0) st.profile_blocks[slot] = static_cast<int32_t>(nb);
  for (int64_t c = threadIdx.x; c < nb; c += blockDim.x) {
    st.pivot_v_blk[slot * nb + c] = p.blk[h * nb + c];
    st.pivot_s_blk[slot * nb + c] = p.blk[(p.s.heads + h) * nb + c];
  }
}

__global__ void all_dense_kernel(plan_pointers p) {
  const int64_t h = threadIdx.x + static_cast<int64_t>(blockIdx.x) * blockDim.x;
  if (h < p.s.heads) {
    p.kinds[h] = kind_dense;
    p.pivot_slot[h] = -1;
  }
  if (h == 0) *p.pivot_count = *p.walk_count = 0;
}

template <class T>
void launch_means(const plan_pointers& p, const qk_views& x, cudaStream_t stream) {
  const plan_sizes& s = p.s;
  const unsigned nb = static_cast<unsigned>(s.nb), dim = static_cast<unsigned>(s.dim);
  block_mean_kernel<T><<<dim3(nb, static_cast<unsigned>(s.kv_heads)), dim, 0, stream>>>(
      p.k_pool, static_cast<const T*>(x.k), x.k_token_stride, x.k_head_stride, s.n, s.kv_heads,
      s.dim, nullptr, 0, 0);
  last_rows_mean_kernel<T><<<static_cast<unsigned>(s.heads), dim, 0, stream>>>(
      p.q_mean, static_cast<const T*>(x.q), x.q_token_stride, x.q_head_stride, s.n, s.rows, s.dim,
      x.q_first);
}

}  // namespace

void launch_query_aware_test(const plan_pointers& p, const qk_views& x, const plan_rules& r,
                             cudaStream_t stream) {
  const char* fn = "device_planner::plan";
  const unsigned heads = static_cast<unsigned>(p.s.heads);
  if (r.mode != mode_flexprefill && r.mode != mode_shareprefill) {
    check_cuda(cudaMemsetAsync(p.qa, 0, p.s.heads, stream), fn, "clearing the query-aware flags");
    check_cuda(cudaMemsetAsync(p.qa_dist, 0xff, 4 * p.s.heads, stream), fn,
               "clearing the query-aware distances");
    return;
  }
  if (x.half) launch_means<__half>(p, x, stream);
  else launch_means<__nv_bfloat16>(p, x, stream);
  query_aware_test_kernel<<<heads, 256, 0, stream>>>(p, r, p.prefix);
  check_cuda(cudaGetLastError(), fn, "launching the query-aware test");
}

void launch_classify(const plan_pointers& p, const state_pointers& st, const plan_rules& r,
                     cudaStream_t stream) {
  const unsigned heads = static_cast<unsigned>(p.s.heads);
  sharing_gates_kernel<<<heads, 256, 0, stream>>>(p, st, r);
  classify_kernel<<<1, classify_threads, classify_smem_bytes(p.s.heads, st.slots), stream>>>(
      p, st, r);
  pivot_profiles_kernel<<<heads, 256, 0, stream>>>(p, st, r);
  check_cuda(cudaGetLastError(), "device_planner::plan", "launching the classification");
}

void launch_needed_pivots(const plan_pointers& p, const state_pointers& st, const plan_rules& r,
                          cudaStream_t stream) {
  needed_pivots_kernel<<<static_cast<unsigned>(p.s.heads), 256, 0, stream>>>(p, st, r);
  check_cuda(cudaGetLastError(), "device_planner::plan", "launching the deferred pivots' gates");
}

void launch_all_dense_kinds(const plan_pointers& p, cudaStream_t stream) {
  all_dense_kernel<<<static_cast<unsigned>((p.s.heads + 255) / 256), 256, 0, stream>>>(p);
  check_cuda(cudaGetLastError(), "device_planner::plan", "launching the dense kinds");
}

// Q block means for the query-aware heads (step E's input), in plan_tiles.cu's order.
template <class T>
void launch_query_pool(const plan_pointers& p, const qk_views& x, cudaStream_t stream) {
  const plan_sizes& s = p.s;
  block_mean_kernel<T><<<dim3(static_cast<unsigned>(s.nb), static_cast<unsigned>(s.heads)),
                         static_cast<unsigned>(s.dim), 0, stream>>>(
      p.q_pool, static_cast<const T*>(x.q), x.q_token_stride, x.q_head_stride, s.n, s.heads,
      s.dim, p.kinds, kind_query_aware, x.q_first);
}

void launch_query_block_means(const plan_pointers& p, const qk_views& x, cudaStream_t stream) {
  if (x.half) launch_query_pool<__half>(p, x, stream);
  else launch_query_pool<__nv_bfloat16>(p, x, stream);
}

}  // namespace sp::cuda
