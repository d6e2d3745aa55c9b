// The rules of DESIGN.md section 2 on hand-built inputs whose tile sets are known exactly:
// JS distance, top-k with a forced index, vertical-slash tiles and the diagonal-offset mapping,
// the global gamma*nb budget of query-aware tiles, the per-row >= gamma pivot pattern, and the
// vs_ratio coverage that counts each valid tile once. Tile sets are compared as sets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "shareprefill/pivot_publishing.h"
#include "shareprefill/planner.h"
#include "test_util.h"

namespace sp {
namespace {

std::set<tile> as_set(const std::vector<tile>& t) {
  return std::set<tile>(t.begin(), t.end());
}

TEST(JsDistance, KnownValuesAndZeroEntries) {
  const float p[] = {1.0f, 0.0f}, q[] = {0.0f, 1.0f}, u[] = {0.5f, 0.5f};
  EXPECT_NEAR(js_distance(p, p, 2), 0.0, 1e-12);
  // Disjoint supports: JS divergence = ln 2 exactly, distance sqrt(ln 2).
  EXPECT_NEAR(js_distance(p, q, 2), std::sqrt(std::log(2.0)), 1e-12);
  // p = (1, 0), u = (1/2, 1/2): m = (3/4, 1/4); JS = 1/2 ln(4/3) + 1/2 (1/2 ln(2/3) + 1/2 ln 2).
  const double js = 0.5 * std::log(4.0 / 3.0) + 0.25 * std::log(2.0 / 3.0) + 0.25 * std::log(2.0);
  EXPECT_NEAR(js_distance(p, u, 2), std::sqrt(js), 1e-12);
  EXPECT_NEAR(js_distance(u, p, 2), std::sqrt(js), 1e-12);  // symmetric
  EXPECT_FALSE(std::isnan(js_distance(p, u, 2)));
}

TEST(PooledJsDistance, PoolsContiguousBinsAndFallsBackToPlain) {
  const float p[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.0f}, q[] = {0.3f, 0.0f, 0.1f, 0.1f, 0.5f};
  for (int64_t bins : {0, 5, 6}) EXPECT_EQ(pooled_js_distance(p, q, 5, bins), js_distance(p, q, 5));
  // 2 bins of 5 entries: [0, 2) and [2, 5).
  const float p2[] = {0.3f, 0.7f}, q2[] = {0.3f, 0.7f};  // equal once pooled
  EXPECT_NEAR(pooled_js_distance(p, q, 5, 2), js_distance(p2, q2, 2), 1e-7);
  const float p3[] = {0.1f, 0.5f, 0.4f}, q3[] = {0.3f, 0.1f, 0.6f};  // [0, 1) [1, 3) [3, 5)
  EXPECT_NEAR(pooled_js_distance(p, q, 5, 3), js_distance(p3, q3, 3), 1e-7);
}

// The same block attention seen at 4x the blocks (each block's mass split unevenly over its 4
// sub-blocks, differently for the pivot and the candidate): the plain distance grows with the
// blocks, the distance pooled to the coarse length's bins stays, so gate_bins keeps a tau_sim
// that passes at the coarse length passing at the fine one.
TEST(PooledJsDistance, GateMeansTheSameAtFourTimesTheBlocks) {
  const int64_t coarse = 16, fine = 4 * coarse;
  std::vector<float> pc(coarse), qc(coarse), pf(fine), qf(fine);
  const std::vector<float> noise_p = testing::random_values(fine, 11, 0.1f, 1.0f);
  const std::vector<float> noise_q = testing::random_values(fine, 12, 0.1f, 1.0f);
  double sp = 0.0, sq = 0.0;
  for (int64_t c = 0; c < coarse; ++c) {
    pc[c] = 1.0f / static_cast<float>(c + 1);
    qc[c] = 1.0f / static_cast<float>(c + 1) + (c == 3 ? 0.2f : 0.0f);
    sp += pc[c], sq += qc[c];
  }
  for (int64_t c = 0; c < coarse; ++c) {
    pc[c] = static_cast<float>(pc[c] / sp), qc[c] = static_cast<float>(qc[c] / sq);
    double wp = 0.0, wq = 0.0;
    for (int64_t j = 0; j < 4; ++j) wp += noise_p[4 * c + j], wq += noise_q[4 * c + j];
    for (int64_t j = 0; j < 4; ++j) {
      pf[4 * c + j] = static_cast<float>(pc[c] * noise_p[4 * c + j] / wp);
      qf[4 * c + j] = static_cast<float>(qc[c] * noise_q[4 * c + j] / wq);
    }
  }
  const double d_coarse = js_distance(pc.data(), qc.data(), coarse);
  const double d_fine = js_distance(pf.data(), qf.data(), fine);
  ASSERT_GT(d_fine, 2.0 * d_coarse) << "the case must show the distance growing with the blocks";
  EXPECT_NEAR(pooled_js_distance(pf.data(), qf.data(), fine, coarse), d_coarse, 1e-6);

  planner_params params;
  params.tau_sim = 0.5 * (d_coarse + d_fine);
  cluster_slot pivot;
  pivot.pivot_v_blk = pivot.pivot_s_blk = pf;
  EXPECT_FALSE(sharing_gate(params, pivot, qf.data(), qf.data(), fine));
  params.gate_bins = coarse;
  EXPECT_TRUE(sharing_gate(params, pivot, qf.data(), qf.data(), fine));
  params.tau_sim = 0.5 * d_coarse;
  EXPECT_FALSE(sharing_gate(params, pivot, qf.data(), qf.data(), fine));
}

TEST(LastRowCoverage, SumsTheHeadsMassUnderThePatternsLastRow) {
  // nb = 4: the pattern's last row holds key blocks 0 and 2 (and a duplicate of 0); rows above
  // do not count.
  const std::vector<tile> pattern{{0, 0}, {3, 0}, {3, 2}, {2, 1}, {3, 0}};
  const float v[] = {0.5f, 0.25f, 0.125f, 0.125f};
  EXPECT_DOUBLE_EQ(last_row_coverage(pattern, v, 4), 0.625);
  EXPECT_DOUBLE_EQ(last_row_coverage({}, v, 4), 0.0);

  planner_params params;
  params.tau_sim = 1.0;  // the JS gates pass
  cluster_slot pivot;
  pivot.pivot_v_blk.assign(v, v + 4);
  pivot.pivot_s_blk.assign(v, v + 4);
  pivot.pivot_pattern = pattern;
  EXPECT_TRUE(sharing_gate(params, pivot, v, v, 4));  // gate_coverage 0: off
  params.gate_coverage = 0.6;
  EXPECT_TRUE(sharing_gate(params, pivot, v, v, 4));
  params.gate_coverage = 0.7;
  EXPECT_FALSE(sharing_gate(params, pivot, v, v, 4));
  params.gate_coverage = 1.5;
  EXPECT_NE(testing::error_of([&] { params.validate(); }).find("gate_coverage must be in [0, 1]"),
            std::string::npos);
}

TEST(TopK, ForcedIndexFirstTiesToLowerIndex) {
  const float x[] = {0.0f, 5.0f, 3.0f, 5.0f, 1.0f};
  EXPECT_EQ(top_k_forced(x, 5, 1, 0), (std::vector<int32_t>{0}));
  EXPECT_EQ(top_k_forced(x, 5, 3, 0), (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(top_k_forced(x, 5, 3, 4), (std::vector<int32_t>{4, 1, 3}));
  EXPECT_NE(testing::error_of([&] { top_k_forced(x, 5, 6, 0); }).find("k must be"),
            std::string::npos);
}

TEST(VerticalSlash, ForcedSinkAndDiagonalOnly) {
  const int64_t nb = 4;
  const float v[] = {0.0f, 0.9f, 0.1f, 0.0f}, s[] = {0.5f, 0.5f, 0.0f, 0.0f};
  // nV = nS = 1: only the forced column 0 and the forced main diagonal (chunk nb-1).
  const std::set<tile> want = {{0, 0}, {1, 0}, {2, 0}, {3, 0}, {1, 1}, {2, 2}, {3, 3}};
  EXPECT_EQ(as_set(vertical_slash_tiles(v, s, nb, 1, 1)), want);
}

TEST(VerticalSlash, TopColumnsAndDiagonalOffsetMapping) {
  const int64_t nb = 5;
  const float v[] = {0.0f, 0.1f, 0.0f, 0.6f, 0.3f};
  // s_blk chunk t stands for offset nb-1-t: chunk 2 -> offset 2, chunk 0 -> offset 4.
  const float s[] = {0.3f, 0.0f, 0.7f, 0.0f, 0.0f};
  std::set<tile> want;
  for (int32_t r = 0; r < nb; ++r) want.insert({r, 0});      // forced sink column
  for (int32_t r = 3; r < nb; ++r) want.insert({r, 3});      // top column 3
  for (int32_t r = 0; r < nb; ++r) want.insert({r, r});      // forced diagonal
  for (int32_t r = 2; r < nb; ++r) want.insert({r, r - 2});  // top chunk 2 = offset 2
  EXPECT_EQ(as_set(vertical_slash_tiles(v, s, nb, 2, 2)), want);
  // One more of each: column 4, chunk 0 = offset 4 (tile (4, 0), already in).
  want.insert({4, 4});
  EXPECT_EQ(as_set(vertical_slash_tiles(v, s, nb, 3, 3)), want);
}

TEST(QueryAware, GlobalBudgetOverTheLowerTriangle) {
  // nb = 2, D = 1. Row 0 has one tile (mass 1). Row 1: scores q1*k / sqrt(1) with q1 = 1,
  // k0 = 0, k1 = ln 3 -> softmax (1/4, 3/4). Sorted masses: 1, 3/4, 1/4; budget gamma*nb.
  const float qp[] = {0.0f, 1.0f};
  const float kp[] = {0.0f, std::log(3.0f)};
  auto tiles = [&](double g) { return as_set(query_aware_tiles(qp, 1, kp, 1, 2, 1, g)); };
  // gamma*nb = 1.75: running sums 1, 1.75 <= 1.75 keep (0,0) and (1,1); (1,0) would make 2.
  EXPECT_EQ(tiles(0.875), (std::set<tile>{{0, 0}, {1, 1}}));
  // gamma*nb = 1.5: only (0,0) fits (1.75 > 1.5); (0,0) is always present anyway.
  EXPECT_EQ(tiles(0.75), (std::set<tile>{{0, 0}}));
  // gamma = 1: everything (running sum 2 <= 2 up to rounding of 1/4 + 3/4, exact in binary).
  EXPECT_EQ(tiles(1.0), (std::set<tile>{{0, 0}, {1, 0}, {1, 1}}));
}

TEST(PivotPattern, FewestBlocksPerRowReachingGammaPlusOrigin) {
  const int64_t nb = 3;
  // Rows sum to 1; values exact in binary.
  const float a[] = {1.0f,   0.0f,  0.0f,     // row 0
                     0.25f,  0.75f, 0.0f,     // row 1
                     0.125f, 0.5f,  0.375f};  // row 2
  // gamma = 0.75: row 0 -> {0}; row 1 -> {1} (0.75 >= 0.75); row 2 -> {1, 2} (0.875).
  EXPECT_EQ(as_set(pivot_pattern_tiles(a, nb, 0.75)),
            (std::set<tile>{{0, 0}, {1, 1}, {2, 1}, {2, 2}}));
  // gamma = 0.9: row 1 -> {1, 0}; row 2 -> all three (0.875 < 0.9).
  EXPECT_EQ(as_set(pivot_pattern_tiles(a, nb, 0.9)),
            (std::set<tile>{{0, 0}, {1, 0}, {1, 1}, {2, 0}, {2, 1}, {2, 2}}));
  // A row that never reaches gamma keeps its positive entries; (0, 0) is added even when row 0
  // has no mass (degenerate input).
  const float b[] = {0.0f, 0.0f, 0.25f, 0.5f};
  EXPECT_EQ(as_set(pivot_pattern_tiles(b, 2, 0.9)), (std::set<tile>{{0, 0}, {1, 0}, {1, 1}}));
}

TEST(VsRatio, UniqueValidTilesCountedOnce) {
  const int64_t nb = 2;
  const float a[] = {1.0f, 0.0f, 0.25f, 0.75f};  // total mass 2 = nb
  // Duplicates and invalid (above-diagonal, out-of-range) entries are ignored.
  const std::vector<tile> tiles = {{0, 0}, {0, 0}, {0, 0}, {1, 0}, {0, 1}, {5, 0}};
  EXPECT_DOUBLE_EQ(tile_coverage_ratio(a, nb, tiles), 1.25 / 2.0);
  EXPECT_DOUBLE_EQ(tile_coverage_ratio(a, nb, causal_tiles(nb)), 1.0);
}

TEST(PlannerParams, ValidationNamesTheBadValue) {
  planner_params p;
  EXPECT_NO_THROW(p.validate());
  p.gamma = 1.5;
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("gamma must be in (0, 1], got 1.5"),
            std::string::npos);
  p = planner_params{};
  p.tau_qa = 0.0;
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("tau_qa"), std::string::npos);
  p = planner_params{};
  p.tau_sim = -0.1;
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("tau_sim"), std::string::npos);
  p = planner_params{};
  p.block_size = 96;
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("power of two in [16, 4096], got 96"),
            std::string::npos);
  p.block_size = 8;
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("got 8"), std::string::npos);
  p = planner_params{};
  p.max_budget = 512;
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("max_budget"), std::string::npos);
  EXPECT_NE(testing::error_of([] { plan_mode_from_name("sparse"); }).find("sparse"),
            std::string::npos);
  EXPECT_EQ(planner_params{}.to_json().dump().find("\"gamma\":0.95") != std::string::npos, true);
}

TEST(PivotPublishing, DefaultChoice) {
  const int64_t from = cuda_defer_pivots_from;
  EXPECT_EQ(default_pivot_publishing(from, true, true), pivot_publishing::all);
  EXPECT_EQ(default_pivot_publishing(from, false, true), pivot_publishing::deferred);
  EXPECT_EQ(default_pivot_publishing(from - 1, false, true), pivot_publishing::used);
  EXPECT_EQ(default_pivot_publishing(4 * from, false, false), pivot_publishing::used);
  EXPECT_EQ(default_pivot_publishing(128, true, false), pivot_publishing::all);
}

TEST(PivotPublishing, NamesRoundTrip) {
  for (pivot_publishing p :
       {pivot_publishing::all, pivot_publishing::used, pivot_publishing::deferred})
    EXPECT_EQ(parse_pivot_publishing(pivot_publishing_name(p)), p);
  EXPECT_EQ(std::string(pivot_publishing_name(pivot_publishing::deferred)), "deferred");
  EXPECT_NE(testing::error_of([] { parse_pivot_publishing("lazy"); }).find("'lazy'"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
