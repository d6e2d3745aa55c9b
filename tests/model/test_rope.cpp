// The rotary table against Hugging Face transformers' (tests/data/rope_golden.json, written by
// scripts/make_rope_golden.py): YaRN's per-pair frequencies and attention factor, and linear
// scaling, for SmolLM2's rotary shape and others. transformers computes in float32.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "model/rope.h"
#include "test_util.h"

namespace sp {
namespace {

nlohmann::json golden() {
  std::ifstream f(std::string(SP_SOURCE_DIR) + "/tests/data/rope_golden.json");
  EXPECT_TRUE(f.good()) << "tests/data/rope_golden.json missing";
  return nlohmann::json::parse(f);
}

TEST(Rope, ScaledFrequenciesMatchTransformers) {
  const nlohmann::json g = golden();
  ASSERT_GE(g["cases"].size(), 5u);
  for (const auto& c : g["cases"]) {
    const std::string type = c["type"];
    const int64_t dim = c["rope_dim"];
    SCOPED_TRACE(type + " dim " + std::to_string(dim) + " factor " + std::to_string(double(c["factor"])));
    const rope_table t = rope_make_table(dim, c["theta"], type, c["factor"], c["context"]);
    const std::vector<double> want = c["inv_freq"];
    ASSERT_EQ(t.inv_freq.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(t.inv_freq[i], want[i], 2e-6 * want[i]) << "pair " << i;
    EXPECT_NEAR(t.attention_factor, double(c["attention_factor"]), 1e-6);
  }
}

TEST(Rope, YarnKeepsFastPairsAndInterpolatesSlowOnes) {
  // dim 64, theta 1e5, context 8192: pair 0 turns ~1300 times (kept), the last ~0.04 times
  // (interpolated by the factor).
  const rope_table none = rope_make_table(64, 100000.0, "none", 1.0, 8192);
  const rope_table yarn = rope_make_table(64, 100000.0, "yarn", 16.0, 8192);
  EXPECT_FLOAT_EQ(yarn.inv_freq.front(), none.inv_freq.front());
  EXPECT_FLOAT_EQ(yarn.inv_freq.back(), none.inv_freq.back() / 16.0f);
  for (size_t i = 1; i < yarn.inv_freq.size(); ++i) EXPECT_LT(yarn.inv_freq[i], yarn.inv_freq[i - 1]);
  EXPECT_EQ(none.attention_factor, 1.0f);
}

TEST(Rope, RejectsBadScaling) {
  EXPECT_NE(testing::error_of([] { rope_make_table(64, 1e4, "yarn2", 4.0, 8192); })
                .find("unknown rope scaling 'yarn2'"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] { rope_make_table(64, 1e4, "yarn", 0.5, 8192); }).find(">= 1"),
            std::string::npos);
  EXPECT_NE(testing::error_of([] { rope_make_table(63, 1e4, "none", 1.0, 8192); }).find("even"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
