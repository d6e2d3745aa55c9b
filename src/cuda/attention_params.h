// Kernel-boundary parameters of the block-sparse attention forward: one plain struct of device
// pointers, 64-bit sizes and strides (in elements), filled by the launcher from the public
// tensor views, the layer plan (layer_plan_view.h) and the kernel's scratch (the counterpart of
// FA3's Flash_fwd_params). No CUDA types, so host code reads it.
#pragma once

#include <cstdint>

#include "shareprefill/varlen_plan.h"

namespace sp::cuda {

// Positions inside a sequence are absolute (the causal rule compares them); item_geometry
// (block_iter.cuh) maps them to rows of the packed tensors: one sequence (sequences == null)
// whose queries may start at q_offset (a chunk), or a varlen batch (one row range each).
struct attention_fwd_params {
  const void* q = nullptr;  // q: [Nq, H, D]; element (i, h, d) at i*q_token_stride + h*D + d
  const void* k = nullptr;  // k: [N, Hkv, D]; (j, kh, d) at j*k_token_stride + kh*D + d
  const void* v = nullptr;  // v: [N, Hkv, D]; like k with v_token_stride
  void* out = nullptr;      // out: [Nq, H, D]; same dtype as q, out_token_stride
  float* lse = nullptr;     // lse: [H, Nq] natural-log log-sum-exp, or null
  int64_t q_token_stride = 0, k_token_stride = 0, v_token_stride = 0, out_token_stride = 0;
  int64_t n = 0;       // rows of k and v (one sequence: its keys = its absolute end)
  int64_t n_q = 0;     // rows of q and out (one sequence: n - q_offset)
  int64_t q_offset = 0;  // one sequence: absolute position of q row 0 (a multiple of 128)
  int64_t items = 0;     // work items of the schedule
  int32_t heads = 0;   // query heads H
  int32_t group = 1;   // H / Hkv: query head h reads KV head h / group
  int32_t n_blocks = 0;  // mask blocks of 128 tokens: ceil(N / 128)
  float scale_log2 = 0.0f;  // log2(e) / sqrt(D): scores enter exp2 in base 2

  // The plan (read only).
  const int64_t* row_ptr = nullptr;    // row_ptr: [H * (n_blocks + 1)], absolute into col_idx
  const int32_t* col_idx = nullptr;    // col_idx: [col_capacity], ascending within a row
  const int32_t* work_items = nullptr;  // work_items: [items, 2] (head, query block),
                                        // ordered by tile count, longest row first
  // The causal walk (Hopper, D = 64) over some heads only: walk_heads: [walk_head_count] query
  // heads, every one of its 192-row items; null: every head.
  const int32_t* walk_heads = nullptr;
  int32_t walk_head_count = 0;
  // Walked heads counted on the device (a device planner's plan; Hopper kernel only): walk_count:
  // [1] the heads walked, at most walk_head_count (then only a bound) of walk_heads. The plan's
  // launch runs its schedule's first items - *walk_count * (items / heads) items, the walk
  // launch *walk_count heads. Null: the counts above are exact.
  const int32_t* walk_count = nullptr;
  // enabled: [1] on the device, 0 = the launch runs no item (a deferred pivot nobody needs:
  // layer_plan_view::run_if); null: it runs.
  const int32_t* enabled = nullptr;
  // Varlen batches: the sequences and each work item's sequence (null for one sequence); a
  // sequence's rows of head h start at row_ptr[sequences[b].row_ptr0 + h * (nb_b + 1)].
  const varlen_sequence* sequences = nullptr;  // sequences: [B]
  const int32_t* item_sequence = nullptr;      // item_sequence: [items]

  // Block attention of pivot heads (DESIGN.md 2F); all null when the plan has no pivot slots.
  const int32_t* pivot_slot = nullptr;  // pivot_slot: [H], index into block_attention or -1
  const int64_t* scratch_offset = nullptr;  // scratch_offset: [H]; tile p's row masses live at
                                            // tile_mass[(scratch_offset[h] + p) * 128 ...]
  float* tile_mass = nullptr;  // tile_mass: [scratch tiles, 128] base-2 log of each row's mass
                               // in a tile (the caller's scratch)
  // block_attention: [max_pivots, n_blocks, n_blocks]; the kernel writes every column of each
  // pivot head's rows (zeros for unvisited tiles), slots without a pivot head stay untouched.
  float* block_attention = nullptr;
};

constexpr int mask_block = 128;  // rows of one work item = the mask's block size

}  // namespace sp::cuda
