// Steps D and E of DESIGN.md section 2 and the plan's assembly on the device (materialize):
// every head's tiles as a bitmask (nb x nb bits, row-major, ceil(nb/32) words per row), the
// union of
//   vertical-slash tiles: the top-nV key blocks and top-nS slash chunks by the CUB ranking of
//     the block profiles (forced sink column and main diagonal), budgets minB for query-aware
//     and shared heads, the adaptive nV, nS otherwise;
//   query-aware tiles: block scores of pooled Q and K, softmax per row (fp64), the largest
//     entries of the lower triangle while their running sum stays <= gamma * nb (a radix
//     select, plan_qa_select.cu), gamma the head's own (per-head gammas) or the global one;
//   the cluster's published pattern for shared heads, every causal tile for pivots and dense
//     heads (a pivot's own vertical-slash tiles go to the state, for its vs_ratio at publish);
//   with exact_last_row, the last row's cover of each sparse head's measured v_blk;
// then the CSR (per-row popcount, CUB exclusive scan, ascending fill), the schedule (radix sort
// of the work items by tile count, descending and stable, in one block up to
// schedule_block_max items (plan_schedule.cu), else CUB's device sort; a chunk's rows first), the
// pivots' scratch offsets (a pivot has exactly nb(nb+1)/2 tiles, so slot * that is its scratch
// start).
#include <cmath>

#include "cuda_check.h"
#include "plan_common.cuh"
#include "plan_layout.h"

namespace sp::cuda {
namespace {

// Chosen key blocks and slash chunks of every head as bits. grid (H), 256 threads.
__global__ void selection_kernel(plan_pointers p, plan_rules r) {
  const plan_sizes& s = p.s;
  const int64_t h = blockIdx.x, nb = s.nb, words = s.words;
  const uint8_t kind = p.kinds[h];
  if (kind == kind_dense) return;
  const bool min_budget =
      kind == kind_query_aware || (kind == kind_shared && !r.shared_keeps_budget);
  const int32_t kv = min_budget ? r.min_blocks : p.budgets[2 * h];
  const int32_t ks = min_budget ? r.min_blocks : p.budgets[2 * h + 1];
  const int32_t* rank_v = p.rank + h * nb;
  const int32_t* rank_s = p.rank + (s.heads + h) * nb;
  const int lane = threadIdx.x % 32;
  uint32_t* col = p.sel_col + h * words;
  uint32_t* chunk = p.sel_chunk + h * (2 * words + 2);
  for (int64_t w = threadIdx.x / 32; w < 2 * words + 2; w += blockDim.x / 32) {
    const int64_t i = 32 * w + lane;
    const uint32_t c_bits = __ballot_sync(0xffffffffu, i < nb && rank_v[min(i, nb - 1)] < kv);
    const uint32_t t_bits = __ballot_sync(0xffffffffu, i < nb && rank_s[min(i, nb - 1)] < ks);
    if (lane == 0) {
      if (w < words) col[w] = c_bits;
      chunk[w] = t_bits;
    }
  }
}

// Section 2E scores of one row r of a query-aware head: p = softmax over c <= r of
// q_pool[r] . k_pool[c] / sqrt(D), the dot in fp32 in d order (as the host), the softmax in
// fp64. The row's dots wait in big_keys (a logit is the fp64 product of its fp32 dot and the
// scale, so keeping the dot keeps the logit), then its probabilities replace them: keys [h, tri].
// A thread forms two keys' dots at once (two independent add chains) from 16-byte loads of the
// pooled rows (16-byte aligned: D floats each). grid (nb, H), 128 threads.
constexpr int qa_scores_threads = 128;
template <int D>
__global__ void __launch_bounds__(qa_scores_threads) query_aware_scores_kernel(plan_pointers p) {
  __shared__ double scratch[32];
  __shared__ float4 qr[D / 4];
  const plan_sizes& s = p.s;
  const int64_t row = blockIdx.x, h = blockIdx.y;
  if (p.kinds[h] != kind_query_aware) return;
  const float4* q4 = reinterpret_cast<const float4*>(p.q_pool + (row * s.heads + h) * D);
  for (int d = threadIdx.x; d < D / 4; d += qa_scores_threads) qr[d] = q4[d];
  __syncthreads();
  const double scale = 1.0 / sqrt(static_cast<double>(D));
  const int64_t base = h * s.tri + tri_start(row), kvh = h / s.group;
  float* keys = p.big_keys + base;
  const auto key_row = [&](int64_t c) {
    return reinterpret_cast<const float4*>(p.k_pool + (c * s.kv_heads + kvh) * D);
  };
  const auto add = [](float dot, float q, float k) { return __fadd_rn(dot, __fmul_rn(q, k)); };
  double mx = -HUGE_VAL;
  for (int64_t c0 = threadIdx.x; c0 <= row; c0 += 2 * qa_scores_threads) {
    const int64_t c1 = c0 + qa_scores_threads;
    const bool second = c1 <= row;
    const float4* k0 = key_row(c0);
    const float4* k1 = key_row(second ? c1 : c0);
    float dot0 = 0.0f, dot1 = 0.0f;
#pragma unroll
    for (int d = 0; d < D / 4; ++d) {
      const float4 q = qr[d], a = k0[d], b = k1[d];
      dot0 = add(add(add(add(dot0, q.x, a.x), q.y, a.y), q.z, a.z), q.w, a.w);
      dot1 = add(add(add(add(dot1, q.x, b.x), q.y, b.y), q.z, b.z), q.w, b.w);
    }
    keys[c0] = dot0;
    mx = fmax(mx, static_cast<double>(dot0) * scale);
    if (second) {
      keys[c1] = dot1;
      mx = fmax(mx, static_cast<double>(dot1) * scale);
    }
  }
  mx = block_reduce<true>(mx, scratch);
  double sum = 0.0;
  for (int64_t c = threadIdx.x; c <= row; c += qa_scores_threads)
    sum += exp(static_cast<double>(keys[c]) * scale - mx);
  sum = block_reduce<false>(sum, scratch);
  for (int64_t c = threadIdx.x; c <= row; c += qa_scores_threads)
    keys[c] = static_cast<float>(exp(static_cast<double>(keys[c]) * scale - mx) / sum);
}

// exact_last_row: each sparse head's last row gets the key blocks, in the vertical ranking's
// order (rank: block 0 first, then descending v_blk, ties to the lower block), until their mass
// (fp64, summed in that order by one thread, as the host) reaches last_row_gamma, else the head's
// gamma; rows_kernel merges them. The sum usually stops after a few blocks. grid (H), 256
// threads, nb floats of dynamic shared memory.
__global__ void last_row_cover_kernel(plan_pointers p, plan_rules r) {
  extern __shared__ float by_rank[];
  __shared__ int32_t count;
  const plan_sizes& s = p.s;
  const int64_t h = blockIdx.x, nb = s.nb;
  const uint8_t kind = p.kinds[h];
  if (kind != kind_shared && kind != kind_query_aware && kind != kind_vertical_slash) return;
  const float* v = p.blk + h * nb;
  const int32_t* rank = p.rank + h * nb;
  for (int64_t c = threadIdx.x; c < nb; c += blockDim.x) by_rank[rank[c]] = v[c];
  __syncthreads();
  if (threadIdx.x == 0) {
    const double gamma =
        r.last_row_gamma > 0.0 ? r.last_row_gamma : r.head_gamma ? r.head_gamma[h] : r.gamma;
    double running = 0.0;
    int32_t k = 0;
    while (k < nb && running < gamma) running += static_cast<double>(by_rank[k++]);
    count = k;
  }
  __syncthreads();
  uint32_t* last = p.bitmask + (h * nb + nb - 1) * s.words;
  for (int64_t c = threadIdx.x; c < nb; c += blockDim.x)
    if (rank[c] < count) atomicOr(last + c / 32, 1u << (c % 32));
}

// One warp per row: the head's tiles of row r, its popcount, its schedule key. grid
// (ceil(nb/8), H), 256 threads.
__global__ void rows_kernel(plan_pointers p, state_pointers st, plan_rules r) {
  const plan_sizes& s = p.s;
  const int64_t h = blockIdx.y, nb = s.nb, words = s.words;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= nb) return;
  const uint8_t kind = p.kinds[h];
  const int64_t slot =
      kind == kind_shared || kind == kind_pivot ? r.slot_of[r.layer * s.heads + h] : -1;
  const uint32_t* col = p.sel_col + h * words;
  const uint32_t* chunk = p.sel_chunk + h * (2 * words + 2);
  uint32_t* out = p.bitmask + (h * nb + row) * words;
  int64_t count = 0;
  for (int64_t w = lane; w < words; w += 32) {
    const uint32_t causal = causal_word(w, row);
    uint32_t bits = causal;
    if (kind != kind_dense) {
      const int64_t at = 32 * w + (nb - 1 - row);
      const uint32_t diag = __funnelshift_r(chunk[at / 32], chunk[at / 32 + 1],
                                            static_cast<uint32_t>(at % 32));
      const uint32_t vs = (col[w] | diag) & causal;
      if (kind == kind_pivot) {
        st.vs_bits[(slot * nb + row) * words + w] = vs;
      } else {
        bits = vs | (out[w] & causal);
        if (kind == kind_shared) bits |= st.pattern_bits[(slot * nb + row) * words + w] & causal;
      }
    }
    out[w] = bits;
    count += __popc(bits);
  }
  for (int o = 16; o > 0; o >>= 1) count += __shfl_xor_sync(0xffffffffu, count, o);
  if (lane == 0) {
    p.row_count[h * (nb + 1) + row] = count;
    if (row == nb - 1) p.row_count[h * (nb + 1) + nb] = 0;
    // A chunk's rows only: the rows before it sort last (key 0; every causal row has a tile,
    // its diagonal) and fall outside the chunk's heads * (nb - first_query_block) work items;
    // before them the walked heads' rows (keys 1 .. nb), first everyone else's (nb + 1 on).
    bool walked = false;
    const int32_t walk_count = *p.walk_count;
    for (int32_t i = 0; i < walk_count; ++i) walked |= p.walk_list[i] == h;
    p.sched_keys[h * nb + row] =
        row < r.first_query_block ? 0 : static_cast<int32_t>(count + (walked ? 0 : nb));
    p.sched_vals[h * nb + row] = static_cast<int32_t>(h * nb + row);
  }
}

// One warp per row: the row's columns, ascending, at row_ptr. grid (ceil(nb/8), H), 256. The
// row's words go 32 at a time (a piece); their popcounts' exclusive prefix and the words sit in
// shared memory, and lane l writes the piece's outputs l, l + 32, ... (coalesced stores): the
// word holding output i is the last one whose prefix is <= i (a binary search), the column its
// (i - prefix + 1)-th set bit (__fns).
constexpr int fill_threads = 256;
__global__ void __launch_bounds__(fill_threads) fill_kernel(plan_pointers p) {
  __shared__ uint32_t piece_bits[fill_threads / 32][32];
  __shared__ int32_t piece_start[fill_threads / 32][32];
  const plan_sizes& s = p.s;
  const int64_t h = blockIdx.y, nb = s.nb, words = s.words;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= nb) return;
  const uint32_t* bits = p.bitmask + (h * nb + row) * words;
  uint32_t* bits_sm = piece_bits[warp];
  int32_t* start_sm = piece_start[warp];
  int64_t base = p.row_ptr[h * (nb + 1) + row];
  for (int64_t w0 = 0; w0 < words; w0 += 32) {
    const uint32_t b = w0 + lane < words ? bits[w0 + lane] : 0u;
    const int pc = __popc(b);
    int incl = pc;
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    const int total = __shfl_sync(0xffffffffu, incl, 31);
    bits_sm[lane] = b;
    start_sm[lane] = incl - pc;
    __syncwarp();
    for (int i = lane; i < total; i += 32) {
      int lo = 0, hi = 31;  // the last word j with start_sm[j] <= i (it holds a set bit)
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (start_sm[mid] <= i) lo = mid;
        else hi = mid - 1;
      }
      const int bit = static_cast<int>(__fns(bits_sm[lo], 0, i - start_sm[lo] + 1));
      p.col_idx[base + i] = static_cast<int32_t>(32 * (w0 + lo) + bit);
    }
    __syncwarp();  // the piece's shared words are read before the next piece's go in
    base += total;
  }
}

__global__ void schedule_kernel(plan_pointers p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nb = p.s.nb;
  if (i >= p.s.heads * nb) return;
  const int32_t item = p.sched_vals_sorted[i];
  p.schedule[2 * i] = static_cast<int32_t>(item / nb);
  p.schedule[2 * i + 1] = static_cast<int32_t>(item % nb);
}

__global__ void scratch_offsets_kernel(plan_pointers p) {
  const int64_t h = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (h >= p.s.heads) return;
  const int32_t slot = p.pivot_slot[h];
  p.scratch_offset[h] = slot >= 0 ? slot * p.s.tri - p.row_ptr[h * (p.s.nb + 1)] : 0;
}

}  // namespace

void launch_tiles(const plan_pointers& p, const state_pointers& st, const qk_views& x,
                  const plan_rules& r, bool all_dense, cub_plan& c, cudaStream_t stream) {
  const char* fn = "device_planner::plan";
  const plan_sizes& s = p.s;
  const unsigned heads = static_cast<unsigned>(s.heads), nb = static_cast<unsigned>(s.nb);
  check_cuda(cudaMemsetAsync(p.bitmask, 0, 4 * s.heads * s.nb * s.words, stream), fn,
             "clearing the tile bitmasks");
  if (!all_dense) {
    selection_kernel<<<heads, 256, 0, stream>>>(p, r);
    if (r.mode == mode_flexprefill || r.mode == mode_shareprefill) {
      launch_query_block_means(p, x, stream);
      const dim3 grid(nb, heads);
      if (s.dim == 64)
        query_aware_scores_kernel<64><<<grid, qa_scores_threads, 0, stream>>>(p);
      else
        query_aware_scores_kernel<128><<<grid, qa_scores_threads, 0, stream>>>(p);
      launch_query_aware_select(p, r, c, stream);
    }
    if (r.exact_last_row) {
      const size_t smem = static_cast<size_t>(s.nb) * sizeof(float);
      if (smem > 48 * 1024)  // past 12,288 blocks (1.5M tokens): opt in to more shared memory
        check_cuda(cudaFuncSetAttribute(last_row_cover_kernel,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)),
                   fn, "raising the shared memory of the last-row cover");
      last_row_cover_kernel<<<heads, 256, smem, stream>>>(p, r);
    }
  }
  const dim3 row_grid(static_cast<unsigned>((s.nb + 7) / 8), heads);
  rows_kernel<<<row_grid, 256, 0, stream>>>(p, st, r);
  cub_row_ptr_scan(c, p, stream);
  fill_kernel<<<row_grid, fill_threads, 0, stream>>>(p);
  if (!launch_schedule_sort(p.sched_keys, p.schedule, s.heads, s.nb, stream)) {
    cub_sort_schedule(c, p, stream);
    const int64_t items = s.heads * s.nb;
    schedule_kernel<<<static_cast<unsigned>((items + 255) / 256), 256, 0, stream>>>(p);
  }
  scratch_offsets_kernel<<<static_cast<unsigned>((s.heads + 255) / 256), 256, 0, stream>>>(p);
  check_cuda(cudaGetLastError(), fn, "launching the tile kernels");
}

}  // namespace sp::cuda
