// Shared attention options and strategy construction for the model subcommands.
#include "attention_options.h"

#include <fstream>

#include "shareprefill/dense_layer_choice.h"
#include "shareprefill/error.h"
#include "shareprefill/layer_list.h"

namespace sp::cli {

planner_options_given add_planner_options(CLI::App* sub, planner_params& p) {
  const char* by_map = " (default: the cluster map's for the prompt length, if it has them)";
  sub->add_option("--gamma", p.gamma, "Pattern threshold gamma")->capture_default_str();
  const CLI::Option* tau_sim =
      sub->add_option("--tau-sim", p.tau_sim,
                      std::string("Similarity (JS distance) threshold") + by_map)
          ->capture_default_str();
  sub->add_option("--tau-fb", p.tau_fb, "Fallback threshold on the pivot's vs_ratio")
      ->capture_default_str();
  const CLI::Option* tau_qa =
      sub->add_option("--tau-qa", p.tau_qa, std::string("Query-aware threshold") + by_map)
          ->capture_default_str();
  sub->add_option("--block-size", p.block_size, "Block size (power of two >= 16)")
      ->capture_default_str();
  const CLI::Option* min_budget = sub->add_option("--min-budget", p.min_budget,
                                                  std::string("Minimum budget in tokens") + by_map)
                                      ->capture_default_str();
  sub->add_option("--max-budget", p.max_budget, "Maximum budget in tokens (0 = none)")
      ->capture_default_str();
  sub->add_flag("--share-within-layer", p.share_within_layer,
                "Share a pivot's pattern inside its own layer (pivots run first)");
  const CLI::Option* pivot_medoid =
      sub->add_flag("--pivot-medoid", p.pivot_is_medoid,
                    std::string("Use each shared cluster's offline medoid as its pivot") + by_map);
  const CLI::Option* pivot_dense =
      sub->add_flag("--pivot-dense", p.pivot_prefers_dense,
                    "Make the first member of a shared cluster that runs dense anyway (dense heads "
                    "or layers) its pivot (host planner only)");
  sub->add_option("--estimation-blocks", p.estimation_blocks,
                  "Query blocks (from the end) the vertical/slash statistics average over (host "
                  "planner only)")
      ->capture_default_str();
  sub->add_option("--gate-bins", p.gate_bins,
                  "Pool the block profiles into this many bins before the sharing gates' JS "
                  "distance, one resolution at every length (0 = the paper's gate)")
      ->capture_default_str();
  sub->add_option("--gate-coverage", p.gate_coverage,
                  "Share only where the pivot's pattern covers at least this much of the head's "
                  "own last-block attention (0 = off; with --tau-sim 1 the only similarity gate)")
      ->capture_default_str();
  sub->add_flag("--shared-keeps-budget", p.shared_keeps_budget,
                "A shared head keeps its own adaptive vertical-slash budgets (the pivot's "
                "pattern is added to them) instead of the minimum budget");
  const CLI::Option* exact_last_row =
      sub->add_flag("--exact-last-row,!--no-exact-last-row", p.exact_last_row,
                    std::string("Every sparse head's last query block also runs the key blocks "
                                "covering gamma of its attention there, measured exactly by the "
                                "statistics (or not)") +
                        by_map);
  const CLI::Option* last_row_gamma =
      sub->add_option("--last-row-gamma", p.last_row_gamma,
                      std::string("The attention mass the exact last row covers (0 = the head's "
                                  "gamma; 1 = the whole last row)") +
                          by_map)
          ->capture_default_str();
  return {{tau_sim, tau_qa, min_budget, pivot_medoid, pivot_dense}, exact_last_row, last_row_gamma};
}

bool thresholds_given(const attention_options& o) {
  for (const CLI::Option* opt : o.given.thresholds)
    if (opt->count() > 0) return true;
  return false;
}

void add_dense_layers_option(CLI::App* sub, std::string& spec) {
  sub->add_option("--dense-layers", spec,
                  "Layers that run dense attention in the sparse modes, e.g. 0-2,11-29 (a "
                  "shareprefill pivot there still publishes its pattern)");
}

void add_attention_options(CLI::App* sub, attention_options& o) {
  sub->add_option("--mode", o.mode, "dense | vslash | flexprefill | shareprefill")
      ->capture_default_str();
  sub->add_option("--clusters", o.clusters,
                  "Cluster map JSON (default: the shipped map of the model, if any)");
  add_dense_layers_option(sub, o.dense_layers);
  o.given = add_planner_options(sub, o.params);
}

std::string default_cluster_map_path(const std::string& model_path) {
  const std::string root = SP_SOURCE_DIR;
  std::ifstream f(root + "/data/models.json");
  if (!f.good()) return "";
  const nlohmann::json models = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (!models.is_object() || !models.contains("models")) return "";
  const std::string base = model_path.substr(model_path.find_last_of('/') + 1);
  for (const auto& [key, entry] : models["models"].items()) {
    if (entry.value("file", "") != base || !entry.contains("clusters")) continue;
    const std::string path = root + "/" + entry["clusters"].get<std::string>();
    return std::ifstream(path).good() ? path : "";
  }
  return "";
}

attention_setup make_attention(const attention_options& o, const std::string& mode,
                               const llama_config& config, const std::string& model_path,
                               int64_t prompt_tokens) {
  attention_setup s;
  s.mode = mode;
  if (mode == "dense") {
    // The spec and the planner options are checked in every mode, dense included (--gamma 7 is
    // an error even where it would be ignored).
    o.params.validate();
    s.dense_layers = parse_layer_list(o.dense_layers, config.n_layers, "--dense-layers");
    s.attention = make_dense_attention(o.params.block_size);
    return s;
  }
  planner_params params = o.params;
  params.mode = plan_mode_from_name(mode);
  const bool planner_map = params.mode == plan_mode::shareprefill || !o.clusters.empty();
  const std::string map_path =
      o.clusters.empty() ? default_cluster_map_path(model_path) : o.clusters;
  check(!map_path.empty() || params.mode != plan_mode::shareprefill, "make_attention",
        "shareprefill mode needs a cluster map for model '", config.name,
        "': pass --clusters FILE (make one with `shareprefill calibrate`)");
  // The map: for the planner, or (without --dense-layers) for its dense layers.
  std::unique_ptr<cluster_map> map;
  if (!map_path.empty() && (planner_map || layer_list_blank(o.dense_layers)))
    map = std::make_unique<cluster_map>(cluster_map_load(map_path));
  const dense_layers_resolution dense =
      resolve_dense_layers(o.dense_layers, map.get(), config.n_layers, config.n_heads);
  s.dense_layers = dense.layers;
  s.dense_heads = dense.heads.size();
  s.head_gammas = dense.head_gammas.size();
  if (dense.from_map || !s.dense_layers.empty())
    s.dense_layers_source = dense.from_map ? map_path : "--dense-layers";
  params.dense_layers = s.dense_layers;
  params.dense_heads = dense.heads;
  params.head_gammas = dense.head_gammas;
  if (map && !map->thresholds.empty()) {
    s.thresholds_source = map_path;
    // The list starts at 0 tokens: every length has an entry.
    const length_thresholds& t = *thresholds_for_length(map->thresholds, prompt_tokens);
    if (thresholds_given(o)) {
      s.ignored_entry_dense_heads = t.dense_heads.size();
    } else {
      // A last-row option the user gave takes the place of the entry's setting, one by one.
      length_thresholds entry = t;
      const auto given = [](const CLI::Option* opt) { return opt != nullptr && opt->count() > 0; };
      if (entry.exact_last_row && given(o.given.exact_last_row)) {
        entry.exact_last_row.reset();
        s.last_row_options = o.params.exact_last_row ? "--exact-last-row" : "--no-exact-last-row";
      }
      if (entry.last_row_gamma && given(o.given.last_row_gamma)) {
        entry.last_row_gamma.reset();
        s.last_row_options +=
            (s.last_row_options.empty() ? "" : " and ") + o.given.last_row_gamma->get_name();
      }
      params = with_thresholds(params, entry);
      s.map_thresholds = t;
      check(params.max_budget == 0 || params.max_budget >= params.min_budget, "make_attention",
            "--max-budget ", params.max_budget, " is below the min_budget ", params.min_budget,
            " that ", map_path, " sets ", describe_thresholds(t),
            ": raise --max-budget or give --min-budget");
    }
  }
  params.validate();
  if (planner_map) {
    s.cluster_source = map_path;
    s.clusters = std::move(map);
  }
  s.plan = std::make_unique<planner>(params, config.n_layers, config.n_heads, s.clusters.get());
  s.attention = make_planned_attention(*s.plan);
  return s;
}

std::string describe_dense_layers(const attention_setup& s) {
  std::string text = s.dense_layers.empty() ? "none" : format_layer_list(s.dense_layers);
  if (s.dense_heads > 0) text += " and " + std::to_string(s.dense_heads) + " dense heads";
  if (s.head_gammas > 0) text += ", " + std::to_string(s.head_gammas) + " heads with own gamma";
  if (!s.dense_layers.empty() || s.dense_heads > 0 || s.head_gammas > 0)
    text += " (from " + s.dense_layers_source + ")";
  if (s.map_thresholds) {
    text +=
        "; thresholds from " + s.thresholds_source + " " + describe_thresholds(*s.map_thresholds);
    if (!s.last_row_options.empty())
      text += "; " + s.last_row_options + " given: over the entry's last-row settings";
  } else if (!s.thresholds_source.empty())
    text += "; thresholds of " + s.thresholds_source +
            " ignored (--tau-sim, --tau-qa, --min-budget, --pivot-medoid or --pivot-dense "
            "given)" +
            (s.ignored_entry_dense_heads > 0
                 ? ", with the " + std::to_string(s.ignored_entry_dense_heads) +
                       " dense heads of its entry for this length"
                 : std::string());
  return text;
}

nlohmann::json thresholds_record(const attention_setup& s) {
  if (!s.plan) return nullptr;
  const planner_params& p = s.plan->params();
  return {{"tau_sim", p.tau_sim},
          {"tau_qa", p.tau_qa},
          {"min_budget", p.min_budget},
          {"pivot_is_medoid", p.pivot_is_medoid},
          {"gate_bins", p.gate_bins},
          {"gate_coverage", p.gate_coverage},
          {"shared_keeps_budget", p.shared_keeps_budget},
          {"exact_last_row", p.exact_last_row},
          {"last_row_gamma", p.last_row_gamma},
          {"from_map", s.map_thresholds.has_value()},
          {"from_tokens", s.map_thresholds ? nlohmann::json(s.map_thresholds->from_tokens)
                                           : nlohmann::json(nullptr)},
          {"dense_heads", p.dense_heads.size()}};  // the map's and its entry's (format 6)
}

}  // namespace sp::cli
