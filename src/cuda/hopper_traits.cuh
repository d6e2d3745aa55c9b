// Shared pieces of the Hopper (sm_90a) attention forward (hopper_kernel.cuh): the CTA shape and
// shared-memory budget, the ring slots and mbarriers through which the producer warpgroup
// (hopper_producer.cuh) hands Q, K and V to the consumer warpgroups (hopper_mainloop.cuh), and
// the header of one work item.
#pragma once

#include <cstdint>

#include "block_iter.cuh"
#include "hopper_params.h"
#include "ptx_sm90.cuh"

namespace sp::cuda {

// C consumer warpgroups (hopper_params.h: 2 for the plan's items, 3 for the causal walk).
template <class T, int D, int C>
struct hopper_traits {
  static constexpr int consumers = C;
  static constexpr bool causal = C == hopper_causal_consumers;  // items walk the causal mask
  static constexpr int block_m = 64 * C;                        // query rows per item
  static constexpr int block_n = mask_block;                    // keys per tile = one mask block
  static constexpr int consumer_threads = 128 * consumers;
  static constexpr int threads = 128 * (consumers + 1);
  static constexpr int q_stages = 2;  // Q buffers: the next item's Q loads during this item
  static constexpr int stages = D <= 64 ? 4 : 2;
  static constexpr int chunk_q_bytes = block_m * 128;  // one 64-column swizzle chunk of Q
  static constexpr int chunk_kv_bytes = block_n * 128;
  static constexpr int q_bytes = block_m * D * 2;
  static constexpr int kv_bytes = block_n * D * 2;
  // Q ring, K ring, V ring, plus slack to align the dynamic base to 1024 bytes (swizzle atoms).
  static constexpr int smem_bytes = q_stages * q_bytes + 2 * stages * kv_bytes + 1024;
  // The pool __launch_bounds__(threads, 1) gives the CTA, moved by setmaxnreg (setmaxnreg.inc
  // past the pool waits forever): 128*56 + 256*224 = 384*168 with two consumers, 128*56 +
  // 384*152 = 512*128 with three. Neither side spills at these limits (ptxas -warn-spills).
  static constexpr int producer_regs = 56;
  static constexpr int consumer_regs = C == 2 ? 224 : 152;
  static_assert(D == 64 || D == 128, "head dim");
  static_assert(C == hopper_plan_consumers || (C == hopper_causal_consumers && D == 64),
                "three consumers fit the register file at D = 64 only");
  static_assert(producer_regs * 128 + consumer_regs * consumer_threads ==
                    65536 / threads / 8 * 8 * threads,
                "setmaxnreg moves the launch pool exactly");
};

// Named barrier 1 (0 is __syncthreads): the pivot epilogue's, among the consumer threads.
constexpr int pivot_epilogue_barrier = 1;

// Ring position of the CTA's g-th loaded K/V tile or Q (counted over all its items).
template <int stages>
struct ring_slot {
  int stage;
  uint32_t phase;  // parity of the slot's use: (g / stages) & 1
  __device__ __forceinline__ explicit ring_slot(int64_t g)
      : stage(static_cast<int>(g % stages)), phase(static_cast<uint32_t>((g / stages) & 1)) {}
};

// What a CTA needs to know about one work item, read from the schedule and the CSR index;
// head = -1 ends the CTA's loop.
struct hopper_item {
  int head = -1, qblock = 0;  // query block of the item's rows (hopper_traits::block_m each)
  int64_t first_row = 0;      // absolute position of the item's first query row
  int pivot = -1;     // A slot of the head, or -1
  item_geometry geo;  // its sequence's rows in the packed tensors
  block_row<mask_block> row;  // the causal walk: key blocks 0 .. tiles - 1, no col_idx
};

// Item `item` of the plan's schedule, or (causal) of the full causal mask in longest-first
// order: 192-row blocks of the queries (from q_offset on) from the last, every head of a block
// together (heads of a KV group read the same K/V); the heads are p.walk_heads where set.
template <bool causal>
__device__ __forceinline__ hopper_item hopper_item_of(const attention_fwd_params& p, int64_t item) {
  hopper_item it;
  if constexpr (causal) {
    constexpr int rows = 64 * hopper_causal_consumers;
    const int64_t blocks = (p.n_q + rows - 1) / rows;  // of the queries [q_offset, n)
    const int64_t heads = p.walk_heads == nullptr   ? p.heads
                          : p.walk_count != nullptr ? *p.walk_count
                                                    : p.walk_head_count;
    it.head = p.walk_heads != nullptr ? p.walk_heads[item % heads] : static_cast<int>(item % heads);
    it.qblock = static_cast<int>(blocks - 1 - item / heads);
    it.first_row = p.q_offset + static_cast<int64_t>(it.qblock) * rows;
    it.geo = item_geometry_of(p, item, it.head);  // one sequence: q rows from q_offset on
    const int64_t end = it.first_row + rows < p.n ? it.first_row + rows : p.n;
    it.row.tiles = static_cast<int>((end + mask_block - 1) / mask_block);
  } else {
    it.head = p.work_items[2 * item];
    it.qblock = p.work_items[2 * item + 1];
    it.first_row = static_cast<int64_t>(it.qblock) * mask_block;
    it.pivot = p.pivot_slot != nullptr ? p.pivot_slot[it.head] : -1;
    it.geo = item_geometry_of(p, item, it.head);
    it.row = block_row_of<mask_block>(p, it.geo, it.qblock);
  }
  return it;
}

// The launch's work items: p.items, less the walked heads' counted on the device (walk_count):
// the plan's items before theirs, or (causal) their 192-row items; none when the device called
// the launch off (enabled).
template <bool causal>
__device__ __forceinline__ int64_t hopper_work_items(const attention_fwd_params& p) {
  if (p.enabled != nullptr && *p.enabled == 0) return 0;
  if (p.walk_count == nullptr) return p.items;
  const int64_t walked = *p.walk_count;
  if constexpr (causal)
    return walked * (p.items / p.walk_head_count);
  else
    return p.items - walked * (p.items / p.heads);
}

struct hopper_barriers {
  uint64_t* q;        // [q_stages] the item header is published and its Q landed (count 1 + tx)
  uint64_t* q_empty;  // [q_stages] every consumer warp finished with Q and its header (count 8)
  uint64_t* k;        // [stages] K tile landed
  uint64_t* v;        // [stages] V tile landed
  uint64_t* k_empty;  // [stages] every consumer warp finished its Q K^T of the stage (count 8)
  uint64_t* v_empty;  // [stages] every consumer warp finished its P V of the stage (count 8)
};

// One arrival per consumer warp: lane 0 arrives once every lane's earlier shared-memory reads
// (operands of waited-for wgmma) are ordered before it.
__device__ __forceinline__ void warp_arrive(uint64_t* bar, int lane) {
  __syncwarp();
  if (lane == 0) mbarrier_arrive(bar);
}

}  // namespace sp::cuda
