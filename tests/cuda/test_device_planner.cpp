// The device planner (device_planner.h) against the host planner (planner.h), the oracle: the
// same bf16 inputs (the synthetic structured generator and random ones, ragged N, GQA 1/3/4/8,
// D 64/128, every mode, a dense layer) are planned layer after layer on both, the pivots'
// exact block attention A (computed on the host) is published into both states, and the block
// profiles, budgets, head kinds, tiles and the carried state must agree.
// Float rounding: the device scores with fp32 tensor-core products and a different summation
// order, so values agree to ~1e-6 relative, not bitwise. Where a decision sits within rounding
// of its threshold (a JS distance within 1e-4 of tau_qa / tau_sim) the kinds may differ: the
// test accepts that and stops comparing the case (the states diverge by design). Where two
// profile entries tie to rounding, the top-k may pick the other one: tile sets may then differ,
// and the test bounds the attention mass that moves (computed from the head's exact block
// attention) by 1% of the rows' mass, instead of asking for equal sets. Budgets may differ by
// one block for the same reason (a cover count at gamma within rounding).
// Per-head gammas (a format-3 map's head_gammas): the budgets are compared with the cover count
// at each head's own gamma; the rest as above (the host planner applies them).
// Walked dense heads (layer_plan_view::walk_heads): the ones the map makes dense and never a
// pivot, their work items last in the schedule, and the layer's attention with them on the
// causal walk the same bytes as on the plan's items.
// Also: bad shapes, a too-small workspace and NaN in k give clear errors, and a plan captured in
// a CUDA graph and replayed equals a direct one. Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <set>
#include <thread>

#include "shareprefill/attention.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_graph.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_layer.h"
#include "shareprefill/statistics.h"
#include "shareprefill/synthetic.h"
#include "device_planner_test_util.h"
#include "test_util.h"

namespace sp {
namespace {

using namespace sp::testing;

struct device_run {
  device_planner dp;
  device_buffer ws, st;
  device_plan_state state;
  device_run(const planner_case& c, const cluster_map& map)
      : dp(params_of(c), c.layers, c.heads, c.mode == plan_mode::shareprefill ? &map : nullptr),
        ws(static_cast<size_t>(dp.workspace_bytes({c.n, c.heads, c.kv_heads, c.dim}))),
        st(static_cast<size_t>(dp.state_bytes(c.n))) {
    dp.begin_prompt(state, st.data(), static_cast<int64_t>(st.size()), c.n, nullptr);
  }
};

// What the planner must walk: in a planned (not all-dense) layer, the dense heads (a dense
// layer's, the map's dense heads) that cannot become a pivot (in shareprefill mode: not a member
// of a shared cluster, or not its medoid with pivot_is_medoid).
std::vector<int32_t> expected_walk_heads(const planner_case& c, const cluster_map& map,
                                         int64_t layer, const std::vector<head_kind>& kinds,
                                         bool all_dense) {
  std::vector<int32_t> heads;
  if (all_dense) return heads;
  const planner_params params = params_of(c);
  const bool dense_layer = std::count(c.dense_layers.begin(), c.dense_layers.end(), layer) > 0;
  for (int64_t h = 0; h < c.heads; ++h) {
    const bool dense = dense_layer || std::count(c.dense_heads.begin(), c.dense_heads.end(),
                                                 std::pair<int64_t, int64_t>{layer, h}) > 0;
    bool maybe_pivot = false;
    if (c.mode == plan_mode::shareprefill)
      for (const head_cluster& hc : map.clusters)
        maybe_pivot |= hc.shared && (!params.pivot_is_medoid ||
                                     (hc.medoid && hc.medoid->layer == layer && hc.medoid->head == h)) &&
                       std::count(hc.members.begin(), hc.members.end(),
                                  head_ref{static_cast<int32_t>(layer), static_cast<int32_t>(h)}) > 0;
    if (dense && !maybe_pivot) {
      EXPECT_EQ(kinds[static_cast<size_t>(h)], head_kind::dense) << "walked head " << h;
      heads.push_back(static_cast<int32_t>(h));
    }
  }
  return heads;
}

// The layer's attention with its walked heads on the causal walk and on the plan's items
// (cuda_attention_options::causal_kernel): the same bytes (each row's arithmetic in the same
// order). On a GPU without the walk both runs take the plan's items.
void expect_walk_gives_the_items_bytes(const planner_case& c, const layer_inputs& x,
                                       const device_inputs& in, const device_plan_output& dpo) {
  device_buffer dv(x.v.size() * 2);
  dv.upload(x.v.data(), dv.size());
  const tensor_view v = on_device(dv.data(), dtype::bf16, {c.n, c.kv_heads, c.dim});
  std::vector<std::vector<uint16_t>> outs;
  std::vector<std::vector<float>> lses;
  for (const bool walk : {true, false}) {
    device_buffer dout(x.q.size() * 2), dlse(static_cast<size_t>(c.heads * c.n) * 4);
    const tensor_view o = on_device(dout.data(), dtype::bf16, {c.n, c.heads, c.dim});
    const tensor_view lse = on_device(dlse.data(), dtype::f32, {c.heads, c.n});
    cuda_attention_options options;
    options.causal_kernel = walk;
    cuda_attention_block_sparse(o, lse, dpo.block_attention, in.q, in.k, v, dpo.plan, dpo.scratch,
                                options, nullptr);
    outs.emplace_back(x.q.size());
    dout.download(outs.back().data(), dout.size());
    lses.emplace_back(static_cast<size_t>(c.heads * c.n));
    dlse.download(lses.back().data(), dlse.size());
  }
  EXPECT_TRUE(outs[0] == outs[1]) << "the walked heads differ from the plan's items";
  EXPECT_EQ(0, std::memcmp(lses[0].data(), lses[1].data(), lses[0].size() * 4));
}

// Runs a case on both planners, layer after layer, comparing as the header says.
void compare_case(const planner_case& c) {
  SCOPED_TRACE(name_of(c));
  const cluster_map map = map_of(c);
  const planner_params params = params_of(c);
  const planner host(params, c.layers, c.heads, c.mode == plan_mode::shareprefill ? &map : nullptr);
  plan_state host_state;
  device_run dev(c, map);
  thread_pool pool;
  const int64_t nb = (c.n + 127) / 128;
  const budget_rule rule{128, params.gamma, params.min_blocks(), params.max_blocks(nb)};
  int64_t moved_heads = 0;
  for (int64_t layer = 0; layer < c.layers; ++layer) {
    SCOPED_TRACE(str("layer ", layer));
    const layer_inputs x = make_inputs(c, layer);
    const device_inputs in(c, x);
    const layer_plan hp = host.plan(layer, x.qv, x.kv, host_state, pool);
    const device_plan_output dpo = dev.dp.plan(layer, in.q, in.k, dev.state, dev.ws.data(),
                                               static_cast<int64_t>(dev.ws.size()), nullptr);
    ASSERT_NO_THROW(device_plan_check(dev.state, nullptr));
    const std::vector<head_kind> kinds = device_planner::download_kinds(dpo.plan);
    const block_mask dmask = device_planner::download_mask(dpo.plan);

    // Profiles and budgets (planned layers only).
    if (!dpo.all_dense) {
      const std::vector<head_statistics> stats = last_block_statistics(x.qv, x.kv, rule, pool);
      const auto v_blk = download(dev.ws, dpo.v_blk, c.heads * nb);
      const auto s_blk = download(dev.ws, dpo.s_blk, c.heads * nb);
      const auto budgets = download(dev.ws, dpo.budgets, c.heads * 2);
      for (int64_t h = 0; h < c.heads; ++h) {
        const double gamma = gamma_of(params, layer, h);
        const int64_t want_v = budget_blocks(cover_count(stats[h].v_tok.data(), c.n, gamma), rule, nb);
        const int64_t want_s = budget_blocks(cover_count(stats[h].s_tok.data(), c.n, gamma), rule, nb);
        for (int64_t b = 0; b < nb; ++b) {
          const float hv = stats[h].v_blk[b], hs = stats[h].s_blk[b];
          ASSERT_NEAR(v_blk[h * nb + b], hv, 2e-6 + 2e-4 * hv) << "v_blk head " << h << " block " << b;
          ASSERT_NEAR(s_blk[h * nb + b], hs, 2e-6 + 2e-4 * hs) << "s_blk head " << h << " block " << b;
        }
        ASSERT_LE(std::abs(budgets[2 * h] - want_v), 1) << "nV head " << h << " gamma " << gamma;
        ASSERT_LE(std::abs(budgets[2 * h + 1] - want_s), 1) << "nS head " << h << " gamma " << gamma;
      }
    } else {
      EXPECT_TRUE(std::all_of(kinds.begin(), kinds.end(), [](head_kind k) { return k == head_kind::dense; }));
    }

    // Kinds: equal, or a decision within rounding of its threshold (then stop: states diverge).
    for (int64_t h = 0; h < c.heads; ++h) {
      if (kinds[h] == hp.kinds[h]) continue;
      const auto qa = download(dev.ws, dpo.qa_distance, c.heads);
      const auto gate = download(dev.ws, dpo.gate_distance, 2 * c.heads);
      const bool qa_edge = std::abs(qa[h] - params.tau_qa) < 1e-4;
      const bool gate_edge = std::abs(gate[2 * h] - params.tau_sim) < 1e-4 ||
                             std::abs(gate[2 * h + 1] - params.tau_sim) < 1e-4;
      ASSERT_TRUE(qa_edge || gate_edge)
          << "head " << h << ": device kind " << head_kind_name(kinds[h]) << ", host "
          << head_kind_name(hp.kinds[h]) << " (qa distance " << qa[h] << ", gate distances "
          << gate[2 * h] << ", " << gate[2 * h + 1] << ")";
      GTEST_LOG_(INFO) << "borderline decision at layer " << layer << " head " << h
                       << "; the rest of the case is not compared";
      return;
    }

    // Tiles: equal sets, or (ties within rounding) at most 1% of the rows' mass moved.
    ASSERT_EQ(dmask.n_blocks, nb);
    std::vector<int32_t> differing;
    for (int64_t h = 0; h < c.heads; ++h)
      if (dmask.tiles_of(h) != hp.mask.tiles_of(h)) differing.push_back(static_cast<int32_t>(h));
    if (!differing.empty()) {
      const std::vector<float> a = exact_block_attention(x.qv, x.kv, x.vv, differing, pool);
      for (size_t i = 0; i < differing.size(); ++i) {
        const int32_t h = differing[i];
        const std::vector<float> ah(a.begin() + i * nb * nb, a.begin() + (i + 1) * nb * nb);
        const double dm = kept_mass(ah, nb, dmask.tiles_of(h)), hm = kept_mass(ah, nb, hp.mask.tiles_of(h));
        EXPECT_NEAR(dm, hm, 0.01) << "head " << h << " (" << head_kind_name(kinds[h])
                                  << "): tiles differ, kept mass device " << dm << " host " << hm;
        ++moved_heads;
      }
    }

    // Schedule: the walked heads' items last (dense heads, never pivots), each part longest
    // first; pivot slots in ascending head order.
    const std::vector<int32_t> walked = download_walk_heads(dpo.plan);
    EXPECT_EQ(walked, expected_walk_heads(c, map, layer, kinds, dpo.all_dense));
    const auto schedule = download(dev.ws, dpo.plan.schedule, 2 * c.heads * nb);
    const int64_t first_walked = (c.heads - static_cast<int64_t>(walked.size())) * nb;
    int64_t previous = INT64_MAX;
    std::set<int64_t> items;
    for (int64_t i = 0; i < c.heads * nb; ++i) {
      const int32_t h = schedule[2 * i], r = schedule[2 * i + 1];
      ASSERT_TRUE(h >= 0 && h < c.heads && r >= 0 && r < nb) << "schedule item " << i;
      ASSERT_EQ(std::count(walked.begin(), walked.end(), h) == 1, i >= first_walked)
          << "schedule item " << i << " (head " << h << ")";
      if (i == first_walked) previous = INT64_MAX;
      const int64_t t = dmask.row_end(h, r) - dmask.row_begin(h, r);
      ASSERT_LE(t, previous) << "schedule item " << i << " is longer than the one before";
      previous = t;
      items.insert(h * nb + r);
    }
    if (!walked.empty()) expect_walk_gives_the_items_bytes(c, x, in, dpo);
    EXPECT_EQ(static_cast<int64_t>(items.size()), c.heads * nb) << "schedule items repeat";
    const auto slots = download(dev.ws, dpo.plan.pivot_slot, c.heads);
    for (int64_t h = 0, next = 0; h < c.heads; ++h) {
      const bool pivot = kinds[h] == head_kind::pivot;
      EXPECT_EQ(slots[h], pivot ? next : -1) << "pivot slot of head " << h;
      next += pivot ? 1 : 0;
    }

    // Publish the same exact A on both sides.
    const std::vector<float> a = exact_block_attention(x.qv, x.kv, x.vv, hp.pivot_heads, pool);
    host.publish(layer, hp.pivot_heads, a.data(), host_state);
    if (!hp.pivot_heads.empty()) {
      ASSERT_LE(static_cast<int64_t>(hp.pivot_heads.size()), dpo.plan.max_pivots);
      device_buffer& ws = dev.ws;
      const size_t offset = static_cast<const char*>(dpo.block_attention.data) -
                            static_cast<const char*>(ws.data());
      ws.upload(a.data(), a.size() * sizeof(float), offset);
    }
    dev.dp.publish(layer, dpo, dev.state, nullptr);
    ASSERT_NO_THROW(device_plan_check(dev.state, nullptr));

    // The carried state.
    if (c.mode != plan_mode::shareprefill || host_state.clusters.empty()) continue;
    expect_same_state(dev.dp.download_state(dev.state), host_state, moved_heads);
  }
  GTEST_LOG_(INFO) << name_of(c) << ": heads with different tiles (mass-checked): " << moved_heads;
}

class DevicePlanner : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(DevicePlanner, SyntheticShareprefillGqa) {
  compare_case(make_case(4224, 8, 2, 128, 3));             // GQA 4
  compare_case(make_case(4224, 8, 8, 64, 3));              // GQA 1
  compare_case(make_case(1000, 6, 2, 64, 3, plan_mode::shareprefill, true, 128));   // GQA 3, small minB
  compare_case(make_case(4224, 16, 2, 128, 3, plan_mode::shareprefill, true, 512));  // GQA 8
}

TEST_F(DevicePlanner, RaggedLengths) {
  for (int64_t n : {1, 127, 129, 1000}) compare_case(make_case(n, 4, 2, 64, 2, plan_mode::shareprefill, true, 128));
}

TEST_F(DevicePlanner, Modes) {
  for (plan_mode m : {plan_mode::dense, plan_mode::vslash, plan_mode::flexprefill})
    compare_case(make_case(4224, 8, 2, 64, 2, m));
}

TEST_F(DevicePlanner, DenseLayers) {
  compare_case(make_case(4224, 8, 2, 64, 3, plan_mode::shareprefill, true, 1024, {0}));
  compare_case(make_case(4224, 8, 2, 64, 3, plan_mode::vslash, true, 1024, {1}));
}

// A format-2 map's dense heads: dense unless they become their cluster's pivot, as on the host.
TEST_F(DevicePlanner, DenseHeads) {
  planner_case c = make_case(4224, 8, 2, 64, 3);
  c.dense_heads = {{0, 1}, {1, 0}, {1, 5}, {2, 2}, {2, 7}};
  compare_case(c);
  c.mode = plan_mode::vslash;
  compare_case(c);
  planner_params out_of_range = params_of(c);
  out_of_range.dense_heads = {{3, 0}};
  EXPECT_NE(error_of([&] { device_planner(out_of_range, c.layers, c.heads, nullptr); })
                .find("dense head (3, 0) is out of range"),
            std::string::npos);
}

// Heads at 0.9 and 0.98 around the global 0.95 ((layer + head) % 3 == 0 and 1), the rest at 0.95.
std::vector<head_gamma> mixed_gammas(const planner_case& c) {
  std::vector<head_gamma> out;
  for (int64_t l = 0; l < c.layers; ++l)
    for (int64_t h = 0; h < c.heads; ++h)
      if ((l + h) % 3 < 2) out.push_back({l, h, (l + h) % 3 == 0 ? 0.9 : 0.98});
  return out;
}

// Per head kind, the largest share of a head's attention mass (exact A, per row) that the host
// planner's tiles move between the case with its head_gammas and without. Above compare_case's
// 1% tolerance: a device planner that ignored those gammas would fail the comparison.
std::array<double, head_kind_count> mass_moved_by_gammas(const planner_case& c) {
  const cluster_map map = map_of(c);
  const planner_params with = params_of(c);
  planner_params without = with;
  without.head_gammas.clear();
  const cluster_map* m = c.mode == plan_mode::shareprefill ? &map : nullptr;
  const planner a(with, c.layers, c.heads, m), b(without, c.layers, c.heads, m);
  plan_state sa, sb;
  thread_pool pool;
  std::array<double, head_kind_count> moved{};
  for (int64_t layer = 0; layer < c.layers; ++layer) {
    const layer_inputs x = make_inputs(c, layer);
    const layer_plan pa = a.plan(layer, x.qv, x.kv, sa, pool);
    const layer_plan pb = b.plan(layer, x.qv, x.kv, sb, pool);
    const int64_t nb = pa.mask.n_blocks;
    for (int64_t h = 0; h < c.heads; ++h) {
      if (pa.kinds[h] != pb.kinds[h] || pa.mask.tiles_of(h) == pb.mask.tiles_of(h)) continue;
      const std::vector<float> ah =
          exact_block_attention(x.qv, x.kv, x.vv, {static_cast<int32_t>(h)}, pool);
      double& most = moved[static_cast<size_t>(pa.kinds[h])];
      most = std::max(most, std::abs(kept_mass(ah, nb, pa.mask.tiles_of(h)) -
                                     kept_mass(ah, nb, pb.mask.tiles_of(h))));
    }
    a.publish(layer, pa.pivot_heads,
              exact_block_attention(x.qv, x.kv, x.vv, pa.pivot_heads, pool).data(), sa);
    b.publish(layer, pb.pivot_heads,
              exact_block_attention(x.qv, x.kv, x.vv, pb.pivot_heads, pool).data(), sb);
  }
  return moved;
}

// Per-head gammas (issue 17, a format-3 map's head_gammas): budgets (vertical-slash heads and
// pivots' own tiles) and query-aware tiles at the head's gamma, a pivot's published pattern at
// the global one, as on the host. Each main case first checks on the host that the gammas move
// more than the tolerance for the head kinds it is meant to cover.
TEST_F(DevicePlanner, HeadGammas) {
  const auto vs = head_kind::vertical_slash, qa = head_kind::query_aware;
  const std::vector<std::pair<planner_case, std::vector<head_kind>>> cases{
      {make_case(4224, 8, 2, 128, 3), {vs}},                                      // GQA 4, pivots
      {make_case(1000, 6, 2, 64, 3, plan_mode::shareprefill, true, 128), {vs}},   // GQA 3, small minB
      {make_case(4224, 8, 2, 64, 2, plan_mode::shareprefill, false), {qa}},       // query-aware
      {make_case(1000, 12, 4, 128, 2, plan_mode::flexprefill, false, 256), {vs, qa}},
      {make_case(4224, 8, 2, 64, 2, plan_mode::vslash), {vs}}};
  for (auto [c, kinds] : cases) {
    c.head_gammas = mixed_gammas(c);
    const std::array<double, head_kind_count> moved = mass_moved_by_gammas(c);
    for (head_kind k : kinds)
      ASSERT_GT(moved[static_cast<size_t>(k)], 0.01)
          << name_of(c) << ": the head gammas move no " << head_kind_name(k)
          << " head's tiles by more than the tolerance; the case would not test them";
    compare_case(c);
  }
  for (int64_t n : {127, 129, 1000}) {
    planner_case c = make_case(n, 4, 2, 64, 2, plan_mode::shareprefill, true, 128);
    c.head_gammas = mixed_gammas(c);
    compare_case(c);
  }
  // With dense heads (a map with both, as the settings maps): dense stays dense.
  planner_case c = make_case(4224, 8, 2, 64, 3);
  c.dense_heads = {{0, 1}, {1, 0}, {1, 5}, {2, 2}, {2, 7}};
  c.head_gammas = mixed_gammas(c);
  compare_case(c);
  planner_params out_of_range = params_of(c);
  out_of_range.mode = plan_mode::vslash;  // no cluster map needed
  out_of_range.head_gammas = {{0, 8, 0.9}};
  EXPECT_NE(error_of([&] { device_planner(out_of_range, c.layers, c.heads, nullptr); })
                .find("head_gammas: head (0, 8) is out of range"),
            std::string::npos);
}

// The number of heads the host planner shares over the case's layers.
int64_t shared_heads_on_host(const planner_case& c) {
  const cluster_map map = map_of(c);
  const planner host(params_of(c), c.layers, c.heads, &map);
  plan_state state;
  thread_pool pool;
  int64_t shared = 0;
  for (int64_t layer = 0; layer < c.layers; ++layer) {
    const layer_inputs x = make_inputs(c, layer);
    const layer_plan p = host.plan(layer, x.qv, x.kv, state, pool);
    shared += std::count(p.kinds.begin(), p.kinds.end(), head_kind::shared);
    host.publish(layer, p.pivot_heads,
                 exact_block_attention(x.qv, x.kv, x.vv, p.pivot_heads, pool).data(), state);
  }
  return shared;
}

// The first of `values` at which set(case, value) makes the host planner share other heads than
// without_option(case) does, applied to c; false if none does (the case would not test the option).
template <class Set, class Without>
bool set_where_sharing_changes(planner_case& c, std::initializer_list<double> values, Set set,
                               Without without_option) {
  for (double value : values) {
    set(c, value);
    planner_case without = c;
    without_option(without);
    if (shared_heads_on_host(c) != shared_heads_on_host(without)) return true;
  }
  return false;
}

// Sharing gates on profiles pooled to gate_bins bins: a tau_sim at which pooling changes which
// heads share on the host (found first, so the case tests the pooling), then device against host.
TEST_F(DevicePlanner, GateBins) {
  planner_case c = make_case(8320, 6, 2, 64, 3);  // 65 blocks pooled to 8 bins
  c.gate_bins = 8;
  ASSERT_TRUE(set_where_sharing_changes(
      c, {0.3, 0.2, 0.15, 0.1}, [](planner_case& x, double v) { x.tau_sim = v; },
      [](planner_case& x) { x.gate_bins = 0; }))
      << name_of(c) << ": no tau_sim where the pooled gate shares other heads";
  compare_case(c);
}

// The coverage gate (tau_sim 1: the JS gates open): a coverage at which it changes which heads
// share on the host (found first, so the case tests it), then device against host.
TEST_F(DevicePlanner, GateCoverage) {
  planner_case c = make_case(8320, 6, 2, 64, 3);
  c.tau_sim = 1.0;
  ASSERT_TRUE(set_where_sharing_changes(
      c, {0.9, 0.95, 0.8, 0.98, 0.7}, [](planner_case& x, double v) { x.gate_coverage = v; },
      [](planner_case& x) { x.gate_coverage = 0.0; }))
      << name_of(c) << ": no coverage where the gate changes which heads share";
  compare_case(c);
}

// Shared heads with their own adaptive budgets (shared_keeps_budget), device against host.
TEST_F(DevicePlanner, SharedKeepsBudget) {
  planner_case c = make_case(8320, 6, 2, 64, 3);
  c.shared_keeps_budget = true;
  ASSERT_GT(shared_heads_on_host(c), 0) << name_of(c) << ": no head shares";
  compare_case(c);
}

// Every sparse head's last row covering its measured last-block attention (exact_last_row),
// device against host: shareprefill (shared, query-aware and vertical-slash heads, per-head
// gammas) and flexprefill on random inputs, with the heads' gammas and with last_row_gamma.
TEST_F(DevicePlanner, ExactLastRow) {
  planner_case c = make_case(8320, 6, 2, 64, 3);
  c.exact_last_row = true;
  c.head_gammas = mixed_gammas(c);
  ASSERT_GT(shared_heads_on_host(c), 0) << name_of(c) << ": no head shares";
  compare_case(c);
  planner_case r = make_case(1000, 12, 4, 128, 2, plan_mode::flexprefill, false, 256);
  r.exact_last_row = true;
  compare_case(r);
  for (const double last_row_gamma : {0.99, 1.0}) {  // a cover of its own; 1: the whole last row
    c.last_row_gamma = r.last_row_gamma = last_row_gamma;
    compare_case(c);
    compare_case(r);
  }
}

TEST_F(DevicePlanner, RandomInputs) {
  compare_case(make_case(4224, 8, 2, 64, 2, plan_mode::shareprefill, false));
  compare_case(make_case(1000, 12, 4, 128, 2, plan_mode::flexprefill, false, 256));
}

// The plan captured in a CUDA graph and replayed gives the plan of a direct call: kinds, tiles,
// budgets and query-aware distances, bitwise (the same kernels on the same inputs).
// Shareprefill mode on the synthetic generator: pivots, query-aware tests, budgets.
TEST_F(DevicePlanner, PlanCapturedInAGraph) {
  const planner_case c = make_case(4224, 8, 2, 64, 2);
  const cluster_map map = map_of(c);
  const device_inputs in(c, make_inputs(c, 0));
  const int64_t nb = (c.n + 127) / 128;
  struct result {
    std::vector<head_kind> kinds;
    block_mask mask;
    std::vector<int32_t> budgets;
    std::vector<float> qa;
  };
  const auto plan_once = [&](bool captured) {
    device_run dev(c, map);
    cuda_stream stream;
    device_plan_output out;
    const auto enqueue = [&] {
      out = dev.dp.plan(0, in.q, in.k, dev.state, dev.ws.data(),
                        static_cast<int64_t>(dev.ws.size()), stream.get());
    };
    if (captured) cuda_graph::capture(stream.get(), enqueue).launch(stream.get());
    else enqueue();
    stream.synchronize();
    device_plan_check(dev.state, stream.get());
    return result{device_planner::download_kinds(out.plan), device_planner::download_mask(out.plan),
                  download(dev.ws, out.budgets, 2 * c.heads), download(dev.ws, out.qa_distance, c.heads)};
  };
  const result direct = plan_once(false), replayed = plan_once(true);
  EXPECT_EQ(replayed.kinds, direct.kinds);
  ASSERT_EQ(replayed.mask.n_blocks, nb);
  for (int64_t h = 0; h < c.heads; ++h)
    EXPECT_EQ(replayed.mask.tiles_of(h), direct.mask.tiles_of(h)) << "head " << h;
  EXPECT_EQ(replayed.budgets, direct.budgets);
  for (int64_t h = 0; h < c.heads; ++h)
    EXPECT_EQ(std::isnan(replayed.qa[h]) ? -1.0f : replayed.qa[h],
              std::isnan(direct.qa[h]) ? -1.0f : direct.qa[h]) << "head " << h;
  EXPECT_TRUE(std::count(direct.kinds.begin(), direct.kinds.end(), head_kind::pivot) > 0)
      << "the case should plan a pivot";
}

TEST_F(DevicePlanner, Errors) {
  const planner_case c = make_case(1000, 4, 2, 64, 2, plan_mode::shareprefill, true, 128);
  const cluster_map map = map_of(c);
  device_run dev(c, map);
  const layer_inputs x = make_inputs(c, 0);
  device_inputs in(c, x);
  device_buffer &dq = in.dq, &dk = in.dk;
  const tensor_view &q = in.q, &k = in.k;
  auto plan_with = [&](const tensor_view& qq, const tensor_view& kk, int64_t bytes) {
    return error_of([&] {
      dev.dp.plan(0, qq, kk, dev.state, dev.ws.data(), bytes, nullptr);
    });
  };
  const int64_t bytes = static_cast<int64_t>(dev.ws.size());
  EXPECT_NE(plan_with(x.qv, k, bytes).find("device view"), std::string::npos);
  tensor_view q96 = on_device(dq.data(), dtype::bf16, {c.n, c.heads / 2, 128});
  EXPECT_NE(plan_with(q96, k, bytes).find("heads"), std::string::npos);
  const tensor_view k_short = on_device(dk.data(), dtype::bf16, {c.n - 1, c.kv_heads, c.dim});
  EXPECT_NE(plan_with(q, k_short, bytes).find("shape"), std::string::npos);
  const tensor_view q2 = on_device(dq.data(), dtype::bf16, {c.n, c.heads * c.dim});
  EXPECT_NE(plan_with(q2, k, bytes).find("rank"), std::string::npos);
  EXPECT_NE(plan_with(q, k, bytes - 256).find("too small"), std::string::npos);
  EXPECT_NE(error_of([&] { dev.dp.workspace_bytes({c.n, c.heads, 3, c.dim}); }).find("divisible"),
            std::string::npos);
  EXPECT_NE(error_of([&] { dev.dp.workspace_bytes({c.n, c.heads, 2, 96}); }).find("head dim"),
            std::string::npos);
  planner_params within = params_of(c);
  within.share_within_layer = true;
  EXPECT_NE(error_of([&] { device_planner(within, 2, 4, &map); }).find("share_within_layer"),
            std::string::npos);

  // NaN in k: planning goes on (the plan stays valid) and the check names layer and head.
  std::vector<uint16_t> bad = x.k;
  bad[(c.n / 2) * c.kv_heads * c.dim + c.dim + 3] = fp32_to_bf16(std::nanf(""));
  dk.upload(bad.data(), dk.size());
  const device_plan_output out = dev.dp.plan(0, q, k, dev.state, dev.ws.data(), bytes, nullptr);
  const std::string e = error_of([&] { device_plan_check(dev.state, nullptr); });
  EXPECT_NE(e.find("non-finite"), std::string::npos) << e;
  EXPECT_NE(e.find("layer 0"), std::string::npos) << e;
  EXPECT_NO_THROW(device_planner::download_mask(out.plan));  // still a valid CSR
  // Order: the next plan needs publish first, and layers must increase.
  EXPECT_NE(error_of([&] { dev.dp.plan(1, q, k, dev.state, dev.ws.data(), bytes, nullptr); })
                .find("publish"),
            std::string::npos);
  dev.dp.publish(0, out, dev.state, nullptr);
  EXPECT_NE(error_of([&] { dev.dp.plan(0, q, k, dev.state, dev.ws.data(), bytes, nullptr); })
                .find("increasing"),
            std::string::npos);
}

// A whole layer through prefill_layer on both devices: the GPU's bf16 output matches the CPU's
// f32 output within bf16 rounding, layer after layer (the states carry pivots and patterns).
TEST_F(DevicePlanner, PrefillLayerMatchesCpu) {
  const planner_case c = make_case(4224, 8, 2, 128, 3);
  const cluster_map map = map_of(c);
  const planner_params params = params_of(c);
  const planner host(params, c.layers, c.heads, &map);
  const device_planner dp(params, c.layers, c.heads, &map);
  thread_pool pool;
  prefill_layer_params hp, gp;
  hp.host = &host;
  hp.pool = &pool;
  gp.device = &dp;
  const layer_shape shape{c.n, c.heads, c.kv_heads, c.dim};
  EXPECT_EQ(prefill_layer_workspace_bytes(shape, hp, false), 0);
  device_buffer ws(static_cast<size_t>(prefill_layer_workspace_bytes(shape, gp, true)));
  device_buffer st(static_cast<size_t>(dp.state_bytes(c.n)));
  prefill_layer_state hs, gs;
  prefill_layer_begin(hs, hp, c.n, false, nullptr, 0, nullptr);
  prefill_layer_begin(gs, gp, c.n, true, st.data(), static_cast<int64_t>(st.size()), nullptr);
  for (int64_t layer = 0; layer < c.layers; ++layer) {
    SCOPED_TRACE(str("layer ", layer));
    hp.layer = gp.layer = layer;
    const layer_inputs x = make_inputs(c, layer);
    std::vector<float> host_out(static_cast<size_t>(c.n * c.heads * c.dim));
    const tensor_view ho = tensor_view::contiguous(host_out.data(), dtype::f32, {c.n, c.heads, c.dim});
    const prefill_layer_result hr = prefill_layer(x.qv, x.kv, x.vv, ho, hs, hp, nullptr, 0, nullptr);
    const device_inputs in(c, x);
    const tensor_view &q = in.q, &k = in.k, &v = in.v;
    device_buffer dout(x.q.size() * 2);
    const tensor_view o = on_device(dout.data(), dtype::bf16, {c.n, c.heads, c.dim});
    EXPECT_NE(error_of([&] { prefill_layer(q, k, v, ho, gs, gp, ws.data(),
                                           static_cast<int64_t>(ws.size()), nullptr); })
                  .find("out is a host view"),
              std::string::npos);
    const prefill_layer_result gr =
        prefill_layer(q, k, v, o, gs, gp, ws.data(), static_cast<int64_t>(ws.size()), nullptr);
    ASSERT_NO_THROW(device_plan_check(gs.device, nullptr));
    EXPECT_EQ(device_planner::download_kinds(gr.device_plan.plan), hr.host.kinds());
    std::vector<uint16_t> raw(x.q.size());
    dout.download(raw.data(), dout.size());
    double e = 0, s = 0;
    for (size_t i = 0; i < raw.size(); ++i) {
      const double d = static_cast<double>(bf16_to_fp32(raw[i])) - host_out[i];
      e += d * d;
      s += static_cast<double>(host_out[i]) * host_out[i];
    }
    EXPECT_LT(std::sqrt(e / s), 1e-2) << "relative error of the GPU layer vs the CPU layer";
  }
}

// FNV-1a of `count` values at device address `at` (for comparing builds bit for bit).
template <class T>
uint64_t device_hash(const T* at, int64_t count, uint64_t h = 1469598103934665603ull) {
  std::vector<T> v(static_cast<size_t>(count));
  if (count > 0) cudaMemcpy(v.data(), at, v.size() * sizeof(T), cudaMemcpyDeviceToHost);
  const auto* b = reinterpret_cast<const unsigned char*>(v.data());
  for (size_t i = 0; i < v.size() * sizeof(T); ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

// Holds the stream in a host callback for *static_cast<int*>(us) microseconds.
void CUDART_CB hold_stream(void* us) {
  std::this_thread::sleep_for(std::chrono::microseconds(*static_cast<const int*>(us)));
}

// Planning time of a whole layer at 32K and 128K (32/8/128 and 9/3/64), random bf16 inputs
// (on the H200 no head came out query-aware on these: layer 0 makes pivots, later layers share),
// with SP_PLANNER_TIMING=1 only. Prompts 0-2 launch the plan onto an idle GPU (launch=direct:
// the events include the gaps while the host enqueues its ~45 launches); prompts 3-5 hold the
// stream in a 3 ms host callback first, so the whole plan is queued before the GPU reaches it
// (launch=queued: the plan's GPU time, as in the model pipeline, where a layer's plan queues
// behind the previous layer's attention). SP_PLANNER_TIMING=profile32 / profile9: one prompt of 2
// shareprefill layers, 32/8/128 at 32K (issue 13's target) / 9/3/64 at 128K (the model's shape at
// its longest prompt), for a per-kernel profiler.
TEST_F(DevicePlanner, Timing) {
  const char* env = std::getenv("SP_PLANNER_TIMING");
  const std::string how = env == nullptr ? "" : env;
  const bool profile = how == "profile32" || how == "profile9";
  if (how != "1" && !profile) GTEST_SKIP() << "SP_PLANNER_TIMING=1 runs it";
  using shape_t = std::array<int64_t, 3>;
  std::vector<int64_t> lengths{32768, 131072};
  std::vector<shape_t> shapes{{32, 8, 128}, {9, 3, 64}};
  std::vector<plan_mode> modes{plan_mode::shareprefill, plan_mode::vslash};
  if (profile) {
    lengths = {how == "profile32" ? int64_t{32768} : int64_t{131072}};
    shapes = {how == "profile32" ? shape_t{32, 8, 128} : shape_t{9, 3, 64}};
    modes = {plan_mode::shareprefill};
  }
  const int prompts = profile ? 1 : 6;
  int hold_us = 3000;
  for (int64_t n : lengths) {
    for (const shape_t& shape : shapes) {
      for (plan_mode mode : modes) {
        const planner_case c =
            make_case(n, shape[0], shape[1], shape[2], profile ? 2 : 4, mode);
        const cluster_map map = map_of(c);
        device_run dev(c, map);
        std::vector<uint16_t> host(static_cast<size_t>(n * c.heads * c.dim));
        uint64_t state = 88172645463325252ull;
        for (auto& x : host) {
          state ^= state << 13, state ^= state >> 7, state ^= state << 17;
          x = fp32_to_bf16(static_cast<float>(static_cast<int64_t>(state % 2001) - 1000) / 300.0f);
        }
        const size_t k_elems = static_cast<size_t>(n * c.kv_heads * c.dim);
        device_buffer dq(host.size() * 2), dk(k_elems * 2);
        dq.upload(host.data(), dq.size());
        dk.upload(host.data() + host.size() - k_elems, dk.size());
        const tensor_view q = on_device(dq.data(), dtype::bf16, {n, c.heads, c.dim});
        const tensor_view k = on_device(dk.data(), dtype::bf16, {n, c.kv_heads, c.dim});
        cudaEvent_t e0, e1, e2;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        cudaEventCreate(&e2);
        for (int prompt = 0; prompt < prompts; ++prompt) {
          dev.dp.begin_prompt(dev.state, dev.st.data(), static_cast<int64_t>(dev.st.size()), n,
                              nullptr);
          const bool queued = prompt >= 3;
          for (int64_t layer = 0; layer < c.layers; ++layer) {
            if (queued) {
              ASSERT_EQ(cudaLaunchHostFunc(nullptr, hold_stream, &hold_us), cudaSuccess);
            }
            cudaEventRecord(e0);
            const device_plan_output out = dev.dp.plan(layer, q, k, dev.state, dev.ws.data(),
                                                       static_cast<int64_t>(dev.ws.size()), nullptr);
            cudaEventRecord(e1);
            if (!out.block_attention.empty())
              cudaMemsetAsync(out.block_attention.data, 0,
                              static_cast<size_t>(out.block_attention.numel()) * 4);
            dev.dp.publish(layer, out, dev.state, nullptr);
            cudaEventRecord(e2);
            cudaEventSynchronize(e2);
            float plan_ms = 0, publish_ms = 0;
            cudaEventElapsedTime(&plan_ms, e0, e1);
            cudaEventElapsedTime(&publish_ms, e1, e2);
            const std::vector<head_kind> kinds = device_planner::download_kinds(out.plan);
            // Plan (kinds, CSR, schedule) and profile (v_blk, s_blk, budgets) hashes: equal across
            // builds iff the results are bitwise equal.
            const int64_t nb = out.plan.n_blocks, items = c.heads * nb;
            int64_t tiles = 0;
            cudaMemcpy(&tiles, out.plan.row_ptr + items + c.heads - 1, 8, cudaMemcpyDeviceToHost);
            uint64_t plan_hash = device_hash(out.plan.kinds, c.heads);
            plan_hash = device_hash(out.plan.row_ptr, items + c.heads, plan_hash);
            plan_hash = device_hash(out.plan.col_idx, tiles, plan_hash);
            plan_hash = device_hash(out.plan.schedule, 2 * items, plan_hash);
            uint64_t profile_hash = 0;
            if (!out.all_dense) {
              profile_hash = device_hash(out.v_blk, 2 * items);
              profile_hash = device_hash(out.budgets, 2 * c.heads, profile_hash);
            }
            int64_t counts[head_kind_count] = {};
            for (head_kind kd : kinds) ++counts[static_cast<int>(kd)];
            std::printf("PLANNER_TIMING n=%lld shape=%lld/%lld/%lld mode=%s prompt=%d launch=%s layer=%lld plan_ms=%.3f "
                        "publish_ms=%.3f workspace_mb=%.1f kinds(d/p/s/qa/vs)=%lld/%lld/%lld/%lld/%lld "
                        "plan_hash=%016llx profile_hash=%016llx\n",
                        static_cast<long long>(n), static_cast<long long>(c.heads),
                        static_cast<long long>(c.kv_heads), static_cast<long long>(c.dim),
                        plan_mode_name(mode), prompt, queued ? "queued" : "direct",
                        static_cast<long long>(layer), plan_ms, publish_ms,
                        static_cast<double>(dev.ws.size()) / (1 << 20),
                        static_cast<long long>(counts[0]), static_cast<long long>(counts[1]),
                        static_cast<long long>(counts[2]), static_cast<long long>(counts[3]),
                        static_cast<long long>(counts[4]),
                        static_cast<unsigned long long>(plan_hash),
                        static_cast<unsigned long long>(profile_hash));
          }
        }
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        cudaEventDestroy(e2);
      }
    }
  }
}

}  // namespace
}  // namespace sp
