// The shipped cluster map of the default model (data/clusters/smollm2-135m-instruct.json) loads,
// validates against SmolLM2-135M's 30 x 9 heads, has shared clusters with medoids, was calibrated
// only on texts of the calibration split, and is rejected for a model of another shape.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "shareprefill/cluster_map.h"
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

}  // namespace
}  // namespace sp
