// Dense-layer choice: the pick (largest gains, ties to the lower layer, count and minimum
// respected), the resolution of --dense-layers against a cluster map's dense layers, and the
// ablation on the real model (skipped when it is not cached) at 256 tokens with 32-token blocks,
// where the sparse plans really drop tiles: making a layer dense must change the perplexity.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "../model/model_fixture.h"
#include "shareprefill/dense_layer_choice.h"
#include "shareprefill/gguf.h"
#include "shareprefill/tokenizer.h"
#include "test_util.h"

namespace sp {
namespace {

using v64 = std::vector<int64_t>;

TEST(DenseLayerChoice, PicksTheLargestGainsAboveTheMinimum) {
  const std::vector<dense_layer_gain> gains = {
      {0, 10.0, 0.05}, {1, 9.0, 1.2}, {2, 9.9, 0.3}, {3, 9.9, 0.3}, {4, 10.1, -0.5}};
  EXPECT_EQ(pick_dense_layers(gains, 2, 0.1), (v64{1, 2}));  // 2 and 3 tie: the lower layer
  EXPECT_EQ(pick_dense_layers(gains, 5, 0.1), (v64{1, 2, 3}));
  EXPECT_EQ(pick_dense_layers(gains, 5, -1.0), (v64{0, 1, 2, 3, 4}));
  EXPECT_EQ(pick_dense_layers(gains, 0, 0.1), v64{});
  EXPECT_EQ(pick_dense_layers(gains, 3, 2.0), v64{});
  EXPECT_NE(testing::error_of([&] { pick_dense_layers(gains, -1, 0.1); }).find("count"),
            std::string::npos);
}

cluster_map two_layer_map(v64 dense) {
  cluster_map m;
  m.source = "map.json";
  m.clusters = {{"1", {{0, 0}, {0, 1}, {1, 0}, {1, 1}}, false, std::nullopt}};
  m.dense_layers = std::move(dense);
  return m;
}

TEST(DenseLayerChoice, SpecOverridesTheMapsDenseLayers) {
  const cluster_map map = two_layer_map({1});
  dense_layers_resolution r = resolve_dense_layers("", &map, 2, 2);
  EXPECT_EQ(r.layers, v64{1});
  EXPECT_TRUE(r.from_map);
  r = resolve_dense_layers("0", &map, 2, 2);
  EXPECT_EQ(r.layers, v64{0});
  EXPECT_FALSE(r.from_map);
  r = resolve_dense_layers("none", &map, 2, 2);
  EXPECT_EQ(r.layers, v64{});
  EXPECT_FALSE(r.from_map);
  EXPECT_EQ(resolve_dense_layers(" ", nullptr, 2, 2).layers, v64{});
  const cluster_map none = two_layer_map({});
  EXPECT_FALSE(resolve_dense_layers("", &none, 2, 2).from_map);
  // The map must fit the model; a bad spec names the option.
  const cluster_map far = two_layer_map({5});
  EXPECT_NE(testing::error_of([&] {
              resolve_dense_layers("", &far, 2, 2);
            }).find("dense_layers: layer 5 out of range"),
            std::string::npos);
  EXPECT_NE(
      testing::error_of([&] { resolve_dense_layers("7", &map, 2, 2); }).find("--dense-layers"),
      std::string::npos);
}

std::vector<int32_t> golden_tokens(int64_t n) {
  std::ifstream f(std::string(SP_SOURCE_DIR) + "/data/prompts/golden_prompt.txt");
  std::stringstream ss;
  ss << f.rdbuf();
  const tokenizer tok = tokenizer_from_gguf(gguf_file(default_model_path()));
  std::vector<int32_t> ids = tok.encode(ss.str(), false);
  EXPECT_GE(static_cast<int64_t>(ids.size()), n);
  ids.resize(static_cast<size_t>(n));
  return ids;
}

TEST(DenseLayerChoice, AblationOnTheRealModel) {
  SP_SKIP_WITHOUT_MODEL();
  thread_pool pool(2);
  const llama_weights& w = testing::default_model_weights(pool);
  planner_params params;
  params.mode = plan_mode::vslash;
  params.block_size = 32;
  params.min_budget = 32;  // one block per direction: 256 tokens really go sparse
  dense_layer_settings settings;
  settings.candidates = {0, 1, 29};
  settings.count = 1;
  settings.min_gain_pct = -100.0;  // always choose one, whatever the sign
  int64_t calls = 0;
  const dense_layer_choice c =
      choose_dense_layers(w, pool, {golden_tokens(256)}, params, nullptr, settings,
                          [&](int64_t done, int64_t total, const std::string&) {
                            EXPECT_EQ(done, ++calls);
                            EXPECT_EQ(total, 4);
                          });
  EXPECT_EQ(calls, 4);
  ASSERT_EQ(c.gains.size(), 3u);
  bool any_change = false;
  for (size_t i = 0; i < c.gains.size(); ++i) {
    EXPECT_EQ(c.gains[i].layer, settings.candidates[i]);
    EXPECT_TRUE(std::isfinite(c.gains[i].ppl) && c.gains[i].ppl > 1.0);
    EXPECT_NEAR(c.gains[i].gain_pct, 100.0 * (c.sparse_ppl - c.gains[i].ppl) / c.sparse_ppl, 1e-9);
    any_change = any_change || std::abs(c.gains[i].ppl - c.sparse_ppl) > 1e-6 * c.sparse_ppl;
  }
  EXPECT_TRUE(any_change) << "a dense layer left the perplexity unchanged: dense_layers ignored?";
  EXPECT_EQ(c.chosen, pick_dense_layers(c.gains, 1, -100.0));
  const nlohmann::json j = c.to_json(settings, params, 1, 256);
  EXPECT_EQ(j["mode"], "vslash");
  EXPECT_EQ(j["gains"].size(), 3u);
  EXPECT_EQ(j["chosen"].get<v64>(), c.chosen);
  // Bad inputs name the problem.
  EXPECT_NE(testing::error_of([&] {
              choose_dense_layers(w, pool, {}, params, nullptr, settings);
            }).find("no calibration windows"),
            std::string::npos);
  dense_layer_settings far = settings;
  far.candidates = {30};
  EXPECT_NE(testing::error_of([&] {
              choose_dense_layers(w, pool, {golden_tokens(256)}, params, nullptr, far);
            }).find("candidate layer 30 out of range"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
