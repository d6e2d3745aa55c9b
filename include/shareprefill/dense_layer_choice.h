// Which layers a sparse mode should leave dense: the offline step `shareprefill calibrate
// --dense-layers-pick K` runs after clustering. A single-layer ablation of perplexity on the
// calibration windows: with every layer sparse (the planner parameters and cluster map given)
// the perplexity is P0; with only layer l dense it is P_l; l's gain is 100 (P0 - P_l) / P0
// percent. The chosen layers are the K largest gains of at least a minimum. On SmolLM2 at 8K the
// loss of sparse attention sits in one or two layers (docs/RESULTS.md), so two dense layers
// recover most of it for a small density cost.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "shareprefill/cluster_map.h"
#include "shareprefill/llama_model.h"
#include "shareprefill/planner.h"
#include "shareprefill/thread_pool.h"

namespace sp {

struct dense_layer_gain {
  int64_t layer = 0;
  double ppl = 0.0;       // perplexity with only this layer dense
  double gain_pct = 0.0;  // 100 (P0 - ppl) / P0
};

struct dense_layer_settings {
  std::vector<int64_t> candidates;  // layers to try, ascending; empty = every layer
  int64_t count = 2;                // at most this many layers are chosen
  double min_gain_pct = 0.1;        // a chosen layer cuts perplexity by at least this
  rope_scaling_options rope;        // of the windows' prefills (beyond the trained context)
  // The candidates, or every layer of a model of `layers` layers when none are listed.
  std::vector<int64_t> layers_to_try(int64_t layers) const;
};

struct dense_layer_choice {
  double sparse_ppl = 0.0;              // P0: every layer sparse
  std::vector<dense_layer_gain> gains;  // one per candidate, ascending layer
  std::vector<int64_t> chosen;          // ascending
  // The record kept in the cluster map's calibration block ("dense_layer_selection").
  nlohmann::json to_json(const dense_layer_settings& settings, const planner_params& params,
                         int64_t windows, int64_t window_tokens) const;
};

// The largest gains first (ties: the lower layer), at most `count`, each >= min_gain_pct;
// returned ascending. Throws on count < 0.
std::vector<int64_t> pick_dense_layers(const std::vector<dense_layer_gain>& gains, int64_t count,
                                       double min_gain_pct);

// Runs the ablation on `windows` (token sequences of one length, each scored as `eval ppl`
// scores a window: its second half) in params.mode (params.dense_layers is replaced), then picks.
// progress(done, total, label) is called after each configuration's windows. Throws on no
// windows, a candidate out of range or a mode other than vslash / flexprefill / shareprefill.
dense_layer_choice choose_dense_layers(
    const llama_weights& weights, thread_pool& pool,
    const std::vector<std::vector<int32_t>>& windows, const planner_params& params,
    const cluster_map* clusters, const dense_layer_settings& settings,
    const std::function<void(int64_t done, int64_t total, const std::string& label)>& progress =
        {});

// The layers a sparse mode runs dense: `spec` (a --dense-layers list, "none" = none) when it is
// not blank, else the dense layers of `map` (validated against layers x heads) when a map is
// given, else none. The map's dense heads (format 2) and per-head gammas (format 3) come with its
// dense layers, under the same rule. from_map tells which.
struct dense_layers_resolution {
  std::vector<int64_t> layers;
  std::vector<std::pair<int64_t, int64_t>> heads;  // (layer, head), ascending
  std::vector<head_gamma> head_gammas;             // ascending (layer, head)
  bool from_map = false;
};
dense_layers_resolution resolve_dense_layers(const std::string& spec, const cluster_map* map,
                                             int64_t layers, int64_t heads);

}  // namespace sp
