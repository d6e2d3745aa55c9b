// A layer's attention plan as plain data (DESIGN.md section 8): the CSR tile lists of every head,
// the longest-row-first schedule of (head, query block) work items and the pivot heads' block-
// attention layout, in arrays that live in a workspace the caller owns (FlashInfer's plan/run
// split). The block-sparse kernel reads the plan and never writes it; what it writes while it
// runs (the pivot heads' per-tile masses, the work counter) is a separate scratch region, also
// the caller's. No CUDA types: the same views describe host memory (the CPU path, and the
// staging copy of an upload) and device memory (on_device = true).
//
// Usage (host plan from a block mask, then an upload; see cuda_attention.h for the launch):
//   const sp::layer_plan_capacity cap = sp::layer_plan_capacity_of(mask, pivot_heads);
//   std::vector<std::byte> host(sp::plan_workspace_bytes(cap));
//   sp::layer_plan_view plan = sp::layer_plan_carve(host.data(), host.size(), cap, false);
//   sp::layer_plan_fill(plan, mask, pivot_heads);
// A device planner carves the same layout from device memory, sized by a worst-case capacity
// (layer_plan_capacity_worst_case) because its tile and pivot counts are known only on the device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "shareprefill/block_mask.h"

namespace sp {

// kinds[h] when the plan's builder did not record head kinds (otherwise sp::head_kind values).
constexpr uint8_t head_kind_unrecorded = 0xff;

// Non-owning view of a layer plan. Sizes are host values; the arrays live in the caller's
// workspace (layer_plan_carve), in device memory when on_device.
struct layer_plan_view {
  int64_t n_tokens = 0;       // N
  int64_t block_size = 128;   // tokens per block (the CUDA kernel needs 128)
  int64_t n_blocks = 0;       // nb = ceil(N / block_size)
  int64_t heads = 0;          // query heads H
  int64_t col_capacity = 0;   // entries col_idx can hold
  int64_t max_pivots = 0;     // slots of the block attention A: pivot_slot < max_pivots
  int64_t scratch_tiles = 0;  // tiles the pivot scratch must hold (attention_scratch_view)
  // Chunked prefill: the queries are tokens [query_offset, n_tokens) of the prompt (keys are all
  // n_tokens), a multiple of block_size; the schedule holds the work items of query blocks
  // [query_offset / block_size, nb) only and the mask rows before them are never read.
  int64_t query_offset = 0;
  bool on_device = false;
  // The full causal mask (every query row of the prompt or the chunk sees every earlier key)
  // with no pivot head: a kernel may walk the causal blocks without reading row_ptr, col_idx or
  // the schedule (the Hopper kernel does at D = 64, cuda_attention_options::causal_kernel).
  // Set by the plan's builder.
  bool full_causal = false;
  // Dense heads of a plan that is not full_causal, which a kernel may walk causally as it walks a
  // full causal plan (the Hopper kernel at D = 64): their work items close the schedule's
  // layer_plan_work_items (the last walk_head_count * (nb - query_offset / block_size) of them,
  // longest first among themselves), so a kernel that walks them runs the items before those.
  // walk_heads: [walk_head_count] ascending query heads in memory like the plan's (read only,
  // owned by the plan's builder), null when the count is 0.
  int64_t walk_head_count = 0;
  const int32_t* walk_heads = nullptr;
  // A device planner's plan, whose walked heads only the device knows (its pivots that publish
  // nothing, device_planner.h): walk_count: [1] in memory like the plan's, the count of
  // walk_heads in use; walk_head_count is then a bound. Null: walk_head_count is the count.
  const int32_t* walk_count = nullptr;
  // run_if: [1] in memory like the plan's, or null: when it holds 0 the kernel runs nothing (a
  // launch enqueued before the device knows whether it is needed: a deferred pivot's A).
  const int32_t* run_if = nullptr;
  uint8_t* kinds = nullptr;    // kinds: [H] sp::head_kind values (informational for the kernel)
  int64_t* row_ptr = nullptr;  // row_ptr: [H * (nb + 1)] absolute offsets into col_idx
  int32_t* col_idx = nullptr;  // col_idx: [col_capacity], ascending, unique, causal in a row
  // schedule: [layer_plan_work_items, 2] (head, query block), most tiles first
  int32_t* schedule = nullptr;
  int32_t* pivot_slot = nullptr;  // pivot_slot: [H] slot of the head's block attention A, or -1
  // scratch_offset: [H]; tile p (absolute into col_idx) of pivot head h uses scratch row
  // scratch_offset[h] + p; rows of all pivots' tiles lie in [0, scratch_tiles).
  int64_t* scratch_offset = nullptr;
};

// What the kernel writes while it runs, in a region the caller owns (attention_scratch_carve).
struct attention_scratch_view {
  int64_t tile_capacity = 0;  // tiles tile_mass holds (>= the plan's scratch_tiles)
  bool on_device = false;
  float* tile_mass = nullptr;  // tile_mass: [tile_capacity, 128] base-2 log-mass per row of a tile
  unsigned long long* item_counter = nullptr;  // item_counter: [1] next work item (dynamic grids)
};

// The sizes a plan workspace and its scratch are carved for.
struct layer_plan_capacity {
  int64_t n_tokens = 0;
  int64_t block_size = 128;
  int64_t heads = 0;
  int64_t col_capacity = 0;   // tiles over all heads
  int64_t max_pivots = 0;     // heads that may produce block attention A
  int64_t scratch_tiles = 0;  // tiles of all pivot heads together
  int64_t query_offset = 0;   // chunked prefill (layer_plan_view::query_offset)
};

// Every causal tile of every head, max_pivots dense pivot heads: enough for any plan of this
// shape (a device planner's choice). Scratch: max_pivots * nb(nb+1)/2 tiles of 512 bytes.
layer_plan_capacity layer_plan_capacity_worst_case(int64_t n_tokens, int64_t heads,
                                                   int64_t max_pivots, int64_t block_size = 128);
// Exactly what layer_plan_fill needs for this mask and these pivot heads. query_offset: the
// chunk's first query token (0: the whole prompt), a multiple of the mask's block size below
// mask.n_tokens (the mask covers all n_tokens keys; its rows before the chunk are ignored).
layer_plan_capacity layer_plan_capacity_of(const block_mask& mask,
                                           const std::vector<int32_t>& pivot_heads,
                                           int64_t query_offset = 0);

// Bytes of the plan arrays (each 256-byte aligned within the workspace; the workspace itself
// must be 256-byte aligned, as cudaMalloc's is) and of the kernel's scratch.
int64_t plan_workspace_bytes(const layer_plan_capacity& capacity);
int64_t attention_scratch_bytes(const layer_plan_capacity& capacity);

// Views over caller memory of at least the bytes above (throws when smaller or misaligned). The
// plan's sizes are set from the capacity; its arrays are not initialised.
layer_plan_view layer_plan_carve(void* workspace, size_t bytes, const layer_plan_capacity& capacity,
                                 bool on_device);
attention_scratch_view attention_scratch_carve(void* scratch, size_t bytes,
                                               const layer_plan_capacity& capacity, bool on_device);

// Host builder (plan.on_device == false): validates `mask` (its shape must match the plan's) and
// copies its CSR, orders the work items by tile count (longest first, stable), and lays out the
// pivot heads' slots (slot i = the i-th pivot head) and scratch rows. pivot_heads: ascending,
// unique, < H. kinds: [H] sp::head_kind values, or empty (head_kind_unrecorded). A chunk plan
// (plan.query_offset > 0) schedules the chunk's query blocks only.
void layer_plan_fill(const layer_plan_view& plan, const block_mask& mask,
                     const std::vector<int32_t>& pivot_heads,
                     const std::vector<uint8_t>& kinds = {});

// Tiles in use: row_ptr's last entry (host plans only).
int64_t layer_plan_used_tiles(const layer_plan_view& plan);

// Work items of the plan's schedule: heads * (nb - query_offset / block_size).
int64_t layer_plan_work_items(const layer_plan_view& plan);

}  // namespace sp
