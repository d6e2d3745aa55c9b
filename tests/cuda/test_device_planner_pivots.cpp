// pivot_publishing (pivot_publishing.h): the device planner with `used` and `deferred` against
// `all` on the same layers of one prompt, with the CUDA kernel: every layer's output bytes, the
// head kinds and the sharing state (test_device_planner.cpp has the planner against the host
// planner). Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <set>
#include <vector>

#include "device_planner_test_util.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/pivot_publishing.h"
#include "shareprefill/prefill_layer.h"
#include "test_util.h"

namespace sp {
namespace {

using namespace sp::testing;

class DevicePlannerPivots : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

// pivot_publishing::used and ::deferred against ::all on the same layers of one prompt. A pivot
// whose cluster has no member in a later layer (the cluster "late", cut out of group 0's layer-1
// heads, and any cluster whose pivot comes in its last layer) computes no A in either: no slot,
// walked. With `deferred` every other pivot does the same at its layer and computes its A in the
// first later layer whose member passes the profile gate (the synthetic layers share, so that
// runs); with `used` those pivots keep their slot. The kinds and every layer's output bytes are
// those of `all`, and so is the state but for the patterns nobody needed. A state begun with
// `used` refuses begin_chunk.
TEST_F(DevicePlannerPivots, PublishOnlyWhatIsUsed) {
  const planner_case c = make_case(4224, 8, 2, 64, 3);
  cluster_map map = map_of(c);
  head_cluster late;
  late.id = "late";
  late.shared = true;
  std::vector<head_ref>& first = map.clusters.front().members;
  for (auto it = first.begin(); it != first.end();)
    if (it->layer == 1)
      late.members.push_back(*it), it = first.erase(it);
    else
      ++it;
  ASSERT_FALSE(late.members.empty());
  map.clusters.push_back(late);
  const int64_t late_index = static_cast<int64_t>(map.clusters.size()) - 1;
  const std::vector<int32_t> cluster_of = map.head_table(c.layers, c.heads);
  std::vector<int64_t> last_layer(map.clusters.size(), -1);
  for (size_t i = 0; i < map.clusters.size(); ++i)
    for (const head_ref& m : map.clusters[i].members)
      last_layer[i] = std::max<int64_t>(last_layer[i], m.layer);
  const device_planner dp(params_of(c), c.layers, c.heads, &map);
  const layer_shape shape{c.n, c.heads, c.kv_heads, c.dim};
  const std::array<pivot_publishing, 3> choices{pivot_publishing::all, pivot_publishing::used,
                                                pivot_publishing::deferred};
  std::array<prefill_layer_params, 3> params;
  std::vector<device_buffer> ws, st;
  std::array<prefill_layer_state, 3> state;
  for (size_t m = 0; m < choices.size(); ++m) {
    params[m].device = &dp;
    params[m].publishing = choices[m];
    ws.emplace_back(static_cast<size_t>(prefill_layer_workspace_bytes(shape, params[m], true)));
    st.emplace_back(static_cast<size_t>(dp.state_bytes(c.n, choices[m], c.dim)));
    prefill_layer_begin(state[m], params[m], c.n, true, st[m].data(),
                        static_cast<int64_t>(st[m].size()), nullptr);
  }
  std::set<int64_t> never;   // clusters whose pivot can never publish without `all`
  std::set<int64_t> needed;  // clusters a head shared with
  for (int64_t layer = 0; layer < c.layers; ++layer) {
    SCOPED_TRACE(str("layer ", layer));
    const layer_inputs x = make_inputs(c, layer);
    const device_inputs in(c, x);
    std::vector<std::vector<uint16_t>> outs;
    std::vector<std::vector<head_kind>> kinds;
    for (size_t m = 0; m < choices.size(); ++m) {
      SCOPED_TRACE(pivot_publishing_name(choices[m]));
      params[m].layer = layer;
      device_buffer dout(x.q.size() * 2);
      const tensor_view o = on_device(dout.data(), dtype::bf16, {c.n, c.heads, c.dim});
      const prefill_layer_result r =
          prefill_layer(in.q, in.k, in.v, o, state[m], params[m], ws[m].data(),
                        static_cast<int64_t>(ws[m].size()), nullptr);
      ASSERT_NO_THROW(device_plan_check(state[m].device, nullptr));
      kinds.push_back(device_planner::download_kinds(r.device_plan.plan));
      outs.emplace_back(x.q.size());
      dout.download(outs.back().data(), dout.size());
      if (m == 0) continue;
      // The pivots without A: slot -1, walked (listed in the plan's walked heads).
      const std::vector<int32_t> slots = download(ws[m], r.device_plan.plan.pivot_slot, c.heads);
      const std::vector<int32_t> walked = download_walk_heads(r.device_plan.plan);
      for (int64_t h = 0; h < c.heads; ++h) {
        if (kinds.back()[static_cast<size_t>(h)] != head_kind::pivot) continue;
        const int64_t cluster = cluster_of[static_cast<size_t>(layer * c.heads + h)];
        const bool nobody = last_layer[static_cast<size_t>(cluster)] == layer;
        if (nobody) never.insert(cluster);
        const bool without_a = nobody || choices[m] == pivot_publishing::deferred;
        EXPECT_EQ(slots[static_cast<size_t>(h)] < 0, without_a) << "pivot " << h;
        EXPECT_EQ(std::count(walked.begin(), walked.end(), h) == 1, without_a) << "pivot " << h;
      }
    }
    for (size_t m = 1; m < choices.size(); ++m) {
      EXPECT_EQ(kinds[0], kinds[m]) << pivot_publishing_name(choices[m]);
      EXPECT_TRUE(outs[0] == outs[m])
          << "the layer's output with " << pivot_publishing_name(choices[m]) << " differs";
    }
    for (int64_t h = 0; h < c.heads; ++h)
      if (kinds[0][static_cast<size_t>(h)] == head_kind::shared)
        needed.insert(cluster_of[static_cast<size_t>(layer * c.heads + h)]);
  }
  EXPECT_EQ(never.count(late_index), 1u) << "the late cluster's pivot";
  EXPECT_FALSE(needed.empty()) << "no head shared: the deferred A never ran";
  const std::vector<device_cluster_slot> a = dp.download_state(state[0].device);
  for (size_t m = 1; m < choices.size(); ++m) {
    const std::vector<device_cluster_slot> u = dp.download_state(state[m].device);
    ASSERT_EQ(a.size(), u.size());
    for (size_t i = 0; i < a.size(); ++i) {
      SCOPED_TRACE(str(pivot_publishing_name(choices[m]), " cluster ", map.clusters[i].id));
      EXPECT_EQ(a[i].has_pivot, u[i].has_pivot);
      EXPECT_EQ(a[i].pivot_layer, u[i].pivot_layer);
      EXPECT_EQ(a[i].pivot_head, u[i].pivot_head);
      EXPECT_TRUE(a[i].pivot_v_blk == u[i].pivot_v_blk);
      const bool nobody = never.count(static_cast<int64_t>(i)) == 1;
      EXPECT_FALSE(nobody && u[i].has_pattern) << "a pivot nobody can share with published";
      if (!nobody &&
          (choices[m] == pivot_publishing::used || needed.count(static_cast<int64_t>(i)) == 1)) {
        EXPECT_EQ(u[i].has_pattern, a[i].has_pattern) << "a needed pattern is missing";
      }
      if (!u[i].has_pattern) continue;
      EXPECT_TRUE(a[i].has_pattern);
      EXPECT_TRUE(a[i].pivot_pattern == u[i].pivot_pattern);
      EXPECT_EQ(a[i].pivot_vs_ratio, u[i].pivot_vs_ratio);
    }
  }
  EXPECT_NE(error_of([&] {
              prefill_layer_begin_chunk(state[1], params[1], c.n + 128, nullptr);
            }).find("begun with pivot_publishing::used or deferred"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
