// Context parallelism, part 1 (issue 19): which rank computes the attention of which query block.
// The prompt's query blocks (128 tokens each) are split over R ranks; a rank's work is the number
// of tiles its rows visit, summed over heads (the plan's per-row tile counts, known before the
// kernel runs). Two splits:
//   zigzag:   the nb blocks in 2R contiguous chunks (sizes differing by at most one block); rank r
//             takes chunks r and 2R-1-r. Balances the dense causal triangle; it is also the token
//             ownership (who projects Q/K/V and runs the MLP of a token), uniform across layers.
//   balanced: starts from zigzag and moves a single block from the most to the least loaded
//             rank (or, when no single block fits, swaps a heavier block of the first for a
//             lighter one of the second) while that lowers the larger of the two loads, until
//             max/mean work <= target or no step helps. Every moved block is a block whose
//             queries and outputs travel between ranks (the ownership of its tokens stays
//             zigzag), so it moves few blocks.
// Imbalance = max rank work / mean rank work (1 = perfect; 1 for zero work).
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/block_mask.h"

namespace sp {

struct context_partition {
  int64_t ranks = 0;
  std::vector<int32_t> owner;  // owner: [nb] rank computing query block b
  std::vector<int64_t> work;   // work: [ranks] tiles of the rank's blocks over all heads

  int64_t n_blocks() const { return static_cast<int64_t>(owner.size()); }
  double imbalance() const;
  // Query blocks of `rank`, ascending.
  std::vector<int32_t> blocks_of(int64_t rank) const;
  // Blocks whose owner differs from `other`'s (same nb and ranks).
  int64_t moved_blocks(const context_partition& other) const;
};

// Per query block: tiles visited over all heads ([nb]).
std::vector<int64_t> context_row_work(const block_mask& mask);
// The dense causal triangle of nb blocks and `heads` heads: block b has heads * (b + 1) tiles.
std::vector<int64_t> context_row_work_dense(int64_t n_blocks, int64_t heads);

// row_work: [nb] non-negative. ranks in [1, 2^20]; nb >= 1. Throws sp::error naming the problem.
context_partition context_partition_zigzag(const std::vector<int64_t>& row_work, int64_t ranks);
// target_imbalance >= 1: stop moving blocks once max/mean work is at most this.
context_partition context_partition_balanced(const std::vector<int64_t>& row_work, int64_t ranks,
                                             double target_imbalance = 1.01);

}  // namespace sp
