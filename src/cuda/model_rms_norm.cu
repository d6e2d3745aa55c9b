// RMSNorm of selected rows to bf16: one block per output row sums the squares of its input row
// in fp32 (per-thread partial sums, then warp and block reductions), scales by
// 1 / sqrt(mean + eps) and the weight, as llama_forward's CPU rms_norm does (which sums in fp64:
// the difference is fp32 rounding of a sum of `dim` positive terms, ~1e-7 relative).
#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int norm_threads = 256;

template <class T>
__device__ __forceinline__ float load_value(const T* p, int64_t i) {
  if constexpr (sizeof(T) == 2) {
    return bf16_bits_to_float(p[i]);
  } else {
    return p[i];
  }
}

template <class T>
__global__ void __launch_bounds__(norm_threads)
    rms_norm_kernel(uint16_t* __restrict__ y,        // y: [count, dim] bf16
                    const T* __restrict__ x,         // x: [*, dim] f32 or bf16 bits
                    const float* __restrict__ weight,  // weight: [dim]
                    const int64_t* __restrict__ rows,  // rows: [count] or null
                    int64_t dim, float eps) {
  __shared__ float s_warp[norm_threads / 32];
  __shared__ float s_inv;
  const int64_t out_row = blockIdx.x;
  const int64_t in_row = rows != nullptr ? rows[out_row] : out_row;
  const T* xr = x + in_row * dim;
  float ss = 0.0f;
  for (int64_t e = threadIdx.x; e < dim; e += norm_threads) {
    const float v = load_value(xr, e);
    ss += v * v;
  }
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) s_warp[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float total = threadIdx.x < norm_threads / 32 ? s_warp[threadIdx.x] : 0.0f;
    total = warp_sum(total);
    if (threadIdx.x == 0) s_inv = 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
  }
  __syncthreads();
  const float inv = s_inv;
  uint16_t* yr = y + out_row * dim;
  for (int64_t e = threadIdx.x; e < dim; e += norm_threads)
    yr[e] = float_to_bf16_bits(load_value(xr, e) * inv * weight[e]);
}

}  // namespace
}  // namespace cuda

void cuda_rms_norm(uint16_t* y, const void* x, dtype x_type, const float* weight,
                   const int64_t* rows, int64_t count, int64_t dim, double eps, void* stream) {
  const char* fn = "cuda_rms_norm";
  check(x_type == dtype::f32 || x_type == dtype::bf16, fn, "input dtype ", dtype_name(x_type),
        " (f32 or bf16 expected)");
  check(count >= 0 && dim > 0, fn, "count=", count, " dim=", dim);
  check(eps > 0.0, fn, "eps must be positive, got ", eps);
  if (count == 0) return;
  check(count <= 0x7fffffff, fn, "count=", count, " exceeds the grid limit");
  check(y != nullptr && x != nullptr && weight != nullptr, fn, "null pointer");
  const cudaStream_t s = cuda::as_stream(stream);
  const unsigned blocks = static_cast<unsigned>(count);
  if (x_type == dtype::f32) {
    cuda::rms_norm_kernel<float><<<blocks, cuda::norm_threads, 0, s>>>(
        y, static_cast<const float*>(x), weight, rows, dim, static_cast<float>(eps));
  } else {
    cuda::rms_norm_kernel<uint16_t><<<blocks, cuda::norm_threads, 0, s>>>(
        y, static_cast<const uint16_t*>(x), weight, rows, dim, static_cast<float>(eps));
  }
  cuda::check_launch(fn);
}

void cuda_logits_of_rows(float* logits, uint16_t* normed, const float* x, const int64_t* rows,
                         int64_t count, const float* norm_weight, const uint16_t* output,
                         int64_t vocab, int64_t dim, double eps, cuda_gemm& gemm, void* stream) {
  const char* fn = "cuda_logits_of_rows";
  check(count > 0 && vocab > 0 && dim > 0, fn, "count=", count, " vocab=", vocab, " dim=", dim);
  check(rows != nullptr, fn, "rows must be given (device int64 indices of the selected rows)");
  cuda_rms_norm(normed, x, dtype::f32, norm_weight, rows, count, dim, eps, stream);
  gemm.linear(logits, dtype::f32, normed, output, count, vocab, dim, false, stream);
}

}  // namespace sp
