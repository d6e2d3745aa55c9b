// Variable-length batches (issue 16): several prompts packed along the token axis, q/k/v/out
// [total, H, D] with cu_seqlens (int32 [B + 1], FlashAttention's varlen layout: sequence b is the
// packed rows [cu_seqlens[b], cu_seqlens[b + 1])), one block mask per sequence, and one schedule
// of the work items (sequence, head, query block) of all sequences, longest row first, so one
// kernel launch (or one CPU thread-pool pass) covers the batch. Each sequence attends causally to
// itself only; its block grid starts at its own first token.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/block_mask.h"

namespace sp {

// One sequence of a batch plan, plain data read by host code and the CUDA kernel alike.
struct varlen_sequence {
  int64_t token0 = 0;    // packed row of its first token in q, k, v, out (cu_seqlens[b])
  int64_t n_tokens = 0;  // its length
  int64_t row_ptr0 = 0;  // index into the batch row_ptr of (head 0, query block 0)
  int64_t n_blocks = 0;  // ceil(n_tokens / block_size); head h's rows start at row_ptr0 + h*(nb+1)
};

// Throws sp::error naming fn unless cu_seqlens has B + 1 >= 2 entries, starts at 0, is strictly
// ascending (no empty sequence) and ends at total_tokens (the rows of the packed tensors).
void check_cu_seqlens(const char* fn, const std::vector<int32_t>& cu_seqlens, int64_t total_tokens);

// The host plan of a batch: the masks' CSR concatenated (row_ptr absolute into col_idx) and the
// schedule over every (sequence, head, query block), most tiles first. Items are ordered by
// floor(tiles / tie_band) descending, then by sequence, then by tiles descending (stable: then
// head, block order): tie_band = 1 is plain longest-first with ties in sequence order; a wider
// band keeps one sequence's items of similar length together, so the items in flight share one
// sequence's K/V in the cache instead of reading B of them.
struct varlen_plan {
  int64_t heads = 0, block_size = 0, total_tokens = 0;
  std::vector<varlen_sequence> sequences;  // [B]
  std::vector<int64_t> row_ptr;            // [sum_b heads * (nb_b + 1)]
  std::vector<int32_t> col_idx;            // [total tiles]
  std::vector<int32_t> schedule;           // [work items, 2] (head, query block of its sequence)
  std::vector<int32_t> item_sequence;      // [work items] the sequence of each work item
  int64_t work_items() const { return static_cast<int64_t>(item_sequence.size()); }
};

// masks[b]: sequence b's mask (n_tokens = its length; same heads and block size for all).
// Validates cu_seqlens (against its own last entry) and every mask; throws sp::error naming
// varlen_plan_build and the offending sequence.
// tie_band >= 1 (tiles).
varlen_plan varlen_plan_build(const std::vector<int32_t>& cu_seqlens,
                              const std::vector<block_mask>& masks, int64_t tie_band = 1);

}  // namespace sp
