// Head-to-head distances of one calibration input (DESIGN.md section 3): 1 - Jaccard of the
// heads' gamma-patterns (tile sets as bitsets) and the row-averaged, normalised Jensen-Shannon
// distance of their block-attention matrices; plus the vertical-slash coverage used by the
// shared-cluster selection. Definitions are in include/shareprefill/calibrate.h.
#include <algorithm>
#include <cmath>

#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"
#include "shareprefill/planner.h"

namespace sp {
namespace {

distance_matrix zero_matrix(int64_t n) {
  distance_matrix m;
  m.n = n;
  m.d.assign(static_cast<size_t>(n * n), 0.0);
  return m;
}

void set_pair(distance_matrix& m, int64_t i, int64_t j, double v) {
  m.d[static_cast<size_t>(i * m.n + j)] = v;
  m.d[static_cast<size_t>(j * m.n + i)] = v;
}

}  // namespace

std::vector<std::vector<tile>> gamma_patterns(const calibration_input& in, double gamma) {
  in.validate();
  const int64_t nb = in.n_blocks;
  std::vector<std::vector<tile>> out(static_cast<size_t>(in.head_count()));
  for (int64_t h = 0; h < in.head_count(); ++h)
    out[static_cast<size_t>(h)] =
        pivot_pattern_tiles(in.block_attention.data() + h * nb * nb, nb, gamma);
  return out;
}

distance_matrix jaccard_distances(const std::vector<std::vector<tile>>& patterns,
                                  int64_t n_blocks) {
  const int64_t n = static_cast<int64_t>(patterns.size());
  const int64_t words = (n_blocks * n_blocks + 63) / 64;
  std::vector<uint64_t> bits(static_cast<size_t>(n * words), 0);
  std::vector<int64_t> counts(static_cast<size_t>(n), 0);
  for (int64_t h = 0; h < n; ++h) {
    uint64_t* b = bits.data() + h * words;
    for (const tile& t : patterns[static_cast<size_t>(h)]) {
      check(t.first >= 0 && t.first < n_blocks && t.second >= 0 && t.second <= t.first,
            "jaccard_distances", "head ", h, ": tile (", t.first, ", ", t.second,
            ") is not causal in ", n_blocks, " blocks");
      const int64_t i = int64_t{t.first} * n_blocks + t.second;
      b[i / 64] |= uint64_t{1} << (i % 64);
    }
    for (int64_t w = 0; w < words; ++w) counts[static_cast<size_t>(h)] += __builtin_popcountll(b[w]);
  }
  distance_matrix m = zero_matrix(n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      int64_t common = 0;
      for (int64_t w = 0; w < words; ++w)
        common += __builtin_popcountll(bits[static_cast<size_t>(i * words + w)] &
                                bits[static_cast<size_t>(j * words + w)]);
      const int64_t uni = counts[static_cast<size_t>(i)] + counts[static_cast<size_t>(j)] - common;
      set_pair(m, i, j, uni > 0 ? 1.0 - double(common) / double(uni) : 0.0);
    }
  return m;
}

distance_matrix js_distances(const calibration_input& in) {
  in.validate();
  const int64_t n = in.head_count(), nb = in.n_blocks;
  distance_matrix m = zero_matrix(n);
  if (nb < 2) return m;
  const double scale = 1.0 / (double(nb - 1) * std::sqrt(std::log(2.0)));
  for (int64_t i = 0; i < n; ++i) {
    const float* a = in.block_attention.data() + i * nb * nb;
    for (int64_t j = i + 1; j < n; ++j) {
      const float* b = in.block_attention.data() + j * nb * nb;
      double sum = 0.0;
      for (int64_t r = 1; r < nb; ++r) sum += js_distance(a + r * nb, b + r * nb, r + 1);
      set_pair(m, i, j, std::min(1.0, sum * scale));
    }
  }
  return m;
}

distance_matrix head_distances(const calibration_input& in, calib_metric metric, double gamma) {
  if (metric == calib_metric::js) return js_distances(in);
  return jaccard_distances(gamma_patterns(in, gamma), in.n_blocks);
}

distance_matrix mean_distances(const std::vector<distance_matrix>& per_input) {
  check(!per_input.empty(), "mean_distances", "no distance matrices given");
  distance_matrix m = zero_matrix(per_input[0].n);
  for (const auto& p : per_input) {
    check(p.n == m.n, "mean_distances", "matrix of ", p.n, " heads next to one of ", m.n);
    for (size_t i = 0; i < m.d.size(); ++i) m.d[i] += p.d[i] / double(per_input.size());
  }
  return m;
}

double vs_coverage(const float* a, const float* v_blk, const float* s_blk, int64_t n_blocks,
                   int64_t vertical_blocks, int64_t slash_blocks) {
  const std::vector<tile> tiles =
      vertical_slash_tiles(v_blk, s_blk, n_blocks, vertical_blocks, slash_blocks);
  return tile_coverage_ratio(a, n_blocks, tiles);
}

}  // namespace sp
