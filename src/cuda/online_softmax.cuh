// Base-2 online softmax over the score fragments of one warp (16 query rows; each thread holds
// rows lane/4 and lane/4 + 8 of the mma accumulator layout, the 4 threads of a quad share a
// row). Scores stay unscaled; scale_log2 = log2(e)/sqrt(D) is folded into one FFMA per score.
// Besides the running max and sum it keeps the mass of the current mask block (relative to the
// running max), from which pivot heads get their exact block attention.
#pragma once

#include <cmath>

#include "ptx_sm80.cuh"

namespace sp::cuda {

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

struct online_softmax {
  float row_max[2] = {-INFINITY, -INFINITY};  // running max of the raw scores
  float row_sum[2] = {0.0f, 0.0f};            // this thread's part of sum exp2(s*scale - max)
  float block_sum[2] = {0.0f, 0.0f};          // same, over the current mask block only
  float alpha[2] = {0.0f, 0.0f};              // output factor of the last scores()

  // s: [NT][4] scores of NT 8-key n-tiles, -inf where masked; overwritten with the
  // probabilities exp2(s*scale - max). The running max and sums move to the new max; the factor
  // the output accumulators need for it is kept in `alpha` for rescale() (update() does both).
  template <int NT>
  __device__ __forceinline__ void scores(float (&s)[NT][4], float scale_log2) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * rr], s[nt][2 * rr + 1]));
      const float new_max = fmaxf(row_max[rr], quad_max(tile_max));
      // Rows with nothing allowed yet keep max = -inf; guard -inf - -inf.
      alpha[rr] =
          row_max[rr] == -INFINITY ? 0.0f : exp2_approx((row_max[rr] - new_max) * scale_log2);
      const float base = new_max == -INFINITY ? 0.0f : new_max * scale_log2;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 2 * rr; e < 2 * rr + 2; ++e) {
          s[nt][e] = exp2_approx(fmaf(s[nt][e], scale_log2, -base));
          sum += s[nt][e];
        }
      }
      row_max[rr] = new_max;
      row_sum[rr] = row_sum[rr] * alpha[rr] + sum;
      block_sum[rr] = block_sum[rr] * alpha[rr] + sum;
    }
  }

  // o: [DT][4] output accumulators, moved to the running max of the last scores().
  template <int DT>
  __device__ __forceinline__ void rescale(float (&o)[DT][4]) const {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        o[dt][2 * rr] *= alpha[rr];
        o[dt][2 * rr + 1] *= alpha[rr];
      }
  }

  template <int NT, int DT>
  __device__ __forceinline__ void update(float (&s)[NT][4], float (&o)[DT][4], float scale_log2) {
    scores(s, scale_log2);
    rescale(o);
  }

  // Base-2 log of the finished mask block's mass for row rr (quad-uniform), then resets it.
  __device__ __forceinline__ float take_block_log2_mass(int rr, float scale_log2) {
    const float sum = quad_sum(block_sum[rr]);
    block_sum[rr] = 0.0f;
    return sum > 0.0f ? row_max[rr] * scale_log2 + __log2f(sum) : -INFINITY;
  }

  // Full row sum (quad-uniform) and the base-2 log-sum-exp (-inf when nothing was allowed).
  __device__ __forceinline__ float total(int rr) const { return quad_sum(row_sum[rr]); }
  __device__ __forceinline__ float lse2(int rr, float total_sum, float scale_log2) const {
    return total_sum > 0.0f ? row_max[rr] * scale_log2 + __log2f(total_sum) : -INFINITY;
  }
};

}  // namespace sp::cuda
