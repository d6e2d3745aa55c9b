// Cluster map (DESIGN.md section 3): the reference implementation's Llama-3.1-8B file loads and
// validates against 32 x 32 heads; our format round-trips with medoids and dense layers;
// malformed maps (other model shape, empty or out-of-range clusters, duplicates, unknown shared
// ids, bad dense layers) fail with messages naming the file, the key and the bad value.
#include <gtest/gtest.h>

#include <cstdio>

#include "shareprefill/cluster_map.h"
#include "test_util.h"

namespace sp {
namespace {

const std::string reference_file =
    std::string(SP_SOURCE_DIR) + "/tests/data/Llama-3.1-8B-Instruct_code_debug_hiera-40.0-2.json";

TEST(ClusterMap, ReferenceFileLoadsAndValidates) {
  const cluster_map m = cluster_map_load(reference_file);
  EXPECT_EQ(m.clusters.size(), 44u);
  int shared = 0;
  size_t members = 0;
  for (const auto& c : m.clusters) {
    shared += c.shared;
    members += c.members.size();
    if (c.shared) {
      EXPECT_EQ(c.id, "9");
    }
  }
  EXPECT_EQ(shared, 1);
  EXPECT_EQ(members, 1024u);
  EXPECT_NO_THROW(m.validate(32, 32));
  const auto table = m.head_table(32, 32);
  EXPECT_EQ(m.clusters[static_cast<size_t>(table[0])].id, "42");  // [0, 0] is in cluster 42
  // Another model shape: 28 layers leaves heads out of range; 40 layers leaves heads uncovered.
  EXPECT_NE(testing::error_of([&] { m.validate(28, 32); }).find("layer"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { m.validate(40, 32); }).find("is in no cluster"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { m.validate(32, 32 - 1); }).find("out of range [0, 31)"),
            std::string::npos);
}

TEST(ClusterMap, OurFormatRoundTripsWithMedoids) {
  const nlohmann::json j = {
      {"format", "shareprefill.clusters/1"},
      {"model", {{"name", "tiny"}, {"layers", 2}, {"heads", 2}, {"kv_heads", 1}, {"head_dim", 8}}},
      {"calibration", {{"tokens", 128}}},
      {"clusters", {{"1", {{0, 0}, {1, 1}}}, {"2", {{0, 1}, {1, 0}}}}},
      {"shared_clusters", {"2"}},
      {"medoids", {{"2", {1, 0}}}},
      {"dense_layers", {1}}};
  const cluster_map m = cluster_map_from_json(j, "test.json");
  EXPECT_NO_THROW(m.validate(2, 2));
  EXPECT_EQ(m.dense_layers, std::vector<int64_t>{1});
  ASSERT_TRUE(m.clusters[1].medoid.has_value());
  EXPECT_EQ(m.clusters[1].medoid->layer, 1);
  const std::string path = testing::temp_path("cluster_map_roundtrip.json");
  cluster_map_save(path, m);
  const cluster_map back = cluster_map_load(path);
  std::remove(path.c_str());
  EXPECT_EQ(cluster_map_to_json(back), cluster_map_to_json(m));
  // The model block must match the model being planned.
  EXPECT_NE(testing::error_of([&] { m.validate(3, 2); }).find("\"model.layers\" is 2"),
            std::string::npos);
}

TEST(ClusterMap, MalformedMapsNameFileKeyAndValue) {
  auto err = [](const nlohmann::json& j) {
    return testing::error_of([&] { cluster_map_from_json(j, "bad.json").validate(2, 2); });
  };
  const nlohmann::json ok_clusters = {{"1", {{0, 0}, {0, 1}, {1, 0}, {1, 1}}}};
  EXPECT_EQ(err({{"clusters", ok_clusters}, {"shared_clusters", {"1"}}}), "");
  const std::string empty = err({{"clusters", {{"1", nlohmann::json::array()}}},
                                 {"shared_clusters", nlohmann::json::array()}});
  EXPECT_NE(empty.find("bad.json: clusters.1: cluster is empty"), std::string::npos) << empty;
  const std::string range = err({{"clusters", {{"7", {{0, 0}, {0, 1}, {1, 0}, {1, 5}}}}},
                                 {"shared_clusters", nlohmann::json::array()}});
  EXPECT_NE(range.find("clusters.7: head 5 out of range"), std::string::npos) << range;
  const std::string neg = err({{"clusters", {{"3", {{0, -1}}}}}, {"shared_clusters", {"3"}}});
  EXPECT_NE(neg.find("clusters.3"), std::string::npos) << neg;
  const std::string dup = err({{"clusters", {{"1", {{0, 0}}}, {"2", {{0, 0}}}}},
                               {"shared_clusters", nlohmann::json::array()}});
  EXPECT_NE(dup.find("[0, 0] appears more than once"), std::string::npos) << dup;
  const std::string unknown = err({{"clusters", ok_clusters}, {"shared_clusters", {"9"}}});
  EXPECT_NE(unknown.find("shared_clusters: id \"9\""), std::string::npos) << unknown;
  const std::string pair = err({{"clusters", {{"1", {{0, 0, 1}}}}}, {"shared_clusters", {}}});
  EXPECT_NE(pair.find("[layer, head] pair"), std::string::npos) << pair;
  auto with_dense = [&](const nlohmann::json& d) {
    return err({{"clusters", ok_clusters}, {"shared_clusters", {"1"}}, {"dense_layers", d}});
  };
  EXPECT_EQ(with_dense({0, 1}), "");
  EXPECT_NE(with_dense({1, 0}).find("dense_layers: must be ascending"), std::string::npos);
  EXPECT_NE(with_dense({1, 1}).find("dense_layers: must be ascending"), std::string::npos);
  EXPECT_NE(with_dense({-1}).find("dense_layers: expected a non-negative"), std::string::npos);
  EXPECT_NE(with_dense("18").find("\"dense_layers\" must be a list"), std::string::npos);
  EXPECT_NE(with_dense({2}).find("dense_layers: layer 2 out of range [0, 2)"), std::string::npos);
  EXPECT_NE(testing::error_of([] {
              cluster_map_load("/nonexistent/map.json");
            }).find("/nonexistent/map.json"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
