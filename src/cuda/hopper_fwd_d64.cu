// Instantiations of the Hopper (sm_90a) attention forward for head dim 64 (bf16 and fp16) over a
// plan; the full causal mask's three-consumer kernel is in hopper_causal_d64.cu.
#include "hopper_launch.cuh"

namespace sp::cuda {

template void launch_hopper_fwd<__nv_bfloat16, 64, hopper_plan_consumers>(
    const attention_fwd_params&, int64_t, const hopper_options&, unsigned long long*, cudaStream_t);
template void launch_hopper_fwd<__half, 64, hopper_plan_consumers>(const attention_fwd_params&,
                                                                   int64_t, const hopper_options&,
                                                                   unsigned long long*,
                                                                   cudaStream_t);

}  // namespace sp::cuda
