// Per-head dense choice and per-head settings (issue 17): which heads a sparse mode should compute
// densely or with their own gamma, picked by an error measure on calibration texts under a
// density budget, with the reasons recorded for the cluster map's calibration block and a report.
#pragma once

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shareprefill/cluster_map.h"

namespace sp {

struct head_cost {
  head_ref head;
  double measure = 0.0;  // larger = the head's sparse attention hurts more (e.g. out_err)
  double rel_err = 0.0;  // reported beside it (left out of the record when not finite)
  double density = 0.0;  // the head's sparse density
  // What making the head dense spends of the budget, in head-densities. NAN: 1 - density, the
  // head's own share. A cost measured on the whole model (eval dense-gain) can exceed 1: later
  // layers plan from the dense head's output, and their density moves too.
  double cost = NAN;
};

struct dense_head_pick {
  std::vector<head_ref> heads;  // ascending (layer, head)
  double budget = 0.0;          // in head-densities: sum over picked heads of (1 - density)
  double spent = 0.0;
  nlohmann::json record;  // budget, spent, every picked head with its rank and numbers,
                          // and the best heads left out with the reason
};

// Heads in descending `measure` (ties: lower layer, then head), each taken when its cost
// (`cost`, else 1 - density) still fits the budget (a head that does not fit is skipped, later ones
// may fit); heads whose measure is 0 (nothing to remove, e.g. pivots) are never taken. Throws on a
// negative or non-finite budget, a measure or density that is not finite, a density outside [0, 1],
// or an infinite cost.
dense_head_pick pick_dense_heads(std::vector<head_cost> heads, double budget,
                                 const std::string& measure_name);

// The record of pick_dense_heads (with any fields the caller added) as a Markdown section: the
// rule, the budget, one table row per picked head and per best head left out, each with its
// reason.
std::string dense_head_report_markdown(const nlohmann::json& record);

// The budget that makes whole layers dense: sum of (1 - density) over every head of `layers`.
double dense_layers_cost(const std::vector<head_cost>& heads, const std::vector<int64_t>& layers);

}  // namespace sp

namespace sp {

// Per-head settings (issue 17, format 3): each head plans with the global gamma, with a lower or
// higher gamma of its own, or densely, whichever buys the most predicted loss per density.
// One setting as a calibration probe measured it.
struct head_setting {
  double gamma = 0.0;    // the head's gamma; 0 = dense
  double density = 0.0;  // the head's density under this setting, in [0, 1]
  double measure = 0.0;  // its error measure there (out_err); dense: 0
};

struct head_settings {
  head_ref head;
  // Every setting the head can take (the global gamma's among them). Callers offer gammas other
  // than the global one only to heads that plan from their own budgets (vertical-slash,
  // query-aware): a shared head's pattern is its pivot's, which a per-head gamma does not change.
  std::vector<head_setting> settings;
};

struct head_settings_pick {
  std::vector<head_ref> dense_heads;        // ascending (layer, head)
  std::vector<head_threshold> head_gammas;  // ascending (layer, head); gammas != the global one
  double budget = 0.0, spent = 0.0;         // head-densities above every head's sparsest setting
  nlohmann::json record;                    // rule, budget, every step with its worth
};

// Predicted loss of a head = measure^2 (the single-head ablations of layers 18 and 23 in
// docs/RESULTS.md grow about with the square of out_err). Every head starts at its sparsest
// setting (ties: the lower loss); its upgrades along the lower convex hull of (density, loss) from
// there are steps, each worth its loss removed per density added; steps are taken in descending
// worth while their density fits the budget (a head's steps in order: once one does not fit, its
// later ones are skipped). The result lists the heads that end dense and those that end at a gamma
// other than `global_gamma`. Throws on a negative or non-finite budget, a head without settings,
// or a non-finite or negative measure, or a density or gamma outside [0, 1].
head_settings_pick pick_head_settings(const std::vector<head_settings>& heads, double budget,
                                      double global_gamma);

// The budget that brings the mean head density to `density` from every head's sparsest setting;
// throws when that is below what the sparsest settings already cost or above 1.
double head_settings_budget_for_density(const std::vector<head_settings>& heads, double density);

// The record of pick_head_settings (with any fields the caller added) as a Markdown section.
std::string head_settings_report_markdown(const nlohmann::json& record);

}  // namespace sp
