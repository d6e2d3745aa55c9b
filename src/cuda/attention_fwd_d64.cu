// Instantiations of the attention forward for head dim 64 (bf16 and fp16), one translation unit
// per head dim so they compile in parallel.
#include "attention_launch.cuh"

namespace sp::cuda {

template void launch_attention_fwd<__nv_bfloat16, 64>(const attention_fwd_params&, int64_t,
                                                      cudaStream_t);
template void launch_attention_fwd<__half, 64>(const attention_fwd_params&, int64_t, cudaStream_t);

}  // namespace sp::cuda
