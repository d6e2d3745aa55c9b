// Query-aware tiles (DESIGN.md section 2E): softmax over causal key blocks of pooled block
// scores, then a global budget over the flattened lower triangle: the largest entries are kept
// while their running sum (fp64) stays <= gamma * nb. Only lower-triangle entries are ranked, so
// a budget of gamma = 1 can never pick an invalid tile (the reference ranks the whole nb x nb
// grid, where masked zeros could be picked at gamma = 1 through rounding).
#include <algorithm>
#include <cmath>

#include "shareprefill/planner.h"

namespace sp {

std::vector<tile> query_aware_tiles(const float* q_pool, int64_t q_stride, const float* k_pool,
                                    int64_t k_stride, int64_t n_blocks, int64_t dim, double gamma) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  struct entry {
    float p;
    int32_t r, c;
  };
  std::vector<entry> entries;
  entries.reserve(static_cast<size_t>(n_blocks * (n_blocks + 1) / 2));
  std::vector<double> row(static_cast<size_t>(n_blocks));
  for (int32_t r = 0; r < n_blocks; ++r) {
    const float* qr = q_pool + r * q_stride;
    double mx = -HUGE_VAL;
    for (int32_t c = 0; c <= r; ++c) {
      const float* kc = k_pool + c * k_stride;
      float s = 0.0f;
      for (int64_t d = 0; d < dim; ++d) s += qr[d] * kc[d];
      row[c] = s * scale;
      mx = std::max(mx, row[c]);
    }
    double sum = 0.0;
    for (int32_t c = 0; c <= r; ++c) sum += (row[c] = std::exp(row[c] - mx));
    for (int32_t c = 0; c <= r; ++c) entries.push_back({static_cast<float>(row[c] / sum), r, c});
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const entry& a, const entry& b) { return a.p > b.p; });
  std::vector<tile> tiles{{0, 0}};
  const double budget = gamma * static_cast<double>(n_blocks);
  double running = 0.0;
  for (const entry& e : entries) {
    running += e.p;
    if (running > budget) break;
    tiles.emplace_back(e.r, e.c);
  }
  std::sort(tiles.begin(), tiles.end());
  tiles.erase(std::unique(tiles.begin(), tiles.end()), tiles.end());
  return tiles;
}

}  // namespace sp
