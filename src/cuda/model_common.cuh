// Shared by the model ops (model_*.cu): bf16 <-> fp32 of raw uint16_t bits, the launch check,
// grid sizing of element-wise grid-stride loops and warp/block sums. Device code only reads
// threadIdx/blockIdx in the __global__ functions; these helpers take indices as arguments.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.h"

namespace sp::cuda {

__device__ __forceinline__ float bf16_bits_to_float(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

// Round to nearest even, as sp::fp32_to_bf16 on the host.
__device__ __forceinline__ uint16_t float_to_bf16_bits(float x) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}

// The 8 bf16 of a 16-byte vector (low half of each word first) as fp32.
__device__ __forceinline__ void unpack8(const uint4& v, float* f) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(words[i] << 16);
    f[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}

// SwiGLU of one feature in fp32, silu(gate) * up: the value every SwiGLU kernel rounds to bf16.
__device__ __forceinline__ float swiglu_value(float gate, float up) {
  return gate / (1.0f + expf(-gate)) * up;
}

// Sum over the 32 lanes of a warp; every lane gets the result.
__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// The squares of a float4's values, summed in one fixed order. The prefill RMSNorm's rows and the
// decode GEMV's fused norm both sum a row as ss += squares_of(x4[lane + 32 i]) for i = 0, 1, ...
// and then warp_sum(ss): one summation order for the same row.
__device__ __forceinline__ float squares_of(const float4& q) {
  return q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w;
}

// Blocks for a grid-stride loop over `count` items, `threads` per block (capped: the loop covers
// the rest, and 64K blocks keep every SM busy).
inline unsigned grid_for(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Programmatic Dependent Launch (sm_90): a kernel launched by launch_kernel with programmatic
// set may start while the stream's previous kernel is finishing, so its launch and its prologue
// overlap that kernel's tail (inside a captured graph too). Before reading anything the previous
// kernel writes (and before writing anything), it calls wait_for_predecessor(), which returns at
// once when the launch was not programmatic.
__device__ __forceinline__ void wait_for_predecessor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaGridDependencySynchronize();
#endif
}

// `kernel` with `shared_bytes` of dynamic shared memory, programmatic or not.
template <class... Params, class... Args>
void launch_kernel_smem(const char* fn, void (*kernel)(Params...), dim3 grid, dim3 block,
                        size_t shared_bytes, cudaStream_t stream, bool programmatic,
                        Args... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = programmatic ? 1 : 0;
  config.attrs = &attribute;
  config.numAttrs = 1;
  check_cuda(cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...), fn,
             "cudaLaunchKernelEx");
}

template <class... Params, class... Args>
void launch_kernel(const char* fn, void (*kernel)(Params...), dim3 grid, dim3 block,
                   cudaStream_t stream, bool programmatic, Args... args) {
  launch_kernel_smem(fn, kernel, grid, block, 0, stream, programmatic, args...);
}

// After a launch: turns a launch-configuration error into sp::error naming `fn`.
inline void check_launch(const char* fn) { check_cuda(cudaGetLastError(), fn, "kernel launch"); }

inline bool aligned_to(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace sp::cuda
