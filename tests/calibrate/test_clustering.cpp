// Average-linkage clustering, flat cuts and the adjusted Rand index on constructed distance
// matrices with known answers, including ties (which must resolve deterministically).
#include <gtest/gtest.h>

#include "shareprefill/calibrate.h"
#include "test_util.h"

namespace sp {
namespace {

distance_matrix matrix(int64_t n, std::initializer_list<double> upper) {
  distance_matrix m;
  m.n = n;
  m.d.assign(static_cast<size_t>(n * n), 0.0);
  auto it = upper.begin();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j, ++it) m.d[i * n + j] = m.d[j * n + i] = *it;
  return m;
}

TEST(Clustering, TwoObviousPairs) {
  // d01 = 0.1, d02 = 0.9, d03 = 0.9, d12 = 0.9, d13 = 0.9, d23 = 0.2
  const distance_matrix m = matrix(4, {0.1, 0.9, 0.9, 0.9, 0.9, 0.2});
  const auto merges = average_linkage(m);
  ASSERT_EQ(merges.size(), 3u);
  EXPECT_EQ(merges[0].a, 0);
  EXPECT_EQ(merges[0].b, 1);
  EXPECT_DOUBLE_EQ(merges[0].height, 0.1);
  EXPECT_EQ(merges[1].a, 2);
  EXPECT_EQ(merges[1].b, 3);
  EXPECT_DOUBLE_EQ(merges[1].height, 0.2);
  EXPECT_DOUBLE_EQ(merges[2].height, 0.9);
  EXPECT_EQ(merges[2].size, 4);
  EXPECT_EQ(cut_at_distance(merges, 4, 0.5), (std::vector<int32_t>{0, 0, 1, 1}));
  EXPECT_EQ(cut_at_distance(merges, 4, 0.15), (std::vector<int32_t>{0, 0, 1, 2}));
  EXPECT_EQ(cut_at_distance(merges, 4, 0.05), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(cut_to_count(merges, 4, 2), (std::vector<int32_t>{0, 0, 1, 1}));
  EXPECT_EQ(cut_to_count(merges, 4, 1), (std::vector<int32_t>{0, 0, 0, 0}));
}

TEST(Clustering, AverageLinkageAveragesMemberDistances) {
  // After {0, 1} merge at 0.2, point 2 is at (0.6 + 0.8) / 2 = 0.7 (not min 0.6 or max 0.8).
  const auto merges = average_linkage(matrix(3, {0.2, 0.6, 0.8}));
  ASSERT_EQ(merges.size(), 2u);
  EXPECT_DOUBLE_EQ(merges[1].height, 0.7);
  // Size-weighted: {0,1,2} vs 3 with d03 = 0.1, d13 = 0.4, d23 = 1.0 -> 0.5.
  const auto m4 = average_linkage(matrix(4, {0.05, 0.06, 0.1, 0.07, 0.4, 1.0}));
  EXPECT_NEAR(m4[2].height, 0.5, 1e-12);  // exact arithmetic up to fp64 rounding
}

TEST(Clustering, TiesMergeTheSmallestPairFirst) {
  const distance_matrix m = matrix(4, {0.5, 0.5, 0.5, 0.5, 0.5, 0.5});
  const auto merges = average_linkage(m);
  ASSERT_EQ(merges.size(), 3u);
  EXPECT_EQ(std::make_pair(merges[0].a, merges[0].b), std::make_pair(0, 1));
  EXPECT_EQ(std::make_pair(merges[1].a, merges[1].b), std::make_pair(0, 2));
  EXPECT_EQ(std::make_pair(merges[2].a, merges[2].b), std::make_pair(0, 3));
  EXPECT_EQ(cut_to_count(merges, 4, 2), (std::vector<int32_t>{0, 0, 0, 1}));
  // Same input, same answer.
  const auto again = average_linkage(m);
  for (size_t i = 0; i < merges.size(); ++i) EXPECT_EQ(merges[i].b, again[i].b);
}

TEST(Clustering, AdjustedRandIndex) {
  EXPECT_DOUBLE_EQ(adjusted_rand_index({0, 0, 1, 1, 2}, {3, 3, 0, 0, 1}), 1.0);
  // Crossed 2x2: index 0, expected 2 * 2 / 6, max 2 -> (0 - 2/3) / (2 - 2/3) = -0.5.
  EXPECT_NEAR(adjusted_rand_index({0, 0, 1, 1}, {0, 1, 0, 1}), -0.5, 1e-12);
  EXPECT_DOUBLE_EQ(adjusted_rand_index({0, 1, 2}, {0, 1, 2}), 1.0);
}

TEST(Clustering, BadInput) {
  distance_matrix m = matrix(3, {0.2, 0.6, 0.8});
  m.d[1] = 0.3;  // (0, 1) no longer equals (1, 0)
  EXPECT_NE(testing::error_of([&] { average_linkage(m); }).find("not symmetric"),
            std::string::npos);
  m = matrix(3, {-0.2, 0.6, 0.8});
  EXPECT_NE(testing::error_of([&] { average_linkage(m); }).find("non-negative"), std::string::npos);
  const auto merges = average_linkage(matrix(3, {0.2, 0.6, 0.8}));
  EXPECT_NE(testing::error_of([&] { cut_to_count(merges, 3, 4); }).find("[1, 3]"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { cut_at_distance(merges, 3, -1.0); }).find("cut"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { cut_at_distance(merges, 5, 0.5); }).find("merges"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
