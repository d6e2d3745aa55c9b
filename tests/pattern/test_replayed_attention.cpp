// make_replayed_attention against the planned strategy: replaying the host planner's own masks
// (the tiles each head was computed with, both passes of share_within_layer merged) reproduces
// the planned run's outputs bit for bit in every sparse mode; bad inputs are rejected. Inputs:
// three synthetic layers (N = 1000: 8 blocks, the last one ragged; 4 heads, 2 KV heads, D = 32).
#include <gtest/gtest.h>

#include "shareprefill/planned_layer.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/replayed_attention.h"
#include "shareprefill/synthetic.h"
#include "synthetic_stack.h"
#include "test_util.h"

namespace sp {
namespace {

constexpr int64_t n_tok = 1000, n_layers = 3, n_heads = 4, n_kv = 2, n_dim = 32;

// Heads 0 and 1 of every layer share one cluster; the others are not shared.
cluster_map test_map() {
  cluster_map m;
  m.clusters = {{"a", {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {2, 0}, {2, 1}}, true, std::nullopt},
                {"rest", {{0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 2}, {2, 3}}, false, std::nullopt}};
  return m;
}

const testing::synthetic_stack& stack() {
  static const testing::synthetic_stack s(n_tok, n_layers, n_heads, n_kv, n_dim, 23);
  return s;
}

testing::stack_run run_prefill(prefill_attention& attention) { return stack().run(attention); }

// The tiles every head of a planned layer was computed with (planned_layer::mask_of per head).
block_mask visited_mask(const planned_layer& p) {
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(n_heads));
  for (int32_t h = 0; h < n_heads; ++h) tiles[static_cast<size_t>(h)] = p.mask_of(h).tiles_of(h);
  return block_mask::from_tiles(n_tok, p.plan.mask.block_size, tiles);
}

// The host planner's masks of every layer, and whether any layer had a second pass.
std::vector<block_mask> planned_masks(const planner& pl, bool& any_deferred) {
  thread_pool pool(2);
  plan_state state;
  std::vector<block_mask> masks;
  any_deferred = false;
  for (int64_t l = 0; l < n_layers; ++l) {
    std::vector<float> o;
    const planned_layer p = attend_planned_layer(pl, state, l, stack().out(o), stack().q(l),
                                                 stack().k(l), stack().v(l), pool);
    any_deferred = any_deferred || p.has_deferred;
    masks.push_back(visited_mask(p));
  }
  return masks;
}

struct replay_case {
  plan_mode mode;
  bool share_within_layer;
};

class ReplayedAttention : public ::testing::TestWithParam<replay_case> {};

TEST_P(ReplayedAttention, ReplayingThePlannersMasksReproducesThePlannedRunBitwise) {
  planner_params p;
  p.mode = GetParam().mode;
  p.share_within_layer = GetParam().share_within_layer;
  p.min_budget = 128;  // minB = 1: the plans stay well below dense
  p.tau_qa = 1e-9;     // no head is query-aware, so the shared heads follow a pivot
  p.tau_sim = 1.0;     // sharing gates open
  p.tau_fb = 1.0;
  const cluster_map map = test_map();
  const planner pl(p, n_layers, n_heads, &map);
  const testing::stack_run planned = run_prefill(*make_planned_attention(pl));
  bool any_deferred = false;
  std::vector<block_mask> masks = planned_masks(pl, any_deferred);
  EXPECT_EQ(any_deferred, p.share_within_layer) << "the case must exercise the second pass";
  const testing::stack_run replayed = run_prefill(*make_replayed_attention(masks));
  for (int64_t l = 0; l < n_layers; ++l) {
    const size_t i = static_cast<size_t>(l);
    EXPECT_LT(masks[i].density(), 0.9) << "layer " << l << ": the case must be sparse";
    EXPECT_EQ(replayed.reports[i].tiles, planned.reports[i].tiles) << "layer " << l;
    EXPECT_EQ(replayed.reports[i].causal_tiles, planned.reports[i].causal_tiles) << "layer " << l;
    EXPECT_EQ(replayed.outputs[i], planned.outputs[i]) << "layer " << l;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, ReplayedAttention,
    ::testing::Values(replay_case{plan_mode::vslash, false},
                      replay_case{plan_mode::flexprefill, false},
                      replay_case{plan_mode::shareprefill, false},
                      replay_case{plan_mode::shareprefill, true}),
    [](const auto& c) {
      return std::string(plan_mode_name(c.param.mode)) +
             (c.param.share_within_layer ? "_within_layer" : "");
    });

// A mask that visits less changes the output: the replay computes what it is given.
TEST(ReplayedAttentionMasks, FewerTilesGiveAnotherOutput) {
  std::vector<block_mask> dense, diagonal;
  std::vector<std::vector<tile>> diag(static_cast<size_t>(n_heads));
  for (auto& d : diag)
    for (int32_t r = 0; r < 8; ++r) d.emplace_back(r, r);
  for (int64_t l = 0; l < n_layers; ++l) {
    dense.push_back(block_mask::dense_causal(n_tok, 128, n_heads));
    diagonal.push_back(block_mask::from_tiles(n_tok, 128, diag));
  }
  const testing::stack_run reference = run_prefill(*make_dense_attention());
  const testing::stack_run full = run_prefill(*make_replayed_attention(dense));
  const testing::stack_run sparse = run_prefill(*make_replayed_attention(diagonal));
  for (size_t i = 0; i < static_cast<size_t>(n_layers); ++i) {
    EXPECT_EQ(full.outputs[i], reference.outputs[i]) << "layer " << i;
    EXPECT_NE(sparse.outputs[i], reference.outputs[i]) << "layer " << i;
    EXPECT_EQ(sparse.reports[i].tiles, n_heads * 8);
    EXPECT_EQ(sparse.reports[i].causal_tiles, n_heads * 36);
  }
}

TEST(ReplayedAttentionMasks, RejectsMasksThatDoNotFitThePrompt) {
  using testing::error_of;
  EXPECT_NE(error_of([] { make_replayed_attention({}); }).find("no masks to replay"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              make_replayed_attention({block_mask::dense_causal(n_tok, 128, n_heads),
                                       block_mask::dense_causal(512, 128, n_heads)});
            }).find("the mask of layer 1 is for 512 tokens, the mask of layer 0 for 1000"),
            std::string::npos);
  const auto two_layers = make_replayed_attention(
      {block_mask::dense_causal(n_tok, 128, n_heads), block_mask::dense_causal(n_tok, 128, n_heads)});
  EXPECT_NE(error_of([&] { two_layers->begin_prompt(999); })
                .find("a prompt of 999 tokens; the replayed masks are for 1000"),
            std::string::npos);
  EXPECT_NE(error_of([&] { run_prefill(*two_layers); }).find("no mask for layer 2: 2 layers were given"),
            std::string::npos);
  const auto three_heads = make_replayed_attention(
      std::vector<block_mask>(n_layers, block_mask::dense_causal(n_tok, 128, 3)));
  EXPECT_NE(error_of([&] { run_prefill(*three_heads); })
                .find("layer 0's mask is for 1000 tokens x 3 heads; q does not have that shape"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
