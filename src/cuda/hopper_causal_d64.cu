// Instantiations of the Hopper (sm_90a) attention forward over the full causal mask at head dim 64
// (bf16 and fp16): three consumer warpgroups, items of 192 query rows.
#include "hopper_launch.cuh"

namespace sp::cuda {

template void launch_hopper_fwd<__nv_bfloat16, 64, hopper_causal_consumers>(
    const attention_fwd_params&, int64_t, const hopper_options&, unsigned long long*, cudaStream_t);
template void launch_hopper_fwd<__half, 64, hopper_causal_consumers>(const attention_fwd_params&,
                                                                     int64_t, const hopper_options&,
                                                                     unsigned long long*,
                                                                     cudaStream_t);

}  // namespace sp::cuda
