// Scoring configurations over fixed windows and the per-head and per-cluster measurements of
// `eval dense-gain` (dense_gain_runs.h).
#include "dense_gain_runs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "eval_windows.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/length_thresholds.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"

namespace sp::cli {

double scored_run::ppl(size_t begin, size_t end) const {
  double s = 0.0;
  int64_t n = 0;
  for (size_t w = begin; w < end; ++w) {
    s += logprob_sum[w];
    n += scored[w];
  }
  return std::exp(-s / double(n));
}

window_scorer::window_scorer(const loaded_model& m, thread_pool& pool,
                             const cuda_llama_weights* gpu_weights,
                             std::vector<std::vector<int32_t>> windows,
                             const rope_scaling_options& rope, int64_t block_size)
    : m_(m), pool_(pool), windows_(std::move(windows)), rope_(rope), block_size_(block_size) {
  check(!windows_.empty(), "window_scorer", "no windows to score");
  if (gpu_weights)
    gpu_ = std::make_unique<cuda_llama_session>(*gpu_weights,
                                                static_cast<int64_t>(windows_[0].size()));
}

window_scorer::~window_scorer() = default;

scored_run window_scorer::score(const planner_params* params, const cluster_map* map) {
  const llama_config& c = m_.weights.config;
  std::unique_ptr<device_planner> dp;
  std::unique_ptr<planner> hp;
  std::unique_ptr<prefill_attention> attention;
  if (params && gpu_) {
    dp = std::make_unique<device_planner>(*params, c.n_layers, c.n_heads, map);
  } else if (params) {
    hp = std::make_unique<planner>(*params, c.n_layers, c.n_heads, map);
    attention = make_planned_attention(*hp);
  } else if (!gpu_) {
    attention = make_dense_attention(block_size_);
  }
  scored_run r;
  for (const std::vector<int32_t>& tokens : windows_) {
    prefill_options po;
    po.attention = attention.get();
    po.rope = rope_;
    const window_score s = gpu_ ? score_window_cuda(*gpu_, tokens, po, dp.get())
                                : score_window(m_.weights, pool_, tokens, po);
    double sum = 0.0;
    for (double l : s.logprobs) sum += l;
    r.logprob_sum.push_back(sum);
    r.scored.push_back(static_cast<int64_t>(s.logprobs.size()));
    r.density += prefill_density(s.prefill) / double(windows_.size());
  }
  if (!params) dense_ = r;
  return r;
}

double window_scorer::change(const scored_run& r, size_t begin, size_t end) const {
  check(!dense_.scored.empty(), "window_scorer::change", "score the dense reference first");
  return 100.0 * (r.ppl(begin, end) / dense_.ppl(begin, end) - 1.0);
}

measured_change compare_runs(const window_scorer& s, const scored_run& base,
                             const scored_run& changed) {
  const size_t all = s.windows(), half = all / 2;
  measured_change m;
  m.gain = s.change(base, 0, all) - s.change(changed, 0, all);
  m.gain_first_half = s.change(base, 0, half) - s.change(changed, 0, half);
  m.gain_second_half = s.change(base, half, all) - s.change(changed, half, all);
  m.cost = changed.density - base.density;
  return m;
}

planner_params with_dense_head(const planner_params& params, int64_t layer, int64_t head) {
  length_thresholds one;  // a settings entry that only adds this dense head
  one.dense_heads = {{layer, head}};
  return with_thresholds(params, one);
}

namespace {

bool runs_dense(const planner_params& p, int64_t layer, int64_t head) {
  return std::binary_search(p.dense_layers.begin(), p.dense_layers.end(), layer) ||
         std::binary_search(p.dense_heads.begin(), p.dense_heads.end(),
                            std::make_pair(layer, head));
}

nlohmann::json change_fields(nlohmann::json row, const window_scorer& s, const scored_run& r,
                             const measured_change& m) {
  row["ppl"] = r.ppl(0, s.windows());
  row["delta_vs_dense_pct"] = s.change(r, 0, s.windows());
  row["density"] = r.density;
  row["gain_points"] = m.gain;
  row["gain_points_halves"] = {m.gain_first_half, m.gain_second_half};
  row["cost_density"] = m.cost;
  return row;
}

}  // namespace

std::vector<head_gain> measure_head_gains(window_scorer& s, const planner_params& base,
                                          const cluster_map* map, const scored_run& base_run,
                                          const std::vector<int64_t>& layers, int64_t heads,
                                          json_lines& out) {
  std::vector<head_ref> candidates;
  for (int64_t l : layers)
    for (int64_t h = 0; h < heads; ++h)
      if (!runs_dense(base, l, h)) candidates.push_back({int32_t(l), int32_t(h)});
  check(!candidates.empty(), "eval dense-gain",
        "every head of --layers runs dense already: nothing to measure");
  std::vector<head_gain> gains;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const head_ref h = candidates[i];
    const planner_params p = with_dense_head(base, h.layer, h.head);
    const scored_run r = s.score(&p, map);
    gains.push_back({h, compare_runs(s, base_run, r)});
    std::fprintf(stderr, "[%zu/%zu] head %d:%d dense: gain %+.4f points, density %+.5f\n", i + 1,
                 candidates.size(), h.layer, h.head, gains.back().change.gain,
                 gains.back().change.cost);
    out.write(change_fields({{"eval", "dense_gain"}, {"layer", h.layer}, {"head", h.head}}, s, r,
                            gains.back().change));
  }
  return gains;
}

cluster_map without_sharing(cluster_map map, const std::vector<std::string>& ids) {
  for (head_cluster& c : map.clusters)
    if (std::find(ids.begin(), ids.end(), c.id) != ids.end()) c.shared = false;
  return map;
}

std::vector<cluster_unsharing> measure_unsharing(window_scorer& s, const planner_params& params,
                                                 const cluster_map& map, const scored_run& base_run,
                                                 json_lines& out) {
  std::vector<cluster_unsharing> result;
  for (const head_cluster& c : map.clusters) {
    if (!c.shared) continue;
    const cluster_map unshared = without_sharing(map, {c.id});
    const scored_run r = s.score(&params, &unshared);
    result.push_back({c.id, compare_runs(s, base_run, r)});
    std::fprintf(stderr, "cluster %s unshared: gain %+.4f points, density %+.5f\n", c.id.c_str(),
                 result.back().change.gain, result.back().change.cost);
    out.write(change_fields({{"eval", "dense_gain_unshare"}, {"cluster", c.id}}, s, r,
                            result.back().change));
  }
  return result;
}

}  // namespace sp::cli
