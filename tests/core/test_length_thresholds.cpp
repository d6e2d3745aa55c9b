// Planner thresholds per prompt length (issue 17, the cluster map's format 4): a prompt takes the
// last entry whose from_tokens it reaches; an entry replaces only the thresholds it names (format
// 7's exact_last_row included).
#include <gtest/gtest.h>

#include "shareprefill/length_thresholds.h"
#include "test_util.h"

namespace sp {
namespace {

const std::vector<length_thresholds> two_lengths = {{0, 0.5, 0.2, 1024, std::nullopt},
                                                    {16384, 0.1, std::nullopt, 2048, std::nullopt}};

TEST(LengthThresholds, TheLastEntryReachedApplies) {
  EXPECT_EQ(thresholds_for_length(two_lengths, 0), &two_lengths[0]);
  EXPECT_EQ(thresholds_for_length(two_lengths, 8192), &two_lengths[0]);
  EXPECT_EQ(thresholds_for_length(two_lengths, 16383), &two_lengths[0]);
  EXPECT_EQ(thresholds_for_length(two_lengths, 16384), &two_lengths[1]);
  EXPECT_EQ(thresholds_for_length(two_lengths, 131072), &two_lengths[1]);
  EXPECT_EQ(thresholds_for_length({}, 8192), nullptr);
  EXPECT_NE(testing::error_of([] {
              thresholds_for_length(two_lengths, -1);
            }).find("prompt length must be >= 0 tokens, got -1"),
            std::string::npos);
}

TEST(LengthThresholds, AnEntryReplacesOnlyWhatItNames) {
  planner_params p;
  p.tau_sim = 0.7;
  p.tau_qa = 0.3;
  p.min_budget = 512;
  p.gamma = 0.9;
  const planner_params short_prompt = with_thresholds(p, two_lengths[0]);
  EXPECT_EQ(short_prompt.tau_sim, 0.5);
  EXPECT_EQ(short_prompt.tau_qa, 0.2);
  EXPECT_EQ(short_prompt.min_budget, 1024);
  const planner_params long_prompt = with_thresholds(p, two_lengths[1]);
  EXPECT_EQ(long_prompt.tau_sim, 0.1);
  EXPECT_EQ(long_prompt.tau_qa, 0.3);  // not named: kept
  EXPECT_EQ(long_prompt.min_budget, 2048);
  EXPECT_EQ(long_prompt.gamma, 0.9);
  EXPECT_FALSE(long_prompt.pivot_is_medoid);
  EXPECT_NO_THROW(long_prompt.validate());
  length_thresholds medoid = two_lengths[1];
  medoid.pivot_is_medoid = true;
  EXPECT_TRUE(with_thresholds(p, medoid).pivot_is_medoid);
  p.pivot_is_medoid = true;
  medoid.pivot_is_medoid = false;
  EXPECT_FALSE(with_thresholds(p, medoid).pivot_is_medoid);
}

TEST(LengthThresholds, AnEntrysDenseHeadsJoinTheParameters) {
  planner_params p;
  p.dense_heads = {{0, 1}, {3, 2}};
  p.head_gammas = {{1, 4, 0.9}, {2, 0, 0.97}, {3, 2, 0.99}};
  length_thresholds t;
  t.dense_heads = {{1, 4}, {3, 2}, {5, 0}};
  const planner_params q = with_thresholds(p, t);
  using heads = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(q.dense_heads, (heads{{0, 1}, {1, 4}, {3, 2}, {5, 0}}));  // sorted, no repeat
  ASSERT_EQ(q.head_gammas.size(), 1u);  // 1:4 and 3:2 run dense: no gamma of their own
  EXPECT_EQ(q.head_gammas[0].layer, 2);
  EXPECT_NO_THROW(q.validate());
  EXPECT_EQ(q.tau_sim, p.tau_sim);
  EXPECT_EQ(describe_thresholds(t), "for >= 0 tokens: 3 more dense heads");
}

TEST(LengthThresholds, AnEntrySwitchesTheExactLastRowEitherWay) {
  planner_params p;
  length_thresholds t = two_lengths[0];
  EXPECT_FALSE(with_thresholds(p, t).exact_last_row);  // unnamed: kept
  t.exact_last_row = true;
  EXPECT_TRUE(with_thresholds(p, t).exact_last_row);
  EXPECT_EQ(describe_thresholds(t),
            "for >= 0 tokens: tau_sim 0.5, tau_qa 0.2, min_budget 1024, exact last row");
  p.exact_last_row = true;
  t.exact_last_row = false;
  EXPECT_FALSE(with_thresholds(p, t).exact_last_row);
  t.dense_heads = {{2, 1}};
  t.last_row_gamma = 0.99;
  EXPECT_EQ(with_thresholds(p, t).last_row_gamma, 0.99);
  EXPECT_EQ(describe_thresholds(t),
            "for >= 0 tokens: tau_sim 0.5, tau_qa 0.2, min_budget 1024, 1 more dense heads, "
            "estimated last row, last_row_gamma 0.99");
}

TEST(LengthThresholds, DescriptionNamesTheLengthAndTheValues) {
  EXPECT_EQ(describe_thresholds(two_lengths[1]),
            "for >= 16384 tokens: tau_sim 0.1, min_budget 2048");
  EXPECT_EQ(describe_thresholds(two_lengths[0]),
            "for >= 0 tokens: tau_sim 0.5, tau_qa 0.2, min_budget 1024");
  EXPECT_EQ(describe_thresholds({0, std::nullopt, 0.25, std::nullopt, std::nullopt}),
            "for >= 0 tokens: tau_qa 0.25");
  EXPECT_EQ(describe_thresholds({4096, std::nullopt, std::nullopt, 2048, true}),
            "for >= 4096 tokens: min_budget 2048, medoid pivots");
}

}  // namespace
}  // namespace sp
