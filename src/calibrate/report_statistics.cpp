// The paper's two observations as numbers, for both distance metrics: (a) how similar heads are
// to each other (histogram of pairwise similarity = 1 - distance, pairs above 0.5) and (b) how
// stable that similarity is across inputs (Pearson correlation of the similarity matrices, the
// fraction of heads whose nearest other head is unchanged, and the adjusted Rand index of the
// clusterings each input gives on its own).
#include <algorithm>
#include <cmath>

#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"

namespace sp {
namespace {

double pearson(const distance_matrix& a, const distance_matrix& b) {
  double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < a.n; ++i)
    for (int64_t j = i + 1; j < a.n; ++j) {
      const double x = a.at(i, j), y = b.at(i, j);
      sa += x;
      sb += y;
      saa += x * x;
      sbb += y * y;
      sab += x * y;
      ++count;
    }
  if (count == 0) return 0.0;
  const double c = double(count);
  const double cov = sab - sa * sb / c, va = saa - sa * sa / c, vb = sbb - sb * sb / c;
  return va > 0.0 && vb > 0.0 ? cov / std::sqrt(va * vb) : 0.0;
}

// Nearest other head of every head (smallest distance, ties to the lowest index).
std::vector<int64_t> nearest_neighbours(const distance_matrix& m) {
  std::vector<int64_t> nn(static_cast<size_t>(m.n), -1);
  for (int64_t i = 0; i < m.n; ++i) {
    double best = 0.0;
    for (int64_t j = 0; j < m.n; ++j) {
      if (j == i) continue;
      if (nn[static_cast<size_t>(i)] < 0 || m.at(i, j) < best) {
        best = m.at(i, j);
        nn[static_cast<size_t>(i)] = j;
      }
    }
  }
  return nn;
}

}  // namespace

std::vector<metric_report> observation_report(const std::vector<calibration_input>& inputs,
                                              const calibration_settings& settings) {
  check(!inputs.empty(), "observation_report", "no calibration inputs");
  const int64_t n = inputs[0].head_count();
  for (const auto& in : inputs)
    check(in.head_count() == n, "observation_report", in.label(), " has ", in.head_count(),
          " heads, ", inputs[0].label(), " has ", n);
  settings.validate(n);
  std::vector<metric_report> out;
  for (calib_metric metric : {calib_metric::jaccard, calib_metric::js}) {
    metric_report rep;
    rep.metric = metric;
    rep.pairs = n * (n - 1) / 2;
    std::vector<distance_matrix> dist;
    std::vector<std::vector<int64_t>> nn;
    std::vector<std::vector<int32_t>> labels;
    for (const auto& in : inputs) {
      dist.push_back(head_distances(in, metric, settings.gamma));
      const distance_matrix& m = dist.back();
      std::vector<int64_t> hist(10, 0);
      int64_t above = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i + 1; j < n; ++j) {
          const double sim = 1.0 - m.at(i, j);
          ++hist[static_cast<size_t>(std::clamp<int64_t>(int64_t(sim * 10.0), 0, 9))];
          if (sim > 0.5) ++above;
        }
      rep.histogram.push_back(hist);
      rep.pairs_above_half.push_back(above);
      nn.push_back(nearest_neighbours(m));
      const std::vector<linkage_merge> merges = average_linkage(m);
      labels.push_back(settings.clusters > 0 ? cut_to_count(merges, n, settings.clusters)
                                             : cut_at_distance(merges, n, settings.cut));
    }
    for (size_t a = 0; a < inputs.size(); ++a)
      for (size_t b = a + 1; b < inputs.size(); ++b) {
        pair_comparison c;
        c.a = static_cast<int32_t>(a);
        c.b = static_cast<int32_t>(b);
        c.similarity_correlation = pearson(dist[a], dist[b]);
        int64_t same = 0;
        for (int64_t i = 0; i < n; ++i) same += nn[a][static_cast<size_t>(i)] == nn[b][static_cast<size_t>(i)];
        c.nearest_neighbour_agreement = double(same) / double(n);
        c.cluster_ari = adjusted_rand_index(labels[a], labels[b]);
        rep.comparisons.push_back(c);
      }
    for (const auto& c : rep.comparisons) {
      const double k = double(rep.comparisons.size());
      rep.mean_correlation += c.similarity_correlation / k;
      rep.mean_nn_agreement += c.nearest_neighbour_agreement / k;
      rep.mean_ari += c.cluster_ari / k;
    }
    out.push_back(std::move(rep));
  }
  return out;
}

}  // namespace sp
