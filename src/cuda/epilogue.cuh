// The end of a work item, shared by the portable and Hopper kernels: each warp normalises and
// stores its 16 rows of O and their log-sum-exp; pivot heads then write their row of the exact
// block attention A (DESIGN.md 2F): zeros, then the per-block log-masses in scratch reduced.
#pragma once

#include <cstdint>

#include "attention_params.h"
#include "block_iter.cuh"
#include "online_softmax.cuh"
#include "ptx_sm80.cuh"

namespace sp::cuda {

// Transposes a 4 x 4 block of words across the 4 lanes of a quad (two butterfly stages): lane
// j's v[i] becomes lane i's v[j].
__device__ __forceinline__ void quad_transpose(uint32_t (&v)[4], int lane) {
#pragma unroll
  for (int bit = 1; bit <= 2; bit <<= 1) {
    const bool upper = (lane & bit) != 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (i & bit) continue;
      const uint32_t sent = upper ? v[i] : v[i + bit];
      const uint32_t got = __shfl_xor_sync(0xffffffffu, sent, bit);
      if (upper)
        v[i] = got;
      else
        v[i + bit] = got;
    }
  }
}

// One warp's rows thread_row and thread_row + 8 (mma accumulator layout; absolute positions
// of the sequence `geo`): O / row sum as T (rows < geo.n; the quad's column pairs are transposed
// so each lane stores 16 contiguous bytes, a quarter of the store instructions of storing the
// pairs) and the natural-log LSE; with keep_lse2 the base-2 LSE also goes to
// s_lse2[local_row0 + ...] (local_row0: the warp's first row within the query block).
// o: [D / 8][4] output accumulators.
template <class T, int D>
__device__ __forceinline__ void store_output_rows(const attention_fwd_params& p, int head,
                                                  const item_geometry& geo, int64_t thread_row,
                                                  int local_row0, int lane,
                                                  const float (&o)[D / 8][4],
                                                  const online_softmax& softmax, bool keep_lse2,
                                                  float* s_lse2) {
  const int64_t n = geo.n;
  const float ln2 = 0.69314718055994531f;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t query = thread_row + 8 * rr;
    const float total = softmax.total(rr);
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    const float lse2 = softmax.lse2(rr, total, p.scale_log2);
    T* g_o = static_cast<T*>(p.out) + (geo.q_row0 + query) * p.out_token_stride +
             static_cast<int64_t>(head) * D;
#pragma unroll
    for (int group = 0; group < D / 32; ++group) {  // 8-column tiles 4 * group ... + 3
      uint32_t v[4];  // v[i]: this lane's column pair of tile 4 * group + i
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int dt = 4 * group + i;
        v[i] = pack2<T>(o[dt][2 * rr] * inv, o[dt][2 * rr + 1] * inv);
      }
      quad_transpose(v, lane);  // v[i]: column pair i of tile 4 * group + lane % 4
      if (query < n)
        *reinterpret_cast<uint4*>(g_o + (4 * group + (lane & 3)) * 8) =
            make_uint4(v[0], v[1], v[2], v[3]);
    }
    if (query < n) {
      if (p.lse != nullptr && (lane & 3) == 0)
        p.lse[static_cast<int64_t>(head) * p.n_q + geo.q_row0 + query] = lse2 * ln2;
    }
    if (keep_lse2 && (lane & 3) == 0) s_lse2[local_row0 + lane / 4 + 8 * rr] = lse2;
  }
}

// Zeros the pivot row A[qblock, 0 .. nb) (thread `thread` of `threads` takes every threads-th
// column), so A needs no clearing before the launch: the plan's pivot count may be known only
// on the device. The caller's barrier before reduce_block_attention orders these stores before
// the visited tiles' values.
__device__ __forceinline__ void clear_block_attention_row(const attention_fwd_params& p,
                                                          int pivot, int qblock, int thread,
                                                          int threads) {
  float* a_row =
      p.block_attention + (static_cast<int64_t>(pivot) * p.n_blocks + qblock) * p.n_blocks;
  for (int c = thread; c < p.n_blocks; c += threads) a_row[c] = 0.0f;
}

// A[qblock, c] for every visited block c of a pivot row: the mean over the block's valid query
// rows of exp2(log-mass - LSE). Warp `warp` of `warps` takes tiles warp, warp + warps, ...;
// the caller has made s_lse2 ([128] base-2 LSE of the rows), the scratch and the row's zeros
// (clear_block_attention_row) visible.
template <int BN>
__device__ __forceinline__ void reduce_block_attention(const attention_fwd_params& p, int head,
                                                       int pivot, int qblock,
                                                       const block_row<BN>& row,
                                                       const float* s_lse2, int warp, int warps,
                                                       int lane) {
  const int64_t q0 = static_cast<int64_t>(qblock) * mask_block;
  const int valid_rows = static_cast<int>(p.n - q0 < mask_block ? p.n - q0 : mask_block);
  float* a_row =
      p.block_attention + (static_cast<int64_t>(pivot) * p.n_blocks + qblock) * p.n_blocks;
  for (int t = warp; t < row.tiles; t += warps) {
    const float* log_mass = p.tile_mass + (p.scratch_offset[head] + row.tile_begin + t) * mask_block;
    float sum = 0.0f;
    for (int i = lane; i < valid_rows; i += 32) sum += exp2_approx(log_mass[i] - s_lse2[i]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) a_row[row.col_idx[row.tile_begin + t]] = sum / static_cast<float>(valid_rows);
  }
}

}  // namespace sp::cuda
