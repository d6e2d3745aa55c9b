// CPU attention kernels (DESIGN.md section 5). Layout: q [N, H, D], k and v [N, Hkv, D], out
// [N, H, D], lse [H, N] (natural-log log-sum-exp of the scaled scores of each query row).
// GQA is native: query head h reads KV head h / (H / Hkv); K/V are never copied per head.
// Scores are scaled by 1/sqrt(D); the causal rule (key j <= query i) always applies.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"
#include "shareprefill/varlen_plan.h"

namespace sp {

// The oracle: plain loops, fp64 accumulation, no tiling. q/k/v in any dtype (contiguous).
// token_mask (optional): [H, N, N] row-major bytes, nonzero = allowed, and-ed with causality.
// Rows with no allowed key get out = 0 and lse = -inf.
// out: [N, H, D] f32; lse: [H, N] f32 (may be empty).
void attention_reference(const tensor_view& out, const tensor_view& lse, const tensor_view& q,
                         const tensor_view& k, const tensor_view& v,
                         const uint8_t* token_mask = nullptr);

// The oracle for one query row i of every head under an optional block mask (nullptr = dense
// causal): for spot checks of long problems where the full oracle would be O(N^2).
// out_row: [H, D] f32; lse_row: [H] f32 (may be null).
void attention_reference_row(float* out_row, float* lse_row, const tensor_view& q,
                             const tensor_view& k, const tensor_view& v, int64_t i,
                             const block_mask* mask = nullptr);

// Exact block attention A of selected heads (DESIGN.md 2F): A[r, c] = mean over the valid query
// rows of block r of the softmax mass that falls in key block c. Rows sum to 1 (up to rounding)
// over the visited tiles; unvisited tiles are 0.
struct block_attention_output {
  std::vector<int32_t> heads;   // query heads that produce A (ascending, unique)
  float* values = nullptr;      // [heads.size(), nb, nb] row-major, fully overwritten
};

// Tiled online-softmax causal attention over a CSR mask per head, fp32 accumulation,
// multi-threaded over (head, query block) with the longest rows first.
// out: [Nq, H, D] f32; lse: [H, Nq] f32 (may be empty); q: [Nq, H, D], k/v: [N, Hkv, D]: f32,
// f16 or bf16 (contiguous). The mask is over the N keys' block grid (mask.n_tokens = N).
// Chunked prefill (query_offset > 0): q holds the tokens [query_offset, N) of the prompt
// (Nq = N - query_offset), k/v all N tokens (the cache so far plus the chunk); the causal rule
// compares absolute positions, the block grid starts at token 0, so query_offset must be a
// multiple of the block size; mask rows before the chunk are not read. Row i of a chunk equals
// row query_offset + i of the one-shot call on the same mask bit for bit (same tiles, same order).
// Block attention A rows are written for the chunk's query blocks only.
// Throws sp::error on shape mismatches, non-finite inputs, a bad offset or an invalid mask.
void attention_block_sparse(const tensor_view& out, const tensor_view& lse,
                            const block_attention_output* block_attention, const tensor_view& q,
                            const tensor_view& k, const tensor_view& v, const block_mask& mask,
                            thread_pool& pool, int64_t query_offset = 0);

// A variable-length batch (varlen_plan.h) in one thread-pool pass over the work items of all
// sequences, longest row first. q/out: [total, H, D], k/v: [total, Hkv, D] packed by cu_seqlens
// (int32 [B + 1]); lse: [H, total] f32 (may be empty); masks[b]: sequence b's mask. Sequence b's
// rows equal, bit for bit, attention_block_sparse on its own rows with masks[b]. Throws sp::error
// on bad cu_seqlens (not ascending, empty sequences, not ending at total) or masks.
void attention_block_sparse_varlen(const tensor_view& out, const tensor_view& lse,
                                   const tensor_view& q, const tensor_view& k, const tensor_view& v,
                                   const std::vector<int32_t>& cu_seqlens,
                                   const std::vector<block_mask>& masks, thread_pool& pool);

// Shape of an attention problem read off q/k/v, validated (rank 3, heads divisible, same D,
// contiguous, N > 0; k and v have query_offset more tokens than q). fn names the caller.
struct attention_shape {
  int64_t n = 0, heads = 0, kv_heads = 0, dim = 0;  // n: query tokens (rows of q, out and lse)
  int64_t query_offset = 0;                          // absolute position of q's first token
  int64_t n_keys() const { return query_offset + n; }
  int64_t group() const { return heads / kv_heads; }
};
attention_shape attention_shape_of(const char* fn, const tensor_view& q, const tensor_view& k,
                                   const tensor_view& v, int64_t query_offset = 0);

}  // namespace sp
