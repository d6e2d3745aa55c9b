// Per-head dense choices (issue 17): the cluster map's format 2 ("dense_heads") round-trips, the
// shipped format-1 map still loads and is written back as format 1, bad dense_heads fail naming
// the key; planner_params::dense_heads makes exactly the listed heads dense (their output equals
// dense attention, the other heads keep their sparse output) and the resolution takes the map's
// dense heads with its dense layers unless --dense-layers is given. Synthetic inputs: 2 layers,
// N = 1000 (ragged: 7.8 blocks of 128), 4 heads, 2 KV heads, D = 32.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "shareprefill/calibrate_heads.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/dense_layer_choice.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/synthetic.h"
#include "synthetic_two_layers.h"
#include "test_util.h"
#include "tiny_cluster_map.h"

namespace sp {
namespace {

using sp::testing::error_of;

TEST(DenseHeadsMap, FormatTwoRoundTripsAndFormatOneStillLoads) {
  nlohmann::json j = test::tiny_map_json("shareprefill.clusters/2");
  j["dense_heads"] = {{0, 1}, {1, 0}};
  const cluster_map m = cluster_map_from_json(j, "v2.json");
  ASSERT_EQ(m.dense_heads.size(), 2u);
  EXPECT_EQ(m.dense_heads[1].layer, 1);
  EXPECT_NO_THROW(m.validate(2, 2));
  const std::string path = testing::temp_path("dense_heads_roundtrip.json");
  cluster_map_save(path, m);
  const cluster_map back = cluster_map_load(path);
  std::remove(path.c_str());
  EXPECT_EQ(cluster_map_to_json(back), cluster_map_to_json(m));
  EXPECT_EQ(cluster_map_to_json(back)["format"], "shareprefill.clusters/2");

  // The shipped map is format 1 and is written back as format 1 (no dense heads).
  const cluster_map shipped =
      cluster_map_load(std::string(SP_SOURCE_DIR) + "/data/clusters/smollm2-135m-instruct.json");
  EXPECT_TRUE(shipped.dense_heads.empty());
  EXPECT_NO_THROW(shipped.validate(30, 9));
  EXPECT_EQ(cluster_map_to_json(shipped)["format"], "shareprefill.clusters/1");
  // The per-head map calibration picked (issue 17) is format 2 and covers the same model.
  const cluster_map per_head = cluster_map_load(
      std::string(SP_SOURCE_DIR) + "/data/clusters/smollm2-135m-instruct-dense-heads.json");
  EXPECT_NO_THROW(per_head.validate(30, 9));
  EXPECT_FALSE(per_head.dense_heads.empty());
  EXPECT_TRUE(per_head.dense_layers.empty());
  EXPECT_TRUE(per_head.calibration.contains("dense_head_selection"));

  EXPECT_NE(error_of([&] { m.validate(1, 2); }).find("layer"), std::string::npos);
  cluster_map small = m;
  small.clusters = {{"1", {{0, 0}, {0, 1}, {1, 0}, {1, 1}}, false, std::nullopt}};
  small.model.reset();
  small.dense_heads = {{3, 0}};
  EXPECT_NE(error_of([&] { small.validate(2, 2); }).find("dense_heads: [3, 0] out of range"),
            std::string::npos);
}

TEST(DenseHeadsMap, BadDenseHeadsNameTheKey) {
  nlohmann::json v1 = test::tiny_map_json("shareprefill.clusters/1");
  v1["dense_heads"] = {{0, 1}};
  EXPECT_NE(error_of([&] {
              cluster_map_from_json(v1, "old.json");
            }).find("old.json: \"dense_heads\" needs \"format\": \"shareprefill.clusters/2\""),
            std::string::npos);
  nlohmann::json unsorted = test::tiny_map_json("shareprefill.clusters/2");
  unsorted["dense_heads"] = {{1, 0}, {0, 1}};
  EXPECT_NE(error_of([&] {
              cluster_map_from_json(unsorted, "u.json");
            }).find("dense_heads: must be ascending without repeats"),
            std::string::npos);
  nlohmann::json notpair = test::tiny_map_json("shareprefill.clusters/2");
  notpair["dense_heads"] = {{1}};
  EXPECT_NE(error_of([&] {
              cluster_map_from_json(notpair, "p.json");
            }).find("dense_heads: expected a [layer, head] pair"),
            std::string::npos);
  nlohmann::json v8 = test::tiny_map_json("shareprefill.clusters/8");
  EXPECT_NE(error_of([&] { cluster_map_from_json(v8, "v8.json"); }).find("\"format\": expected"),
            std::string::npos);
}

TEST(DenseHeadsMap, ResolutionTakesTheMapsHeadsUnlessDenseLayersAreGiven) {
  nlohmann::json j = test::tiny_map_json("shareprefill.clusters/2");
  j["dense_heads"] = {{1, 1}};
  const cluster_map m = cluster_map_from_json(j, "v2.json");
  const dense_layers_resolution from_map = resolve_dense_layers("", &m, 2, 2);
  EXPECT_TRUE(from_map.from_map);
  EXPECT_TRUE(from_map.layers.empty());
  EXPECT_EQ(from_map.heads, (std::vector<std::pair<int64_t, int64_t>>{{1, 1}}));
  const dense_layers_resolution given = resolve_dense_layers("none", &m, 2, 2);
  EXPECT_FALSE(given.from_map);
  EXPECT_TRUE(given.heads.empty());
}

using test::n_dim;
using test::n_heads;
using test::n_tok;

std::vector<std::vector<float>> run(const planner* pl, std::vector<layer_attention_report>* reps) {
  return test::run_two_layers(pl, 5, reps);
}

double head_diff(const std::vector<float>& a, const std::vector<float>& b, int64_t h) {
  double m = 0.0;
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t e = 0; e < n_dim; ++e) {
      const size_t i = static_cast<size_t>((t * n_heads + h) * n_dim + e);
      m = std::max(m, double(std::fabs(a[i] - b[i])));
    }
  return m;
}

TEST(DenseHeadsPlanner, ListedHeadsAreDenseTheOthersUnchanged) {
  planner_params p;
  p.mode = plan_mode::vslash;
  p.min_budget = 128;
  p.gamma = 0.8;
  const planner sparse_pl(p, 2, n_heads, nullptr);
  p.dense_heads = {{1, 0}, {1, 3}};
  const planner mixed_pl(p, 2, n_heads, nullptr);
  std::vector<layer_attention_report> sr, mr;
  const auto sparse = run(&sparse_pl, &sr);
  const auto mixed = run(&mixed_pl, &mr);
  const auto dense = run(nullptr, nullptr);
  EXPECT_EQ(sparse[0], mixed[0]);
  EXPECT_EQ(sr[0].tiles, mr[0].tiles);
  EXPECT_EQ(mr[1].kind_counts[static_cast<size_t>(head_kind::dense)], 2);
  EXPECT_GT(mr[1].tiles, sr[1].tiles);
  for (int64_t h = 0; h < n_heads; ++h) {
    const bool listed = h == 0 || h == 3;
    EXPECT_EQ(head_diff(mixed[1], listed ? dense[1] : sparse[1], h), 0.0) << "head " << h;
    if (listed) {
      EXPECT_GT(head_diff(sparse[1], dense[1], h), 0.0) << "head " << h << " was dense";
    }
  }
  planner_params bad = p;
  bad.dense_heads = {{1, 3}, {1, 0}};
  EXPECT_NE(error_of([&] { bad.validate(); }).find("dense_heads must be sorted"),
            std::string::npos);
  bad.dense_heads = {{1, 4}};
  EXPECT_NE(error_of([&] {
              planner(bad, 2, n_heads, nullptr);
            }).find("dense head (1, 4) is out of range"),
            std::string::npos);
}

TEST(DenseHeadsPick, DescendingMeasureWithinTheBudget) {
  // Costs 1 - density: [0,0] 0.8, [0,1] 0.3, [1,0] 0.5, [1,1] 0.1. Budget 0.9: [1,0] (largest
  // measure, 0.5), [0,0] does not fit (0.8 > 0.4 left), [0,1] fits (0.3), [1,1] 0.1 fits exactly.
  const std::vector<head_cost> heads = {{{0, 0}, 0.30, 0.1, 0.2},
                                        {{0, 1}, 0.20, 0.2, 0.7},
                                        {{1, 0}, 0.50, 0.3, 0.5},
                                        {{1, 1}, 0.05, 0.4, 0.9}};
  const dense_head_pick p = pick_dense_heads(heads, 0.9, "out_err");
  ASSERT_EQ(p.heads.size(), 3u);
  EXPECT_EQ(p.heads[0], (head_ref{0, 1}));
  EXPECT_EQ(p.heads[1], (head_ref{1, 0}));
  EXPECT_EQ(p.heads[2], (head_ref{1, 1}));
  EXPECT_NEAR(p.spent, 0.9, 1e-12);
  EXPECT_EQ(p.record["picked"][0]["rank"], 1);
  EXPECT_EQ(p.record["best_left_out"][0]["layer"], 0);
  EXPECT_EQ(p.record["best_left_out"][0]["reason"], "does not fit the budget left");
  EXPECT_NEAR(dense_layers_cost(heads, {1}), 0.6, 1e-12);
  const std::string md = dense_head_report_markdown(p.record);
  EXPECT_NE(md.find("| 1 | 0 | 1 | 0.5 | 0.3 | 0.5 | 0.5 | rank 1 by out_err, fits the budget |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("does not fit the budget left"), std::string::npos);
  EXPECT_TRUE(pick_dense_heads(heads, 0.0, "out_err").heads.empty());
  EXPECT_TRUE(pick_dense_heads({{{0, 0}, 0.0, 0.0, 1.0}}, 1.0, "out_err").heads.empty())
      << "a head without error (a pivot) is not picked even at cost 0";
  EXPECT_NE(error_of([&] { pick_dense_heads(heads, -1.0, "m"); }).find("budget must be finite"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              pick_dense_heads({{{2, 3}, NAN, 0, 0.5}}, 1.0, "m");
            }).find("head [2, 3]"),
            std::string::npos);
}

TEST(DenseHeadsPick, MeasuredCostsAreSpentAsMeasured) {
  // eval dense-gain measures what a head dense adds to the whole model's density, which can
  // exceed the head's own share (later layers plan from its output). Budget 3: [0,0] (cost 2.8,
  // not the 1 - density = 0 its clamped density would say) fits; [0,1] (cost 0.5) does not fit
  // the 0.2 left; [1,0] costs nothing measurable (-0.1: the density fell) and is taken.
  const std::vector<head_cost> heads = {
      {{0, 0}, 2.5, NAN, 0.0, 2.8}, {{0, 1}, 0.8, NAN, 0.5, 0.5}, {{1, 0}, 0.1, NAN, 1.0, -0.1}};
  const dense_head_pick p = pick_dense_heads(heads, 3.0, "gain_points");
  ASSERT_EQ(p.heads.size(), 2u);
  EXPECT_EQ(p.heads[0], (head_ref{0, 0}));
  EXPECT_EQ(p.heads[1], (head_ref{1, 0}));
  EXPECT_NEAR(p.spent, 2.7, 1e-12);
  EXPECT_EQ(p.record["best_left_out"][0]["head"], 1);
  EXPECT_NEAR(p.record["picked"][0]["cost"].get<double>(), 2.8, 1e-12);
  EXPECT_NE(error_of([&] {
              pick_dense_heads({{{0, 0}, 1.0, NAN, 0.5, INFINITY}}, 1.0, "m");
            }).find("cost inf"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
