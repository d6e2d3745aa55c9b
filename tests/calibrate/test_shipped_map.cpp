// The shipped cluster map of the default model (data/clusters/smollm2-135m-instruct.json) loads,
// validates against SmolLM2-135M's 30 x 9 heads, has shared clusters with medoids, was calibrated
// only on texts of the calibration split, and is rejected for a model of another shape; its dense
// layers are the ones its recorded ablation picks.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "shareprefill/cluster_map.h"
#include "shareprefill/dense_layer_choice.h"
#include "test_util.h"

namespace sp {
namespace {

TEST(ShippedMap, LoadsAndValidates) {
  const std::string root = SP_SOURCE_DIR;
  const cluster_map map = cluster_map_load(root + "/data/clusters/smollm2-135m-instruct.json");
  map.validate(30, 9);
  int shared = 0;
  for (const auto& c : map.clusters) {
    shared += c.shared;
    EXPECT_TRUE(c.medoid.has_value()) << "cluster " << c.id;
  }
  EXPECT_GT(shared, 0);
  std::ifstream f(root + "/data/corpora.json");
  const nlohmann::json corpora = nlohmann::json::parse(f);
  const auto& calibration = corpora["split"]["calibration"];
  ASSERT_TRUE(map.calibration.contains("texts"));
  for (const auto& t : map.calibration["texts"])
    EXPECT_NE(std::find(calibration.begin(), calibration.end(), t), calibration.end()) << t;
  EXPECT_NE(testing::error_of([&] { map.validate(32, 9); }).find("model.layers"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { map.validate(30, 15); }).find("model.heads"),
            std::string::npos);
}

TEST(ShippedMap, DenseLayersAreTheRecordedAblationsPick) {
  const cluster_map map =
      cluster_map_load(std::string(SP_SOURCE_DIR) + "/data/clusters/smollm2-135m-instruct.json");
  ASSERT_FALSE(map.dense_layers.empty());
  ASSERT_TRUE(map.calibration.contains("dense_layer_selection"));
  const nlohmann::json& sel = map.calibration["dense_layer_selection"];
  std::vector<dense_layer_gain> gains;
  for (const auto& g : sel["gains"])
    gains.push_back(
        {g["layer"].get<int64_t>(), g["ppl"].get<double>(), g["gain_pct"].get<double>()});
  EXPECT_EQ(gains.size(), 30u);  // every layer was tried
  EXPECT_EQ(map.dense_layers, sel["chosen"].get<std::vector<int64_t>>());
  EXPECT_EQ(map.dense_layers, pick_dense_layers(gains, sel["count"].get<int64_t>(),
                                                sel["min_gain_pct"].get<double>()));
  // Only calibration texts were scored (the same check as the clustering's).
  EXPECT_EQ(sel["windows"].get<int64_t>(), static_cast<int64_t>(map.calibration["texts"].size()));
}

}  // namespace
}  // namespace sp
