// Planner thresholds per prompt length: the entry for a length, applying it, describing it.
#include "shareprefill/length_thresholds.h"

#include <algorithm>
#include <sstream>

#include "shareprefill/error.h"

namespace sp {

const length_thresholds* thresholds_for_length(const std::vector<length_thresholds>& list,
                                               int64_t n_tokens) {
  check(n_tokens >= 0, "thresholds_for_length", "prompt length must be >= 0 tokens, got ",
        n_tokens);
  const length_thresholds* found = nullptr;
  for (const length_thresholds& t : list)
    if (t.from_tokens <= n_tokens) found = &t;
  return found;
}

planner_params with_thresholds(planner_params params, const length_thresholds& t) {
  if (t.tau_sim) params.tau_sim = *t.tau_sim;
  if (t.tau_qa) params.tau_qa = *t.tau_qa;
  if (t.min_budget) params.min_budget = *t.min_budget;
  if (t.pivot_is_medoid) params.pivot_is_medoid = *t.pivot_is_medoid;
  if (t.exact_last_row) params.exact_last_row = *t.exact_last_row;
  if (t.last_row_gamma) params.last_row_gamma = *t.last_row_gamma;
  for (const std::pair<int64_t, int64_t>& h : t.dense_heads) {
    auto& d = params.dense_heads;
    const auto at = std::lower_bound(d.begin(), d.end(), h);
    if (at == d.end() || *at != h) d.insert(at, h);
    auto& g = params.head_gammas;
    g.erase(std::remove_if(
                g.begin(), g.end(),
                [&](const head_gamma& x) { return x.layer == h.first && x.head == h.second; }),
            g.end());
  }
  return params;
}

std::string describe_thresholds(const length_thresholds& t) {
  std::ostringstream out;
  out << "for >= " << t.from_tokens << " tokens:";
  const char* sep = " ";
  if (t.tau_sim) out << sep << "tau_sim " << *t.tau_sim, sep = ", ";
  if (t.tau_qa) out << sep << "tau_qa " << *t.tau_qa, sep = ", ";
  if (t.min_budget) out << sep << "min_budget " << *t.min_budget, sep = ", ";
  if (t.pivot_is_medoid)
    out << sep << (*t.pivot_is_medoid ? "medoid pivots" : "first-member pivots"), sep = ", ";
  if (!t.dense_heads.empty()) out << sep << t.dense_heads.size() << " more dense heads", sep = ", ";
  if (t.exact_last_row)
    out << sep << (*t.exact_last_row ? "exact last row" : "estimated last row"), sep = ", ";
  if (t.last_row_gamma) out << sep << "last_row_gamma " << *t.last_row_gamma;
  return out.str();
}

}  // namespace sp
