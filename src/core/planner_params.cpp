// Planner parameters: validation, derived block budgets, names of modes and head kinds, and the
// JSON record that every report carries.
#include "shareprefill/planner_params.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "shareprefill/error.h"

namespace sp {
namespace {

// [[layer, head, gamma], ...], as the cluster map writes them.
nlohmann::json head_gammas_record(const std::vector<head_gamma>& gammas) {
  nlohmann::json out = nlohmann::json::array();
  for (const head_gamma& g : gammas) out.push_back({g.layer, g.head, g.gamma});
  return out;
}

}  // namespace

const char* plan_mode_name(plan_mode m) {
  switch (m) {
    case plan_mode::dense:
      return "dense";
    case plan_mode::vslash:
      return "vslash";
    case plan_mode::flexprefill:
      return "flexprefill";
    case plan_mode::shareprefill:
      return "shareprefill";
  }
  return "?";
}

plan_mode plan_mode_from_name(const std::string& name) {
  for (plan_mode m :
       {plan_mode::dense, plan_mode::vslash, plan_mode::flexprefill, plan_mode::shareprefill})
    if (name == plan_mode_name(m)) return m;
  fail("plan_mode_from_name", "unknown mode '", name,
       "' (expected dense, vslash, flexprefill or shareprefill)");
}

const char* head_kind_name(head_kind k) {
  switch (k) {
    case head_kind::dense:
      return "dense";
    case head_kind::pivot:
      return "pivot";
    case head_kind::shared:
      return "shared";
    case head_kind::query_aware:
      return "query_aware";
    case head_kind::vertical_slash:
      return "vertical_slash";
    case head_kind::deferred:
      return "deferred";
  }
  return "?";
}

void planner_params::validate() const {
  const char* fn = "planner_params::validate";
  // The upper bound keeps the per-thread [block_size, block_size] score tile small (64 MB).
  check(block_size >= 16 && block_size <= max_block_size && (block_size & (block_size - 1)) == 0,
        fn, "block_size must be a power of two in [16, ", max_block_size, "], got ", block_size);
  const std::pair<const char*, double> thresholds[] = {
      {"gamma", gamma}, {"tau_sim", tau_sim}, {"tau_fb", tau_fb}, {"tau_qa", tau_qa}};
  for (const auto& [name, value] : thresholds)
    check(value > 0.0 && value <= 1.0, fn, name, " must be in (0, 1], got ", value);
  check(min_budget >= 1, fn, "min_budget must be >= 1 token, got ", min_budget);
  check(max_budget == 0 || max_budget >= min_budget, fn, "max_budget (", max_budget,
        " tokens) must be 0 (none) or >= min_budget (", min_budget, ")");
  check(estimation_blocks >= 1 && estimation_blocks <= 4096, fn,
        "estimation_blocks must be in [1, 4096], got ", estimation_blocks);
  check(gate_coverage >= 0.0 && gate_coverage <= 1.0, fn,
        "gate_coverage must be in [0, 1] (0 = off), got ", gate_coverage);
  check(last_row_gamma >= 0.0 && last_row_gamma <= 1.0, fn,
        "last_row_gamma must be in [0, 1] (0 = the head's gamma), got ", last_row_gamma);
  check(gate_bins >= 0 && gate_bins <= 1 << 20, fn, "gate_bins must be in [0, 1048576], got ",
        gate_bins);
  check(!(pivot_is_medoid && pivot_prefers_dense), fn,
        "pivot_is_medoid and pivot_prefers_dense name different pivots; set at most one");
  for (size_t i = 0; i < dense_layers.size(); ++i)
    check(dense_layers[i] >= 0 && (i == 0 || dense_layers[i] > dense_layers[i - 1]), fn,
          "dense_layers must be sorted non-negative layers without duplicates, got ",
          dense_layers[i], " at position ", i);
  for (size_t i = 0; i < dense_heads.size(); ++i)
    check(dense_heads[i].first >= 0 && dense_heads[i].second >= 0 &&
              (i == 0 || dense_heads[i] > dense_heads[i - 1]),
          fn,
          "dense_heads must be sorted non-negative (layer, head) pairs without duplicates, got (",
          dense_heads[i].first, ", ", dense_heads[i].second, ") at position ", i);
  for (size_t i = 0; i < head_gammas.size(); ++i) {
    const head_gamma& g = head_gammas[i];
    check(g.layer >= 0 && g.head >= 0 &&
              (i == 0 || std::make_pair(g.layer, g.head) >
                             std::make_pair(head_gammas[i - 1].layer, head_gammas[i - 1].head)),
          fn,
          "head_gammas must be sorted non-negative (layer, head) pairs without duplicates, got (",
          g.layer, ", ", g.head, ") at position ", i);
    check(g.gamma > 0.0 && g.gamma <= 1.0, fn, "head_gammas: gamma of head (", g.layer, ", ",
          g.head, ") must be in (0, 1], got ", g.gamma);
  }
}

int64_t planner_params::min_blocks() const {
  return (min_budget + block_size - 1) / block_size;
}

int64_t planner_params::max_blocks(int64_t n_blocks) const {
  if (max_budget <= 0) return n_blocks;
  return std::min(n_blocks, (max_budget + block_size - 1) / block_size);
}

nlohmann::json planner_params::to_json() const {
  return {{"mode", plan_mode_name(mode)},
          {"block_size", block_size},
          {"gamma", gamma},
          {"tau_sim", tau_sim},
          {"tau_fb", tau_fb},
          {"tau_qa", tau_qa},
          {"min_budget", min_budget},
          {"max_budget", max_budget > 0 ? nlohmann::json(max_budget) : nlohmann::json(nullptr)},
          {"share_within_layer", share_within_layer},
          {"pivot_is_medoid", pivot_is_medoid},
          {"pivot_prefers_dense", pivot_prefers_dense},
          {"estimation_blocks", estimation_blocks},
          {"gate_bins", gate_bins},
          {"gate_coverage", gate_coverage},
          {"shared_keeps_budget", shared_keeps_budget},
          {"exact_last_row", exact_last_row},
          {"last_row_gamma", last_row_gamma},
          {"dense_layers", dense_layers},
          {"dense_heads", dense_heads},
          {"head_gammas", head_gammas_record(head_gammas)}};
}

}  // namespace sp
