// The planner state machine (DESIGN.md 2C, 2F, 2G) and the cross-layer rules: a pivot's pattern
// is used only by later layers (unless share_within_layer), only inside its cluster, only for
// shared clusters, never for query-aware heads; the three sharing gates; state reset between
// prompts; short prompts run dense; bad inputs fail with clear messages. Inputs are small
// synthetic layers (N = 1024, 4 heads, 2 KV heads, D = 32), the same Q/K in both layers unless
// a test says otherwise, so the JS gates see identical profiles when thresholds allow.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "shareprefill/attention.h"
#include "shareprefill/planner.h"
#include "shareprefill/statistics.h"
#include "shareprefill/synthetic.h"
#include "test_util.h"

namespace sp {
namespace {

std::set<tile> as_set(const std::vector<tile>& t) {
  return std::set<tile>(t.begin(), t.end());
}

constexpr int64_t n_tok = 1024, n_heads = 4, n_kv = 2, n_dim = 32, n_blocks = 8;

// Cluster "a" = heads 0, 1 of both layers, "b" = head 2, "c" = head 3 (not shared).
cluster_map test_map() {
  cluster_map m;
  m.clusters = {{"a", {{0, 0}, {0, 1}, {1, 0}, {1, 1}}, true, std::nullopt},
                {"b", {{0, 2}, {1, 2}}, true, std::nullopt},
                {"c", {{0, 3}, {1, 3}}, false, std::nullopt}};
  return m;
}

struct fixture_inputs {
  synthetic_layer l0, l1;
  fixture_inputs() {
    synthetic_params p;
    p.n_tokens = n_tok;
    p.layers = 2;
    p.heads = n_heads;
    p.kv_heads = n_kv;
    p.dim = n_dim;
    p.seed = 7;
    l0 = synthetic_generate_layer(p, 0);
    l1 = synthetic_generate_layer(p, 1);
  }
};

const fixture_inputs& inputs() {
  static const fixture_inputs in;
  return in;
}

planner_params open_params() {
  planner_params p;
  p.min_budget = 128;  // minB = 1, so vertical-slash tiles stay well below dense
  p.tau_qa = 1e-9;     // no head is query-aware
  p.tau_sim = 1.0;     // JS gates open (JSd <= sqrt(ln 2) < 1)
  p.tau_fb = 1.0;      // fallback gate open unless the pivot's vs tiles cover everything
  return p;
}

struct runner {
  planner pl;
  plan_state state;
  thread_pool pool{2};
  runner(const planner_params& p, const cluster_map* m) : pl(p, 2, n_heads, m) {}

  // Plans a layer, runs attention with block attention for the pivots, publishes.
  layer_plan run(int64_t layer, const synthetic_layer& in) {
    const auto q = tensor_view::contiguous(in.q.data(), dtype::f32, {n_tok, n_heads, n_dim});
    const auto k = tensor_view::contiguous(in.k.data(), dtype::f32, {n_tok, n_kv, n_dim});
    const auto v = tensor_view::contiguous(in.v.data(), dtype::f32, {n_tok, n_kv, n_dim});
    layer_plan p = pl.plan(layer, q, k, state, pool);
    std::vector<float> out(static_cast<size_t>(n_tok * n_heads * n_dim));
    std::vector<float> a(p.pivot_heads.size() * n_blocks * n_blocks);
    const block_attention_output ba{p.pivot_heads, a.data()};
    attention_block_sparse(tensor_view::contiguous(out.data(), dtype::f32, {n_tok, n_heads, n_dim}),
                           {}, p.pivot_heads.empty() ? nullptr : &ba, q, k, v, p.mask, pool);
    pl.publish(layer, p.pivot_heads, a.data(), state);
    return p;
  }
  std::vector<head_statistics> stats(const synthetic_layer& in) {
    const auto q = tensor_view::contiguous(in.q.data(), dtype::f32, {n_tok, n_heads, n_dim});
    const auto k = tensor_view::contiguous(in.k.data(), dtype::f32, {n_tok, n_kv, n_dim});
    return last_block_statistics(q, k, {128, pl.params().gamma, pl.params().min_blocks(), 0}, pool);
  }
};

using hk = head_kind;

TEST(PlannerState, PivotsThenSharingOnlyInLaterLayersInsideTheClusterForSharedClusters) {
  const cluster_map m = test_map();
  runner r(open_params(), &m);
  const layer_plan p0 = r.run(0, inputs().l0);
  EXPECT_EQ(p0.kinds,
            (std::vector<hk>{hk::pivot, hk::vertical_slash, hk::pivot, hk::vertical_slash}));
  EXPECT_EQ(p0.pivot_heads, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(p0.mask.head_tiles(0), causal_tile_count(n_blocks));  // pivots are dense
  const layer_plan p1 = r.run(1, inputs().l0);
  EXPECT_EQ(p1.kinds, (std::vector<hk>{hk::shared, hk::shared, hk::shared, hk::vertical_slash}));
  EXPECT_TRUE(p1.pivot_heads.empty());

  // A shared head's tiles are exactly its cluster pivot's pattern plus minB vertical-slash.
  const auto st = r.stats(inputs().l0);
  const auto& pat_a = r.state.clusters[0].pivot_pattern;
  const auto& pat_b = r.state.clusters[1].pivot_pattern;
  ASSERT_NE(as_set(pat_a), as_set(pat_b));  // otherwise "inside its cluster" is not tested
  for (int h : {0, 1, 2}) {
    std::set<tile> want = as_set(h == 2 ? pat_b : pat_a);
    for (const tile& t :
         vertical_slash_tiles(st[h].v_blk.data(), st[h].s_blk.data(), n_blocks, 1, 1))
      want.insert(t);
    EXPECT_EQ(as_set(p1.mask.tiles_of(h)), want) << "head " << h;
  }
  // The non-shared cluster's head keeps its adaptive vertical-slash tiles.
  EXPECT_EQ(as_set(p1.mask.tiles_of(3)),
            as_set(vertical_slash_tiles(st[3].v_blk.data(), st[3].s_blk.data(), n_blocks,
                                        st[3].vertical_blocks, st[3].slash_blocks)));
  // The published pivot pattern is the section 2G pattern of the pivot's exact A.
  EXPECT_EQ(as_set(pat_a), as_set(pivot_pattern_tiles(r.state.clusters[0].pivot_blockattn.data(),
                                                      n_blocks, 0.95)));
  EXPECT_DOUBLE_EQ(r.state.clusters[0].pivot_vs_ratio,
                   tile_coverage_ratio(r.state.clusters[0].pivot_blockattn.data(), n_blocks,
                                       r.state.clusters[0].pivot_vs_tiles));
}

// shared_keeps_budget: a shared head's tiles are its pivot's pattern plus its own adaptive
// vertical-slash tiles (nV, nS), not the minimum budget's.
TEST(PlannerState, SharedKeepsBudgetAddsThePatternToTheHeadsOwnTiles) {
  const cluster_map m = test_map();
  planner_params params = open_params();
  params.shared_keeps_budget = true;
  runner r(params, &m);
  r.run(0, inputs().l0);
  const layer_plan p1 = r.run(1, inputs().l0);
  ASSERT_EQ(p1.kinds, (std::vector<hk>{hk::shared, hk::shared, hk::shared, hk::vertical_slash}));
  const auto st = r.stats(inputs().l0);
  bool more_than_min = false;
  for (int h : {0, 1, 2}) {
    std::set<tile> want = as_set(r.state.clusters[h == 2 ? 1 : 0].pivot_pattern);
    const std::set<tile> pattern_only = want;
    for (const tile& t : vertical_slash_tiles(st[h].v_blk.data(), st[h].s_blk.data(), n_blocks,
                                              st[h].vertical_blocks, st[h].slash_blocks))
      want.insert(t);
    EXPECT_EQ(as_set(p1.mask.tiles_of(h)), want) << "head " << h;
    more_than_min |= st[h].vertical_blocks > 1 || st[h].slash_blocks > 1;
  }
  EXPECT_TRUE(more_than_min) << "the budgets equal minB: the case would not test the option";
}

TEST(PlannerState, QueryAwareHeadsNeverPivotNorShare) {
  const cluster_map m = test_map();
  planner_params p = open_params();
  p.tau_qa = 1.0;  // JSd <= sqrt(ln 2) < 1: every head is query-aware
  runner r(p, &m);
  for (int64_t l = 0; l < 2; ++l) {
    const layer_plan lp = r.run(l, inputs().l0);
    EXPECT_EQ(lp.kind_count(hk::query_aware), n_heads) << "layer " << l;
    EXPECT_TRUE(lp.pivot_heads.empty());
  }
  for (const auto& slot : r.state.clusters) EXPECT_FALSE(slot.has_pivot);
}

TEST(PlannerState, FallbackGateUsesStrictLessThanOnVsRatio) {
  const cluster_map m = test_map();
  runner probe(open_params(), &m);
  probe.run(0, inputs().l0);
  const double ratio_a = probe.state.clusters[0].pivot_vs_ratio;
  const double ratio_b = probe.state.clusters[1].pivot_vs_ratio;
  ASSERT_NE(ratio_a, ratio_b);  // otherwise the gate cannot separate the clusters
  ASSERT_LT(std::max(ratio_a, ratio_b), 1.0);
  planner_params p = open_params();
  p.tau_fb = std::max(ratio_a, ratio_b);  // vs_ratio < tau_fb fails at equality
  runner r(p, &m);
  r.run(0, inputs().l0);
  const layer_plan p1 = r.run(1, inputs().l0);
  const hk a_kind = ratio_a < ratio_b ? hk::shared : hk::vertical_slash;
  const hk b_kind = ratio_b < ratio_a ? hk::shared : hk::vertical_slash;
  EXPECT_EQ(p1.kinds, (std::vector<hk>{a_kind, a_kind, b_kind, hk::vertical_slash}));
}

TEST(SharingGate, EachOfTheThreeGates) {
  planner_params p;
  p.tau_sim = 0.4;
  p.tau_fb = 0.9;
  cluster_slot slot;
  slot.pivot_v_blk = {0.5f, 0.5f};
  slot.pivot_s_blk = {0.5f, 0.5f};
  slot.pivot_vs_ratio = 0.5;
  // JSd((1/2, 1/2), (1, 0)) = sqrt(1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2) = 0.4645 > 0.4.
  const float same[] = {0.5f, 0.5f}, far[] = {1.0f, 0.0f};
  EXPECT_TRUE(sharing_gate(p, slot, same, same, 2));
  EXPECT_FALSE(sharing_gate(p, slot, far, same, 2));  // vertical gate
  EXPECT_FALSE(sharing_gate(p, slot, same, far, 2));  // slash gate
  slot.pivot_vs_ratio = 0.9;
  EXPECT_FALSE(sharing_gate(p, slot, same, same, 2));  // fallback gate (strict)
  p.tau_sim = 0.5;                                     // 0.4645 < 0.5 now passes
  slot.pivot_vs_ratio = 0.5;
  EXPECT_TRUE(sharing_gate(p, slot, far, far, 2));
}

TEST(PlannerState, DifferentLayerInputsFailTightJsGate) {
  const cluster_map m = test_map();
  planner_params p = open_params();
  p.tau_sim = 1e-6;
  runner r(p, &m);
  r.run(0, inputs().l0);
  EXPECT_EQ(r.run(1, inputs().l1).kind_count(hk::shared), 0);
}

TEST(PlannerState, ShareWithinLayerDefersThenShares) {
  const cluster_map m = test_map();
  planner_params p = open_params();
  p.share_within_layer = true;
  runner r(p, &m);
  const layer_plan p0 = r.run(0, inputs().l0);
  EXPECT_EQ(p0.deferred_heads, (std::vector<int32_t>{1}));
  EXPECT_EQ(p0.mask.head_tiles(1), 0);
  const layer_plan rest = r.pl.plan_deferred(0, r.state);
  EXPECT_EQ(rest.kinds[1], hk::shared);
  EXPECT_EQ(rest.kinds[0], hk::pivot);
  EXPECT_EQ(rest.mask.head_tiles(0), 0);
  EXPECT_GT(rest.mask.head_tiles(1), 0);
  EXPECT_TRUE(r.state.deferred.empty());
}

TEST(PlannerState, PivotIsMedoidOption) {
  cluster_map m = test_map();
  m.clusters[0].medoid = head_ref{0, 1};
  m.clusters[1].medoid = head_ref{1, 2};
  planner_params p = open_params();
  p.pivot_is_medoid = true;
  runner r(p, &m);
  EXPECT_EQ(r.run(0, inputs().l0).pivot_heads, (std::vector<int32_t>{1}));
  const layer_plan p1 = r.run(1, inputs().l0);
  EXPECT_EQ(p1.pivot_heads, (std::vector<int32_t>{2}));
  EXPECT_EQ(p1.kinds[0], hk::shared);
  // A shared cluster without a medoid is an error with this option.
  m.clusters[1].medoid.reset();
  EXPECT_NE(testing::error_of([&] { planner(p, 2, n_heads, &m); }).find("cluster \"b\""),
            std::string::npos);
}

// pivot_prefers_dense: a shared cluster's first member that runs dense anyway is its pivot.
TEST(PlannerState, PivotPrefersDenseHeadsAndLayers) {
  const cluster_map m = test_map();
  planner_params p = open_params();
  p.dense_heads = {{0, 1}};  // cluster "a"; cluster "b" has no dense member
  p.pivot_prefers_dense = true;
  runner r(p, &m);
  const layer_plan p0 = r.run(0, inputs().l0);
  EXPECT_EQ(p0.kinds,
            (std::vector<hk>{hk::vertical_slash, hk::pivot, hk::pivot, hk::vertical_slash}));
  EXPECT_EQ(p0.pivot_heads, (std::vector<int32_t>{1, 2}));
  EXPECT_LT(p0.mask.head_tiles(0), causal_tile_count(n_blocks));  // head 0 is no longer a pivot
  EXPECT_EQ(p0.mask.head_tiles(1), causal_tile_count(n_blocks));
  EXPECT_EQ(r.state.clusters[0].pivot_head, 1);
  const layer_plan p1 = r.run(1, inputs().l0);
  EXPECT_EQ(p1.kinds, (std::vector<hk>{hk::shared, hk::shared, hk::shared, hk::vertical_slash}));
  // Without the option head 0 is the pivot and head 1 dense: two dense heads instead of one.
  planner_params off = p;
  off.pivot_prefers_dense = false;
  runner r_off(off, &m);
  const layer_plan q0 = r_off.run(0, inputs().l0);
  EXPECT_EQ(q0.pivot_heads, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(q0.kinds[1], hk::dense);
  EXPECT_GT(q0.mask.total_tiles(), p0.mask.total_tiles());

  // A dense layer's heads count as dense: layer 1 holds both clusters' pivots, layer 0 none.
  planner_params later = open_params();
  later.dense_layers = {1};
  later.pivot_prefers_dense = true;
  runner r_later(later, &m);
  const layer_plan l0 = r_later.run(0, inputs().l0);
  EXPECT_TRUE(l0.pivot_heads.empty());
  EXPECT_EQ(l0.kind_count(hk::vertical_slash), n_heads);
  EXPECT_EQ(r_later.run(1, inputs().l0).pivot_heads, (std::vector<int32_t>{0, 2}));

  // A dense pivot may be query-aware (it runs every tile anyway); other query-aware heads never
  // pivot, so cluster "b" has none.
  p.tau_qa = 1.0;
  runner r_qa(p, &m);
  const layer_plan a0 = r_qa.run(0, inputs().l0);
  EXPECT_EQ(a0.pivot_heads, (std::vector<int32_t>{1}));
  EXPECT_EQ(a0.kind_count(hk::query_aware), n_heads - 1);

  // It names another pivot than pivot_is_medoid: setting both is an error.
  p.pivot_is_medoid = true;
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("set at most one"), std::string::npos);
}

TEST(PlannerState, ResetBetweenPromptsAndOrderChecks) {
  const cluster_map m = test_map();
  runner r(open_params(), &m);
  r.run(0, inputs().l0);
  r.run(1, inputs().l0);
  const auto q = tensor_view::contiguous(inputs().l0.q.data(), dtype::f32, {n_tok, n_heads, n_dim});
  const auto k = tensor_view::contiguous(inputs().l0.k.data(), dtype::f32, {n_tok, n_kv, n_dim});
  EXPECT_NE(
      testing::error_of([&] { r.pl.plan(0, q, k, r.state, r.pool); }).find("increasing order"),
      std::string::npos);
  const auto q_short =
      tensor_view::contiguous(inputs().l0.q.data(), dtype::f32, {512, n_heads, n_dim});
  const auto k_short =
      tensor_view::contiguous(inputs().l0.k.data(), dtype::f32, {512, n_kv, n_dim});
  EXPECT_NE(
      testing::error_of([&] { r.pl.plan(1, q_short, k_short, r.state, r.pool); }).find("reset()"),
      std::string::npos);
  r.state.reset();
  const layer_plan again = r.run(0, inputs().l0);
  EXPECT_EQ(again.pivot_heads, (std::vector<int32_t>{0, 2}));  // a new prompt: new pivots
  // Planning the next layer without publishing is an error.
  plan_state s;
  r.pl.plan(0, q, k, s, r.pool);
  EXPECT_NE(testing::error_of([&] { r.pl.plan(1, q, k, s, r.pool); }).find("publish()"),
            std::string::npos);
}

TEST(PlannerModes, BaselinesAndShortPrompts) {
  thread_pool pool(2);
  const auto q = tensor_view::contiguous(inputs().l0.q.data(), dtype::f32, {n_tok, n_heads, n_dim});
  const auto k = tensor_view::contiguous(inputs().l0.k.data(), dtype::f32, {n_tok, n_kv, n_dim});
  planner_params p;
  p.min_budget = 128;
  for (plan_mode mode : {plan_mode::dense, plan_mode::vslash, plan_mode::flexprefill}) {
    p.mode = mode;
    planner pl(p, 2, n_heads, nullptr);
    plan_state s;
    const layer_plan lp = pl.plan(0, q, k, s, pool);
    EXPECT_TRUE(lp.pivot_heads.empty());
    if (mode == plan_mode::dense) {
      EXPECT_EQ(lp.kind_count(hk::dense), n_heads);
      EXPECT_DOUBLE_EQ(lp.mask.density(), 1.0);
    } else {
      EXPECT_LT(lp.mask.density(), 1.0);
    }
    if (mode == plan_mode::vslash) {
      EXPECT_EQ(lp.kind_count(hk::vertical_slash), n_heads);
    }
  }
  // Short prompts (N <= minB * bs, down to N = 1) are dense in every mode.
  const cluster_map m = test_map();
  planner_params sp_params;  // min_budget 1024 = the whole prompt here
  planner pl(sp_params, 2, n_heads, &m);
  for (int64_t n : {int64_t{1}, int64_t{127}, n_tok}) {
    plan_state s;
    const auto qs = tensor_view::contiguous(inputs().l0.q.data(), dtype::f32, {n, n_heads, n_dim});
    const auto ks = tensor_view::contiguous(inputs().l0.k.data(), dtype::f32, {n, n_kv, n_dim});
    const layer_plan lp = pl.plan(0, qs, ks, s, pool);
    EXPECT_EQ(lp.kind_count(hk::dense), n_heads) << "N=" << n;
    EXPECT_DOUBLE_EQ(lp.mask.density(), 1.0);
    pl.publish(0, {}, nullptr, s);
  }
}

// estimation_blocks: the vertical-slash tiles come from the statistics of the last E blocks.
TEST(PlannerModes, EstimationBlocksFeedTheVerticalSlashTiles) {
  thread_pool pool(2);
  const auto q = tensor_view::contiguous(inputs().l0.q.data(), dtype::f32, {n_tok, n_heads, n_dim});
  const auto k = tensor_view::contiguous(inputs().l0.k.data(), dtype::f32, {n_tok, n_kv, n_dim});
  planner_params p;
  p.mode = plan_mode::vslash;
  p.min_budget = 128;
  std::vector<block_mask> masks;
  for (int64_t e : {1, 3}) {
    p.estimation_blocks = e;
    const planner pl(p, 1, n_heads, nullptr);
    plan_state s;
    const layer_plan lp = pl.plan(0, q, k, s, pool);
    const auto st = last_block_statistics(q, k, {128, p.gamma, 1, 0, e}, pool);
    EXPECT_EQ(st[0].rows, 128 * e);
    for (int64_t h = 0; h < n_heads; ++h)
      EXPECT_EQ(as_set(lp.mask.tiles_of(h)),
                as_set(vertical_slash_tiles(st[h].v_blk.data(), st[h].s_blk.data(), n_blocks,
                                            st[h].vertical_blocks, st[h].slash_blocks)))
          << "estimation_blocks " << e << " head " << h;
    masks.push_back(lp.mask);
  }
  EXPECT_NE(masks[0].col_idx, masks[1].col_idx);  // otherwise the option is not exercised
  p.estimation_blocks = 0;
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("estimation_blocks must be in [1, 4096]"),
            std::string::npos);
}

TEST(PlannerModes, LastRowTilesCoverGammaOfTheMeasuredRow) {
  // Block 0 first (it is every sparse head's forced column), then descending mass.
  const float v[] = {0.1f, 0.5f, 0.3f, 0.1f, 0.0f};
  EXPECT_EQ(last_row_tiles(v, 5, 0.55), (std::vector<tile>{{4, 0}, {4, 1}}));
  EXPECT_EQ(last_row_tiles(v, 5, 0.6), (std::vector<tile>{{4, 0}, {4, 1}}));  // 0.6 reached
  EXPECT_EQ(last_row_tiles(v, 5, 0.85), (std::vector<tile>{{4, 0}, {4, 1}, {4, 2}}));
  EXPECT_EQ(last_row_tiles(v, 5, 0.95), (std::vector<tile>{{4, 0}, {4, 1}, {4, 2}, {4, 3}}))
      << "ties go to the lower block; a zero block is never needed below gamma 1";
  EXPECT_TRUE(last_row_tiles(v, 0, 0.9).empty());
}

// exact_last_row: each sparse head's tiles are its usual ones plus the last row's own cover of
// gamma of its measured last-block attention (v_blk); other rows, dense heads and pivots unchanged.
TEST(PlannerModes, ExactLastRowAddsTheMeasuredCoverToTheLastRowOnly) {
  thread_pool pool(2);
  const fixture_inputs& in = inputs();
  const cluster_map map = test_map();
  for (plan_mode mode : {plan_mode::flexprefill, plan_mode::shareprefill, plan_mode::vslash}) {
    planner_params p = open_params();
    p.mode = mode;
    p.gamma = 0.9;
    if (mode == plan_mode::flexprefill) p.tau_qa = 1.0;  // every head query-aware
    p.dense_heads = {{1, 3}};
    planner_params exact = p;
    exact.exact_last_row = true;
    const cluster_map* m = mode == plan_mode::shareprefill ? &map : nullptr;
    const planner base(p, 2, n_heads, m), with(exact, 2, n_heads, m);
    plan_state sb, sw;
    std::set<head_kind> kinds;
    int64_t changed = 0;
    for (int64_t layer = 0; layer < 2; ++layer) {
      const synthetic_layer& l = layer == 0 ? in.l0 : in.l1;
      const auto q = tensor_view::contiguous(l.q.data(), dtype::f32, {n_tok, n_heads, n_dim});
      const auto k = tensor_view::contiguous(l.k.data(), dtype::f32, {n_tok, n_kv, n_dim});
      const layer_plan a = base.plan(layer, q, k, sb, pool), b = with.plan(layer, q, k, sw, pool);
      ASSERT_EQ(a.kinds, b.kinds);
      const auto st = last_block_statistics(q, k, {128, p.gamma, 1, 0, 1}, pool);
      for (int64_t h = 0; h < n_heads; ++h) {
        const std::set<tile> ta = as_set(a.mask.tiles_of(h)), tb = as_set(b.mask.tiles_of(h));
        kinds.insert(a.kinds[h]);
        if (a.kinds[h] == head_kind::dense || a.kinds[h] == head_kind::pivot) {
          EXPECT_EQ(ta, tb);
          continue;
        }
        std::set<tile> want = ta;
        for (const tile& t : last_row_tiles(st[h].v_blk.data(), n_blocks, p.gamma)) want.insert(t);
        EXPECT_EQ(tb, want) << plan_mode_name(mode) << " layer " << layer << " head " << h;
        changed += tb != ta;
        EXPECT_GE(last_row_coverage(b.mask.tiles_of(h), st[h].v_blk.data(), n_blocks),
                  p.gamma - 1e-6);
      }
      if (!a.pivot_heads.empty()) {  // publish the same pivot patterns to both states
        std::vector<float> att(a.pivot_heads.size() * n_blocks * n_blocks, 1.0f / n_blocks);
        base.publish(layer, a.pivot_heads, att.data(), sb);
        with.publish(layer, b.pivot_heads, att.data(), sw);
      }
    }
    const head_kind planned = mode == plan_mode::flexprefill    ? head_kind::query_aware
                              : mode == plan_mode::shareprefill ? head_kind::shared
                                                                : head_kind::vertical_slash;
    EXPECT_TRUE(kinds.count(planned)) << plan_mode_name(mode) << ": the kind is not exercised";
    EXPECT_TRUE(kinds.count(head_kind::dense));
    if (mode != plan_mode::vslash)  // vertical-slash heads cover their last row already, mostly
      EXPECT_GT(changed, 0) << plan_mode_name(mode) << ": the option added no tile";
  }
}

// last_row_gamma 1: every sparse head runs its whole causal last row, whatever its gamma; other
// rows as without the option; out of [0, 1] it is refused.
TEST(PlannerModes, LastRowGammaOneRunsTheWholeLastRow) {
  thread_pool pool(2);
  const fixture_inputs& in = inputs();
  planner_params p = open_params();
  p.mode = plan_mode::flexprefill;
  p.gamma = 0.9;
  p.tau_qa = 1.0;
  planner_params whole = p;
  whole.exact_last_row = true;
  whole.last_row_gamma = 1.0;
  const planner base(p, 2, n_heads, nullptr), with(whole, 2, n_heads, nullptr);
  plan_state sb, sw;
  const auto q = tensor_view::contiguous(in.l0.q.data(), dtype::f32, {n_tok, n_heads, n_dim});
  const auto k = tensor_view::contiguous(in.l0.k.data(), dtype::f32, {n_tok, n_kv, n_dim});
  const layer_plan a = base.plan(0, q, k, sb, pool), b = with.plan(0, q, k, sw, pool);
  const int32_t last = static_cast<int32_t>(n_blocks - 1);
  for (int64_t h = 0; h < n_heads; ++h) {
    std::set<tile> want;
    for (const tile& t : a.mask.tiles_of(h))
      if (t.first != last) want.insert(t);
    for (int32_t c = 0; c <= last; ++c) want.insert({last, c});
    EXPECT_EQ(as_set(b.mask.tiles_of(h)), want) << "head " << h;
  }
  for (const double bad : {-0.1, 1.5}) {
    whole.last_row_gamma = bad;
    EXPECT_NE(testing::error_of([&] { whole.validate(); }).find("last_row_gamma must be in [0, 1]"),
              std::string::npos);
  }
}

TEST(PlannerModes, BadConstruction) {
  planner_params p;
  EXPECT_NE(testing::error_of([&] { planner(p, 2, n_heads, nullptr); }).find("cluster map"),
            std::string::npos);
  const cluster_map m = test_map();
  EXPECT_NE(testing::error_of([&] { planner(p, 3, n_heads, &m); }).find("head [2, 0]"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { planner(p, 2, 3, &m); }).find("head 3 out of range"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
