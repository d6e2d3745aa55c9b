// Kernel-boundary parameters of the Hopper (sm_90a) attention path: the portable POD parameters
// plus the TMA tensor maps of Q, K and V, and the host helpers that build the maps and say
// whether this build and device can run the path.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "attention_params.h"

namespace sp::cuda {

struct hopper_fwd_params {
  attention_fwd_params p;
  CUtensorMap q_map;  // boxes of [128 tokens, 1 head, 64 columns] of q: [N, H, D]
  CUtensorMap k_map;  // same over k: [N, Hkv, D]
  CUtensorMap v_map;  // same over v: [N, Hkv, D]
  // Dynamic grids: items past the grid's first (one per CTA) are claimed in schedule order from
  // this counter (zero at launch): item = gridDim.x + atomicAdd(next_item, 1). Null otherwise.
  unsigned long long* next_item = nullptr;
};

// Tensor map over a [n, heads, dim] 16-bit tensor with the given token stride (elements):
// boxes of 64 columns x 1 head x box_rows tokens, 128-byte swizzled in shared memory, tokens at
// or past n read as zeros.
CUtensorMap make_tensor_map(const void* base, int64_t n, int64_t heads, int64_t dim,
                            int64_t token_stride, int box_rows);

// True when this build compiled the sm_90a kernels (CMAKE_CUDA_ARCHITECTURES has 90a).
bool hopper_path_compiled();

// How a consumer warpgroup runs a work item's tiles (hopper_kernel.cuh).
enum class hopper_mainloop { serial, overlap };

// Launch choices of the Hopper kernel (SP_CUDA_HOPPER_GRID and SP_CUDA_HOPPER_MAINLOOP, see
// attention_dispatch.cu).
struct hopper_options {
  int64_t ctas = 0;      // CTAs of the grid, each looping over work items
                         // (0 or >= work_items: one CTA per item)
  bool dynamic = false;  // CTAs claim items from a counter instead of a static share
  hopper_mainloop mainloop = hopper_mainloop::serial;
};

// next_item: a device uint64 the launch clears when options.dynamic (the work-item counter).
template <class T, int D>
void launch_hopper_fwd(const attention_fwd_params& p, int64_t work_items,
                       const hopper_options& options, unsigned long long* next_item,
                       cudaStream_t stream);

}  // namespace sp::cuda
