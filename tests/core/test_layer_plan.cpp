// Layer plans as plain data (layer_plan_view.h): sizes, carving, and the host builder from a
// block mask (CSR copied, longest-first schedule, pivot slots and scratch rows), with the
// errors of each at its boundary.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include "shareprefill/layer_plan_view.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::error_of;

// A 3-head mask over 300 tokens (3 blocks): head 0 dense, head 1 diagonal, head 2 sink only.
block_mask three_head_mask() {
  std::vector<std::vector<tile>> tiles(3);
  for (int32_t r = 0; r < 3; ++r) {
    for (int32_t c = 0; c <= r; ++c) tiles[0].emplace_back(r, c);
    tiles[1].emplace_back(r, r);
    tiles[2].emplace_back(r, 0);
  }
  return block_mask::from_tiles(300, 128, tiles);
}

struct host_plan {
  std::vector<std::byte> bytes;
  layer_plan_view view;
  explicit host_plan(const layer_plan_capacity& c) {
    bytes.resize(static_cast<size_t>(plan_workspace_bytes(c)) + 256);
    void* base = bytes.data();
    size_t space = bytes.size();
    std::align(256, static_cast<size_t>(plan_workspace_bytes(c)), base, space);
    view = layer_plan_carve(base, space, c, false);
  }
};

TEST(LayerPlan, FillCopiesCsrAndOrdersRowsLongestFirst) {
  const block_mask mask = three_head_mask();
  const layer_plan_capacity cap = layer_plan_capacity_of(mask, {0, 2});
  EXPECT_EQ(cap.col_capacity, 6 + 3 + 3);
  EXPECT_EQ(cap.max_pivots, 2);
  EXPECT_EQ(cap.scratch_tiles, 6 + 3);
  host_plan hp(cap);
  const layer_plan_view& p = hp.view;
  layer_plan_fill(p, mask, {0, 2}, {0, 4, 1});
  EXPECT_EQ(p.n_blocks, 3);
  EXPECT_EQ(layer_plan_used_tiles(p), 12);
  EXPECT_TRUE(std::equal(mask.row_ptr.begin(), mask.row_ptr.end(), p.row_ptr));
  EXPECT_TRUE(std::equal(mask.col_idx.begin(), mask.col_idx.end(), p.col_idx));
  EXPECT_EQ(p.kinds[1], 4);
  // Work items: (head 0, row 2) has 3 tiles, (0, 1) 2, then the one-tile rows in item order.
  const std::vector<int32_t> expect = {0, 2, 0, 1, 0, 0, 1, 0, 1, 1, 1, 2, 2, 0, 2, 1, 2, 2};
  EXPECT_TRUE(std::equal(expect.begin(), expect.end(), p.schedule));
  EXPECT_EQ(p.pivot_slot[0], 0);
  EXPECT_EQ(p.pivot_slot[1], -1);
  EXPECT_EQ(p.pivot_slot[2], 1);
  // Head 0's tiles take scratch rows 0..5, head 2's (col_idx 9..11) rows 6..8.
  EXPECT_EQ(p.scratch_offset[0] + mask.row_begin(0, 0), 0);
  EXPECT_EQ(p.scratch_offset[2] + mask.row_begin(2, 0), 6);
}

TEST(LayerPlan, WorstCaseCapacityHoldsAnyMask) {
  const layer_plan_capacity cap = layer_plan_capacity_worst_case(300, 3, 3);
  EXPECT_EQ(cap.col_capacity, 3 * 6);
  EXPECT_EQ(cap.scratch_tiles, 3 * 6);
  host_plan hp(cap);
  const block_mask dense = block_mask::dense_causal(300, 128, 3);
  layer_plan_fill(hp.view, dense, {0, 1, 2});
  EXPECT_EQ(hp.view.kinds[0], head_kind_unrecorded);
  EXPECT_GE(attention_scratch_bytes(cap), cap.scratch_tiles * 128 * 4 + 8);
}

TEST(LayerPlan, RejectsWhatDoesNotFit) {
  const block_mask mask = three_head_mask();
  const layer_plan_capacity cap = layer_plan_capacity_of(mask, {2});  // 3 scratch tiles
  host_plan hp(cap);
  EXPECT_NE(error_of([&] {
              layer_plan_fill(hp.view, mask, {0, 2});
            }).find("max_pivots=1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { layer_plan_fill(hp.view, mask, {0}); }).find("scratch_tiles=3"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              layer_plan_fill(hp.view, block_mask::dense_causal(300, 128, 2), {});
            }).find("heads=2"),
            std::string::npos);
  const layer_plan_capacity two = layer_plan_capacity_of(mask, {0, 2});
  host_plan hp2(two);
  EXPECT_NE(error_of([&] {
              layer_plan_fill(hp2.view, mask, {2, 0});
            }).find("ascending"),
            std::string::npos);
  char* aligned_base = reinterpret_cast<char*>(hp.view.row_ptr);  // the workspace's start
  EXPECT_NE(
      error_of([&] { layer_plan_carve(aligned_base + 8, 1 << 16, cap, false); }).find("aligned"),
      std::string::npos);
  EXPECT_NE(error_of([&] { layer_plan_carve(aligned_base, 8, cap, false); }).find("needed"),
            std::string::npos);
  layer_plan_view device = hp.view;
  device.on_device = true;
  EXPECT_NE(error_of([&] { layer_plan_fill(device, mask, {0}); }).find("device memory"),
            std::string::npos);
  EXPECT_NE(error_of([] { layer_plan_capacity_worst_case(300, 3, 4); }).find("max_pivots=4"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
