// extend_pivot_pattern on row bitsets (the device planner's state form, issue 16): the hand-made
// case of test_chunk_carry.cpp gives the same tiles as bits; the bitset and tile forms agree on
// random patterns and row ranges (the tile form converts to bits and back, so this checks the
// conversions and the row and word bounds); non-causal bits and short rows are errors.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "shareprefill/pattern_extension.h"
#include "test_util.h"

namespace sp {
namespace {

// [rows, words] bitset of `tiles`.
std::vector<uint32_t> bits_of(const std::vector<tile>& tiles, int64_t rows, int64_t words) {
  std::vector<uint32_t> bits(static_cast<size_t>(rows * words), 0u);
  for (const tile& t : tiles) bits[t.first * words + t.second / 32] |= 1u << (t.second % 32);
  return bits;
}

TEST(PatternExtension, BitsOfTheHandMadeCase) {
  const std::vector<tile> pattern{{4, 1}, {5, 1}, {6, 1}, {4, 3}, {4, 4}, {5, 5},
                                  {6, 6}, {7, 7}, {4, 2}, {5, 3}, {2, 0}};
  const std::vector<uint32_t> bits = bits_of(pattern, 8, 1);
  const std::vector<uint32_t> out = extend_pivot_pattern_bits(bits.data(), 1, 4, 8, 8, 10, 2);
  ASSERT_EQ(out.size(), 20u);
  EXPECT_EQ(out, bits_of({{8, 1}, {8, 6}, {8, 8}, {9, 1}, {9, 7}, {9, 9}}, 10, 2));
}

TEST(PatternExtension, BitsAndTilesAgreeOnRandomPatterns) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t rows = 1 + static_cast<int64_t>(rng() % 90);
    const int64_t row_begin = static_cast<int64_t>(rng() % rows);
    const int64_t new_begin = static_cast<int64_t>(rng() % (rows + 40));
    const int64_t new_end = new_begin + 1 + static_cast<int64_t>(rng() % 70);
    const double fill = (rng() % 100) / 100.0;
    std::vector<tile> pattern;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c <= r; ++c)
        if ((rng() % 1000) / 1000.0 < fill || c == r - 3 || c == 1)
          pattern.emplace_back(static_cast<int32_t>(r), static_cast<int32_t>(c));
    const std::vector<tile> tiles =
        extend_pivot_pattern(pattern, row_begin, rows, new_begin, new_end);
    const int64_t words = (rows + 31) / 32 + 1, out_words = (new_end + 31) / 32 + 1;  // padded
    const std::vector<uint32_t> bits = bits_of(pattern, rows, words);
    const std::vector<uint32_t> out = extend_pivot_pattern_bits(bits.data(), words, row_begin, rows,
                                                                new_begin, new_end, out_words);
    EXPECT_EQ(out, bits_of(tiles, new_end, out_words)) << "trial " << trial;
  }
}

TEST(PatternExtension, BadBitsAreErrors) {
  const std::vector<uint32_t> bits = bits_of({{2, 1}}, 4, 1);
  std::vector<uint32_t> wrong = bits;
  wrong[1] |= 1u << 3;  // tile (1, 3)
  EXPECT_NE(testing::error_of([&] {
              extend_pivot_pattern_bits(wrong.data(), 1, 0, 4, 4, 6, 1);
            }).find("tile (1, 3) is not causal"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              extend_pivot_pattern_bits(bits.data(), 1, 0, 4, 30, 40, 1);
            }).find("cannot hold columns up to 4 and 40"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              extend_pivot_pattern_bits(bits.data(), 1, 2, 2, 4, 6, 1);
            }).find("pattern rows [2, 2) are empty"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
