// RMSNorm of selected rows to bf16. Rows of up to 2048 values (vectors aligned): one warp per row
// (rms_norm_warp_kernel). Wider rows: one block per output row sums the squares of its input row
// in fp32 (per-thread partial sums, then warp and block reductions). Both scale by
// 1 / sqrt(mean + eps) and the weight, as llama_forward's CPU rms_norm does (which sums in fp64:
// the difference is fp32 rounding of a sum of `dim` positive terms, ~1e-7 relative). In both a
// thread keeps its values and weights in registers (loaded once; the weights before the row
// index, which they do not depend on), so x is read once; in the block kernel every warp
// finishes the block sum itself, so a row costs one barrier.
#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int rms_warp_threads = 256;  // eight rows per block in rms_norm_warp_kernel

template <class T>
__device__ __forceinline__ float load_value(const T* p, int64_t i) {
  if constexpr (sizeof(T) == 2) {
    return bf16_bits_to_float(p[i]);
  } else {
    return p[i];
  }
}

// Element e = threadIdx.x + i * threads of the row for i < items; dim <= threads * items.
template <class T, int threads, int items>
__global__ void __launch_bounds__(threads)
    rms_norm_kernel(uint16_t* __restrict__ y,        // y: [count, dim] bf16
                    const T* __restrict__ x,         // x: [*, dim] f32 or bf16 bits
                    const float* __restrict__ weight,  // weight: [dim]
                    const int64_t* __restrict__ rows,  // rows: [count] or null
                    int64_t dim, float eps) {
  __shared__ float s_warp[threads / 32];
  float wv[items], xv[items];
#pragma unroll
  for (int i = 0; i < items; ++i) {
    const int64_t e = threadIdx.x + static_cast<int64_t>(i) * threads;
    wv[i] = e < dim ? weight[e] : 0.0f;
  }
  wait_for_predecessor();  // x (and rows) come from the previous kernel
  const int64_t out_row = blockIdx.x;
  const int64_t in_row = rows != nullptr ? rows[out_row] : out_row;
  const T* xr = x + in_row * dim;
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < items; ++i) {
    const int64_t e = threadIdx.x + static_cast<int64_t>(i) * threads;
    xv[i] = e < dim ? load_value(xr, e) : 0.0f;
    ss += xv[i] * xv[i];
  }
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) s_warp[threadIdx.x / 32] = ss;
  __syncthreads();
  const int lane = threadIdx.x % 32;
  float total = 0.0f;
  for (int j = lane; j < threads / 32; j += 32) total += s_warp[j];
  total = warp_sum(total);
  const float inv = 1.0f / sqrtf(total / static_cast<float>(dim) + eps);
  uint16_t* yr = y + out_row * dim;
#pragma unroll
  for (int i = 0; i < items; ++i) {
    const int64_t e = threadIdx.x + static_cast<int64_t>(i) * threads;
    if (e < dim) yr[e] = float_to_bf16_bits(xv[i] * inv * wv[i]);
  }
}

// Four values of a row as fp32: a float4 of f32, or 8 bytes of bf16 bits.
template <class T>
__device__ __forceinline__ float4 load4(const T* row, int64_t vector) {
  if constexpr (sizeof(T) == 2) {
    const uint2 v = reinterpret_cast<const uint2*>(row)[vector];
    return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u),
                       __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xffff0000u));
  } else {
    return reinterpret_cast<const float4*>(row)[vector];
  }
}

// One warp per row (dim a multiple of 4, at most 128 * V): lane j holds the row's 4-value
// vectors j, j + 32, ... (V of them) in registers, sums their squares in the decode GEMV's fused
// norm's order (squares_of) and writes 8-byte vectors.
// No shared memory and no barrier, 16-byte loads: the wide prefill rows run at the bandwidth.
template <class T, int V>
__global__ void __launch_bounds__(rms_warp_threads)
    rms_norm_warp_kernel(uint16_t* __restrict__ y,          // y: [count, dim] bf16
                         const T* __restrict__ x,           // x: [*, dim] f32 or bf16 bits
                         const float* __restrict__ weight,  // weight: [dim]
                         const int64_t* __restrict__ rows,  // rows: [count] or null
                         int64_t count, int64_t dim, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t n4 = dim / 4;
  float4 wv[V], xv[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t j = lane + 32 * i;
    wv[i] = j < n4 ? reinterpret_cast<const float4*>(weight)[j] : make_float4(0, 0, 0, 0);
  }
  wait_for_predecessor();  // x (and rows) come from the previous kernel
  const int64_t out_row = static_cast<int64_t>(blockIdx.x) * (rms_warp_threads / 32) + threadIdx.x / 32;
  if (out_row >= count) return;
  const int64_t in_row = rows != nullptr ? rows[out_row] : out_row;
  const T* xr = x + in_row * dim;
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t j = lane + 32 * i;
    if (j < n4) {
      xv[i] = load4(xr, j);
      ss += squares_of(xv[i]);
    }
  }
  const float inv = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(dim) + eps);
  uint2* yr = reinterpret_cast<uint2*>(y + out_row * dim);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t j = lane + 32 * i;
    if (j < n4) {
      const float4 a = xv[i], w = wv[i];
      yr[j] = make_uint2(static_cast<uint32_t>(float_to_bf16_bits(a.x * inv * w.x)) |
                             static_cast<uint32_t>(float_to_bf16_bits(a.y * inv * w.y)) << 16,
                         static_cast<uint32_t>(float_to_bf16_bits(a.z * inv * w.z)) |
                             static_cast<uint32_t>(float_to_bf16_bits(a.w * inv * w.w)) << 16);
    }
  }
}

// The warp kernel for rows of dim <= 2048 (V <= 16 vectors a lane) with aligned vectors; false
// when it cannot take them.
template <class T>
bool launch_rms_norm_warps(int64_t count, int64_t dim, cudaStream_t s, bool programmatic,
                           uint16_t* y, const void* x, const float* weight, const int64_t* rows,
                           float eps) {
  const int64_t per_lane = (dim / 4 + 31) / 32;
  if (dim % 4 != 0 || per_lane > 16 || !aligned_to(y, 8) || !aligned_to(weight, 16) ||
      !aligned_to(x, 4 * sizeof(T)))
    return false;
  const auto* xt = static_cast<const T*>(x);
  const auto blocks = static_cast<unsigned>((count + rms_warp_threads / 32 - 1) / (rms_warp_threads / 32));
  const auto launch = [&](auto kernel) {
    launch_kernel("cuda_rms_norm", kernel, blocks, rms_warp_threads, s, programmatic, y, xt,
                  weight, rows, count, dim, eps);
  };
  if (per_lane <= 1)
    launch(rms_norm_warp_kernel<T, 1>);
  else if (per_lane <= 2)
    launch(rms_norm_warp_kernel<T, 2>);
  else if (per_lane <= 4)
    launch(rms_norm_warp_kernel<T, 4>);
  else if (per_lane <= 8)
    launch(rms_norm_warp_kernel<T, 8>);
  else
    launch(rms_norm_warp_kernel<T, 16>);
  return true;
}

template <class T, int threads>
void launch_rms_norm(unsigned blocks, int64_t dim, cudaStream_t s, bool programmatic, uint16_t* y,
                     const void* x, const float* weight, const int64_t* rows, float eps) {
  const auto* xt = static_cast<const T*>(x);
  const int64_t per_thread = (dim + threads - 1) / threads;
  const auto launch = [&](auto kernel) {
    launch_kernel("cuda_rms_norm", kernel, blocks, threads, s, programmatic, y, xt, weight, rows,
                  dim, eps);
  };
  if (per_thread <= 1) {
    launch(rms_norm_kernel<T, threads, 1>);
  } else if (per_thread <= 2) {
    launch(rms_norm_kernel<T, threads, 2>);
  } else if (per_thread <= 4) {
    launch(rms_norm_kernel<T, threads, 4>);
  } else if (per_thread <= 8) {
    launch(rms_norm_kernel<T, threads, 8>);
  } else {
    launch(rms_norm_kernel<T, threads, 16>);
  }
}

// 256 threads up to dim 2048 (8 values each), 1024 threads up to cuda_rms_norm_max_dim.
template <class T>
void launch_rms_norm(unsigned blocks, int64_t dim, cudaStream_t s, bool programmatic, uint16_t* y,
                     const void* x, const float* weight, const int64_t* rows, float eps) {
  if (dim <= 256 * 8) {
    launch_rms_norm<T, 256>(blocks, dim, s, programmatic, y, x, weight, rows, eps);
  } else {
    launch_rms_norm<T, 1024>(blocks, dim, s, programmatic, y, x, weight, rows, eps);
  }
}

// Rows of up to 2048 aligned values: one warp each; wider or unaligned rows: one block each.
template <class T>
void launch_rms_norm_rows(int64_t count, int64_t dim, cudaStream_t s, bool programmatic,
                          uint16_t* y, const void* x, const float* weight, const int64_t* rows,
                          float eps) {
  if (!launch_rms_norm_warps<T>(count, dim, s, programmatic, y, x, weight, rows, eps))
    launch_rms_norm<T>(static_cast<unsigned>(count), dim, s, programmatic, y, x, weight, rows, eps);
}

}  // namespace
}  // namespace cuda

void cuda_rms_norm(uint16_t* y, const void* x, dtype x_type, const float* weight,
                   const int64_t* rows, int64_t count, int64_t dim, double eps, void* stream,
                   bool programmatic_launch) {
  const char* fn = "cuda_rms_norm";
  check(x_type == dtype::f32 || x_type == dtype::bf16, fn, "input dtype ", dtype_name(x_type),
        " (f32 or bf16 expected)");
  check(count >= 0 && dim > 0, fn, "count=", count, " dim=", dim);
  check(dim <= cuda_rms_norm_max_dim, fn, "dim=", dim, " exceeds ", cuda_rms_norm_max_dim);
  check(eps > 0.0, fn, "eps must be positive, got ", eps);
  if (count == 0) return;
  check(count <= 0x7fffffff, fn, "count=", count, " exceeds the grid limit");
  check(y != nullptr && x != nullptr && weight != nullptr, fn, "null pointer");
  const cudaStream_t s = cuda::as_stream(stream);
  const auto e = static_cast<float>(eps);
  if (x_type == dtype::f32)
    cuda::launch_rms_norm_rows<float>(count, dim, s, programmatic_launch, y, x, weight, rows, e);
  else
    cuda::launch_rms_norm_rows<uint16_t>(count, dim, s, programmatic_launch, y, x, weight, rows, e);
  cuda::check_launch(fn);
}

void cuda_logits_of_rows(float* logits, uint16_t* normed, const float* x, const int64_t* rows,
                         int64_t count, const float* norm_weight, const uint16_t* output,
                         int64_t vocab, int64_t dim, double eps, cuda_gemm& gemm, void* stream,
                         bool programmatic_launch) {
  const char* fn = "cuda_logits_of_rows";
  check(count > 0 && vocab > 0 && dim > 0, fn, "count=", count, " vocab=", vocab, " dim=", dim);
  check(rows != nullptr, fn, "rows must be given (device int64 indices of the selected rows)");
  cuda_rms_norm(normed, x, dtype::f32, norm_weight, rows, count, dim, eps, stream,
                programmatic_launch);
  gemm.linear(logits, dtype::f32, normed, output, count, vocab, dim, false, stream);
}

}  // namespace sp
