// Per-head error measures (issue 17): Spearman's rank correlation, the error a head adds to the
// residual stream after the output projection, and the probe that records both next to the
// plain relative error on the dense model's activations.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/eval_heads.h"
#include "shareprefill/planned_layer.h"
#include "head_error_views.h"

namespace sp {
namespace {

// Average ranks (1-based), ties share the mean of their positions.
std::vector<double> average_ranks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> rank(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    const double r = 0.5 * double(i + j) + 1.0;
    for (size_t m = i; m <= j; ++m) rank[order[m]] = r;
    i = j + 1;
  }
  return rank;
}

}  // namespace

double spearman_rank_correlation(const std::vector<double>& x, const std::vector<double>& y) {
  const char* fn = "spearman_rank_correlation";
  check(x.size() == y.size(), fn, "x has ", x.size(), " values, y ", y.size());
  check(x.size() >= 2, fn, "need at least 2 pairs, got ", x.size());
  for (size_t i = 0; i < x.size(); ++i)
    check(std::isfinite(x[i]) && std::isfinite(y[i]), fn, "pair ", i, " is not finite: (", x[i],
          ", ", y[i], ")");
  const std::vector<double> rx = average_ranks(x), ry = average_ranks(y);
  const double n = double(x.size()), mean = (n + 1.0) / 2.0;
  double sxy = 0.0, sxx = 0.0, syy = 0.0;
  for (size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mean) * (ry[i] - mean);
    sxx += (rx[i] - mean) * (rx[i] - mean);
    syy += (ry[i] - mean) * (ry[i] - mean);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
}

void head_output_errors(double* err, const tensor_view& out, const tensor_view& ref,
                        const float* wo, int64_t dim, int64_t first_token) {
  const char* fn = "head_output_errors";
  check_head_error_views(fn, out, ref, first_token);
  check(wo != nullptr && dim > 0, fn, "wo must be a [dim, H*D] matrix with dim > 0, got dim ", dim);
  const int64_t n = out.shape[0], heads = out.shape[1], d = out.shape[2];
  const float* o = out.as<float>();
  const float* r = ref.as<float>();
  // ||Wo_h x||^2 = x^T G_h x with G_h = Wo_h^T Wo_h ([D, D]), so the per-token cost is D^2.
  std::vector<double> g(static_cast<size_t>(d * d)), diff(static_cast<size_t>(d));
  for (int64_t h = 0; h < heads; ++h) {
    std::fill(g.begin(), g.end(), 0.0);
    for (int64_t row = 0; row < dim; ++row) {
      const float* w = wo + row * heads * d + h * d;
      for (int64_t a = 0; a < d; ++a)
        for (int64_t b = 0; b < d; ++b) g[static_cast<size_t>(a * d + b)] += double(w[a]) * w[b];
    }
    double sum = 0.0;
    for (int64_t t = first_token; t < n; ++t) {
      const size_t base = static_cast<size_t>((t * heads + h) * d);
      for (int64_t e = 0; e < d; ++e) diff[static_cast<size_t>(e)] = double(o[base + e]) - r[base + e];
      for (int64_t a = 0; a < d; ++a) {
        double ga = 0.0;
        for (int64_t b = 0; b < d; ++b) ga += g[static_cast<size_t>(a * d + b)] * diff[static_cast<size_t>(b)];
        sum += diff[static_cast<size_t>(a)] * ga;
      }
    }
    err[h] = std::sqrt(std::max(sum, 0.0));
  }
}

head_error_probe::head_error_probe(const planner& pl, const llama_weights& w) : pl_(pl), w_(w) {
  check(pl.layers() == w.config.n_layers && pl.heads() == w.config.n_heads, "head_error_probe",
        "the planner is for ", pl.layers(), " x ", pl.heads(), " heads, the model has ",
        w.config.n_layers, " x ", w.config.n_heads);
}

void head_error_probe::begin_prompt(int64_t n_tokens) {
  n_tokens_ = n_tokens;
  residual_layer_ = -1;
  state_.reset();
  rows_.clear();
}

void head_error_probe::observe_residual(int64_t layer, const float* x) {
  const int64_t dim = w_.config.dim;
  double s = 0.0;
  for (int64_t t = n_tokens_ / 2; t < n_tokens_; ++t)
    for (int64_t e = 0; e < dim; ++e) s += double(x[t * dim + e]) * x[t * dim + e];
  residual_layer_ = layer;
  residual_norm_ = std::sqrt(s);
}

layer_attention_report head_error_probe::attend(int64_t layer, const tensor_view& out,
                                                const tensor_view& q, const tensor_view& k,
                                                const tensor_view& v, thread_pool& pool) {
  const char* fn = "head_error_probe::attend";
  check(residual_layer_ == layer, fn, "the residual stream entering layer ", layer,
        " was not observed: set prefill_options::on_hidden to call observe_residual");
  const int64_t n = q.shape[0], heads = q.shape[1], d = q.shape[2];
  const block_mask dense = block_mask::dense_causal(n, pl_.params().block_size, heads);
  attention_block_sparse(out, {}, nullptr, q, k, v, dense, pool);
  planned_out_.resize(static_cast<size_t>(out.numel()));
  const tensor_view cand = tensor_view::contiguous(planned_out_.data(), dtype::f32, {n, heads, d});
  const planned_layer p = attend_planned_layer(pl_, state_, layer, cand, q, k, v, pool);
  std::vector<double> rel(static_cast<size_t>(heads)), abs_out(rel.size());
  head_relative_errors(rel.data(), cand, out, n / 2);
  head_output_errors(abs_out.data(), cand, out, w_.layers[static_cast<size_t>(layer)].wo.data(),
                     w_.config.dim, n / 2);
  for (int64_t h = 0; h < heads; ++h) {
    head_error_row row;
    row.layer = layer;
    row.head = h;
    row.kind = p.kind_of(static_cast<int32_t>(h));
    row.density = p.mask_of(static_cast<int32_t>(h)).head_density(h);
    row.rel_err = rel[static_cast<size_t>(h)];
    row.out_err = residual_norm_ > 0 ? abs_out[static_cast<size_t>(h)] / residual_norm_
                                     : abs_out[static_cast<size_t>(h)];
    rows_.push_back(row);
  }
  layer_attention_report r;
  r.layer = layer;
  r.tiles = dense.total_tiles();
  r.causal_tiles = dense.total_tiles();
  r.kind_counts[static_cast<size_t>(head_kind::dense)] = heads;
  return r;
}

}  // namespace sp
