// Hostile cluster maps (issue 18, items 2, 9, 10): values nested 200,000 deep anywhere in the
// document (as a member, as "model", inside "calibration") give a short error instead of a stack
// overflow in dump() or in a copy; trailing bytes after the map and a directory given as the
// file are errors naming the file; saving to a full device fails.
#include <gtest/gtest.h>

#include <string>

#include "shareprefill/cluster_map.h"
#include "test_util.h"

namespace sp {
namespace {

const std::string good_map = R"({"clusters": {"a": [[0, 0], [0, 1]]}, "shared_clusters": ["a"]})";
const std::string deep = std::string(200000, '[') + std::string(200000, ']');

std::string load_error(const std::string& text) {
  return testing::error_of([&] { cluster_map_from_text(text, "m.json"); });
}

TEST(ClusterMapBad, GoodMapLoads) {
  const cluster_map m = cluster_map_from_text(good_map, "m.json");
  ASSERT_EQ(m.clusters.size(), 1u);
  EXPECT_TRUE(m.clusters[0].shared);
}

TEST(ClusterMapBad, DeepNestingIsAShortError) {
  const std::string as_member = R"({"clusters": {"a": [)" + deep + R"(]}, "shared_clusters": []})";
  const std::string as_model = R"({"model": )" + deep + R"(, "clusters": {}})";
  const std::string as_calibration =
      R"({"calibration": {"x": )" + deep + R"(}, "clusters": {"a": [[0, 0]]}, "shared_clusters": []})";
  for (const std::string& text : {as_member, as_model, as_calibration}) {
    const std::string err = load_error(text);
    EXPECT_NE(err.find("[cluster_map_from_json] m.json: JSON nested more than 64 levels deep"),
              std::string::npos)
        << err.substr(0, 200);
    EXPECT_LT(err.size(), 200u);
  }
  // Shallow but wrong values are quoted without recursing into them either.
  const std::string err = load_error(R"({"model": [[1, 2], [3]], "clusters": {}})");
  EXPECT_NE(err.find("\"model\" must be an object, got [...]"), std::string::npos) << err;
}

TEST(ClusterMapBad, OptionalModelFieldsOfTheWrongType) {
  // Found by fuzz_cluster_map: json::value() threw nlohmann's type_error (std::terminate in the
  // fuzzer, "unexpected error" in the program) for a non-integer kv_heads.
  const std::string prefix = R"({"model": {"layers": 1, "heads": 2, )";
  const std::string suffix = R"(}, "clusters": {"a": [[0, 0], [0, 1]]}, "shared_clusters": []})";
  EXPECT_NE(load_error(prefix + R"("kv_heads": [])" + suffix)
                .find("m.json: \"model.kv_heads\" must be a non-negative integer, got []"),
            std::string::npos)
      << load_error(prefix + R"("kv_heads": [])" + suffix);
  EXPECT_NE(load_error(prefix + R"("head_dim": "64")" + suffix).find("\"model.head_dim\""),
            std::string::npos);
  EXPECT_NE(load_error(prefix + R"("name": 7)" + suffix)
                .find("\"model.name\" must be a string, got 7"),
            std::string::npos);
  EXPECT_EQ(load_error(prefix + R"("name": "m", "kv_heads": 1, "head_dim": 64)" + suffix), "");
}

TEST(ClusterMapBad, TrailingGarbageIsAnError) {
  const std::string err = load_error(good_map + "\n{\"clusters\": 1}");
  EXPECT_NE(err.find("[cluster_map_load] m.json: not valid JSON"), std::string::npos) << err;
  EXPECT_NE(load_error(good_map + " trailing").find("not valid JSON"), std::string::npos);
  EXPECT_EQ(load_error(good_map + " \n\t"), "");  // trailing whitespace is fine
}

TEST(ClusterMapBad, DirectoryAndFullDevice) {
  const std::string dir = ::testing::TempDir();
  EXPECT_EQ(testing::error_of([&] { cluster_map_load(dir); }),
            "[cluster_map_load] '" + dir + "' is a directory, not a file");
  const cluster_map m = cluster_map_from_text(good_map, "m.json");
  EXPECT_NE(testing::error_of([&] { cluster_map_save("/dev/full", m); }).find("failed"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
