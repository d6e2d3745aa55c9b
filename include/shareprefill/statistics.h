// Last-block attention statistics and block pooling (DESIGN.md sections 2A, 2B, 2E): the inputs
// of the online planner. For every query head, the last bs query rows are scored against all N
// keys (scaled by 1/sqrt(D), causal), softmaxed per row in fp32 and reduced to a vertical profile
// (mean probability per key) and a slash profile (mean probability per query-key distance), their
// block sums, and the gamma budgets nV, nS. Heads are processed in parallel, one head's rows at a
// time and streamed over keys (row max/sum first, then accumulation), so the bs x N probability
// matrix of all heads never exists in memory. GQA is native: query head h reads KV head h / g.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"

namespace sp {

// Statistics of one query head from its last query block (or last estimation_blocks blocks).
struct head_statistics {
  int64_t rows = 0;             // min(estimation_blocks * block_size, N): query rows used
  std::vector<float> v_tok;     // [N] mean over rows of P[:, j]
  std::vector<float> s_tok;     // [N] s_tok[t] = (1/rows) * sum of P at query-key distance N-1-t
  std::vector<float> v_blk;     // [nb] v_blk[c] = sum of v_tok over key block c
  std::vector<float> s_blk;     // [nb] s_blk[t] = sum of s_tok over chunk t (offset nb-1-t)
  int64_t vertical_blocks = 0;  // nV in blocks: cover_count(v_tok)//bs + 1, clamped
  int64_t slash_blocks = 0;     // nS in blocks: cover_count(s_tok)//bs + 1, clamped
};

// Parameters of the budget rule of section 2A.
struct budget_rule {
  int64_t block_size = 128;
  double gamma = 0.95;
  int64_t min_blocks = 8;  // minB = ceil(min_budget / bs)
  int64_t max_blocks = 0;  // maxB; <= 0 means nb
  // Query blocks the profiles average over, counted from the end: the last
  // min(estimation_blocks * block_size, N) query rows (1 = section 2A's last block).
  int64_t estimation_blocks = 1;
};

// 1 + the number of largest entries of x whose running sum (descending order, fp64) stays
// <= gamma. x: [n]. This is the token count before the //bs + 1 conversion.
int64_t cover_count(const float* x, int64_t n, double gamma);

// Block budget from a token count: count // block_size + 1, clamped to [min_blocks, max_blocks]
// (max_blocks <= 0 means n_blocks); the result never exceeds n_blocks.
int64_t budget_blocks(int64_t count, const budget_rule& rule, int64_t n_blocks);

// Sums x over consecutive chunks of block_size (last chunk partial). out: [ceil(n/bs)], x: [n].
void block_sum(float* out, const float* x, int64_t n, int64_t block_size);

// Statistics of every query head. q: [N, H, D], k: [N, Hkv, D] (f32/f16/bf16, contiguous).
// Returns one entry per query head. Throws sp::error on bad shapes or rule parameters.
std::vector<head_statistics> last_block_statistics(const tensor_view& q, const tensor_view& k,
                                                   const budget_rule& rule, thread_pool& pool);

// Block mean pooling over tokens: out[b, h, :] = mean of x[t, h, :] over the real tokens t of
// block b (the last block may be partial). out: [ceil(N/bs), X, D] f32; x: [N, X, D].
void block_mean_pool(float* out, const tensor_view& x, int64_t block_size);

// Mean of the last min(bs, N) query rows of each head, scaled by 1/sqrt(D).
// out: [H, D] f32; q: [N, H, D].
void last_rows_mean(float* out, const tensor_view& q, int64_t block_size);

// Query-aware estimate of section 2B for one head: est[c] = softmax over c of
// q_mean . k_pool[c, kv_head, :] (fp32 softmax, computed in fp64). out: [nb];
// q_mean: [D] (already scaled); k_pool: [nb, Hkv, D].
void pooled_block_estimate(float* out, const float* q_mean, const float* k_pool, int64_t n_blocks,
                           int64_t kv_heads, int64_t kv_head, int64_t dim);

}  // namespace sp
