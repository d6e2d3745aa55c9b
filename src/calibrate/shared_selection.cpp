// Which clusters take part in sharing (DESIGN.md section 3): a cluster is shared when it has at
// least two members, the members are similar on every calibration input (mean pairwise distance
// <= cut on each input's own matrix, not only on the average) and vertical-slash does not
// already serve them (mean coverage of a member's exact block attention by its own adaptive
// vertical-slash tiles < tau_fb, the idea of section 2C). Also picks each cluster's medoid.
#include <algorithm>
#include <cstdio>

#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"

namespace sp {
namespace {

double mean_pairwise(const distance_matrix& m, const std::vector<int32_t>& members) {
  double sum = 0.0;
  int64_t count = 0;
  for (size_t i = 0; i < members.size(); ++i)
    for (size_t j = i + 1; j < members.size(); ++j) {
      sum += m.at(members[i], members[j]);
      ++count;
    }
  return count > 0 ? sum / double(count) : 0.0;
}

int32_t medoid_of(const distance_matrix& m, const std::vector<int32_t>& members) {
  int32_t best = members.front();
  double best_sum = 0.0;
  for (size_t i = 0; i < members.size(); ++i) {
    double sum = 0.0;
    for (int32_t other : members) sum += m.at(members[i], other);
    if (i == 0 || sum < best_sum) {
      best = members[i];
      best_sum = sum;
    }
  }
  return best;
}

std::string fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

}  // namespace

std::vector<cluster_verdict> judge_clusters(const std::vector<int32_t>& labels,
                                            const std::vector<distance_matrix>& per_input,
                                            const distance_matrix& mean,
                                            const std::vector<calibration_input>& inputs,
                                            const calibration_settings& settings) {
  const char* fn = "judge_clusters";
  const int64_t n = static_cast<int64_t>(labels.size());
  check(per_input.size() == inputs.size() && !inputs.empty(), fn, per_input.size(),
        " distance matrices for ", inputs.size(), " inputs");
  check(mean.n == n, fn, "mean matrix of ", mean.n, " heads for ", n, " labels");
  int32_t k = 0;
  for (int32_t l : labels) {
    check(l >= 0 && l < n, fn, "label ", l, " out of range [0, ", n, ")");
    k = std::max(k, l + 1);
  }
  std::vector<cluster_verdict> out(static_cast<size_t>(k));
  for (int32_t i = 0; i < n; ++i) out[static_cast<size_t>(labels[static_cast<size_t>(i)])].members.push_back(i);
  for (size_t c = 0; c < out.size(); ++c) {
    cluster_verdict& v = out[c];
    check(!v.members.empty(), fn, "cluster ", c, " has no member (labels must be 0..k-1)");
    v.medoid = medoid_of(mean, v.members);
    double coverage = 0.0;
    for (size_t x = 0; x < inputs.size(); ++x) {
      v.mean_distance.push_back(mean_pairwise(per_input[x], v.members));
      for (int32_t m : v.members) coverage += inputs[x].vs_coverage[static_cast<size_t>(m)];
    }
    v.mean_vs_coverage = coverage / double(v.members.size() * inputs.size());
    if (v.members.size() < 2) {
      v.reason = "singleton";
      continue;
    }
    for (size_t x = 0; x < inputs.size() && v.reason.empty(); ++x)
      if (v.mean_distance[x] > settings.cut)
        v.reason = "not similar on " + inputs[x].label() + " (mean distance " +
                   fixed(v.mean_distance[x]) + " > cut " + fixed(settings.cut) + ")";
    if (v.reason.empty() && v.mean_vs_coverage >= settings.tau_fb)
      v.reason = "vertical-slash covers " + fixed(v.mean_vs_coverage) + " >= tau_fb " +
                 fixed(settings.tau_fb);
    v.shared = v.reason.empty();
  }
  return out;
}

}  // namespace sp
