// Vertical-slash tiles (DESIGN.md section 2D): forced sink column and main diagonal, top-k key
// blocks of the vertical block profile and top-k block diagonals of the slash block profile; the
// last row's cover in the same vertical order (exact_last_row).
// As in the reference, the forced column and diagonal are ranked first and count within the
// budgets nV and nS; ties between equal profile values go to the lower index.
#include <algorithm>
#include <numeric>

#include "shareprefill/error.h"
#include "shareprefill/planner.h"

namespace sp {

std::vector<int32_t> top_k_forced(const float* x, int64_t n, int64_t k, int64_t forced) {
  check(n > 0 && k >= 1 && k <= n, "top_k_forced", "k must be in [1, ", n, "], got ", k);
  check(forced >= 0 && forced < n, "top_k_forced", "forced index ", forced, " not in [0, ", n, ")");
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto before = [&](int32_t a, int32_t b) {
    if (a == forced || b == forced) return a == forced && b != forced;
    if (x[a] != x[b]) return x[a] > x[b];
    return a < b;
  };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
  idx.resize(static_cast<size_t>(k));
  return idx;
}

std::vector<tile> vertical_slash_tiles(const float* v_blk, const float* s_blk, int64_t n_blocks,
                                       int64_t n_vertical, int64_t n_slash) {
  const char* fn = "vertical_slash_tiles";
  check(n_vertical >= 1 && n_vertical <= n_blocks, fn, "n_vertical ", n_vertical, " not in [1, ",
        n_blocks, "]");
  check(n_slash >= 1 && n_slash <= n_blocks, fn, "n_slash ", n_slash, " not in [1, ", n_blocks,
        "]");
  std::vector<tile> tiles;
  for (int32_t c : top_k_forced(v_blk, n_blocks, n_vertical, 0))
    for (int32_t r = c; r < n_blocks; ++r) tiles.emplace_back(r, c);
  for (int32_t t : top_k_forced(s_blk, n_blocks, n_slash, n_blocks - 1)) {
    const int32_t offset = static_cast<int32_t>(n_blocks - 1) - t;
    for (int32_t r = offset; r < n_blocks; ++r) tiles.emplace_back(r, r - offset);
  }
  std::sort(tiles.begin(), tiles.end());
  tiles.erase(std::unique(tiles.begin(), tiles.end()), tiles.end());
  return tiles;
}

std::vector<tile> last_row_tiles(const float* v_blk, int64_t n_blocks, double gamma) {
  std::vector<tile> tiles;
  if (n_blocks <= 0) return tiles;
  const int32_t last = static_cast<int32_t>(n_blocks - 1);
  double running = 0.0;
  for (int32_t c : top_k_forced(v_blk, n_blocks, n_blocks, 0)) {
    if (running >= gamma) break;
    running += v_blk[c];
    tiles.emplace_back(last, c);
  }
  std::sort(tiles.begin(), tiles.end());
  return tiles;
}

std::vector<tile> causal_tiles(int64_t n_blocks) {
  std::vector<tile> tiles;
  tiles.reserve(static_cast<size_t>(n_blocks * (n_blocks + 1) / 2));
  for (int32_t r = 0; r < n_blocks; ++r)
    for (int32_t c = 0; c <= r; ++c) tiles.emplace_back(r, c);
  return tiles;
}

}  // namespace sp
