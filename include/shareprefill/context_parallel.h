// Context parallelism, part 2 (issue 19): R ranks computing one layer's block-sparse attention,
// simulated in one process. The plan is computed once (on the rank holding the last query block,
// which has the last-block statistics) and handed to every rank; rank r restricts it to its query
// blocks (context_partition.h) and runs the unchanged kernel on that sub-plan. Rows of other
// ranks get no tiles, so the kernel writes 0 / -inf there and the rank's rows are copied out.
// Two ways the keys reach a rank:
//   all_gather: every rank holds all of K and V (vLLM's and SGLang's prefill context
//               parallelism); a row is computed whole, so the result equals the one-call
//               result bit for bit, pivots' block attention A included.
//   ring:       key chunk c (the key blocks of rank c's query blocks) visits every rank; rank r
//               computes its rows against each chunk (sub-plan: its rows, the chunk's columns) and
//               merges the partial outputs by their LSE (merge_attention_states). No block
//               attention (A needs each row's full normaliser): the plan's pivots are rejected.
// The byte model says what a real run moves per layer (context_comm_bytes).
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/attention.h"
#include "shareprefill/block_mask.h"
#include "shareprefill/context_partition.h"
#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"

namespace sp {

enum class context_kv_exchange : uint8_t { all_gather, ring };
const char* context_kv_exchange_name(context_kv_exchange x);

// [nb] bytes, 1 where `rank` owns the query block.
std::vector<uint8_t> context_rank_rows(const context_partition& p, int64_t rank);

// The tiles of `mask` whose query block r has rows[r] != 0 and key block c has cols[c] != 0
// (cols empty: every column). rows, cols: [nb]. Same shape as mask; other rows are empty.
block_mask block_mask_restrict(const block_mask& mask, const std::vector<uint8_t>& rows,
                               const std::vector<uint8_t>& cols = {});

// Query blocks of `rank` as maximal runs [begin, end) of consecutive blocks.
struct block_run {
  int64_t begin = 0, end = 0;
};
std::vector<block_run> context_rank_runs(const context_partition& p, int64_t rank);

// CPU simulation of p.ranks ranks, one after another, each with attention_block_sparse on its
// sub-plan(s), rows copied into out / lse / block_attention. Arguments as attention_block_sparse
// (out [N, H, D] f32, lse [H, N] f32 or empty, block_attention null or its heads' A). ring with
// block_attention != null throws. all_gather: equal bit for bit to one attention_block_sparse
// call over `mask`; ring: within the merge's fp32 rounding of it.
void context_parallel_attention(const tensor_view& out, const tensor_view& lse,
                                const block_attention_output* block_attention, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v, const block_mask& mask,
                                const context_partition& p, context_kv_exchange exchange,
                                thread_pool& pool);

// Bytes of a plan in the layout of layer_plan_view.h, arrays sized to what is used (no
// alignment padding): kinds [H] u8, row_ptr [H(nb+1)] i64, col_idx [tiles] i32, schedule [H nb 2]
// i32, pivot_slot [H] i32, scratch_offset [H] i64. `rows` (optional, [nb]): only those query
// blocks (row_ptr and schedule of the rows, col_idx of their tiles, the per-head arrays whole):
// what a rank needs of the plan.
int64_t context_plan_bytes(const block_mask& mask, const std::vector<uint8_t>& rows = {});

// What one layer moves between ranks in a real run, bytes received by each rank ([ranks] each).
// Token ownership is `tokens` (zigzag: who projected Q/K/V); attention rows go by `attention`.
//   kv:   K and V of the tokens the rank does not own (all-gather; the ring moves the same bytes)
//   qo:   Q of the blocks it computes but does not own, and O of the blocks it owns but another
//         rank computed (the balanced split's moved blocks)
//   plan: the whole plan from the planning rank (owner of the last block) to every other rank
//   block_attention: the pivots' A rows [nb] f32 computed elsewhere, to the planning rank
struct context_comm {
  std::vector<int64_t> kv, qo, plan, block_attention;
  int64_t total(int64_t rank) const;
  int64_t max_total() const;  // the busiest rank's bytes
};
// elem_bytes: bytes of a Q/K/V/O element (2 for bf16). pivots: heads producing A.
context_comm context_comm_bytes(const block_mask& mask, int64_t kv_heads, int64_t dim,
                                int64_t elem_bytes, int64_t pivots, const context_partition& tokens,
                                const context_partition& attention);

}  // namespace sp
