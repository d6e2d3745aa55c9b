// Private device helpers of the planner kernels: block reductions in fp64, error recording in
// the state, the lower-triangle index, a bitmask word of the causal rule.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "plan_layout.h"

namespace sp::cuda {

// Sum (or max) of one value per thread over a block of blockDim.x threads (a multiple of 32,
// at most 1024); every thread gets the result. scratch: [32] shared doubles.
template <bool is_max>
__device__ __forceinline__ double block_reduce(double v, double* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    const double w = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmax(v, w) : v + w;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : (is_max ? -HUGE_VAL : 0.0);
  for (int o = 16; o > 0; o >>= 1) {
    const double w = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmax(v, w) : v + w;
  }
  return v;
}

// The first error of a prompt keeps its layer and head. error: [4] (flags, layer, head, 0).
__device__ __forceinline__ void record_error(int32_t* error, uint32_t code, int layer, int head) {
  const int32_t old = atomicOr(error, static_cast<int32_t>(code));
  if (old == 0) {
    error[1] = layer;
    error[2] = head;
  }
}

__device__ __forceinline__ int64_t tri_start(int64_t r) { return r * (r + 1) / 2; }

// Row of flat lower-triangle index e (row-major, row r holds columns 0..r).
__device__ __forceinline__ int64_t tri_row(int64_t e) {
  int64_t r = static_cast<int64_t>((sqrt(8.0 * static_cast<double>(e) + 1.0) - 1.0) * 0.5);
  while (tri_start(r + 1) <= e) ++r;
  while (tri_start(r) > e) --r;
  return r;
}

// Bits c of word w (c = 32w + bit) with c <= r.
__device__ __forceinline__ uint32_t causal_word(int64_t w, int64_t r) {
  const int64_t first = 32 * w;
  if (first > r) return 0u;
  if (first + 31 <= r) return 0xffffffffu;
  return (2u << (r - first)) - 1u;
}

// Sum of x[0 .. n) in fp64 by one block; every thread gets the result. scratch: [32] shared
// doubles.
__device__ __forceinline__ double block_sum(const float* x, int64_t n, double* scratch) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  return block_reduce<false>(acc, scratch);
}

// x / sum rounded to float, as the host renormalises a profile (carried_sharing_gate); x as
// given where sum is not positive (an all-zero profile stays zero, and sum 0 means "as given").
__device__ __forceinline__ double renormalised(float x, double sum) {
  return sum > 0.0 ? static_cast<double>(static_cast<float>(static_cast<double>(x) / sum)) : x;
}

// JS distance (natural log, 0 ln 0 = 0) of p and q over n entries, by one block; every thread
// gets the result. With p_sum (q_sum) > 0 the entries of p (q) are renormalised by it first
// (renormalised() above). With 0 < bins < n, p and q are pooled into `bins` contiguous bins
// first, bin b summing entries [b*n/bins, (b+1)*n/bins) in order (the host's pooled_js_distance).
// scratch: [32] shared doubles.
__device__ __forceinline__ double block_js_distance(const float* p, const float* q, int64_t n,
                                                    double* scratch, double p_sum = 0.0,
                                                    double q_sum = 0.0, int64_t bins = 0) {
  const int64_t n_bins = bins > 0 && bins < n ? bins : n;
  double kl_p = 0.0, kl_q = 0.0;
  for (int64_t b = threadIdx.x; b < n_bins; b += blockDim.x) {
    double a = 0.0, c = 0.0;
    for (int64_t i = b * n / n_bins; i < (b + 1) * n / n_bins; ++i) {
      a += renormalised(p[i], p_sum);
      c += renormalised(q[i], q_sum);
    }
    const double m = 0.5 * (a + c);
    if (a > 0.0) kl_p += a * log(a / m);
    if (c > 0.0) kl_q += c * log(c / m);
  }
  kl_p = block_reduce<false>(kl_p, scratch);
  kl_q = block_reduce<false>(kl_q, scratch);
  return sqrt(fmax(0.0, 0.5 * kl_p + 0.5 * kl_q));
}

}  // namespace sp::cuda
