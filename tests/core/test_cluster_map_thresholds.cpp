// The cluster map's format 4 (issue 17): "thresholds" per prompt length round-trip, make the
// writer pick format 4 (and only then), need the format-4 tag, and bad entries fail naming the
// file, the key and the value; format 5 adds "pivot_is_medoid" to an entry (and only format 5
// may), format 6 "dense_heads" per entry, format 7 "exact_last_row" and "last_row_gamma"; maps of
// formats 1-3 still load and keep their format; the shipped settings map carries the second GPU
// sweep's choices at 8K and 32K.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "shareprefill/cluster_map.h"
#include "test_util.h"

namespace sp {
namespace {

nlohmann::json map_json(const char* format) {
  return {{"format", format},
          {"model", {{"name", "tiny"}, {"layers", 2}, {"heads", 2}}},
          {"clusters", {{"1", {{0, 0}, {1, 1}}}, {"2", {{0, 1}, {1, 0}}}}},
          {"shared_clusters", {"2"}}};
}

const nlohmann::json two_lengths = {
    {{"from_tokens", 0}, {"tau_sim", 0.5}, {"tau_qa", 0.2}, {"min_budget", 1024}},
    {{"from_tokens", 16384}, {"tau_sim", 0.1}, {"min_budget", 2048}}};

TEST(ClusterMapThresholds, FormatFourRoundTrips) {
  nlohmann::json j = map_json("shareprefill.clusters/4");
  j["thresholds"] = two_lengths;
  const cluster_map m = cluster_map_from_json(j, "v4.json");
  ASSERT_EQ(m.thresholds.size(), 2u);
  EXPECT_EQ(m.thresholds[1].from_tokens, 16384);
  EXPECT_EQ(m.thresholds[1].tau_sim, 0.1);
  EXPECT_FALSE(m.thresholds[1].tau_qa.has_value());
  EXPECT_EQ(m.thresholds[1].min_budget, 2048);
  EXPECT_NO_THROW(m.validate(2, 2));
  const std::string path = testing::temp_path("cluster_map_thresholds.json");
  cluster_map_save(path, m);
  const cluster_map back = cluster_map_load(path);
  std::remove(path.c_str());
  EXPECT_EQ(cluster_map_to_json(back), cluster_map_to_json(m));
  EXPECT_EQ(cluster_map_to_json(back)["format"], "shareprefill.clusters/4");
  EXPECT_EQ(cluster_map_to_json(back)["thresholds"], two_lengths);
  // Without thresholds the lowest format that holds the map is written.
  cluster_map plain = m;
  plain.thresholds.clear();
  EXPECT_EQ(cluster_map_to_json(plain)["format"], "shareprefill.clusters/1");
  EXPECT_FALSE(cluster_map_to_json(plain).contains("thresholds"));
  plain.head_gammas = {{{0, 1}, 0.99}};
  EXPECT_EQ(cluster_map_to_json(plain)["format"], "shareprefill.clusters/3");
}

TEST(ClusterMapThresholds, FormatFiveCarriesMedoidPivots) {
  nlohmann::json j = map_json("shareprefill.clusters/5");
  j["medoids"] = {{"2", {0, 1}}};
  j["thresholds"] = two_lengths;
  j["thresholds"][1]["pivot_is_medoid"] = true;
  const cluster_map m = cluster_map_from_json(j, "v5.json");
  EXPECT_FALSE(m.thresholds[0].pivot_is_medoid.has_value());
  EXPECT_EQ(m.thresholds[1].pivot_is_medoid, true);
  const nlohmann::json back = cluster_map_to_json(m);
  EXPECT_EQ(back["format"], "shareprefill.clusters/5");
  EXPECT_EQ(back["thresholds"], j["thresholds"]);
  // Without the key the map is written as format 4 again.
  cluster_map v4 = m;
  v4.thresholds[1].pivot_is_medoid.reset();
  EXPECT_EQ(cluster_map_to_json(v4)["format"], "shareprefill.clusters/4");
  // The key needs format 5 and a boolean.
  nlohmann::json old = j;
  old["format"] = "shareprefill.clusters/4";
  EXPECT_NE(testing::error_of([&] { cluster_map_from_json(old, "old.json"); })
                .find("old.json: thresholds: \"pivot_is_medoid\" needs \"format\": "
                      "\"shareprefill.clusters/5\""),
            std::string::npos);
  j["thresholds"][1]["pivot_is_medoid"] = 1;
  EXPECT_NE(testing::error_of([&] {
              cluster_map_from_json(j, "v5.json");
            }).find("\"pivot_is_medoid\" must be true or false, got 1"),
            std::string::npos);
  // An entry may set nothing but the pivot rule.
  j["thresholds"] = {{{"from_tokens", 0}, {"pivot_is_medoid", false}}};
  EXPECT_EQ(cluster_map_from_json(j, "v5.json").thresholds[0].pivot_is_medoid, false);
}

TEST(ClusterMapThresholds, FormatSixCarriesDenseHeadsPerLength) {
  nlohmann::json j = map_json("shareprefill.clusters/6");
  j["thresholds"] = two_lengths;
  j["thresholds"][0]["dense_heads"] = {{0, 1}, {1, 0}};
  const cluster_map m = cluster_map_from_json(j, "v6.json");
  using heads = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(m.thresholds[0].dense_heads, (heads{{0, 1}, {1, 0}}));
  EXPECT_TRUE(m.thresholds[1].dense_heads.empty());
  EXPECT_NO_THROW(m.validate(2, 2));
  const nlohmann::json back = cluster_map_to_json(m);
  EXPECT_EQ(back["format"], "shareprefill.clusters/6");
  EXPECT_EQ(back["thresholds"], j["thresholds"]);
  // Without them the map is written as format 4 again; format 5 keys load under format 6.
  cluster_map v4 = m;
  v4.thresholds[0].dense_heads.clear();
  EXPECT_EQ(cluster_map_to_json(v4)["format"], "shareprefill.clusters/4");
  j["thresholds"][1]["pivot_is_medoid"] = true;
  EXPECT_EQ(cluster_map_to_json(cluster_map_from_json(j, "v6.json"))["thresholds"],
            j["thresholds"]);
  // An entry may set nothing but dense heads.
  j["thresholds"][1] = {{"from_tokens", 16384}, {"dense_heads", {{1, 1}}}};
  EXPECT_EQ(cluster_map_from_json(j, "v6.json").thresholds[1].dense_heads, (heads{{1, 1}}));
  // Validation against the model names the entry; the key needs format 6; pairs ascending.
  j["thresholds"][1]["dense_heads"] = {{1, 2}};
  EXPECT_NE(testing::error_of([&] {
              cluster_map_from_json(j, "v6.json").validate(2, 2);
            }).find("v6.json: thresholds from 16384 tokens: dense_heads: [1, 2] out of range"),
            std::string::npos);
  const std::pair<nlohmann::json, const char*> bad[] = {
      {{{1, 1}, {0, 1}}, "dense_heads: must be ascending without repeats"},
      {{{0, 1}, {0, 1}}, "dense_heads: must be ascending without repeats"},
      {nlohmann::json::array(), "\"dense_heads\" must be a non-empty list of [layer, head] pairs"},
      {{{0}}, "expected a [layer, head] pair of integers"},
      {{{-1, 0}}, "negative or too large index"}};
  for (const auto& [value, message] : bad) {
    j["thresholds"][1]["dense_heads"] = value;
    const std::string err = testing::error_of([&] { cluster_map_from_json(j, "v6.json"); });
    EXPECT_NE(err.find(message), std::string::npos) << value.dump() << " -> " << err;
  }
  j["thresholds"][1]["dense_heads"] = {{1, 1}};
  j["format"] = "shareprefill.clusters/5";
  EXPECT_NE(testing::error_of([&] { cluster_map_from_json(j, "v5.json"); })
                .find("v5.json: thresholds: \"dense_heads\" needs \"format\": "
                      "\"shareprefill.clusters/6\""),
            std::string::npos);
}

TEST(ClusterMapThresholds, FormatSevenCarriesTheExactLastRow) {
  nlohmann::json j = map_json("shareprefill.clusters/7");
  j["thresholds"] = two_lengths;
  j["thresholds"][0]["exact_last_row"] = true;
  j["thresholds"][0]["last_row_gamma"] = 0.99;
  j["thresholds"][1]["exact_last_row"] = false;
  j["thresholds"][1]["dense_heads"] = {{1, 1}};
  const cluster_map m = cluster_map_from_json(j, "v7.json");
  EXPECT_EQ(m.thresholds[0].exact_last_row, true);
  EXPECT_EQ(m.thresholds[0].last_row_gamma, 0.99);
  EXPECT_EQ(m.thresholds[1].exact_last_row, false);
  EXPECT_FALSE(m.thresholds[1].last_row_gamma.has_value());
  const nlohmann::json back = cluster_map_to_json(m);
  EXPECT_EQ(back["format"], "shareprefill.clusters/7");
  EXPECT_EQ(back["thresholds"], j["thresholds"]);
  // Without the key the map is written in the format its other keys need (6 here).
  cluster_map v6 = m;
  for (length_thresholds& t : v6.thresholds) t.exact_last_row.reset();
  EXPECT_EQ(cluster_map_to_json(v6)["format"], "shareprefill.clusters/7");  // last_row_gamma
  v6.thresholds[0].last_row_gamma.reset();
  EXPECT_EQ(cluster_map_to_json(v6)["format"], "shareprefill.clusters/6");
  // An entry may set nothing else; the key needs format 7 and a boolean.
  j["thresholds"][1] = {{"from_tokens", 16384}, {"exact_last_row", true}};
  EXPECT_EQ(cluster_map_from_json(j, "v7.json").thresholds[1].exact_last_row, true);
  j["thresholds"][1]["exact_last_row"] = "yes";
  EXPECT_NE(testing::error_of([&] {
              cluster_map_from_json(j, "v7.json");
            }).find("v7.json: thresholds: \"exact_last_row\" must be true or false, got \"yes\""),
            std::string::npos);
  j["thresholds"][1]["exact_last_row"] = true;
  for (const double bad : {0.0, 1.5}) {
    j["thresholds"][1]["last_row_gamma"] = bad;
    EXPECT_NE(testing::error_of([&] {
                cluster_map_from_json(j, "v7.json");
              }).find("\"last_row_gamma\" must be a number in (0, 1]"),
              std::string::npos)
        << bad;
  }
  j["thresholds"][1].erase("last_row_gamma");
  j["format"] = "shareprefill.clusters/6";
  EXPECT_NE(testing::error_of([&] { cluster_map_from_json(j, "v6.json"); })
                .find("v6.json: thresholds: \"exact_last_row\" needs \"format\": "
                      "\"shareprefill.clusters/7\""),
            std::string::npos);
}

TEST(ClusterMapThresholds, OlderFormatsLoadUnchanged) {
  for (const char* format : {"shareprefill.clusters/1", "shareprefill.clusters/2",
                             "shareprefill.clusters/3", "shareprefill.clusters/4"}) {
    const cluster_map m = cluster_map_from_json(map_json(format), format);
    EXPECT_TRUE(m.thresholds.empty()) << format;
    EXPECT_EQ(cluster_map_to_json(m)["format"], "shareprefill.clusters/1") << format;
  }
  nlohmann::json v3 = map_json("shareprefill.clusters/3");
  v3.erase("model");  // written back with kv_heads and head_dim
  v3["dense_heads"] = {{0, 0}};
  v3["head_gammas"] = {{0, 1, 0.99}};
  EXPECT_EQ(cluster_map_to_json(cluster_map_from_json(v3, "v3.json")), v3);
  // Format-2 and -3 keys load under format 4.
  nlohmann::json v4 = v3;
  v4["format"] = "shareprefill.clusters/4";
  v4["thresholds"] = two_lengths;
  EXPECT_EQ(cluster_map_to_json(cluster_map_from_json(v4, "v4.json")), v4);
}

TEST(ClusterMapThresholds, TheShippedSettingsMapCarriesTheSweepsChoices) {
  const cluster_map m = cluster_map_load(std::string(SP_SOURCE_DIR) +
                                         "/data/clusters/smollm2-135m-instruct-head-settings.json");
  EXPECT_NO_THROW(m.validate(30, 9));
  ASSERT_EQ(m.thresholds.size(), 2u);
  const length_thresholds* at_8k = thresholds_for_length(m.thresholds, 8192);
  const length_thresholds* at_32k = thresholds_for_length(m.thresholds, 32768);
  ASSERT_TRUE(at_8k && at_32k);
  EXPECT_EQ(describe_thresholds(*at_8k),
            "for >= 0 tokens: tau_sim 0.5, tau_qa 0.2, min_budget 1024, medoid pivots");
  EXPECT_EQ(describe_thresholds(*at_32k),
            "for >= 24576 tokens: tau_sim 0.1, tau_qa 0.2, min_budget 2048, medoid pivots");
  EXPECT_TRUE(m.calibration.contains("thresholds_selection"));
  // The default map stays format 1 without thresholds.
  const cluster_map plain =
      cluster_map_load(std::string(SP_SOURCE_DIR) + "/data/clusters/smollm2-135m-instruct.json");
  EXPECT_TRUE(plain.thresholds.empty());
}

TEST(ClusterMapThresholds, TheDefaultMapCarriesTheDenseGainPick) {
  const std::string root = SP_SOURCE_DIR;
  const std::string path = root + "/data/clusters/smollm2-135m-instruct-dense-gain.json";
  std::ifstream models(root + "/data/models.json");
  const nlohmann::json j = nlohmann::json::parse(models);
  EXPECT_EQ(j["models"]["smollm2-135m-instruct-q4_1"]["clusters"],
            "data/clusters/smollm2-135m-instruct-dense-gain.json");
  const cluster_map m = cluster_map_load(path);
  EXPECT_NO_THROW(m.validate(30, 9));
  EXPECT_EQ(cluster_map_to_json(m)["format"], "shareprefill.clusters/7");
  size_t shared = 0;
  for (const auto& c : m.clusters) shared += c.shared ? 1 : 0;
  EXPECT_EQ(shared, 5u);
  ASSERT_EQ(m.thresholds.size(), 2u);
  EXPECT_EQ(m.thresholds[0].dense_heads.size(), 13u);
  EXPECT_EQ(describe_thresholds(m.thresholds[0]),
            "for >= 0 tokens: tau_sim 0.5, tau_qa 0.2, min_budget 1024, medoid pivots, 13 more "
            "dense heads, exact last row, last_row_gamma 0.99");
  // Every entry plans the last query block from its measured attention (format 7).
  for (const length_thresholds& t : m.thresholds) {
    EXPECT_EQ(t.exact_last_row, true);
    EXPECT_EQ(t.last_row_gamma, 0.99);
  }
  EXPECT_TRUE(m.calibration.contains("exact_last_row"));
  // From 24,576 tokens: the 32K pick (eval dense-gain --length 32768, a second command).
  EXPECT_EQ(m.thresholds[1].dense_heads,
            (std::vector<std::pair<int64_t, int64_t>>{{9, 1}, {14, 5}}));
  // Each pick's record under the entry it was written to.
  ASSERT_TRUE(m.calibration.contains("dense_gain_selection"));
  const nlohmann::json& picks = m.calibration["dense_gain_selection"];
  const nlohmann::json& at_32k = picks["thresholds entry from 24576 tokens (dense_heads)"];
  EXPECT_EQ(at_32k["length"], 32768);
  double spent = 0.0;
  for (const auto& p : at_32k["picked"]) spent += p["cost"].get<double>();
  EXPECT_LE(spent, at_32k["budget"].get<double>());
  EXPECT_LE(at_32k["measured_with_picks"]["after"]["density"].get<double>(),
            at_32k["budget_for_density"].get<double>());
  // The 8K pick, written by eval dense-gain --unshare-clusters: which clusters went and why.
  const nlohmann::json& u = picks["thresholds entry from 0 tokens (dense_heads)"]["unsharing"];
  size_t unshared = 0;
  for (const auto& c : u["clusters"]) {
    const bool go = c["density_saved"].get<double>() > 0 &&
                    c["loss_points"].get<double>() < u["rate_points_per_density"].get<double>() *
                                                         c["density_saved"].get<double>();
    EXPECT_EQ(c["unshared"].get<bool>(), go) << c.dump();
    unshared += go ? 1 : 0;
  }
  EXPECT_EQ(unshared + shared, 10u);
}

TEST(ClusterMapThresholds, BadThresholdsNameFileKeyAndValue) {
  nlohmann::json v3 = map_json("shareprefill.clusters/3");
  v3["thresholds"] = two_lengths;
  EXPECT_NE(testing::error_of([&] {
              cluster_map_from_json(v3, "old.json");
            }).find("old.json: \"thresholds\" needs \"format\": \"shareprefill.clusters/4\""),
            std::string::npos);
  const std::pair<nlohmann::json, const char*> bad[] = {
      {nlohmann::json::array(), "\"thresholds\" must be a non-empty list"},
      {{{"from_tokens", 0}}, "\"thresholds\" must be a non-empty list"},  // an object, not a list
      {{7}, "thresholds: expected an object, got 7"},
      {{{{"tau_sim", 0.5}}}, "\"from_tokens\" must be a non-negative integer"},
      {{{{"from_tokens", -1}, {"tau_sim", 0.5}}}, "\"from_tokens\" must be a non-negative integer"},
      {{{{"from_tokens", 0.5}, {"tau_sim", 0.5}}},
       "\"from_tokens\" must be a non-negative integer"},
      {{{{"from_tokens", 1024}, {"tau_sim", 0.5}}},
       "the first entry must have \"from_tokens\": 0, got 1024"},
      {{{{"from_tokens", 0}}},
       "an entry must set tau_sim, tau_qa, min_budget, pivot_is_medoid, dense_heads, "
       "exact_last_row or last_row_gamma"},
      {{{{"from_tokens", 0}, {"tau-sim", 0.5}}}, "unknown key \"tau-sim\""},
      {{{{"from_tokens", 0}, {"tau_sim", 0.0}}}, "\"tau_sim\" must be a number in (0, 1], got 0"},
      {{{{"from_tokens", 0}, {"tau_qa", 1.5}}}, "\"tau_qa\" must be a number in (0, 1], got 1.5"},
      {{{{"from_tokens", 0}, {"tau_qa", "0.2"}}}, "\"tau_qa\" must be a number in (0, 1]"},
      {{{{"from_tokens", 0}, {"min_budget", 0}}}, "\"min_budget\" must be an integer >= 1"},
      {{{{"from_tokens", 0}, {"min_budget", 1024.5}}}, "\"min_budget\" must be an integer >= 1"},
      {{{{"from_tokens", 0}, {"tau_sim", 0.5}}, {{"from_tokens", 0}, {"tau_sim", 0.1}}},
       "\"from_tokens\" must be strictly ascending, got 0 after 0"},
      {{{{"from_tokens", 0}, {"tau_sim", 0.5}},
        {{"from_tokens", 8192}, {"tau_sim", 0.1}},
        {{"from_tokens", 4096}, {"tau_sim", 0.3}}},
       "\"from_tokens\" must be strictly ascending, got 4096 after 8192"}};
  for (const auto& [value, message] : bad) {
    nlohmann::json j = map_json("shareprefill.clusters/4");
    j["thresholds"] = value;
    const std::string err = testing::error_of([&] { cluster_map_from_json(j, "t.json"); });
    EXPECT_NE(err.find("t.json: "), std::string::npos) << err;
    EXPECT_NE(err.find(message), std::string::npos) << value.dump() << " -> " << err;
  }
  nlohmann::json v8 = map_json("shareprefill.clusters/8");
  EXPECT_NE(
      testing::error_of([&] { cluster_map_from_json(v8, "v8.json"); }).find("\"format\": expected"),
      std::string::npos);
}

}  // namespace
}  // namespace sp
