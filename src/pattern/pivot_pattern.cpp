// Pivot pattern extraction (DESIGN.md section 2G), the same rule on a head's measured last row
// (exact_last_row), and the tile coverage ratio used as the pivot's vs_ratio (section 2C). The
// coverage counts every valid tile once; the reference also sums duplicate and padding entries,
// which inflates the ratio above 1 at long lengths.
#include <algorithm>
#include <numeric>

#include "shareprefill/planner.h"

namespace sp {

namespace {

// Appends row r's fewest key blocks c <= r (largest row[c] first) whose mass reaches >= gamma;
// all its positive entries when the row never reaches gamma. row: [r + 1].
void append_row_cover(const float* row, int32_t r, double gamma, std::vector<int32_t>& order,
                      std::vector<tile>& tiles) {
  order.resize(static_cast<size_t>(r + 1));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t x, int32_t y) { return row[x] > row[y]; });
  double running = 0.0;
  for (size_t kept = 0; kept < order.size() && running < gamma; ++kept) {
    if (row[order[kept]] <= 0.0f) break;
    running += row[order[kept]];
    tiles.emplace_back(r, order[kept]);
  }
}

}  // namespace

std::vector<tile> pivot_pattern_tiles(const float* a, int64_t n_blocks, double gamma) {
  std::vector<tile> tiles{{0, 0}};
  std::vector<int32_t> order;
  for (int32_t r = 0; r < n_blocks; ++r)
    append_row_cover(a + static_cast<int64_t>(r) * n_blocks, r, gamma, order, tiles);
  std::sort(tiles.begin(), tiles.end());
  tiles.erase(std::unique(tiles.begin(), tiles.end()), tiles.end());
  return tiles;
}

std::vector<tile> last_row_tiles(const float* v_blk, int64_t n_blocks, double gamma) {
  std::vector<tile> tiles;
  std::vector<int32_t> order;
  if (n_blocks > 0)
    append_row_cover(v_blk, static_cast<int32_t>(n_blocks - 1), gamma, order, tiles);
  std::sort(tiles.begin(), tiles.end());
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
