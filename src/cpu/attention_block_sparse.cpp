// CPU block-sparse causal attention: for each (head, query block) work item, visit the key
// blocks of the head's CSR row, compute S = Q K^T on the tile (sgemm), apply the exact causal
// rule on the diagonal tile, and fold the tile into an online softmax (running max m, sum l,
// unnormalised output O). fp32 throughout. Pivot heads additionally record, per query row and
// visited tile, log(sum_j exp(s_ij)) so the exact block attention A falls out at the end
// without a second pass. Positions are absolute, so a chunk (queries from query_offset) and
// each sequence of a varlen batch run the same per-block code.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "attention_checks.h"
#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "tile_math.h"

namespace sp {
namespace {

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

// One sequence: positions are absolute (key j, query i with j <= i); q/out row of query i is
// i - query_offset, lse entry (h, i) at h * lse_stride + i - query_offset.
struct problem {
  attention_shape s;
  int64_t bs = 0, nb = 0;
  int64_t lse_stride = 0;    // tokens of one head's lse row
  const float* q = nullptr;  // [Nq, H, D]
  const float* k = nullptr;  // [N, Hkv, D]
  const float* v = nullptr;  // [N, Hkv, D]
  float* out = nullptr;      // [Nq, H, D]
  float* lse = nullptr;      // [H, lse_stride] or null
  const block_mask* mask = nullptr;
  std::vector<int32_t> pivot_slot;  // [H]: index into block_attention->heads, or -1
  float* block_attention = nullptr;  // [n_pivots, nb, nb]
};

struct scratch {
  std::vector<float> scores;     // [bs, bs]
  std::vector<float> acc;        // [bs, D]
  std::vector<float> row_max;    // [bs]
  std::vector<float> row_sum;    // [bs]
  std::vector<float> tile_logsum;  // [bs, nb]: pivot heads only
  scratch(int64_t bs, int64_t d, int64_t nb, bool pivots)
      : scores(static_cast<size_t>(bs * bs)),
        acc(static_cast<size_t>(bs * d)),
        row_max(static_cast<size_t>(bs)),
        row_sum(static_cast<size_t>(bs)),
        tile_logsum(pivots ? static_cast<size_t>(bs * nb) : 0) {}
};

// One query block r of head h.
void attend_query_block(const problem& p, scratch& w, int64_t h, int64_t r) {
  const int64_t d = p.s.dim, bs = p.bs, H = p.s.heads, Hkv = p.s.kv_heads;
  const int64_t kh = h / p.s.group(), n = p.s.n_keys();
  const int64_t i0 = r * bs, rows = std::min(bs, n - i0), q0 = i0 - p.s.query_offset;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int32_t slot = p.pivot_slot[static_cast<size_t>(h)];
  float* S = w.scores.data();
  float* O = w.acc.data();
  std::fill(w.acc.begin(), w.acc.begin() + rows * d, 0.0f);
  std::fill(w.row_max.begin(), w.row_max.begin() + rows, neg_inf);
  std::fill(w.row_sum.begin(), w.row_sum.begin() + rows, 0.0f);

  const float* q_block = p.q + (q0 * H + h) * d;
  for (int64_t t = p.mask->row_begin(h, r); t < p.mask->row_end(h, r); ++t) {
    const int64_t c = p.mask->col_idx[static_cast<size_t>(t)];
    const int64_t j0 = c * bs, cols = std::min(bs, n - j0);
    const float* k_block = p.k + (j0 * Hkv + kh) * d;
    const float* v_block = p.v + (j0 * Hkv + kh) * d;
    tile_math::gemm_abt(S, bs, q_block, H * d, k_block, Hkv * d, rows, cols, d, scale);
    for (int64_t i = 0; i < rows; ++i) {
      float* s_row = S + i * bs;
      // Exact causal rule: key j0+j is visible to query i0+i iff j0+j <= i0+i.
      const int64_t visible = std::min(cols, i0 + i - j0 + 1);
      for (int64_t j = std::max<int64_t>(visible, 0); j < cols; ++j) s_row[j] = neg_inf;
      if (visible <= 0) {  // whole tile row masked (cannot happen for valid causal tiles)
        if (slot >= 0) w.tile_logsum[static_cast<size_t>(i * p.nb + c)] = neg_inf;
        continue;
      }
      const float tile_max = *std::max_element(s_row, s_row + visible);
      const float m_new = std::max(w.row_max[i], tile_max);
      tile_math::exp_shifted_inplace(s_row, cols, m_new);
      float tile_sum = 0.0f;
      for (int64_t j = 0; j < visible; ++j) tile_sum += s_row[j];
      const float correction = std::exp(w.row_max[i] - m_new);
      w.row_sum[i] = w.row_sum[i] * correction + tile_sum;
      w.row_max[i] = m_new;
      if (correction != 1.0f) {
        float* o_row = O + i * d;
        for (int64_t e = 0; e < d; ++e) o_row[e] *= correction;
      }
      if (slot >= 0) w.tile_logsum[static_cast<size_t>(i * p.nb + c)] = m_new + std::log(tile_sum);
    }
    tile_math::gemm_ab_accumulate(O, d, S, bs, v_block, Hkv * d, rows, d, cols);
  }

  for (int64_t i = 0; i < rows; ++i) {
    float* o_dst = p.out + ((q0 + i) * H + h) * d;
    const float l = w.row_sum[i];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int64_t e = 0; e < d; ++e) o_dst[e] = O[i * d + e] * inv;
    const float lse = l > 0.0f ? w.row_max[i] + std::log(l) : neg_inf;
    if (p.lse) p.lse[h * p.lse_stride + q0 + i] = lse;
    w.row_max[i] = lse;  // reused below for the block attention
  }

  if (slot < 0) return;
  float* a_row = p.block_attention + (static_cast<int64_t>(slot) * p.nb + r) * p.nb;
  std::fill(a_row, a_row + p.nb, 0.0f);
  for (int64_t t = p.mask->row_begin(h, r); t < p.mask->row_end(h, r); ++t) {
    const int64_t c = p.mask->col_idx[static_cast<size_t>(t)];
    double mass = 0.0;
    for (int64_t i = 0; i < rows; ++i) {
      const float lse = w.row_max[i];
      if (lse == neg_inf) continue;
      mass += std::exp(static_cast<double>(w.tile_logsum[static_cast<size_t>(i * p.nb + c)]) - lse);
    }
    a_row[c] = static_cast<float>(mass / static_cast<double>(rows));
  }
}

const float* as_fp32(const tensor_view& t, std::vector<float>& storage) {
  if (t.type == dtype::f32) return t.as<const float>();
  storage.resize(static_cast<size_t>(t.numel()));
  convert_to_fp32(storage.data(), t);
  return storage.data();
}

// Work items (sequence, head, query block) in the given order on the pool, one scratch per
// worker sized for the longest head dim and block grid.
struct work_item {
  int64_t seq, head, row;
};

void run_items(const std::vector<problem>& problems, const std::vector<work_item>& order,
               thread_pool& pool) {
  int64_t nb = 0;
  bool any_pivot = false;
  for (const problem& p : problems) {
    nb = std::max(nb, p.nb);
    any_pivot = any_pivot || p.block_attention != nullptr;
  }
  const tile_math::blas_thread_scope one_blas_thread(1);  // the pool parallelises over tiles
  std::vector<scratch> workers;
  workers.reserve(static_cast<size_t>(pool.size()));
  const problem& p0 = problems[0];
  for (int w = 0; w < pool.size(); ++w) workers.emplace_back(p0.bs, p0.s.dim, nb, any_pivot);
  pool.parallel_for(static_cast<int64_t>(order.size()), [&](int64_t i, int worker) {
    const work_item& it = order[static_cast<size_t>(i)];
    attend_query_block(problems[static_cast<size_t>(it.seq)],
                       workers[static_cast<size_t>(worker)], it.head, it.row);
  });
}

}  // namespace

void attention_block_sparse(const tensor_view& out, const tensor_view& lse,
                            const block_attention_output* block_attention, const tensor_view& q,
                            const tensor_view& k, const tensor_view& v, const block_mask& mask,
                            thread_pool& pool, int64_t query_offset) {
  const char* fn = "attention_block_sparse";
  problem p;
  p.s = attention_shape_of(fn, q, k, v, query_offset);
  check_attention_outputs(fn, p.s, out, lse);
  check(mask.heads == p.s.heads, fn, "mask has ", mask.heads, " heads, q has ", p.s.heads);
  check(mask.n_tokens == p.s.n_keys(), fn, "mask is for ", mask.n_tokens, " tokens, k has ",
        p.s.n_keys());
  check(query_offset % mask.block_size == 0, fn, "query_offset=", query_offset,
        " is not a multiple of the block size ", mask.block_size,
        " (a chunk starts on a block boundary)");
  mask.validate();
  p.bs = mask.block_size;
  p.nb = mask.n_blocks;
  p.mask = &mask;
  p.lse_stride = p.s.n;
  p.out = out.as<float>();
  p.lse = lse.empty() ? nullptr : lse.as<float>();
  p.pivot_slot.assign(static_cast<size_t>(p.s.heads), -1);
  if (block_attention && !block_attention->heads.empty()) {
    check(block_attention->values != nullptr, fn, "block_attention.values is null");
    for (size_t i = 0; i < block_attention->heads.size(); ++i) {
      const int32_t h = block_attention->heads[i];
      check(h >= 0 && h < p.s.heads, fn, "block-attention head ", h, " out of range [0, ",
            p.s.heads, ")");
      check(i == 0 || block_attention->heads[i - 1] < h, fn,
            "block-attention heads must be ascending and unique (", h, " follows ",
            block_attention->heads[i - 1], ")");
      p.pivot_slot[static_cast<size_t>(h)] = static_cast<int32_t>(i);
    }
    p.block_attention = block_attention->values;
  }
  std::vector<float> q32, k32, v32;
  p.q = as_fp32(q, q32);
  p.k = as_fp32(k, k32);
  p.v = as_fp32(v, v32);

  // Work items (head, query block) of the chunk's blocks, longest rows first so dense pivot
  // rows do not form a tail.
  const int64_t r0 = query_offset / p.bs;
  std::vector<work_item> order;
  order.reserve(static_cast<size_t>(p.s.heads * (p.nb - r0)));
  for (int64_t h = 0; h < p.s.heads; ++h)
    for (int64_t r = r0; r < p.nb; ++r) order.push_back({0, h, r});
  auto row_len = [&](const work_item& it) {
    return mask.row_end(it.head, it.row) - mask.row_begin(it.head, it.row);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](const work_item& a, const work_item& b) { return row_len(a) > row_len(b); });
  run_items(std::vector<problem>{p}, order, pool);
}

void attention_block_sparse_varlen(const tensor_view& out, const tensor_view& lse,
                                   const tensor_view& q, const tensor_view& k, const tensor_view& v,
                                   const std::vector<int32_t>& cu_seqlens,
                                   const std::vector<block_mask>& masks, thread_pool& pool) {
  const char* fn = "attention_block_sparse_varlen";
  const attention_shape s = attention_shape_of(fn, q, k, v);
  check_attention_outputs(fn, s, out, lse);
  check_cu_seqlens(fn, cu_seqlens, s.n);
  const varlen_plan plan = varlen_plan_build(cu_seqlens, masks);
  check(plan.heads == s.heads, fn, "masks have ", plan.heads, " heads, q has ", s.heads);
  std::vector<float> q32, k32, v32;
  const float* q_all = as_fp32(q, q32);
  const float* k_all = as_fp32(k, k32);
  const float* v_all = as_fp32(v, v32);
  std::vector<problem> problems(masks.size());
  for (size_t b = 0; b < masks.size(); ++b) {
    problem& p = problems[b];
    const varlen_sequence& seq = plan.sequences[b];
    p.s = s;
    p.s.n = seq.n_tokens;
    p.bs = plan.block_size;
    p.nb = seq.n_blocks;
    p.mask = &masks[b];
    p.lse_stride = s.n;
    p.q = q_all + seq.token0 * s.heads * s.dim;
    p.k = k_all + seq.token0 * s.kv_heads * s.dim;
    p.v = v_all + seq.token0 * s.kv_heads * s.dim;
    p.out = out.as<float>() + seq.token0 * s.heads * s.dim;
    p.lse = lse.empty() ? nullptr : lse.as<float>() + seq.token0;
    p.pivot_slot.assign(static_cast<size_t>(s.heads), -1);
  }
  std::vector<work_item> order(static_cast<size_t>(plan.work_items()));
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = {plan.item_sequence[i], plan.schedule[2 * i], plan.schedule[2 * i + 1]};
  run_items(problems, order, pool);
}

}  // namespace sp
