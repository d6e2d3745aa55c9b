// Attention error against dense on the real model's activations: per-head relative output error,
// recall of the dense attention mass by the chosen tiles, and the probe strategy that runs dense
// attention (passed on to the model) and every candidate planner on the same q, k, v.
#include <algorithm>
#include <cmath>

#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/planned_layer.h"
#include "head_error_views.h"
#include "probe_rows.h"

namespace sp {

void check_head_error_views(const char* fn, const tensor_view& out, const tensor_view& ref,
                            int64_t first_token) {
  check(out.rank == 3 && ref.rank == 3 && out.type == dtype::f32 && ref.type == dtype::f32, fn,
        "out and ref must be f32 [N, H, D]");
  for (int i = 0; i < 3; ++i)
    check(out.shape[i] == ref.shape[i], fn, "shape mismatch in dimension ", i, ": ", out.shape[i],
          " vs ", ref.shape[i]);
  check(out.is_contiguous() && ref.is_contiguous(), fn, "out and ref must be contiguous");
  const int64_t n = out.shape[0];
  check(first_token >= 0 && first_token < n, fn, "first_token ", first_token, " outside [0, ", n,
        ")");
}

void head_relative_errors(double* err, const tensor_view& out, const tensor_view& ref,
                          int64_t first_token) {
  check_head_error_views("head_relative_errors", out, ref, first_token);
  const int64_t n = out.shape[0], heads = out.shape[1], d = out.shape[2];
  const float* o = out.as<float>();
  const float* r = ref.as<float>();
  for (int64_t h = 0; h < heads; ++h) {
    double diff = 0.0, norm = 0.0;
    for (int64_t t = first_token; t < n; ++t)
      for (int64_t e = 0; e < d; ++e) {
        const size_t i = static_cast<size_t>((t * heads + h) * d + e);
        diff += (double(o[i]) - r[i]) * (double(o[i]) - r[i]);
        norm += double(r[i]) * r[i];
      }
    err[h] = norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
  }
}

double tile_recall(const float* a, const block_mask& mask, int64_t head) {
  check(head >= 0 && head < mask.heads, "tile_recall", "head ", head, " outside [0, ", mask.heads,
        ")");
  const int64_t nb = mask.n_blocks, bs = mask.block_size, n = mask.n_tokens;
  double kept = 0.0;
  for (int64_t r = 0; r < nb; ++r) {
    const int64_t rows = std::min(bs, n - r * bs);
    double row = 0.0;
    for (int64_t i = mask.row_begin(head, r); i < mask.row_end(head, r); ++i)
      row += a[r * nb + mask.col_idx[static_cast<size_t>(i)]];
    kept += double(rows) * row;
  }
  return kept / double(n);
}

void append_probe_rows(std::vector<probe_row>& rows, size_t candidate, int64_t layer,
                       const tensor_view& cand, const tensor_view& ref, const float* a,
                       int64_t nb, const std::function<const block_mask&(int64_t)>& mask_of,
                       const std::function<head_kind(int64_t)>& kind_of) {
  const int64_t n = ref.shape[0], heads = ref.shape[1];
  std::vector<double> err(static_cast<size_t>(heads)), err_half(err.size());
  head_relative_errors(err.data(), cand, ref);
  head_relative_errors(err_half.data(), cand, ref, n / 2);
  for (int64_t h = 0; h < heads; ++h) {
    const block_mask& m = mask_of(h);
    check(m.n_blocks == nb && m.heads == heads, "append_probe_rows", "the candidate's mask has ",
          m.heads, " heads x ", m.n_blocks, " blocks, the layer ", heads, " x ", nb);
    probe_row row;
    row.candidate = candidate;
    row.layer = layer;
    row.head = h;
    row.kind = kind_of(h);
    row.rel_err = err[static_cast<size_t>(h)];
    row.rel_err_second_half = err_half[static_cast<size_t>(h)];
    row.recall = tile_recall(a + h * nb * nb, m, h);
    row.density = m.head_density(h);
    rows.push_back(row);
  }
}

attention_probe::attention_probe(std::vector<probe_candidate> candidates, int64_t block_size)
    : candidates_(std::move(candidates)), block_size_(block_size) {
  for (const probe_candidate& c : candidates_) {
    check(c.plan != nullptr, "attention_probe", "candidate '", c.mode, "' has no planner");
    check(c.plan->params().block_size == block_size, "attention_probe", "candidate '", c.mode,
          "' uses block size ", c.plan->params().block_size, ", the probe ", block_size);
  }
}

void attention_probe::begin_prompt(int64_t) {
  states_.assign(candidates_.size(), plan_state());
  rows_.clear();
}

layer_attention_report attention_probe::attend(int64_t layer, const tensor_view& out,
                                               const tensor_view& q, const tensor_view& k,
                                               const tensor_view& v, thread_pool& pool) {
  const int64_t n = q.shape[0], heads = q.shape[1], d = q.shape[2];
  const block_mask dense = block_mask::dense_causal(n, block_size_, heads);
  const int64_t nb = dense.n_blocks;
  std::vector<int32_t> all_heads(static_cast<size_t>(heads));
  for (int64_t h = 0; h < heads; ++h) all_heads[static_cast<size_t>(h)] = static_cast<int32_t>(h);
  dense_attn_.assign(static_cast<size_t>(heads * nb * nb), 0.0f);
  const block_attention_output dense_ba{all_heads, dense_attn_.data()};
  attention_block_sparse(out, {}, &dense_ba, q, k, v, dense, pool);

  cand_out_.resize(static_cast<size_t>(out.numel()));
  const tensor_view cand = tensor_view::contiguous(cand_out_.data(), dtype::f32, {n, heads, d});
  for (size_t ci = 0; ci < candidates_.size(); ++ci) {
    const planned_layer p =
        attend_planned_layer(*candidates_[ci].plan, states_[ci], layer, cand, q, k, v, pool);
    append_probe_rows(
        rows_, ci, layer, cand, out, dense_attn_.data(), nb,
        [&](int64_t h) -> const block_mask& { return p.mask_of(static_cast<int32_t>(h)); },
        [&](int64_t h) { return p.kind_of(static_cast<int32_t>(h)); });
  }
  layer_attention_report r;
  r.layer = layer;
  r.tiles = dense.total_tiles();
  r.causal_tiles = heads * causal_tile_count(nb);
  r.kind_counts[static_cast<size_t>(head_kind::dense)] = heads;
  return r;
}

}  // namespace sp
