// Command-line options shared by the subcommands that run the real model with sparse prefill
// (generate, demo, eval): the attention mode, the cluster map and the planner parameters, and
// the construction of the matching prefill_attention strategy.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "command.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/length_thresholds.h"
#include "shareprefill/llama_config.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"

namespace sp::cli {

// The planner options whose use changes how a cluster map's settings per length apply.
struct planner_options_given {
  // --tau-sim, --tau-qa, --min-budget, --pivot-medoid and --pivot-dense (which excludes medoid
  // pivots): when the user gave any of them (count() > 0) they win and the map's settings per
  // length are ignored.
  std::vector<const CLI::Option*> thresholds;
  // --exact-last-row / --no-exact-last-row and --last-row-gamma: each one given wins over the
  // entry's exact_last_row or last_row_gamma alone (the entry's other settings still apply).
  const CLI::Option* exact_last_row = nullptr;
  const CLI::Option* last_row_gamma = nullptr;
};

// Adds --gamma, --tau-sim, --tau-fb, --tau-qa, --block-size, --min-budget, --max-budget,
// --share-within-layer, --pivot-medoid, --pivot-dense, --estimation-blocks, --gate-bins,
// --gate-coverage, --shared-keeps-budget, --exact-last-row / --no-exact-last-row and
// --last-row-gamma.
planner_options_given add_planner_options(CLI::App* sub, planner_params& params);

struct attention_options {
  std::string mode = "dense";  // dense | vslash | flexprefill | shareprefill
  std::string clusters;        // cluster map JSON; empty = the model's shipped default
  std::string dense_layers;    // --dense-layers spec ("0-2,11-29", "none"); empty = the map's
  planner_params params;
  planner_options_given given;  // as parsed
};

// Whether the user gave --tau-sim, --tau-qa, --min-budget, --pivot-medoid or --pivot-dense.
bool thresholds_given(const attention_options& o);

// Adds --dense-layers (layers that run dense attention in the sparse modes; default: those the
// cluster map's calibration chose).
void add_dense_layers_option(CLI::App* sub, std::string& spec);

// Adds --mode, --clusters, --dense-layers and the planner options.
void add_attention_options(CLI::App* sub, attention_options& o);

// The shipped cluster map of a model file, as data/models.json names it for the file's base
// name, or "" when none is listed or the map does not exist.
std::string default_cluster_map_path(const std::string& model_path);

// Owns the cluster map and planner that a planned strategy refers to.
struct attention_setup {
  std::string mode;
  std::vector<int64_t> dense_layers;  // layers run dense by the sparse modes
  size_t dense_heads = 0;             // heads run dense by the sparse modes (the map's, format 2)
  size_t head_gammas = 0;             // heads planned with their own gamma (the map's, format 3)
  std::string dense_layers_source;    // "--dense-layers", the cluster map's path, or ""
  std::string cluster_source;         // path of the cluster map the planner uses, "" for none
  // The map's settings for the prompt length (formats 4, 5), when they apply; thresholds_source is
  // the map's path when it has thresholds (applied, or ignored for the options given).
  std::optional<length_thresholds> map_thresholds;
  std::string thresholds_source;
  // Dense heads of the map's entry for the prompt length left out with the entry (format 6),
  // when threshold options were given.
  size_t ignored_entry_dense_heads = 0;
  // "--no-exact-last-row", "--exact-last-row and --last-row-gamma", ...: the last-row options
  // that overrode the entry's settings, if any.
  std::string last_row_options;
  std::unique_ptr<cluster_map> clusters;
  std::unique_ptr<planner> plan;
  std::unique_ptr<prefill_attention> attention;
};

// Builds the strategy for `mode` (overriding o.mode) on a model, for prompts of `prompt_tokens`
// tokens; shareprefill mode needs a cluster map (o.clusters or the shipped default) and fails
// clearly without one. The --dense-layers spec is checked against the model's layer count in
// every mode; without it a sparse mode runs dense the layers listed in the cluster map
// (o.clusters or the shipped default, validated against the model), if any. A sparse mode that
// loads a map with settings per length plans with the entry for `prompt_tokens`, unless the
// user gave --tau-sim, --tau-qa, --min-budget, --pivot-medoid or --pivot-dense; a given
// --exact-last-row / --no-exact-last-row or --last-row-gamma wins over the entry's setting.
attention_setup make_attention(const attention_options& o, const std::string& mode,
                               const llama_config& config, const std::string& model_path,
                               int64_t prompt_tokens);

// "18,23 (from PATH)", "none and 18 dense heads (from PATH)", "none", ... for progress lines,
// followed by "; thresholds from PATH for >= 24576 tokens: tau_sim 0.1, ..." when the map's
// thresholds apply (or "; thresholds of PATH ignored (...)" when the options won), and which
// last-row option overrode the entry's, if one did.
std::string describe_dense_layers(const attention_setup& s);

// The settings the planner uses and where they came from, for JSON rows: {"tau_sim", "tau_qa",
// "min_budget", "pivot_is_medoid", "from_map", "from_tokens", "dense_heads" (how many heads run
// dense: the map's and its length entry's)}; null without a planner (dense).
nlohmann::json thresholds_record(const attention_setup& s);

}  // namespace sp::cli
