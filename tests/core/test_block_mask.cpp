// CSR block masks: construction from tiles, validation messages, density, expansion.
#include <gtest/gtest.h>

#include "shareprefill/block_mask.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::error_of;

TEST(BlockMask, FromTilesSortsMergesAndCounts) {
  // 300 tokens, bs 128 -> 3 blocks.
  auto m = block_mask::from_tiles(300, 128, {{{2, 0}, {1, 1}, {2, 2}, {2, 0}}, {{0, 0}}});
  EXPECT_EQ(m.n_blocks, 3);
  EXPECT_EQ(m.head_tiles(0), 3);
  EXPECT_EQ(m.head_tiles(1), 1);
  EXPECT_TRUE(m.contains(0, 2, 0));
  EXPECT_FALSE(m.contains(0, 2, 1));
  EXPECT_EQ(m.tiles_of(0), (std::vector<tile>{{1, 1}, {2, 0}, {2, 2}}));
  EXPECT_DOUBLE_EQ(m.head_density(0), 3.0 / 6.0);
  EXPECT_DOUBLE_EQ(m.density(), 4.0 / 12.0);
  EXPECT_NO_THROW(m.validate());
}

TEST(BlockMask, DenseCausalHasEveryCausalTile) {
  auto m = block_mask::dense_causal(1000, 128, 2);
  EXPECT_EQ(m.n_blocks, 8);
  EXPECT_EQ(m.total_tiles(), 2 * 36);
  EXPECT_DOUBLE_EQ(m.density(), 1.0);
  EXPECT_TRUE(m.is_dense_causal());
  // One tile fewer in any head is no longer the full causal mask.
  auto tiles = std::vector<std::vector<tile>>{m.tiles_of(0), m.tiles_of(1)};
  tiles[1].pop_back();
  EXPECT_FALSE(block_mask::from_tiles(1000, 128, tiles).is_dense_causal());
}

TEST(BlockMask, ValidationNamesTheProblem) {
  // 2 blocks, one head: row_ptr has 3 entries.
  EXPECT_NE(error_of([] { block_mask::from_csr(256, 128, 1, {0, 1, 3}, {0, 1, 0}); })
                .find("not sorted"),
            std::string::npos);
  EXPECT_NE(error_of([] { block_mask::from_csr(256, 128, 1, {0, 1, 3}, {0, 0, 0}); })
                .find("duplicate column 0"),
            std::string::npos);
  EXPECT_NE(error_of([] { block_mask::from_csr(256, 128, 1, {0, 1, 2}, {1, 0}); })
                .find("above the diagonal"),
            std::string::npos);
  EXPECT_NE(error_of([] { block_mask::from_csr(256, 128, 1, {0, 1, 2}, {0, -1}); })
                .find("negative column"),
            std::string::npos);
  EXPECT_NE(error_of([] { block_mask::from_csr(256, 128, 1, {0, 1}, {0}); }).find("row_ptr has"),
            std::string::npos);
  EXPECT_NE(error_of([] { block_mask::from_tiles(256, 128, {{{2, 0}}}); }).find("head 0"),
            std::string::npos);
  EXPECT_NE(error_of([] { block_mask::dense_causal(0, 128, 1); }).find("n_tokens"),
            std::string::npos);
  EXPECT_NE(error_of([] { block_mask::dense_causal(10, 100, 1); }).find("power of two"),
            std::string::npos);
}

TEST(BlockMask, ExpandAppliesCausalRuleInsideTiles) {
  // N = 5 with bs 16: one block; the diagonal tile expands to the lower triangle.
  auto m = block_mask::from_tiles(5, 16, {{{0, 0}}});
  auto t = m.expand_to_token_mask(0);
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) EXPECT_EQ(t[i * 5 + j], j <= i ? 1 : 0);
  // 40 tokens, bs 16: tiles (2,0) and (2,2) only.
  auto m2 = block_mask::from_tiles(40, 16, {{{2, 0}, {2, 2}}});
  auto t2 = m2.expand_to_token_mask(0);
  EXPECT_EQ(t2[35 * 40 + 3], 1);
  EXPECT_EQ(t2[35 * 40 + 20], 0);   // block 1 not visited
  EXPECT_EQ(t2[35 * 40 + 35], 1);
  EXPECT_EQ(t2[33 * 40 + 34], 0);   // above the diagonal
  EXPECT_EQ(t2[10 * 40 + 0], 0);    // row block 0 has no tiles
}

}  // namespace
}  // namespace sp
