// Kernel-boundary parameters of the Hopper (sm_90a) attention path: the portable POD parameters
// plus the TMA tensor maps of Q, K and V, and the host helpers that build the maps and say
// whether this build and device can run the path.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "attention_params.h"

namespace sp::cuda {

// Consumer warpgroups of a CTA, 64 query rows each: a work item of the plan is one mask block
// of 128 rows (two consumers); the full causal mask at D = 64 takes items of 192 rows (three
// consumers: each K/V tile serves 192 query rows, the shape FA3 takes at this head dim).
constexpr int hopper_plan_consumers = 2;
constexpr int hopper_causal_consumers = 3;

struct hopper_fwd_params {
  attention_fwd_params p;
  CUtensorMap q_map;  // boxes of [128 tokens, 1 head, 64 columns] of q: [N, H, D]
  CUtensorMap k_map;  // same over k: [N, Hkv, D]
  CUtensorMap v_map;  // same over v: [N, Hkv, D]
  // Grids smaller than the work items: items past the grid's first (one per CTA) are claimed in
  // schedule order from this counter (zero at launch): item = gridDim.x + atomicAdd(next_item,
  // 1). Null when every CTA runs one item.
  unsigned long long* next_item = nullptr;
};

// Tensor map over a [n, heads, dim] 16-bit tensor with the given token stride (elements):
// boxes of 64 columns x 1 head x box_rows tokens, 128-byte swizzled in shared memory, tokens at
// or past n read as zeros.
CUtensorMap make_tensor_map(const void* base, int64_t n, int64_t heads, int64_t dim,
                            int64_t token_stride, int box_rows);

// True when this build compiled the sm_90a kernels (CMAKE_CUDA_ARCHITECTURES has 90a).
bool hopper_path_compiled();

// Launch choices of the Hopper kernel (from cuda_attention_options).
struct hopper_options {
  int64_t ctas = 1;  // CTAs of the grid, each claiming work items (>= work_items: one per item)
};

// next_item: a device uint64 (the work-item counter) the launch clears when the grid has fewer
// CTAs than work items.
// C: consumer warpgroups (hopper_traits.cuh): 2 runs the plan's items, 3 the full causal mask in
// 192-row items (D = 64; p's plan arrays unused, p.items = H * ceil(N / 192)).
template <class T, int D, int C>
void launch_hopper_fwd(const attention_fwd_params& p, int64_t work_items,
                       const hopper_options& options, unsigned long long* next_item,
                       cudaStream_t stream);

}  // namespace sp::cuda
