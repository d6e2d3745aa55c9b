// Element-wise model ops on the device: the embedding gather (bf16 table rows to the fp32
// residual stream), the residual add (fp32 += f32 or bf16) and SwiGLU (silu(gate) * up in fp32,
// rounded to bf16). Grid-stride loops over 64-bit indices; one thread per element (SwiGLU: per
// eight features where the shapes allow 16-byte vectors).
#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int threads = 256;

__global__ void embedding_gather_kernel(float* __restrict__ x,             // x: [n, dim]
                                        const uint16_t* __restrict__ table,  // table: [vocab, dim]
                                        const int32_t* __restrict__ tokens,  // tokens: [n]
                                        int64_t n, int64_t dim, int64_t vocab) {
  const int64_t total = n * dim, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t token = tokens[i / dim];
    x[i] = token >= 0 && token < vocab ? bf16_bits_to_float(table[token * dim + i % dim]) : 0.0f;
  }
}

template <class T>
__global__ void residual_add_kernel(float* __restrict__ x,    // x: [count]
                                    const T* __restrict__ y,  // y: [count] f32 or bf16 bits
                                    int64_t count) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    if constexpr (sizeof(T) == 2) {
      x[i] += bf16_bits_to_float(y[i]);
    } else {
      x[i] += y[i];
    }
  }
}

// Eight features per thread through 16-byte loads and stores (ffn, the row strides and the
// pointers multiples of 8 elements); vec = 1 takes any shape one feature at a time. The same
// swiglu_value per feature either way.
template <int vec>
__global__ void swiglu_kernel(uint16_t* __restrict__ out,        // out: [n, ffn], row stride out_stride
                              const uint16_t* __restrict__ gate,  // gate: [n, ffn], row stride in_stride
                              const uint16_t* __restrict__ up,    // up: [n, ffn], row stride in_stride
                              int64_t out_stride, int64_t in_stride, int64_t n, int64_t ffn) {
  wait_for_predecessor();  // gate and up come from the previous kernel
  const int64_t per_row = ffn / vec, total = n * per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t row = i / per_row, f = (i % per_row) * vec;
    if constexpr (vec == 1) {
      const float g = bf16_bits_to_float(gate[row * in_stride + f]);
      const float u = bf16_bits_to_float(up[row * in_stride + f]);
      out[row * out_stride + f] = float_to_bf16_bits(swiglu_value(g, u));
    } else {
      static_assert(vec == 8, "one 16-byte vector of bf16");
      float g[8], u[8];
      unpack8(*reinterpret_cast<const uint4*>(gate + row * in_stride + f), g);
      unpack8(*reinterpret_cast<const uint4*>(up + row * in_stride + f), u);
      uint32_t words[4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
        words[j] = static_cast<uint32_t>(float_to_bf16_bits(swiglu_value(g[2 * j], u[2 * j]))) |
                   static_cast<uint32_t>(float_to_bf16_bits(swiglu_value(g[2 * j + 1], u[2 * j + 1])))
                       << 16;
      *reinterpret_cast<uint4*>(out + row * out_stride + f) =
          make_uint4(words[0], words[1], words[2], words[3]);
    }
  }
}

}  // namespace
}  // namespace cuda

void cuda_embedding_gather(float* x, const uint16_t* table, const int32_t* tokens, int64_t n,
                           int64_t dim, int64_t vocab, void* stream) {
  const char* fn = "cuda_embedding_gather";
  check(n >= 0 && dim > 0 && vocab > 0, fn, "n=", n, " dim=", dim, " vocab=", vocab);
  if (n == 0) return;
  check(x != nullptr && table != nullptr && tokens != nullptr, fn, "null pointer");
  cuda::embedding_gather_kernel<<<cuda::grid_for(n * dim, cuda::threads), cuda::threads, 0,
                                  cuda::as_stream(stream)>>>(x, table, tokens, n, dim, vocab);
  cuda::check_launch(fn);
}

void cuda_residual_add(float* x, const void* y, dtype y_type, int64_t count, void* stream) {
  const char* fn = "cuda_residual_add";
  check(y_type == dtype::f32 || y_type == dtype::bf16, fn, "dtype ", dtype_name(y_type),
        " of y (f32 or bf16 expected)");
  check(count >= 0, fn, "count=", count);
  if (count == 0) return;
  check(x != nullptr && y != nullptr, fn, "null pointer");
  const unsigned blocks = cuda::grid_for(count, cuda::threads);
  const cudaStream_t s = cuda::as_stream(stream);
  if (y_type == dtype::f32)
    cuda::residual_add_kernel<float><<<blocks, cuda::threads, 0, s>>>(
        x, static_cast<const float*>(y), count);
  else
    cuda::residual_add_kernel<uint16_t><<<blocks, cuda::threads, 0, s>>>(
        x, static_cast<const uint16_t*>(y), count);
  cuda::check_launch(fn);
}

void cuda_swiglu(uint16_t* out, int64_t out_stride, const uint16_t* gate, const uint16_t* up,
                 int64_t in_stride, int64_t n, int64_t ffn, void* stream,
                 bool programmatic_launch) {
  const char* fn = "cuda_swiglu";
  check(n >= 0 && ffn > 0, fn, "n=", n, " ffn=", ffn);
  check(out_stride >= ffn && in_stride >= ffn, fn, "row strides (out ", out_stride, ", in ",
        in_stride, ") must be at least ffn=", ffn);
  if (n == 0) return;
  check(out != nullptr && gate != nullptr && up != nullptr, fn, "null pointer");
  const bool vectors = ffn % 8 == 0 && out_stride % 8 == 0 && in_stride % 8 == 0 &&
                       cuda::aligned_to(out, 16) && cuda::aligned_to(gate, 16) &&
                       cuda::aligned_to(up, 16);
  const auto launch = [&](auto kernel, int64_t vec) {
    cuda::launch_kernel(fn, kernel, cuda::grid_for(n * ffn / vec, cuda::threads), cuda::threads,
                        cuda::as_stream(stream), programmatic_launch, out, gate, up, out_stride,
                        in_stride, n, ffn);
  };
  if (vectors)
    launch(cuda::swiglu_kernel<8>, 8);
  else
    launch(cuda::swiglu_kernel<1>, 1);
}

}  // namespace sp
