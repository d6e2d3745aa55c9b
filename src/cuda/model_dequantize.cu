// Device dequantisation of GGUF weights to bf16 (F32, F16, BF16, Q4_0, Q4_1, Q8_0). One thread
// per output element reads its block's scale (and min) and its quant; each value is computed in
// fp32 with the operations of src/model/dequantize.cpp (scale product, then one multiply and one
// add, unfused here) and rounded to bf16. Blocks of 18 and 34 bytes are only 2-byte aligned, so
// every field is read as bytes. Runs once per tensor at model load.
#include <cuda_fp16.h>

#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int64_t qk = 32;  // elements per block of the legacy quants

__device__ __forceinline__ uint16_t load_u16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

__device__ __forceinline__ float load_fp16(const uint8_t* p) {
  return __half2float(__ushort_as_half(load_u16(p)));
}

// Value of element i of the tensor, in fp32.
template <ggml_type T>
__device__ __forceinline__ float dequantize_element(const uint8_t* src, int64_t i) {
  if constexpr (T == ggml_type::f32) {
    const uint8_t* p = src + 4 * i;
    return __uint_as_float(static_cast<uint32_t>(load_u16(p)) |
                           (static_cast<uint32_t>(load_u16(p + 2)) << 16));
  } else if constexpr (T == ggml_type::f16) {
    return load_fp16(src + 2 * i);
  } else if constexpr (T == ggml_type::bf16) {
    return bf16_bits_to_float(load_u16(src + 2 * i));
  } else {
    const int64_t block = i / qk;
    const int j = static_cast<int>(i % qk);
    if constexpr (T == ggml_type::q8_0) {  // fp16 d | 32 int8; y = q * d
      const uint8_t* b = src + block * 34;
      return __fmul_rn(static_cast<float>(static_cast<int8_t>(b[2 + j])), load_fp16(b));
    } else if constexpr (T == ggml_type::q4_0) {  // fp16 d | 16 bytes; y = (q - 8) * d
      const uint8_t* b = src + block * 18;
      const uint8_t byte = b[2 + (j % 16)];
      const int q = j < 16 ? (byte & 0x0f) : (byte >> 4);
      return __fmul_rn(static_cast<float>(q - 8), load_fp16(b));
    } else {  // q4_1: fp16 d | fp16 m | 16 bytes; y = q * d + m
      const uint8_t* b = src + block * 20;
      const uint8_t byte = b[4 + (j % 16)];
      const int q = j < 16 ? (byte & 0x0f) : (byte >> 4);
      return __fadd_rn(__fmul_rn(static_cast<float>(q), load_fp16(b)), load_fp16(b + 2));
    }
  }
}

template <ggml_type T>
__global__ void dequantize_kernel(uint16_t* __restrict__ dst,  // dst: [n] bf16
                                  const uint8_t* __restrict__ src, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = float_to_bf16_bits(dequantize_element<T>(src, i));
}

template <ggml_type T>
void launch(uint16_t* dst, const void* src, int64_t n, cudaStream_t stream) {
  constexpr int threads = 256;
  dequantize_kernel<T><<<grid_for(n, threads), threads, 0, stream>>>(
      dst, static_cast<const uint8_t*>(src), n);
}

int64_t block_elements(ggml_type type) {
  switch (type) {
    case ggml_type::q4_0:
    case ggml_type::q4_1:
    case ggml_type::q8_0: return qk;
    default: return 1;
  }
}

}  // namespace
}  // namespace cuda

bool cuda_dequantize_supported(ggml_type type) {
  switch (type) {
    case ggml_type::f32:
    case ggml_type::f16:
    case ggml_type::bf16:
    case ggml_type::q4_0:
    case ggml_type::q4_1:
    case ggml_type::q8_0: return true;
    default: return false;
  }
}

void cuda_dequantize_to_bf16(uint16_t* dst, const void* src, ggml_type type, int64_t n,
                             void* stream) {
  const char* fn = "cuda_dequantize_to_bf16";
  check(cuda_dequantize_supported(type), fn, "ggml type id ", static_cast<uint32_t>(type),
        " is not dequantised on the device (F32, F16, BF16, Q4_0, Q4_1, Q8_0 are)");
  check(n >= 0 && n % cuda::block_elements(type) == 0, fn, "element count ", n,
        " is not a non-negative multiple of the block size ", cuda::block_elements(type));
  if (n == 0) return;
  check(dst != nullptr && src != nullptr, fn, "null pointer (dst=", static_cast<void*>(dst),
        ", src=", src, ")");
  check(cuda::aligned_to(dst, 2) && cuda::aligned_to(src, 2), fn,
        "dst and src must be 2-byte aligned");
  const cudaStream_t s = cuda::as_stream(stream);
  switch (type) {
    case ggml_type::f32: cuda::launch<ggml_type::f32>(dst, src, n, s); break;
    case ggml_type::f16: cuda::launch<ggml_type::f16>(dst, src, n, s); break;
    case ggml_type::bf16: cuda::launch<ggml_type::bf16>(dst, src, n, s); break;
    case ggml_type::q4_0: cuda::launch<ggml_type::q4_0>(dst, src, n, s); break;
    case ggml_type::q4_1: cuda::launch<ggml_type::q4_1>(dst, src, n, s); break;
    default: cuda::launch<ggml_type::q8_0>(dst, src, n, s); break;
  }
  cuda::check_launch(fn);
}

}  // namespace sp
