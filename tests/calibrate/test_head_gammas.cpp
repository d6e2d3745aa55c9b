// Per-head gammas (issue 17, the cluster map's format 3): "head_gammas" round-trips and comes with
// the map's dense heads in the resolution, bad entries fail naming the key, format 1 and 2 maps
// still load, the shipped format-3 map loads; planner_params::head_gammas changes exactly the listed heads' plans (a higher gamma
// gives them more tiles and less error against dense, the other heads are bit-identical); the
// per-head settings pick follows the convex hull of (density, out_err^2) under the budget.
// Synthetic inputs: 2 layers, N = 1000 (ragged: 7.8 blocks of 128), 4 heads, 2 KV heads, D = 32.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "shareprefill/calibrate_heads.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/dense_layer_choice.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/synthetic.h"
#include "synthetic_two_layers.h"
#include "tiny_cluster_map.h"
#include "test_util.h"

namespace sp {
namespace {

using sp::testing::error_of;

TEST(HeadGammasMap, FormatThreeRoundTripsAndResolves) {
  nlohmann::json j = test::tiny_map_json("shareprefill.clusters/3");
  j["dense_heads"] = {{1, 1}};
  j["head_gammas"] = {{0, 1, 0.99}, {1, 0, 0.975}};
  const cluster_map m = cluster_map_from_json(j, "v3.json");
  ASSERT_EQ(m.head_gammas.size(), 2u);
  EXPECT_EQ(m.head_gammas[1].head, (head_ref{1, 0}));
  EXPECT_EQ(m.head_gammas[1].gamma, 0.975);
  EXPECT_NO_THROW(m.validate(2, 2));
  const std::string path = testing::temp_path("head_gammas_roundtrip.json");
  cluster_map_save(path, m);
  const cluster_map back = cluster_map_load(path);
  std::remove(path.c_str());
  EXPECT_EQ(cluster_map_to_json(back), cluster_map_to_json(m));
  EXPECT_EQ(cluster_map_to_json(back)["format"], "shareprefill.clusters/3");
  cluster_map no_gammas = m;
  no_gammas.head_gammas.clear();
  EXPECT_EQ(cluster_map_to_json(no_gammas)["format"], "shareprefill.clusters/2");

  const dense_layers_resolution r = resolve_dense_layers("", &m, 2, 2);
  EXPECT_TRUE(r.from_map);
  ASSERT_EQ(r.head_gammas.size(), 2u);
  EXPECT_EQ(r.head_gammas[0].layer, 0);
  EXPECT_EQ(r.head_gammas[0].head, 1);
  EXPECT_EQ(r.head_gammas[0].gamma, 0.99);
  EXPECT_TRUE(resolve_dense_layers("none", &m, 2, 2).head_gammas.empty());

  cluster_map wide = m;
  wide.head_gammas = {{{0, 2}, 0.99}};
  EXPECT_NE(error_of([&] { wide.validate(2, 2); }).find("head_gammas: [0, 2] out of range"),
            std::string::npos);
}

TEST(HeadGammasMap, TheShippedPerHeadSettingsMapLoads) {
  const cluster_map m = cluster_map_load(
      std::string(SP_SOURCE_DIR) + "/data/clusters/smollm2-135m-instruct-head-settings.json");
  EXPECT_NO_THROW(m.validate(30, 9));
  EXPECT_FALSE(m.head_gammas.empty());
  EXPECT_FALSE(m.dense_heads.empty());
  EXPECT_TRUE(m.dense_layers.empty());
  EXPECT_TRUE(m.calibration.contains("head_settings_selection"));
  // with thresholds that set pivot_is_medoid
  EXPECT_EQ(cluster_map_to_json(m)["format"], "shareprefill.clusters/5");
  for (const head_threshold& g : m.head_gammas) EXPECT_NE(g.gamma, 0.95);
}

TEST(HeadGammasMap, BadHeadGammasNameTheKey) {
  nlohmann::json v2 = test::tiny_map_json("shareprefill.clusters/2");
  v2["head_gammas"] = {{0, 1, 0.99}};
  EXPECT_NE(error_of([&] { cluster_map_from_json(v2, "old.json"); })
                .find("old.json: \"head_gammas\" needs \"format\": \"shareprefill.clusters/3\""),
            std::string::npos);
  const std::pair<nlohmann::json, const char*> bad[] = {
      {{{0, 1}}, "expected a [layer, head, gamma] triple"},
      {{{0, 1, "x"}}, "expected a [layer, head, gamma] triple"},
      {{{0, 1, 1.5}}, "gamma must be in (0, 1]"},
      {{{0, 1, 0.0}}, "gamma must be in (0, 1]"},
      {{{-1, 1, 0.9}}, "negative or too large index"},
      {{{1, 0, 0.99}, {0, 1, 0.99}}, "must be ascending in (layer, head) without repeats"},
      {{{0, 1, 0.99}, {0, 1, 0.98}}, "must be ascending in (layer, head) without repeats"}};
  for (const auto& [value, message] : bad) {
    nlohmann::json j = test::tiny_map_json("shareprefill.clusters/3");
    j["head_gammas"] = value;
    EXPECT_NE(error_of([&] { cluster_map_from_json(j, "g.json"); }).find(message),
              std::string::npos)
        << value.dump();
  }
  // Format 2 maps (dense heads) load under format 3 too.
  nlohmann::json v3 = test::tiny_map_json("shareprefill.clusters/3");
  v3["dense_heads"] = {{0, 0}};
  EXPECT_EQ(cluster_map_from_json(v3, "v3.json").dense_heads.size(), 1u);
}

using test::n_dim;
using test::n_heads;
using test::n_tok;

std::vector<std::vector<float>> run(const planner* pl, std::vector<layer_attention_report>* reps) {
  return test::run_two_layers(pl, 11, reps);
}

double head_error(const std::vector<float>& a, const std::vector<float>& b, int64_t h) {
  double e = 0.0;
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t d = 0; d < n_dim; ++d) {
      const size_t i = static_cast<size_t>((t * n_heads + h) * n_dim + d);
      e += (a[i] - b[i]) * double(a[i] - b[i]);
    }
  return std::sqrt(e);
}

TEST(HeadGammasPlanner, ListedHeadsPlanWithTheirGammaTheOthersUnchanged) {
  for (plan_mode mode : {plan_mode::vslash, plan_mode::flexprefill}) {
    planner_params p;
    p.mode = mode;
    p.min_budget = 128;
    p.gamma = 0.6;
    const planner base_pl(p, 2, n_heads, nullptr);
    p.head_gammas = {{1, 1, 0.995}, {1, 2, 0.6}};  // 0.6: the global gamma, no change
    const planner mixed_pl(p, 2, n_heads, nullptr);
    std::vector<layer_attention_report> br, mr;
    const auto base = run(&base_pl, &br);
    const auto mixed = run(&mixed_pl, &mr);
    const auto dense = run(nullptr, nullptr);
    EXPECT_EQ(base[0], mixed[0]) << plan_mode_name(mode);
    EXPECT_EQ(br[0].tiles, mr[0].tiles);
    EXPECT_GT(mr[1].tiles, br[1].tiles) << plan_mode_name(mode);
    for (int64_t h = 0; h < n_heads; ++h) {
      if (h == 1) {
        EXPECT_LT(head_error(mixed[1], dense[1], h), head_error(base[1], dense[1], h))
            << plan_mode_name(mode);
      } else {
        EXPECT_EQ(head_error(mixed[1], base[1], h), 0.0) << plan_mode_name(mode) << " head " << h;
      }
    }
  }
  planner_params bad;
  bad.mode = plan_mode::vslash;
  bad.head_gammas = {{1, 3, 0.99}, {1, 0, 0.99}};
  EXPECT_NE(error_of([&] { bad.validate(); }).find("head_gammas must be sorted"), std::string::npos);
  bad.head_gammas = {{1, 0, 1.2}};
  EXPECT_NE(error_of([&] { bad.validate(); }).find("gamma of head (1, 0) must be in (0, 1]"),
            std::string::npos);
  bad.head_gammas = {{2, 0, 0.99}};
  EXPECT_NE(error_of([&] { planner(bad, 2, n_heads, nullptr); })
                .find("head_gammas: head (2, 0) is out of range"),
            std::string::npos);
}

TEST(HeadSettingsPick, ConvexHullStepsWithinTheBudget) {
  // Head A: base (0.3 density, out_err 0.4: loss 0.16), 0.99 (0.5, 0.1: 0.01), dense (1, 0).
  //   Steps: base -> 0.99 worth 0.15 / 0.2 = 0.75, then 0.99 -> dense 0.01 / 0.5 = 0.02.
  // Head B: base (0.2, 0.3: 0.09), 0.99 (0.9, 0.29: 0.0841), dense. 0.99 is off the hull
  //   (0.0059 / 0.7 < 0.09 / 0.8): one step base -> dense, worth 0.1125.
  // Head C (a pivot): only its base setting.
  const std::vector<head_settings> heads = {
      {{0, 0}, {{0.95, 0.3, 0.4}, {0.99, 0.5, 0.1}, {0.0, 1.0, 0.0}}},
      {{0, 1}, {{0.95, 0.2, 0.3}, {0.99, 0.9, 0.29}, {0.0, 1.0, 0.0}}},
      {{1, 0}, {{0.95, 1.0, 0.0}}}};
  // Budget 1.0: A -> 0.99 (0.2), B -> dense (0.8): 1.0; A -> dense (0.5) does not fit.
  const head_settings_pick p = pick_head_settings(heads, 1.0, 0.95);
  ASSERT_EQ(p.head_gammas.size(), 1u);
  EXPECT_EQ(p.head_gammas[0].head, (head_ref{0, 0}));
  EXPECT_EQ(p.head_gammas[0].gamma, 0.99);
  ASSERT_EQ(p.dense_heads.size(), 1u);
  EXPECT_EQ(p.dense_heads[0], (head_ref{0, 1}));
  EXPECT_NEAR(p.spent, 1.0, 1e-12);
  ASSERT_EQ(p.record["steps_taken"].size(), 2u);
  EXPECT_EQ(p.record["steps_taken"][0]["to"]["setting"], 0.99);
  EXPECT_EQ(p.record["best_steps_left_out"][0]["to"]["setting"], "dense");
  // Budget 0.5: only A's first step fits after B's does not (0.8 > 0.3 left)... B is stopped,
  // A's second step (0.5) does not fit in the 0.3 left either.
  const head_settings_pick q = pick_head_settings(heads, 0.5, 0.95);
  EXPECT_EQ(q.head_gammas.size(), 1u);
  EXPECT_TRUE(q.dense_heads.empty());
  EXPECT_NEAR(q.spent, 0.2, 1e-12);
  // A large budget makes A and B dense (A's step to dense follows its step to 0.99).
  const head_settings_pick all = pick_head_settings(heads, 10.0, 0.95);
  EXPECT_TRUE(all.head_gammas.empty());
  EXPECT_EQ(all.dense_heads.size(), 2u);
  EXPECT_NEAR(all.spent, 1.5, 1e-12);
  const std::string md = head_settings_report_markdown(p.record);
  EXPECT_NE(md.find("| 0 | 0 | 0.95 (0.4) | 0.99 (0.1) | 0.2 |"), std::string::npos) << md;
  EXPECT_NE(md.find("no: does not fit"), std::string::npos) << md;
  // A higher gamma that changes nothing (the budget was clamped at the minimum, so the probe
  // measured the same plan) is no step; dense still is. Equal losses once looked like a gain
  // under FMA contraction and the hull walk cycled between the two.
  const double m = 0.1 + 1e-17 * 3;
  const head_settings_pick same =
      pick_head_settings({{{0, 0}, {{0.95, 0.3, m}, {0.98, 0.3, m}, {0.0, 1.0, 0.0}}}}, 1.0, 0.95);
  EXPECT_TRUE(same.head_gammas.empty());
  ASSERT_EQ(same.dense_heads.size(), 1u);
  EXPECT_EQ(same.record["steps_taken"].size(), 1u);
  // Downgrades: every head starts at its sparsest setting. Head D: 0.9 (0.1, 0.3: 0.09), global
  // 0.95 (0.2, 0.2: 0.04), dense. Head E: 0.9 (0.4, 0.05: 0.0025), 0.95 (0.5, 0.04), dense.
  // Start 0.5 head-densities: a mean of 0.25. D's step to 0.95 is worth 0.5, E's 0.0009 / 0.1.
  const std::vector<head_settings> down = {
      {{0, 0}, {{0.9, 0.1, 0.3}, {0.95, 0.2, 0.2}, {0.0, 1.0, 0.0}}},
      {{0, 1}, {{0.9, 0.4, 0.05}, {0.95, 0.5, 0.04}, {0.0, 1.0, 0.0}}}};
  EXPECT_NEAR(head_settings_budget_for_density(down, 0.3), 0.1, 1e-12);
  const head_settings_pick d = pick_head_settings(down, 0.1, 0.95);
  EXPECT_TRUE(d.dense_heads.empty());
  ASSERT_EQ(d.head_gammas.size(), 1u) << "D at the global gamma is not listed, E stays at 0.9";
  EXPECT_EQ(d.head_gammas[0].head, (head_ref{0, 1}));
  EXPECT_EQ(d.head_gammas[0].gamma, 0.9);
  EXPECT_NE(error_of([&] { head_settings_budget_for_density(down, 0.2); })
                .find("below the sparsest settings' mean 0.25"),
            std::string::npos);
  EXPECT_NE(error_of([&] { pick_head_settings(heads, -1.0, 0.95); }).find("budget must be finite"),
            std::string::npos);
  EXPECT_NE(error_of([&] { pick_head_settings({{{2, 3}, {}}}, 1.0, 0.95); }).find("head [2, 3] has no"),
            std::string::npos);
  EXPECT_NE(error_of([&] { pick_head_settings({{{2, 3}, {{0.9, 1.5, 0.1}}}}, 1.0, 0.95); })
                .find("head [2, 3]"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
