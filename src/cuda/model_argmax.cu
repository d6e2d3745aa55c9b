// cuda_argmax: the index of the largest logit on the device, so a greedy decode downloads one int
// instead of the [vocab] logits. One block of 1024 threads (a vocabulary of ~50K-150K floats is
// read in a few microseconds).
#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {

// Block-wide argmax: each thread scans a strided slice, then warps and blocks reduce (value,
// index) pairs keeping the larger value, the smaller index on ties.
namespace cuda {
namespace {

constexpr int argmax_threads = 1024;

__device__ __forceinline__ void keep_better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

__global__ void __launch_bounds__(argmax_threads)
    argmax_kernel(int32_t* out, const float* __restrict__ x, int n) {  // out: [1]; x: [n]
  __shared__ float s_v[argmax_threads / 32];
  __shared__ int s_i[argmax_threads / 32];
  float best = -INFINITY;
  int at = n;  // n stands for "none yet" (all NaN or -inf)
  for (int j = threadIdx.x; j < n; j += argmax_threads) keep_better(best, at, x[j], j);
  for (int offset = 16; offset > 0; offset >>= 1)
    keep_better(best, at, __shfl_xor_sync(0xffffffffu, best, offset),
                __shfl_xor_sync(0xffffffffu, at, offset));
  if (threadIdx.x % 32 == 0) {
    s_v[threadIdx.x / 32] = best;
    s_i[threadIdx.x / 32] = at;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < argmax_threads / 32; ++w) keep_better(best, at, s_v[w], s_i[w]);
  *out = at < n ? at : 0;
}

}  // namespace
}  // namespace cuda

void cuda_argmax(int32_t* out, const float* x, int64_t n, void* stream) {
  const char* fn = "cuda_argmax";
  check(n > 0 && n <= 0x7fffffff, fn, "n=", n, " (1 .. 2^31 - 1)");
  check(out != nullptr && x != nullptr, fn, "null out or x");
  cuda::argmax_kernel<<<1, cuda::argmax_threads, 0, cuda::as_stream(stream)>>>(out, x, static_cast<int>(n));
  cuda::check_launch(fn);
}

}  // namespace sp
