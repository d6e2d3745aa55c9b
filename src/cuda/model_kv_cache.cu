// cuda_kv_cache: the bf16 K and V of every layer, [layers, capacity, kv_heads, head_dim] each,
// allocated once; append copies new tokens' rows in 16-byte vectors from strided sources (e.g.
// the K and V columns of a fused QKV projection).
#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int append_threads = 256;

// Copies n rows of `row_vectors` 16-byte vectors each from src (row stride src_stride vectors)
// to dst (row stride = row_vectors).
__global__ void append_kernel(uint4* __restrict__ dst_k,        // dst_k: [n, row_vectors]
                              uint4* __restrict__ dst_v,        // dst_v: [n, row_vectors]
                              const uint4* __restrict__ src_k,  // src_k: [n, k_stride]
                              const uint4* __restrict__ src_v,  // src_v: [n, v_stride]
                              int64_t k_stride, int64_t v_stride, int64_t row_vectors, int64_t n) {
  const int64_t total = n * row_vectors, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t row = i / row_vectors, col = i % row_vectors;
    dst_k[i] = src_k[row * k_stride + col];
    dst_v[i] = src_v[row * v_stride + col];
  }
}

}  // namespace
}  // namespace cuda

cuda_kv_cache::cuda_kv_cache(int64_t layers, int64_t capacity, int64_t kv_heads,
                             int64_t head_dim)
    : layers_(layers), capacity_(capacity), kv_heads_(kv_heads), head_dim_(head_dim) {
  const char* fn = "cuda_kv_cache";
  check(layers > 0 && capacity > 0 && kv_heads > 0 && head_dim > 0, fn, "layers=", layers,
        " capacity=", capacity, " kv_heads=", kv_heads, " head_dim=", head_dim);
  check(head_dim % 8 == 0, fn, "head_dim=", head_dim, " must be a multiple of 8");
  const size_t half = bytes() / 2;
  cuda::check_cuda(cudaMalloc(&k_, half), fn,
                   str("cudaMalloc of the K cache (", half, " bytes for ", capacity,
                       " tokens)").c_str());
  const cudaError_t status = cudaMalloc(&v_, half);
  if (status != cudaSuccess) {
    cudaFree(k_);
    cuda::check_cuda(status, fn,
                     str("cudaMalloc of the V cache (", half, " bytes for ", capacity,
                         " tokens)").c_str());
  }
}

cuda_kv_cache::~cuda_kv_cache() {
  cudaFree(k_);
  cudaFree(v_);
}

size_t cuda_kv_cache::bytes() const {
  return 2 * static_cast<size_t>(layers_) * static_cast<size_t>(capacity_) *
         static_cast<size_t>(token_stride()) * sizeof(uint16_t);
}

uint16_t* cuda_kv_cache::k(int64_t layer) const {
  check(layer >= 0 && layer < layers_, "cuda_kv_cache::k", "layer ", layer, " outside [0, ",
        layers_, ")");
  return k_ + layer * capacity_ * token_stride();
}

uint16_t* cuda_kv_cache::v(int64_t layer) const {
  check(layer >= 0 && layer < layers_, "cuda_kv_cache::v", "layer ", layer, " outside [0, ",
        layers_, ")");
  return v_ + layer * capacity_ * token_stride();
}

void cuda_kv_cache::append(int64_t layer, int64_t pos, const uint16_t* k, int64_t k_token_stride,
                           const uint16_t* v, int64_t v_token_stride, int64_t n, void* stream) {
  const char* fn = "cuda_kv_cache::append";
  check(layer >= 0 && layer < layers_, fn, "layer ", layer, " outside [0, ", layers_, ")");
  check(n >= 0 && pos >= 0 && pos <= capacity_ - n, fn, "tokens [", pos, ", ", pos + n,
        ") exceed the capacity of ", capacity_, " tokens");
  if (n == 0) return;
  check(k != nullptr && v != nullptr, fn, "null k or v");
  check(k_token_stride >= token_stride() && v_token_stride >= token_stride() &&
            k_token_stride % 8 == 0 && v_token_stride % 8 == 0,
        fn, "token strides (k ", k_token_stride, ", v ", v_token_stride,
        ") must be multiples of 8 and at least kv_heads * head_dim = ", token_stride());
  check(cuda::aligned_to(k, 16) && cuda::aligned_to(v, 16), fn, "k and v must be 16-byte aligned");
  const int64_t row_vectors = token_stride() / 8;
  cuda::append_kernel<<<cuda::grid_for(n * row_vectors, cuda::append_threads),
                        cuda::append_threads, 0, cuda::as_stream(stream)>>>(
      reinterpret_cast<uint4*>(this->k(layer) + pos * token_stride()),
      reinterpret_cast<uint4*>(this->v(layer) + pos * token_stride()),
      reinterpret_cast<const uint4*>(k), reinterpret_cast<const uint4*>(v), k_token_stride / 8,
      v_token_stride / 8, row_vectors, n);
  cuda::check_launch(fn);
}

}  // namespace sp
