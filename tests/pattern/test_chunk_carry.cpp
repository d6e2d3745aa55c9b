// Chunked prefill with a carried sharing state (issue 16, docs/PLANNER.md "Chunked prefill"):
// planner::begin_chunk keeps each cluster's pivot identity, a member in a layer before its
// pivot's layer shares the pivot's pattern extended from the previous chunk (and cannot in the
// first chunk), the extension rule on a hand-made pattern, and bad calls rejected. Inputs: one
// synthetic prompt of 2048 tokens in two chunks of 1024 (8 + 8 blocks), 2 layers, 4 heads,
// 2 KV heads, D = 32; sharing gates open so the kinds depend on the state alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "shareprefill/attention.h"
#include "shareprefill/planner.h"
#include "shareprefill/synthetic.h"
#include "test_util.h"

namespace sp {
namespace {

constexpr int64_t n_tok = 2048, chunk = 1024, n_heads = 4, n_kv = 2, n_dim = 32, bs = 128;

// Cluster "a" = (0,0), (1,0), (1,1) with medoid (1,0): its pivot is in layer 1, after its member
// (0,0). Cluster "b" = (0,1), (0,2), (1,2) with medoid (0,1). "c" = head 3, not shared.
cluster_map test_map() {
  cluster_map m;
  m.clusters = {{"a", {{0, 0}, {1, 0}, {1, 1}}, true, head_ref{1, 0}},
                {"b", {{0, 1}, {0, 2}, {1, 2}}, true, head_ref{0, 1}},
                {"c", {{0, 3}, {1, 3}}, false, std::nullopt}};
  return m;
}

planner_params open_params() {
  planner_params p;
  p.mode = plan_mode::shareprefill;
  p.pivot_is_medoid = true;
  p.min_budget = 128;  // minB = 1
  p.tau_qa = 1e-9;     // no head is query-aware
  p.tau_sim = 1.0;     // JS gates open (JSd <= sqrt(ln 2) < 1)
  p.tau_fb = 1.0;
  return p;
}

struct chunk_runner {
  cluster_map map = test_map();
  planner pl;
  plan_state state;
  thread_pool pool{2};
  std::vector<synthetic_layer> layers;
  explicit chunk_runner(const planner_params& p) : pl(p, 2, n_heads, &map) {
    synthetic_params s;
    s.n_tokens = n_tok;
    s.layers = 2;
    s.heads = n_heads;
    s.kv_heads = n_kv;
    s.dim = n_dim;
    s.seed = 11;
    for (int64_t l = 0; l < 2; ++l) layers.push_back(synthetic_generate_layer(s, l));
  }

  // Plans layer `layer` of the chunk [s, e) (queries of the chunk in place, zeros before it).
  layer_plan plan(int64_t layer, int64_t s, int64_t e) {
    const synthetic_layer& x = layers[static_cast<size_t>(layer)];
    q_pad.assign(static_cast<size_t>(e * n_heads * n_dim), 0.0f);
    std::copy(x.q.begin() + s * n_heads * n_dim, x.q.begin() + e * n_heads * n_dim,
              q_pad.begin() + s * n_heads * n_dim);
    return pl.plan(layer, tensor_view::contiguous(q_pad.data(), dtype::f32, {e, n_heads, n_dim}),
                   tensor_view::contiguous(x.k.data(), dtype::f32, {e, n_kv, n_dim}), state, pool);
  }
  // Plans, runs the chunk's attention with the pivots' block attention, publishes.
  layer_plan run(int64_t layer, int64_t s, int64_t e) {
    const layer_plan p = plan(layer, s, e);
    const synthetic_layer& x = layers[static_cast<size_t>(layer)];
    const int64_t nb = p.mask.n_blocks, rows = e - s;
    std::vector<float> a(p.pivot_heads.size() * nb * nb, 0.0f), out(rows * n_heads * n_dim);
    const block_attention_output ba{p.pivot_heads, a.data()};
    attention_block_sparse(tensor_view::contiguous(out.data(), dtype::f32, {rows, n_heads, n_dim}),
                           {}, p.pivot_heads.empty() ? nullptr : &ba,
                           tensor_view::contiguous(x.q.data() + s * n_heads * n_dim, dtype::f32,
                                                   {rows, n_heads, n_dim}),
                           tensor_view::contiguous(x.k.data(), dtype::f32, {e, n_kv, n_dim}),
                           tensor_view::contiguous(x.v.data(), dtype::f32, {e, n_kv, n_dim}),
                           p.mask, pool, s);
    pl.publish(layer, p.pivot_heads, a.data(), state);
    return p;
  }
  std::vector<float> q_pad;
};

using hk = head_kind;

std::set<tile> rows_from(const std::vector<tile>& t, int32_t r0) {
  std::set<tile> out;
  for (const tile& x : t)
    if (x.first >= r0) out.insert(x);
  return out;
}

TEST(ChunkCarry, PivotIdentityKeptAndMemberBeforeThePivotLayerSharesFromChunkTwo) {
  chunk_runner r(open_params());
  r.pl.begin_chunk(r.state, chunk);  // a fresh state: chunk start 0
  const layer_plan c1l0 = r.run(0, 0, chunk);
  const layer_plan c1l1 = r.run(1, 0, chunk);
  // Chunk 1: a's member (0,0) comes before its pivot (1,0) and has nothing to share.
  EXPECT_EQ(c1l0.kinds, (std::vector<hk>{hk::vertical_slash, hk::pivot, hk::vertical_slash,
                                         hk::vertical_slash}));
  // (1,1) is in its pivot's layer: nothing published yet in chunk 1.
  EXPECT_EQ(c1l1.kinds,
            (std::vector<hk>{hk::pivot, hk::vertical_slash, hk::shared, hk::vertical_slash}));
  const cluster_slot a1 = r.state.clusters[0], b1 = r.state.clusters[1];
  ASSERT_TRUE(a1.has_pattern && b1.has_pattern);

  r.pl.begin_chunk(r.state, n_tok);
  EXPECT_EQ(r.state.chunk_start, chunk);
  // The carried pattern is chunk 1's extended to chunk 2's rows [8, 16).
  const std::vector<tile> carried_a = extend_pivot_pattern(a1.pivot_pattern, 0, 8, 8, 16);
  ASSERT_FALSE(carried_a.empty());
  EXPECT_EQ(r.state.clusters[0].pivot_pattern, carried_a);
  const layer_plan c2l0 = r.run(0, chunk, n_tok);
  // (0,0) now shares a's carried pattern (profiles of 8 vs 16 blocks through the carried gate);
  // b's pivot (0,1) is the pivot again and (0,2), in its layer, shares b's carried pattern.
  EXPECT_EQ(c2l0.kinds, (std::vector<hk>{hk::shared, hk::pivot, hk::shared, hk::vertical_slash}));
  EXPECT_EQ(c2l0.pivot_heads, (std::vector<int32_t>{1}));
  const std::set<tile> head0 = rows_from(c2l0.mask.tiles_of(0), 8);
  for (const tile& t : carried_a) EXPECT_TRUE(head0.count(t)) << t.first << "," << t.second;
  const layer_plan c2l1 = r.run(1, chunk, n_tok);
  // (1,1) shares the carried pattern of its pivot (1,0), planned as the pivot in the same call.
  EXPECT_EQ(c2l1.kinds, (std::vector<hk>{hk::pivot, hk::shared, hk::shared, hk::vertical_slash}));
  EXPECT_EQ(c2l1.pivot_heads, (std::vector<int32_t>{0}));
  // Same pivots; their profiles and patterns replaced by chunk 2's (16 blocks, rows >= 8).
  for (int c : {0, 1}) {
    const cluster_slot& now = r.state.clusters[c];
    const cluster_slot& before = c == 0 ? a1 : b1;
    EXPECT_EQ(now.pivot_layer, before.pivot_layer) << "cluster " << c;
    EXPECT_EQ(now.pivot_head, before.pivot_head) << "cluster " << c;
    EXPECT_EQ(now.pivot_v_blk.size(), 16u);
    EXPECT_EQ(before.pivot_v_blk.size(), 8u);
    EXPECT_FALSE(rows_from(now.pivot_pattern, 8).empty());
  }
}

TEST(ChunkCarry, FreshStatePerChunkHasNothingToShareBeforeThePivotLayer) {
  chunk_runner r(open_params());
  r.run(0, 0, chunk);
  r.run(1, 0, chunk);
  r.state.reset();  // what bench chunk-plan's "chunked" column does
  EXPECT_EQ(r.run(0, chunk, n_tok).kinds[0], hk::vertical_slash);
}

TEST(ChunkCarry, ExtensionRuleOnAHandMadePattern) {
  // Rows [4, 8): offset 0 in all 4 rows, offset 2 in 2 of 4 (half: recurs), column 1 in 3 of 4;
  // column 3 once off the recurring offsets ((5,3) is on offset 2): 1 of 4, no; offsets 1, 3, 4,
  // 5 once each, no. Row 2 is outside the pattern's rows and ignored.
  const std::vector<tile> pattern{{4, 1}, {5, 1}, {6, 1}, {4, 3}, {4, 4}, {5, 5},
                                  {6, 6}, {7, 7}, {4, 2}, {5, 3}, {2, 0}};
  EXPECT_EQ(extend_pivot_pattern(pattern, 4, 8, 8, 10),
            (std::vector<tile>{{8, 1}, {8, 6}, {8, 8}, {9, 1}, {9, 7}, {9, 9}}));
  // Causality holds in the new rows: row 1 gets column 1 and offset 0, not offset 2.
  EXPECT_EQ(extend_pivot_pattern(pattern, 4, 8, 1, 2), (std::vector<tile>{{1, 1}}));
  EXPECT_NE(testing::error_of([&] {
              extend_pivot_pattern({{3, 4}}, 0, 8, 8, 9);
            }).find("is not causal"),
            std::string::npos);
}

TEST(ChunkCarry, CarriedGateComparesTheCommonRange) {
  const planner_params p = open_params();
  cluster_slot pivot;
  pivot.pivot_v_blk = {0.5f, 0.5f};                    // key blocks 0, 1
  pivot.pivot_s_blk = {0.25f, 0.75f};                  // offsets 1, 0
  const float same_v[4] = {0.2f, 0.2f, 0.3f, 0.3f};    // blocks 0, 1 equal: renormalised 0.5/0.5
  const float same_s[4] = {0.4f, 0.4f, 0.05f, 0.15f};  // offsets 1, 0: 0.25 / 0.75
  const float other_v[4] = {0.4f, 0.0f, 0.3f, 0.3f};
  planner_params strict = p;
  strict.tau_sim = 1e-3;
  EXPECT_TRUE(carried_sharing_gate(strict, pivot, same_v, same_s, 4));
  EXPECT_TRUE(sharing_gate(strict, pivot, same_v, same_s, 4));  // dispatches on the lengths
  EXPECT_FALSE(carried_sharing_gate(strict, pivot, other_v, same_s, 4));
  const float swapped_s[4] = {0.4f, 0.4f, 0.15f, 0.05f};
  EXPECT_FALSE(carried_sharing_gate(strict, pivot, same_v, swapped_s, 4));
}

TEST(ChunkCarry, BadCallsRejected) {
  using testing::error_of;
  chunk_runner r(open_params());
  r.run(0, 0, chunk);
  r.run(1, 0, chunk);
  EXPECT_NE(error_of([&] {
              r.pl.begin_chunk(r.state, chunk);
            }).find("must end past the state's 1024 tokens, got 1024"),
            std::string::npos);

  plan_state ragged;
  ragged.n_tokens = 1000;  // a previous chunk ending off the block grid
  EXPECT_NE(error_of([&] {
              r.pl.begin_chunk(ragged, n_tok);
            }).find("start at token 1000, not a multiple of the block size 128"),
            std::string::npos);

  r.pl.begin_chunk(r.state, n_tok);
  const layer_plan p = r.plan(0, chunk, n_tok);  // b's pivot: publish() pending
  ASSERT_FALSE(p.pivot_heads.empty());
  EXPECT_NE(error_of([&] {
              r.pl.begin_chunk(r.state, n_tok + bs);
            }).find("publish() was not called after layer 0"),
            std::string::npos);

  chunk_runner partial(open_params());
  partial.run(0, 0, chunk);
  EXPECT_NE(error_of([&] {
              partial.pl.begin_chunk(partial.state, n_tok);
            }).find("was planned up to layer 0 of 2"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
