// Per-head dense choice (issue 17): which heads a sparse mode should compute densely, picked by
// an error measure on calibration texts under a density budget, with the reasons recorded for
// the cluster map's calibration block and calibrate's report.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shareprefill/cluster_map.h"

namespace sp {

struct head_cost {
  head_ref head;
  double measure = 0.0;  // larger = the head's sparse attention hurts more (e.g. out_err)
  double rel_err = 0.0;  // reported beside it
  double density = 0.0;  // the head's sparse density; making it dense costs 1 - density
};

struct dense_head_pick {
  std::vector<head_ref> heads;  // ascending (layer, head)
  double budget = 0.0;          // in head-densities: sum over picked heads of (1 - density)
  double spent = 0.0;
  nlohmann::json record;        // budget, spent, every picked head with its rank and numbers,
                                // and the best heads left out with the reason
};

// Heads in descending `measure` (ties: lower layer, then head), each taken when its cost
// 1 - density still fits the budget (a head that does not fit is skipped, later ones may fit);
// heads whose measure is 0 (nothing to remove, e.g. pivots) are never taken.
// Throws on a negative or non-finite budget, a measure or density that is not finite, or a
// density outside [0, 1].
dense_head_pick pick_dense_heads(std::vector<head_cost> heads, double budget,
                                 const std::string& measure_name);

// The record of pick_dense_heads (with any fields the caller added) as a Markdown section: the
// rule, the budget, one table row per picked head and per best head left out, each with its
// reason.
std::string dense_head_report_markdown(const nlohmann::json& record);

// The budget that makes whole layers dense: sum of (1 - density) over every head of `layers`.
double dense_layers_cost(const std::vector<head_cost>& heads, const std::vector<int64_t>& layers);

}  // namespace sp
