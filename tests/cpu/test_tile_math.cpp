// The vectorisable exp of the CPU kernels on arguments outside its accurate range (issue 18,
// item 6): huge finite inputs make scores +-Inf and inf - inf = NaN; the result must be defined
// (no float-to-int conversion of NaN/Inf, no shift into the sign bit) and honest: 0 below -87,
// +Inf above 88, NaN for NaN, and still accurate inside [-87, 0].
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "cpu/tile_math.h"

namespace sp {
namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

float exp_of(float x, float shift) {
  float v = x;
  tile_math::exp_shifted_inplace(&v, 1, shift);
  return v;
}

TEST(TileMathExp, AccurateInsideTheRange) {
  for (float t = -87.0f; t <= 0.0f; t += 0.37f) {
    const double want = std::exp(static_cast<double>(t));
    EXPECT_NEAR(exp_of(t, 0.0f), want, 2e-7 * want) << "t = " << t;
  }
  EXPECT_EQ(exp_of(-88.0f, 0.0f), 0.0f);
  EXPECT_EQ(exp_of(-inf, 0.0f), 0.0f);
}

TEST(TileMathExp, OutOfRangeArgumentsAreInfOrNaNNotGarbage) {
  // Above the range the old code shifted the exponent into the sign bit: a tiny negative value.
  EXPECT_EQ(exp_of(100.0f, 0.0f), inf);
  EXPECT_EQ(exp_of(3e38f, -3e38f), inf);  // t overflows to +Inf
  EXPECT_EQ(exp_of(inf, 0.0f), inf);
  EXPECT_TRUE(std::isnan(exp_of(inf, inf)));  // inf - inf: the all-Inf score row
  EXPECT_TRUE(std::isnan(exp_of(std::nanf(""), 0.0f)));
  EXPECT_TRUE(std::isnan(exp_of(0.0f, std::nanf(""))));
  // A whole vectorised row mixing every case keeps each element's own answer.
  std::vector<float> row = {0.0f, -1.0f, 100.0f, std::nanf(""), -200.0f, inf, -inf, -0.5f};
  tile_math::exp_shifted_inplace(row.data(), static_cast<int64_t>(row.size()), 0.0f);
  EXPECT_EQ(row[0], 1.0f);
  EXPECT_NEAR(row[1], std::exp(-1.0), 2e-7);
  EXPECT_EQ(row[2], inf);
  EXPECT_TRUE(std::isnan(row[3]));
  EXPECT_EQ(row[4], 0.0f);
  EXPECT_EQ(row[5], inf);
  EXPECT_EQ(row[6], 0.0f);
  EXPECT_NEAR(row[7], std::exp(-0.5), 2e-7);
}

}  // namespace
}  // namespace sp
