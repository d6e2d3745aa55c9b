// cuda_kv_cache: the bf16 K and V of every layer, [layers, capacity, kv_heads, head_dim] each,
// allocated once (rows written by cuda_rope_apply's KV append and the decode attention).
#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {

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

}  // namespace sp
