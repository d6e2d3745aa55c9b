// Pivot pattern extraction (DESIGN.md section 2G) and the tile coverage ratio used as the
// pivot's vs_ratio (section 2C). The coverage counts every valid tile once; the reference also
// sums duplicate and padding entries, which inflates the ratio above 1 at long lengths.
#include <algorithm>
#include <numeric>

#include "shareprefill/planner.h"

namespace sp {

std::vector<tile> pivot_pattern_tiles(const float* a, int64_t n_blocks, double gamma) {
  std::vector<tile> tiles{{0, 0}};
  std::vector<int32_t> order;
  for (int32_t r = 0; r < n_blocks; ++r) {
    const float* ar = a + static_cast<int64_t>(r) * n_blocks;
    order.resize(static_cast<size_t>(r + 1));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t x, int32_t y) { return ar[x] > ar[y]; });
    double running = 0.0;
    size_t kept = 0;
    while (kept < order.size() && running < gamma) {
      if (ar[order[kept]] <= 0.0f) break;  // the row never reaches gamma: keep the positive mass
      running += ar[order[kept]];
      tiles.emplace_back(r, order[kept]);
      ++kept;
    }
  }
  std::sort(tiles.begin(), tiles.end());
  tiles.erase(std::unique(tiles.begin(), tiles.end()), tiles.end());
  return tiles;
}

double tile_coverage_ratio(const float* a, int64_t n_blocks, const std::vector<tile>& tiles) {
  std::vector<uint8_t> seen(static_cast<size_t>(n_blocks * n_blocks), 0);
  double covered = 0.0, total = 0.0;
  for (const tile& t : tiles) {
    if (t.first < 0 || t.first >= n_blocks || t.second < 0 || t.second > t.first) continue;
    const int64_t i = static_cast<int64_t>(t.first) * n_blocks + t.second;
    if (seen[static_cast<size_t>(i)]) continue;
    seen[static_cast<size_t>(i)] = 1;
    covered += a[i];
  }
  for (int64_t i = 0; i < n_blocks * n_blocks; ++i) total += a[i];
  return total > 0.0 ? covered / total : 0.0;
}

double last_row_coverage(const std::vector<tile>& pattern, const float* v_blk, int64_t n_blocks) {
  std::vector<uint8_t> in_row(static_cast<size_t>(n_blocks), 0);
  for (const tile& t : pattern)
    if (t.first == n_blocks - 1 && t.second >= 0 && t.second < n_blocks)
      in_row[static_cast<size_t>(t.second)] = 1;
  double covered = 0.0;
  for (int64_t c = 0; c < n_blocks; ++c)
    if (in_row[static_cast<size_t>(c)]) covered += v_blk[c];
  return covered;
}

}  // namespace sp
