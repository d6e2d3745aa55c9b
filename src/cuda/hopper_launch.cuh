// Tensor maps, grid and attributes of the Hopper attention forward for one (dtype, head dim,
// consumers); the explicit instantiations live in hopper_fwd_d64.cu, hopper_fwd_d128.cu and
// hopper_causal_d64.cu.
#pragma once

#include <cuda_runtime.h>

#include "cuda_check.h"
#include "hopper_kernel.cuh"

namespace sp::cuda {

template <class T, int D, int C>
void launch_hopper_fwd(const attention_fwd_params& p, int64_t work_items,
                       const hopper_options& options, unsigned long long* next_item,
                       cudaStream_t stream) {
  using tr = hopper_traits<T, D, C>;
  const char* fn = "cuda_attention_block_sparse";
  const int64_t grid = options.ctas < work_items ? options.ctas : work_items;
  hopper_fwd_params hp;
  hp.p = p;
  if (grid < work_items) {
    hp.next_item = next_item;
    check_cuda(cudaMemsetAsync(next_item, 0, sizeof(unsigned long long), stream), fn,
               "clearing the work-item counter (hopper)");
  }
  const int64_t kv_heads = p.heads / p.group;
  hp.q_map = make_tensor_map(p.q, p.n_q, p.heads, D, p.q_token_stride, tr::block_m);
  hp.k_map = make_tensor_map(p.k, p.n, kv_heads, D, p.k_token_stride, tr::block_n);
  hp.v_map = make_tensor_map(p.v, p.n, kv_heads, D, p.v_token_stride, tr::block_n);
  auto kernel = hopper_fwd_kernel<T, D, C>;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  tr::smem_bytes),
             fn, "cudaFuncSetAttribute (hopper)");
  kernel<<<static_cast<unsigned>(grid), tr::threads, tr::smem_bytes, stream>>>(hp);
  check_cuda(cudaGetLastError(), fn, "kernel launch (hopper)");
}

}  // namespace sp::cuda
