// Average-linkage (UPGMA) hierarchical clustering on a distance matrix, flat cuts of the tree (at
// a distance or to a cluster count) and the adjusted Rand index used to compare clusterings.
// O(n^3) time and O(n^2) memory, which is instant for a model's few hundred heads. Clusters are
// named by their smallest member; ties in distance merge the lexicographically smallest pair.
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"

namespace sp {
namespace {

struct union_find {
  std::vector<int32_t> parent;
  explicit union_find(int64_t n) : parent(static_cast<size_t>(n)) {
    std::iota(parent.begin(), parent.end(), 0);
  }
  int32_t find(int32_t x) {
    while (parent[static_cast<size_t>(x)] != x) {
      parent[static_cast<size_t>(x)] = parent[static_cast<size_t>(parent[static_cast<size_t>(x)])];
      x = parent[static_cast<size_t>(x)];
    }
    return x;
  }
  void join(int32_t a, int32_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent[static_cast<size_t>(std::max(a, b))] = std::min(a, b);
  }
};

// Applies the first `count` merges and numbers the resulting clusters by smallest member.
std::vector<int32_t> labels_after(const std::vector<linkage_merge>& merges, int64_t n,
                                  int64_t count) {
  union_find uf(n);
  for (int64_t m = 0; m < count; ++m)
    uf.join(merges[static_cast<size_t>(m)].a, merges[static_cast<size_t>(m)].b);
  std::vector<int32_t> labels(static_cast<size_t>(n), -1);
  std::vector<int32_t> label_of_root(static_cast<size_t>(n), -1);
  int32_t next = 0;
  for (int32_t i = 0; i < n; ++i) {
    int32_t& l = label_of_root[static_cast<size_t>(uf.find(i))];
    if (l < 0) l = next++;
    labels[static_cast<size_t>(i)] = l;
  }
  return labels;
}

void check_merges(const char* fn, const std::vector<linkage_merge>& merges, int64_t n) {
  check(n >= 1, fn, "need at least one point, got ", n);
  check(static_cast<int64_t>(merges.size()) == n - 1, fn, "expected ", n - 1, " merges for ", n,
        " points, got ", merges.size());
}

}  // namespace

std::vector<linkage_merge> average_linkage(const distance_matrix& dist) {
  const char* fn = "average_linkage";
  const int64_t n = dist.n;
  check(n >= 1 && static_cast<int64_t>(dist.d.size()) == n * n, fn, "matrix of ", dist.d.size(),
        " entries for n = ", n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double v = dist.at(i, j);
      check(std::isfinite(v) && v >= 0.0, fn, "distance (", i, ", ", j, ") = ", v,
            " is not a finite non-negative number");
      check(v == dist.at(j, i), fn, "matrix is not symmetric at (", i, ", ", j, ")");
    }
  // Active clusters are indexed by their smallest member; d holds cluster-to-cluster distances.
  std::vector<double> d = dist.d;
  std::vector<int64_t> size(static_cast<size_t>(n), 1);
  std::vector<uint8_t> active(static_cast<size_t>(n), 1);
  std::vector<linkage_merge> merges;
  merges.reserve(static_cast<size_t>(n > 0 ? n - 1 : 0));
  for (int64_t step = 0; step + 1 < n; ++step) {
    int64_t best_a = -1, best_b = -1;
    double best = 0.0;
    for (int64_t a = 0; a < n; ++a) {
      if (!active[static_cast<size_t>(a)]) continue;
      for (int64_t b = a + 1; b < n; ++b) {
        if (!active[static_cast<size_t>(b)]) continue;
        const double v = d[static_cast<size_t>(a * n + b)];
        if (best_a < 0 || v < best) {
          best = v;
          best_a = a;
          best_b = b;
        }
      }
    }
    const double na = double(size[static_cast<size_t>(best_a)]);
    const double nb = double(size[static_cast<size_t>(best_b)]);
    for (int64_t k = 0; k < n; ++k) {
      if (!active[static_cast<size_t>(k)] || k == best_a || k == best_b) continue;
      const double v = (na * d[static_cast<size_t>(k * n + best_a)] +
                        nb * d[static_cast<size_t>(k * n + best_b)]) / (na + nb);
      d[static_cast<size_t>(k * n + best_a)] = d[static_cast<size_t>(best_a * n + k)] = v;
    }
    active[static_cast<size_t>(best_b)] = 0;
    size[static_cast<size_t>(best_a)] += size[static_cast<size_t>(best_b)];
    merges.push_back({static_cast<int32_t>(best_a), static_cast<int32_t>(best_b), best,
                      size[static_cast<size_t>(best_a)]});
  }
  return merges;
}

std::vector<int32_t> cut_at_distance(const std::vector<linkage_merge>& merges, int64_t n,
                                     double cut) {
  check_merges("cut_at_distance", merges, n);
  check(std::isfinite(cut) && cut >= 0.0, "cut_at_distance", "cut must be >= 0, got ", cut);
  // Average-linkage heights never decrease, so the merges at or below the cut are a prefix.
  int64_t count = 0;
  while (count < static_cast<int64_t>(merges.size()) &&
         merges[static_cast<size_t>(count)].height <= cut)
    ++count;
  return labels_after(merges, n, count);
}

std::vector<int32_t> cut_to_count(const std::vector<linkage_merge>& merges, int64_t n, int64_t k) {
  check_merges("cut_to_count", merges, n);
  check(k >= 1 && k <= n, "cut_to_count", "cluster count must be in [1, ", n, "], got ", k);
  return labels_after(merges, n, n - k);
}

double adjusted_rand_index(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  check(a.size() == b.size() && !a.empty(), "adjusted_rand_index",
        "labelings must be non-empty and of equal size, got ", a.size(), " and ", b.size());
  std::map<std::pair<int32_t, int32_t>, int64_t> joint;
  std::map<int32_t, int64_t> ca, cb;
  for (size_t i = 0; i < a.size(); ++i) {
    ++joint[{a[i], b[i]}];
    ++ca[a[i]];
    ++cb[b[i]];
  }
  auto pairs = [](int64_t x) { return double(x) * double(x - 1) / 2.0; };
  double index = 0.0, sum_a = 0.0, sum_b = 0.0;
  for (const auto& [k, v] : joint) index += pairs(v);
  for (const auto& [k, v] : ca) sum_a += pairs(v);
  for (const auto& [k, v] : cb) sum_b += pairs(v);
  const double total = pairs(static_cast<int64_t>(a.size()));
  const double expected = total > 0.0 ? sum_a * sum_b / total : 0.0;
  const double max_index = 0.5 * (sum_a + sum_b);
  // Both partitions trivial in the same way (all singletons or one cluster): identical.
  if (max_index == expected) return index == max_index ? 1.0 : 0.0;
  return (index - expected) / (max_index - expected);
}

}  // namespace sp
