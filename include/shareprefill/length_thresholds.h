// Planner settings per prompt length (issue 17): the cluster map's "thresholds" (format 4; format
// 5 adds pivot_is_medoid, format 6 dense_heads, format 7 exact_last_row and last_row_gamma) lists
// entries in ascending from_tokens, the first from 0; a prompt of n tokens takes the last entry
// with from_tokens <= n. An entry sets only the settings it names; the others keep the planner
// parameters' values. Its dense heads are run dense on top of the planner parameters' own (a head's
// worth dense depends on the length).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "shareprefill/planner_params.h"

namespace sp {

struct length_thresholds {
  int64_t from_tokens = 0;              // applies to prompts of at least this many tokens
  std::optional<double> tau_sim;        // in (0, 1]
  std::optional<double> tau_qa;         // in (0, 1]
  std::optional<int64_t> min_budget;    // tokens, >= 1
  std::optional<bool> pivot_is_medoid;  // each shared cluster's medoid as its pivot (format 5)
  // More heads to run dense at these lengths (format 6): (layer, head), ascending, no repeats.
  std::vector<std::pair<int64_t, int64_t>> dense_heads;
  std::optional<bool> exact_last_row;    // planner_params::exact_last_row (format 7)
  std::optional<double> last_row_gamma;  // planner_params::last_row_gamma, in (0, 1] (format 7)
};

// The entry for a prompt of `n_tokens` tokens: the last one with from_tokens <= n_tokens, or
// nullptr when `list` is empty. `list` must be ascending in from_tokens, starting at 0 (as the
// cluster map reader checks); throws sp::error on n_tokens < 0.
const length_thresholds* thresholds_for_length(const std::vector<length_thresholds>& list,
                                               int64_t n_tokens);

// `params` with the thresholds `t` names replaced (the others as they were), and t's dense heads
// added to params.dense_heads (dropped from params.head_gammas: a dense head plans no gamma).
planner_params with_thresholds(planner_params params, const length_thresholds& t);

// "for >= 16384 tokens: tau_sim 0.1, tau_qa 0.2, min_budget 2048, medoid pivots, 10 more dense
// heads, exact last row, last_row_gamma 0.99", for progress lines.
std::string describe_thresholds(const length_thresholds& t);

}  // namespace sp
