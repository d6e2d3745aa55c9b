// planner_params::dense_layers through the planned prefill strategy: a listed layer visits every
// causal tile and computes exactly what dense attention computes, the other layers' plans are
// unchanged in every mode, and in shareprefill a pivot chosen in a dense layer still publishes
// its pattern to later layers. Inputs: three synthetic layers (N = 1024, 4 heads, 2 KV heads,
// D = 32, 8 blocks).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/synthetic.h"
#include "synthetic_stack.h"
#include "test_util.h"

namespace sp {
namespace {

constexpr int64_t n_tok = 1024, n_layers = 3, n_heads = 4, n_kv = 2, n_dim = 32;

// Cluster "a" (shared) = heads 0 and 1 of layers 1 and 2; every other head in "rest".
cluster_map test_map() {
  cluster_map m;
  m.clusters = {{"a", {{1, 0}, {1, 1}, {2, 0}, {2, 1}}, true, std::nullopt},
                {"rest",
                 {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 2}, {2, 3}},
                 false,
                 std::nullopt}};
  return m;
}

const testing::synthetic_stack& stack() {
  static const testing::synthetic_stack s(n_tok, n_layers, n_heads, n_kv, n_dim, 11);
  return s;
}

planner_params open_params(plan_mode mode) {
  planner_params p;
  p.mode = mode;
  p.min_budget = 128;  // minB = 1: vertical-slash plans stay well below dense
  p.tau_qa = 1e-9;     // no head is query-aware, so head 0 of layer 1 becomes the pivot
  p.tau_sim = 1.0;     // sharing gates open
  p.tau_fb = 1.0;
  return p;
}

testing::stack_run run_planned(planner_params p, std::vector<int64_t> dense_layers) {
  p.dense_layers = std::move(dense_layers);
  const cluster_map map = test_map();
  const planner pl(p, n_layers, n_heads, &map);
  return stack().run(*make_planned_attention(pl));
}

int64_t kind_count(const layer_attention_report& r, head_kind k) {
  return r.kind_counts[static_cast<size_t>(k)];
}

class DenseLayers : public ::testing::TestWithParam<plan_mode> {};

TEST_P(DenseLayers, ListedLayerIsDenseAndTheOthersAreUnchanged) {
  const planner_params p = open_params(GetParam());
  const testing::stack_run sparse = run_planned(p, {});
  const testing::stack_run mixed = run_planned(p, {1});
  const testing::stack_run dense = stack().run(*make_dense_attention());

  const layer_attention_report& d = mixed.reports[1];
  EXPECT_EQ(d.density(), 1.0);
  EXPECT_EQ(d.tiles, d.causal_tiles);
  EXPECT_LT(sparse.reports[1].density(), 1.0);
  EXPECT_EQ(kind_count(d, head_kind::dense) + kind_count(d, head_kind::pivot), n_heads);
  EXPECT_EQ(testing::max_abs_diff(mixed.outputs[1].data(), dense.outputs[1].data(),
                                  static_cast<int64_t>(dense.outputs[1].size())),
            0.0);
  for (int64_t l : {0, 2}) {
    const layer_attention_report &a = sparse.reports[static_cast<size_t>(l)],
                                 &b = mixed.reports[static_cast<size_t>(l)];
    EXPECT_EQ(a.tiles, b.tiles) << "layer " << l;
    EXPECT_EQ(a.kind_counts, b.kind_counts) << "layer " << l;
    EXPECT_EQ(a.causal_tiles, b.causal_tiles) << "layer " << l;
    EXPECT_EQ(sparse.outputs[static_cast<size_t>(l)], mixed.outputs[static_cast<size_t>(l)])
        << "layer " << l;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, DenseLayers,
                         ::testing::Values(plan_mode::vslash, plan_mode::flexprefill,
                                           plan_mode::shareprefill),
                         [](const auto& mode) { return std::string(plan_mode_name(mode.param)); });

TEST(DenseLayersShare, PivotInADenseLayerStillPublishesItsPattern) {
  const testing::stack_run mixed = run_planned(open_params(plan_mode::shareprefill), {1});
  EXPECT_EQ(kind_count(mixed.reports[1], head_kind::pivot), 1);
  EXPECT_EQ(kind_count(mixed.reports[1], head_kind::dense), n_heads - 1);
  EXPECT_EQ(kind_count(mixed.reports[2], head_kind::shared), 2);
}

TEST(DenseLayersShare, WithinLayerSharingDefersNoHeadOfADenseLayer) {
  planner_params p = open_params(plan_mode::shareprefill);
  p.share_within_layer = true;
  const testing::stack_run sparse = run_planned(p, {});
  const testing::stack_run mixed = run_planned(p, {1});
  EXPECT_EQ(kind_count(sparse.reports[1], head_kind::shared), 1);  // head 1 waits for head 0
  EXPECT_EQ(mixed.reports[1].density(), 1.0);
  EXPECT_EQ(kind_count(mixed.reports[1], head_kind::pivot), 1);
  EXPECT_EQ(kind_count(mixed.reports[1], head_kind::dense), n_heads - 1);
  EXPECT_EQ(mixed.reports[2].kind_counts, sparse.reports[2].kind_counts);
  EXPECT_EQ(mixed.reports[2].tiles, sparse.reports[2].tiles);
}

TEST(DenseLayersParams, RejectsLayersOutsideTheModelAndUnsortedLists) {
  planner_params p = open_params(plan_mode::vslash);
  p.dense_layers = {0, 3};
  EXPECT_NE(testing::error_of([&] {
              planner(p, n_layers, n_heads, nullptr);
            }).find("dense layer 3 is out of range: the model has 3 layers (0-2)"),
            std::string::npos);
  p.dense_layers = {2, 1};
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("dense_layers must be sorted"),
            std::string::npos);
  p.dense_layers = {-1};
  EXPECT_NE(testing::error_of([&] { p.validate(); }).find("dense_layers must be sorted"),
            std::string::npos);
}

TEST(DenseLayersParams, JsonRecordsTheList) {
  planner_params p;
  p.dense_layers = {0, 11, 12};
  EXPECT_EQ(p.to_json()["dense_layers"], nlohmann::json({0, 11, 12}));
}

}  // namespace
}  // namespace sp
