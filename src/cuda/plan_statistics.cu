// Step A of DESIGN.md section 2 on the device: last-block statistics of every query head.
// The last rows = min(128, N) queries of head h are scored against all N keys with tensor-core
// products (wmma 16x16x16, bf16/f16 in, fp32 out, scaled to base 2), 64 keys at a time, the
// next 64 keys loading (cp.async, double buffer) while the current ones are scored; warp w owns
// query rows 16w..16w+15 of the score tile, so the per-row work needs no block barrier. A grid
// of (key range, head) CTAs streams over K twice:
//   pass 1: per lane and row, an online max and sum of exp2 over the lane's columns, combined
//           over the warp at the end -> row_stats;
//   pass 2: the ranges' (max, sum) combined, probabilities recomputed and reduced at once into
//           the vertical profile (per-warp column sums, added in warp order; each key owned by
//           one CTA) and the slash profile (per-warp diagonal strips added in warp order into a
//           sliding window; the < 128 entries that run past the end of a range go to `spill` and
//           are added by the next kernel), so every sum is formed in a fixed order and the
//           result is deterministic.
// The bs x N probabilities never exist: only one 128 x 64 tile per CTA, in shared memory.
// Then block sums (fp64, as the host), the gamma budgets through a CUB sort and prefix sum of
// each profile, and the ranking of the block profiles for the top-k of step D (plan_rank.cu; a
// CUB segmented sort past nb = 4096).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cmath>

#include "cuda_check.h"
#include "plan_common.cuh"
#include "plan_layout.h"
#include "ptx_sm80.cuh"

namespace sp::cuda {
namespace {

constexpr int stats_threads = 256;  // 8 warps, 16 query rows each

struct stats_args {
  qk_views x;
  plan_sizes s;
  float scale_log2;  // log2(e) / sqrt(D): scores enter exp2 in base 2
  float* row_stats;
  float* tok;
  float* spill;
  int32_t* error;
  int32_t layer;
};

constexpr int stats_warps = stats_threads / 32;  // warp w owns query rows 16w .. 16w + 15
constexpr int strip_size = stats_chunk + 16;          // slash entries one warp's rows meet per chunk
constexpr int window_size = stats_chunk + stats_rows;  // slash entries a chunk touches (< 192)

template <class T, int D>
struct stats_smem {
  static constexpr int ldq = D + 8, ldk = D + 8, lds = stats_chunk + 4;
  T q[stats_rows * ldq];
  T k[2][stats_chunk * ldk];  // double buffer: chunk c + 1 loads while chunk c is scored
  float s[stats_rows * lds];
  float m[stats_rows], inv[stats_rows];
  float colpart[stats_warps][stats_chunk];
  float strips[stats_warps][strip_size];
  float window[window_size];
};

template <class T, int D>
__device__ void load_rows(T* dst, int ld, const T* src, int64_t token_stride, int64_t first,
                          int rows, int64_t valid) {
  constexpr int vec = 8;  // 16 bytes
  for (int idx = threadIdx.x; idx < rows * (D / vec); idx += blockDim.x) {
    const int row = idx / (D / vec), col = (idx % (D / vec)) * vec;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row < valid) v = *reinterpret_cast<const uint4*>(src + (first + row) * token_stride + col);
    *reinterpret_cast<uint4*>(dst + row * ld + col) = v;
  }
}

// Starts the copy of keys [j0, j0 + 64) (zeros past N) into a K buffer.
template <class T, int D>
__device__ void load_keys_async(T* dst, const T* k_head, int64_t token_stride, int64_t j0,
                                int64_t n) {
  constexpr int vec = 8, ld = D + 8;
  for (int idx = threadIdx.x; idx < stats_chunk * (D / vec); idx += blockDim.x) {
    const int row = idx / (D / vec), col = (idx % (D / vec)) * vec;
    const bool valid = j0 + row < n;
    cp_async_16(dst + row * ld + col, k_head + (valid ? (j0 + row) * token_stride + col : 0), valid);
  }
  cp_async_commit();
}

// Warp w's 16 query rows against the 64 keys of a K buffer, scaled to base 2, into its rows of
// sm.s (no other warp reads them).
template <class T, int D>
__device__ void score_rows(stats_smem<T, D>& sm, const T* keys, float scale_log2) {
  using namespace nvcuda;
  using S = stats_smem<T, D>;
  const int warp = threadIdx.x / 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[stats_chunk / 16];
  for (auto& a : acc) wmma::fill_fragment(a, 0.0f);
  for (int kk = 0; kk < D; kk += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
    wmma::load_matrix_sync(a, sm.q + warp * 16 * S::ldq + kk, S::ldq);
    for (int c = 0; c < stats_chunk / 16; ++c) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
      wmma::load_matrix_sync(b, keys + c * 16 * S::ldk + kk, S::ldk);
      wmma::mma_sync(acc[c], a, b, acc[c]);
    }
  }
  for (int c = 0; c < stats_chunk / 16; ++c) {
    for (int e = 0; e < acc[c].num_elements; ++e) acc[c].x[e] *= scale_log2;
    wmma::store_matrix_sync(sm.s + warp * 16 * S::lds + c * 16, acc[c], S::lds,
                            wmma::mem_row_major);
  }
  __syncwarp();
}

template <class T, int D, int pass>
__global__ void __launch_bounds__(stats_threads, 2) last_block_stats_kernel(stats_args a) {
  using S = stats_smem<T, D>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  S& sm = *reinterpret_cast<S*>(smem_raw);
  const int split = blockIdx.x, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const plan_sizes& s = a.s;
  const int64_t n = s.n, q0 = n - s.rows;
  const int rows = static_cast<int>(s.rows);
  const int64_t ja = split * s.split_keys, jb = min(n, ja + s.split_keys);
  const int chunks = static_cast<int>((jb - ja + stats_chunk - 1) / stats_chunk);
  const T* q_head = static_cast<const T*>(a.x.q) + h * a.x.q_head_stride;
  const T* k_head = static_cast<const T*>(a.x.k) + (h / s.group) * a.x.k_head_stride;
  load_keys_async<T, D>(sm.k[0], k_head, a.x.k_token_stride, ja, n);
  load_rows<T, D>(sm.q, S::ldq, q_head, a.x.q_token_stride, q0, stats_rows, rows);
  float* my_s = sm.s + warp * 16 * S::lds;
  const int row0 = warp * 16;  // first query row of this warp (absolute q0 + row)

  if (pass == 2) {
    if (threadIdx.x < stats_rows) {
      const int row = threadIdx.x;
      const float* all = a.row_stats + static_cast<int64_t>(h) * s.splits * stats_rows * 2;
      float m = -INFINITY;
      for (int64_t r = 0; r < s.splits; ++r) m = fmaxf(m, all[(r * stats_rows + row) * 2]);
      float l = 0.0f;
      for (int64_t r = 0; r < s.splits; ++r) {
        const float rm = all[(r * stats_rows + row) * 2];
        if (rm != -INFINITY) l += all[(r * stats_rows + row) * 2 + 1] * exp2f(rm - m);
      }
      const bool real = row < rows && l > 0.0f;
      sm.m[row] = real ? m : 0.0f;
      sm.inv[row] = real ? 1.0f / l : 0.0f;
    }
    for (int i = threadIdx.x; i < window_size; i += blockDim.x) sm.window[i] = 0.0f;
  }

  // Pass 1: per lane and row, an online (max, sum) over the lane's columns lane and lane + 32.
  float m[16], l[16];
  for (int r = 0; r < 16; ++r) m[r] = -INFINITY, l[r] = 0.0f;
  bool bad = false;
  const float inv_rows = 1.0f / static_cast<float>(rows);
  float* v_tok = a.tok + static_cast<int64_t>(h) * n;
  float* s_tok = a.tok + (s.heads + h) * n;

  for (int c = 0; c < chunks; ++c) {
    const int64_t j0 = ja + static_cast<int64_t>(c) * stats_chunk;
    cp_async_wait<0>();
    // Chunk c's keys (and, at c = 0, Q and the pass-2 row constants) are visible, and every warp
    // is done with chunk c - 1, whose buffer the next copy reuses.
    __syncthreads();
    if (c + 1 < chunks)
      load_keys_async<T, D>(sm.k[(c + 1) & 1], k_head, a.x.k_token_stride, j0 + stats_chunk, n);
    score_rows<T, D>(sm, sm.k[c & 1], a.scale_log2);
    // Every key of the chunk valid for every row: no masking needed.
    const bool full = j0 + stats_chunk - 1 <= q0 && j0 + stats_chunk <= n;
    if (pass == 1) {
      for (int r = 0; r < 16; ++r) {
        const int row = row0 + r;
        float x0 = my_s[r * S::lds + lane], x1 = my_s[r * S::lds + lane + 32];
        bool valid0 = true, valid1 = true;
        if (!full) {
          const int64_t last = q0 + row;  // last valid key of this row
          valid0 = row < rows && j0 + lane <= last;
          valid1 = row < rows && j0 + lane + 32 <= last;
        }
        bad |= (valid0 && !isfinite(x0)) || (valid1 && !isfinite(x1));
        if (!valid0) x0 = -INFINITY;
        if (!valid1) x1 = -INFINITY;
        const float nm = fmaxf(m[r], fmaxf(x0, x1));
        if (nm == -INFINITY) continue;
        // exp2f(0) is exactly 1: skip it while the max stands (most chunks), same sums.
        float rescale = 1.0f;
        if (nm != m[r]) rescale = exp2f(m[r] - nm);
        l[r] = l[r] * rescale + exp2f(x0 - nm) + exp2f(x1 - nm);
        m[r] = nm;
      }
      continue;
    }

    // Pass 2: probabilities in place, column sums of this warp's rows, slash strip.
    float col0 = 0.0f, col1 = 0.0f;
    for (int r = 0; r < 16; ++r) {
      const int row = row0 + r;
      float* sr = my_s + r * S::lds;
      float p0 = exp2f(sr[lane] - sm.m[row]) * sm.inv[row];
      float p1 = exp2f(sr[lane + 32] - sm.m[row]) * sm.inv[row];
      if (!full) {
        const int64_t last = q0 + row;
        if (row >= rows || j0 + lane > last) p0 = 0.0f;
        if (row >= rows || j0 + lane + 32 > last) p1 = 0.0f;
      }
      sr[lane] = p0;
      sr[lane + 32] = p1;
      col0 += p0;
      col1 += p1;
    }
    sm.colpart[warp][lane] = col0;
    sm.colpart[warp][lane + 32] = col1;
    __syncwarp();
    // Strip entry e of this warp: rows r = 0..15 at column e - 15 + r (distance is constant).
    for (int e = lane; e < strip_size - 1; e += 32) {
      float acc = 0.0f;
      for (int r = 0; r < 16; ++r) {
        const int col = e - 15 + r;
        if (col >= 0 && col < stats_chunk) acc += my_s[r * S::lds + col];
      }
      sm.strips[warp][e] = acc;
    }
    __syncthreads();
    const int t = threadIdx.x;
    if (t < stats_chunk && j0 + t < n) {
      float sum = 0.0f;
      for (int w = 0; w < stats_warps; ++w) sum += sm.colpart[w][t];
      v_tok[j0 + t] = sum * inv_rows;
    }
    // Window entry d = key column + (rows - 1 - query row); warp w's strip entry e has column
    // e - 15 + r at row 16w + r, so d = e - 15 + rows - 1 - 16w.
    float acc = 0.0f;
    if (t < window_size - 1) {
      acc = sm.window[t];
      for (int w = 0; w < stats_warps; ++w) {
        const int e = t + 15 - (rows - 1) + 16 * w;
        if (e >= 0 && e < strip_size - 1) acc += sm.strips[w][e];
      }
    }
    __syncthreads();
    // Entries < 64 are complete; the rest shift down by 64 and the top of the window clears.
    if (t < stats_chunk) {
      if (j0 + t < n) s_tok[j0 + t] = acc * inv_rows;
    } else if (t < window_size - 1) {
      sm.window[t - stats_chunk] = acc;
    }
    if (t >= stats_rows - 1 && t < window_size - 1) sm.window[t] = 0.0f;
  }

  if (pass == 1) {
    float* stats = a.row_stats + (static_cast<int64_t>(h) * s.splits + split) * stats_rows * 2;
    for (int r = 0; r < 16; ++r) {
      float mr = m[r], lr = l[r];
      for (int o = 16; o > 0; o >>= 1) {
        const float om = __shfl_xor_sync(0xffffffffu, mr, o);
        const float ol = __shfl_xor_sync(0xffffffffu, lr, o);
        const float nm = fmaxf(mr, om);
        lr = nm == -INFINITY ? 0.0f
                             : (mr == -INFINITY ? 0.0f : lr * exp2f(mr - nm)) +
                                   (om == -INFINITY ? 0.0f : ol * exp2f(om - nm));
        mr = nm;
      }
      if (lane == 0) {
        stats[(row0 + r) * 2] = mr;
        stats[(row0 + r) * 2 + 1] = lr;
      }
    }
    if (__syncthreads_or(bad) && threadIdx.x == 0)
      record_error(a.error, plan_error_nonfinite_input, a.layer, h);
    return;
  }
  __syncthreads();
  float* spill = a.spill + (static_cast<int64_t>(h) * s.splits + split) * stats_rows;
  if (threadIdx.x < stats_rows)
    spill[threadIdx.x] = threadIdx.x < rows - 1 ? sm.window[threadIdx.x] * inv_rows : 0.0f;
}

// Adds each range's slash spill to the next range's entries. grid (splits - 1, H).
__global__ void add_spill_kernel(plan_sizes s, float* tok, const float* spill) {
  const int split = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
  const int64_t t = (split + 1) * s.split_keys + d;
  if (d < s.rows - 1 && t < s.n)
    tok[(s.heads + h) * s.n + t] += spill[(static_cast<int64_t>(h) * s.splits + split) * stats_rows + d];
}

// Block sums of the 2H profiles (fp64, in token order as the host), the ranking keys (forced
// index at +inf: key block 0 for v, the main diagonal chunk nb-1 for s) and segment offsets.
// One block column per thread: grid (ceil(nb / sums_threads), 2H).
constexpr int sums_threads = 64;
__global__ void block_sums_kernel(plan_pointers p) {
  const plan_sizes& s = p.s;
  const int64_t seg = blockIdx.y, nb = s.nb;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    p.blk_offsets[seg] = static_cast<int32_t>(seg * nb);
    if (seg == 2 * s.heads - 1) p.blk_offsets[seg + 1] = static_cast<int32_t>((seg + 1) * nb);
  }
  if (c >= nb) return;
  const float* x = p.tok + seg * s.n + c * plan_block;
  const int64_t len = min(s.n - c * plan_block, static_cast<int64_t>(plan_block));
  double sum = 0.0;
#pragma unroll 8
  for (int64_t i = 0; i < len; ++i) sum += x[i];
  const float v = static_cast<float>(sum);
  const int64_t forced = seg < s.heads ? 0 : nb - 1;
  p.blk[seg * nb + c] = v;
  p.blk_keys[seg * nb + c] = c == forced ? INFINITY : v;
  p.blk_idx[seg * nb + c] = static_cast<int32_t>(c);
}

// Sort keys of the token profiles: (row << 32) | ~bits(value). Profiles are >= 0, so the bit
// pattern orders like the value and its complement sorts descending.
__global__ void tok_keys_kernel(plan_pointers p) {
  const int64_t items = 2 * p.s.heads * p.s.n;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < items;
       i += stride) {
    const uint32_t bits = __float_as_uint(p.tok[i]);
    p.tok_keys[i] = (static_cast<uint64_t>(i / p.s.n) << 32) | static_cast<uint64_t>(~bits);
  }
}

// nV, nS: 1 + the count of largest entries whose running sum stays <= gamma (the first index
// whose inclusive prefix exceeds gamma), then count // bs + 1 clamped to [minB, maxB]. grid (2H).
__global__ void budgets_kernel(plan_pointers p, plan_rules r) {
  if (threadIdx.x != 0) return;
  const int64_t seg = blockIdx.x, n = p.s.n;
  const double* prefix = p.prefix + seg * n;
  int64_t lo = 0, hi = n;  // first index with prefix > gamma
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (prefix[mid] > r.gamma) hi = mid;
    else lo = mid + 1;
  }
  const int64_t count = lo + 1;
  int64_t blocks = count / plan_block + 1;
  blocks = max(blocks, static_cast<int64_t>(r.min_blocks));
  blocks = min(blocks, static_cast<int64_t>(r.max_blocks));
  const int64_t h = seg % p.s.heads, which = seg / p.s.heads;
  p.budgets[h * 2 + which] = static_cast<int32_t>(blocks);
}

// rank[seg, idx] = position of idx in its profile's descending order. grid (2H).
__global__ void rank_kernel(plan_pointers p) {
  const int64_t seg = blockIdx.x, nb = p.s.nb;
  for (int64_t i = threadIdx.x; i < nb; i += blockDim.x)
    p.rank[seg * nb + p.blk_idx_sorted[seg * nb + i]] = static_cast<int32_t>(i);
}

template <class T, int D>
void launch_passes(const stats_args& a, cudaStream_t stream) {
  const size_t smem = sizeof(stats_smem<T, D>);
  const dim3 grid(static_cast<unsigned>(a.s.splits), static_cast<unsigned>(a.s.heads));
  const char* fn = "device_planner::plan";
  check_cuda(cudaFuncSetAttribute(last_block_stats_kernel<T, D, 1>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             fn, "statistics kernel attribute");
  check_cuda(cudaFuncSetAttribute(last_block_stats_kernel<T, D, 2>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             fn, "statistics kernel attribute");
  last_block_stats_kernel<T, D, 1><<<grid, stats_threads, smem, stream>>>(a);
  last_block_stats_kernel<T, D, 2><<<grid, stats_threads, smem, stream>>>(a);
}

}  // namespace

void launch_statistics(const plan_pointers& p, const state_pointers& st, const qk_views& x,
                       const plan_rules& r, cub_plan& c, cudaStream_t stream) {
  const char* fn = "device_planner::plan";
  stats_args a{x, p.s,
               static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(p.s.dim))),
               p.row_stats, p.tok, p.spill, st.error, r.layer};
  if (p.s.dim == 64) {
    if (x.half) launch_passes<__half, 64>(a, stream);
    else launch_passes<__nv_bfloat16, 64>(a, stream);
  } else {
    if (x.half) launch_passes<__half, 128>(a, stream);
    else launch_passes<__nv_bfloat16, 128>(a, stream);
  }
  check_cuda(cudaGetLastError(), fn, "launching the statistics kernels");
  const int heads = static_cast<int>(p.s.heads);
  if (p.s.splits > 1)
    add_spill_kernel<<<dim3(static_cast<unsigned>(p.s.splits - 1), heads), stats_rows, 0, stream>>>(
        p.s, p.tok, p.spill);
  block_sums_kernel<<<dim3(static_cast<unsigned>((p.s.nb + sums_threads - 1) / sums_threads), 2 * heads),
                      sums_threads, 0, stream>>>(p);
  const int64_t items = 2 * p.s.heads * p.s.n;
  tok_keys_kernel<<<static_cast<unsigned>(std::min<int64_t>((items + 255) / 256, 8192)), 256, 0,
                    stream>>>(p);
  cub_sort_tok(c, p, stream);
  cub_tok_prefix(c, p, stream);
  budgets_kernel<<<2 * heads, 32, 0, stream>>>(p, r);
  if (!launch_rank_rows(p.blk_keys, p.rank, 2 * p.s.heads, p.s.nb, stream)) {
    cub_sort_blk(c, p, stream);
    rank_kernel<<<2 * heads, 256, 0, stream>>>(p);
  }
  check_cuda(cudaGetLastError(), fn, "launching the budget kernels");
}

}  // namespace sp::cuda
