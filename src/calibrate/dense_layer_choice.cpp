// Dense-layer choice by single-layer perplexity ablation
// (include/shareprefill/dense_layer_choice.h).
#include "shareprefill/dense_layer_choice.h"

#include <algorithm>
#include <cmath>

#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/layer_list.h"
#include "shareprefill/prefill_attention.h"

namespace sp {
namespace {

// Perplexity over the windows with `dense` layers dense and the rest in params.mode.
double windows_perplexity(const llama_weights& w, thread_pool& pool,
                          const std::vector<std::vector<int32_t>>& windows, planner_params params,
                          const cluster_map* clusters, const rope_scaling_options& rope,
                          std::vector<int64_t> dense) {
  params.dense_layers = std::move(dense);
  params.validate();
  const planner pl(params, w.config.n_layers, w.config.n_heads, clusters);
  const std::unique_ptr<prefill_attention> attention = make_planned_attention(pl);
  std::vector<double> logprobs;
  for (const auto& tokens : windows) {
    prefill_options po;
    po.attention = attention.get();
    po.rope = rope;
    const window_score s = score_window(w, pool, tokens, po);
    logprobs.insert(logprobs.end(), s.logprobs.begin(), s.logprobs.end());
  }
  return perplexity_from_logprobs(logprobs);
}

}  // namespace

std::vector<int64_t> dense_layer_settings::layers_to_try(int64_t layers) const {
  if (!candidates.empty()) return candidates;
  std::vector<int64_t> all;
  for (int64_t l = 0; l < layers; ++l) all.push_back(l);
  return all;
}

std::vector<int64_t> pick_dense_layers(const std::vector<dense_layer_gain>& gains, int64_t count,
                                       double min_gain_pct) {
  check(count >= 0, "pick_dense_layers", "count must be >= 0, got ", count);
  std::vector<dense_layer_gain> order = gains;
  std::stable_sort(
      order.begin(), order.end(), [](const dense_layer_gain& a, const dense_layer_gain& b) {
        return a.gain_pct > b.gain_pct || (a.gain_pct == b.gain_pct && a.layer < b.layer);
      });
  std::vector<int64_t> chosen;
  for (const auto& g : order)
    if (static_cast<int64_t>(chosen.size()) < count && g.gain_pct >= min_gain_pct)
      chosen.push_back(g.layer);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

nlohmann::json dense_layer_choice::to_json(const dense_layer_settings& settings,
                                           const planner_params& params, int64_t windows,
                                           int64_t window_tokens) const {
  nlohmann::json per_layer = nlohmann::json::array();
  for (const auto& g : gains)
    per_layer.push_back({{"layer", g.layer},
                         {"ppl", std::round(g.ppl * 1e4) / 1e4},
                         {"gain_pct", std::round(g.gain_pct * 1e3) / 1e3}});
  return {{"method", "single-layer perplexity ablation, second half of each window scored"},
          {"mode", plan_mode_name(params.mode)},
          {"gamma", params.gamma},
          {"windows", windows},
          {"window_tokens", window_tokens},
          {"count", settings.count},
          {"min_gain_pct", settings.min_gain_pct},
          {"sparse_ppl", std::round(sparse_ppl * 1e4) / 1e4},
          {"gains", per_layer},
          {"chosen", chosen}};
}

dense_layer_choice choose_dense_layers(
    const llama_weights& weights, thread_pool& pool,
    const std::vector<std::vector<int32_t>>& windows, const planner_params& params,
    const cluster_map* clusters, const dense_layer_settings& settings,
    const std::function<void(int64_t, int64_t, const std::string&)>& progress) {
  const char* fn = "choose_dense_layers";
  const int64_t layers = weights.config.n_layers;
  check(!windows.empty(), fn, "no calibration windows");
  check(params.mode != plan_mode::dense, fn, "the ablation needs a sparse mode");
  const std::vector<int64_t> candidates = settings.layers_to_try(layers);
  for (int64_t l : candidates)
    check(l >= 0 && l < layers, fn, "candidate layer ", l, " out of range [0, ", layers, ")");
  const int64_t total = static_cast<int64_t>(candidates.size()) + 1;
  dense_layer_choice out;
  out.sparse_ppl = windows_perplexity(weights, pool, windows, params, clusters, settings.rope, {});
  if (progress) progress(1, total, "every layer sparse");
  for (size_t i = 0; i < candidates.size(); ++i) {
    const int64_t l = candidates[i];
    dense_layer_gain g;
    g.layer = l;
    g.ppl = windows_perplexity(weights, pool, windows, params, clusters, settings.rope, {l});
    g.gain_pct = 100.0 * (out.sparse_ppl - g.ppl) / out.sparse_ppl;
    out.gains.push_back(g);
    if (progress) progress(static_cast<int64_t>(i) + 2, total, str("layer ", l, " dense"));
  }
  out.chosen = pick_dense_layers(out.gains, settings.count, settings.min_gain_pct);
  return out;
}

dense_layers_resolution resolve_dense_layers(const std::string& spec, const cluster_map* map,
                                             int64_t layers, int64_t heads) {
  dense_layers_resolution r;
  if (!layer_list_blank(spec) || map == nullptr) {
    r.layers = parse_layer_list(spec, layers, "--dense-layers");
    return r;
  }
  map->validate(layers, heads);
  r.layers = map->dense_layers;
  for (const head_ref& h : map->dense_heads) r.heads.emplace_back(h.layer, h.head);
  for (const head_threshold& g : map->head_gammas)
    r.head_gammas.push_back(head_gamma{g.head.layer, g.head.head, g.gamma});
  r.from_map = !r.layers.empty() || !r.heads.empty() || !r.head_gammas.empty();
  return r;
}

}  // namespace sp
