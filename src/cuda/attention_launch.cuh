// Grid, shared memory and attributes of the attention forward for one (dtype, head dim); the
// explicit instantiations live in attention_fwd_d64.cu and attention_fwd_d128.cu.
#pragma once

#include <cuda_runtime.h>

#include "attention_kernel.cuh"
#include "cuda_check.h"

namespace sp::cuda {

// Keys per sub-tile: 64 keeps the score fragment at 32 registers (128 keys spill at D = 64
// under the two-CTA register cap).
template <int D>
constexpr int keys_per_subtile() {
  return 64;
}

template <class T, int D>
void launch_attention_fwd(const attention_fwd_params& p, int64_t work_items, cudaStream_t stream) {
  constexpr int BN = keys_per_subtile<D>();
  using traits = attention_traits<T, D, BN>;
  const char* fn = "cuda_attention_block_sparse";
  auto kernel = attention_fwd_kernel<T, D, BN>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  traits::smem_bytes),
             fn, "cudaFuncSetAttribute");
  kernel<<<static_cast<unsigned>(work_items), traits::threads, traits::smem_bytes, stream>>>(p);
  check_cuda(cudaGetLastError(), fn, "kernel launch");
}

}  // namespace sp::cuda
