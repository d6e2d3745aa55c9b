// Per-head analysis (issue 17) without the model: Spearman's rho on constructed ranks, the
// output-projection error against an explicit Wo product, the single-head ablation strategy and
// the error probe on random q/k/v at a ragged length (dense heads unchanged, listed heads equal
// to the planner's own output, cached dense layers bit-identical).
#include <gtest/gtest.h>

#include <cmath>

#include "shareprefill/attention.h"
#include "shareprefill/eval.h"
#include "shareprefill/eval_heads.h"
#include "shareprefill/planned_layer.h"
#include "test_util.h"

namespace sp {
namespace {

using sp::testing::error_of;

TEST(EvalHeads, Spearman) {
  EXPECT_NEAR(spearman_rank_correlation({1, 2, 3, 4}, {10, 20, 35, 90}), 1.0, 1e-12);
  EXPECT_NEAR(spearman_rank_correlation({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0, 1e-12);
  // Ties get average ranks: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3): rho = 1.5 / sqrt(1.5*2).
  EXPECT_NEAR(spearman_rank_correlation({5, 5, 7}, {1, 2, 3}), 1.5 / std::sqrt(1.5 * 2.0), 1e-12);
  // One swap among 5: 1 - 6 * 2 / (5 * 24) = 0.9.
  EXPECT_NEAR(spearman_rank_correlation({1, 2, 3, 4, 5}, {1, 3, 2, 4, 5}), 0.9, 1e-12);
  EXPECT_EQ(spearman_rank_correlation({1, 1, 1}, {1, 2, 3}), 0.0);
  EXPECT_NE(error_of([] { spearman_rank_correlation({1, 2}, {1}); }).find("x has 2 values, y 1"),
            std::string::npos);
  EXPECT_NE(error_of([] { spearman_rank_correlation({1}, {1}); }).find("at least 2"),
            std::string::npos);
  EXPECT_NE(error_of([] { spearman_rank_correlation({1, NAN}, {1, 2}); }).find("not finite"),
            std::string::npos);
}

TEST(EvalHeads, OutputErrorMatchesExplicitProjection) {
  const int64_t n = 37, H = 3, D = 5, dim = 7, first = 11;
  auto out = sp::testing::random_values(n * H * D, 1);
  auto ref = sp::testing::random_values(n * H * D, 2);
  auto wo = sp::testing::random_values(dim * H * D, 3);
  std::vector<double> err(H);
  head_output_errors(err.data(), tensor_view::contiguous(out.data(), dtype::f32, {n, H, D}),
                     tensor_view::contiguous(ref.data(), dtype::f32, {n, H, D}), wo.data(), dim,
                     first);
  for (int64_t h = 0; h < H; ++h) {
    double sum = 0.0;
    for (int64_t t = first; t < n; ++t)
      for (int64_t row = 0; row < dim; ++row) {
        double y = 0.0;  // row of Wo restricted to head h, times the head's error
        for (int64_t e = 0; e < D; ++e) {
          const size_t i = static_cast<size_t>((t * H + h) * D + e);
          y += double(wo[static_cast<size_t>(row * H * D + h * D + e)]) * (double(out[i]) - ref[i]);
        }
        sum += y * y;
      }
    EXPECT_NEAR(err[static_cast<size_t>(h)], std::sqrt(sum), 1e-9 * std::sqrt(sum));
  }
  EXPECT_NE(error_of([&] {
              head_output_errors(err.data(), tensor_view::contiguous(out.data(), dtype::f32, {n, H, D}),
                                 tensor_view::contiguous(ref.data(), dtype::f32, {n, H, D}),
                                 wo.data(), dim, n);
            }).find("first_token 37 outside [0, 37)"),
            std::string::npos);
}

struct layer_inputs {
  std::vector<float> q, k, v;
  tensor_view qv, kv, vv;
};

layer_inputs random_layer(int64_t n, int64_t H, int64_t Hkv, int64_t D, uint64_t seed) {
  layer_inputs x{sp::testing::random_values(n * H * D, seed),
                 sp::testing::random_values(n * Hkv * D, seed + 1),
                 sp::testing::random_values(n * Hkv * D, seed + 2), {}, {}, {}};
  x.qv = tensor_view::contiguous(x.q.data(), dtype::f32, {n, H, D});
  x.kv = tensor_view::contiguous(x.k.data(), dtype::f32, {n, Hkv, D});
  x.vv = tensor_view::contiguous(x.v.data(), dtype::f32, {n, Hkv, D});
  return x;
}

TEST(EvalHeads, SubsetAttentionTakesListedHeadsFromThePlanner) {
  const int64_t n = 1000, H = 4, Hkv = 2, D = 16, layers = 2;  // ragged: 1000 = 15.6 blocks of 64
  thread_pool pool(2);
  planner_params pp;
  pp.block_size = 64;
  pp.min_budget = 128;
  pp.gamma = 0.5;  // random inputs attend almost uniformly: a low gamma keeps the plan sparse
  pp.mode = plan_mode::vslash;
  const planner pl(pp, layers, H, nullptr);
  dense_prefix_cache cache;
  head_subset_attention subset(pl, {{1, 2}}, &cache);
  EXPECT_NE(error_of([&] { head_subset_attention bad(pl, {{2, 0}}); }).find("head 2:0 is outside"),
            std::string::npos);
  plan_state state;
  for (int run = 0; run < 2; ++run) {  // the second run reads layer 0 from the cache
    subset.begin_prompt(n);
    state.reset();
    for (int64_t layer = 0; layer < layers; ++layer) {
      layer_inputs x = random_layer(n, H, Hkv, D, 100 + 10 * layer);
      std::vector<float> out(x.q.size()), dense(x.q.size()), planned(x.q.size());
      const auto ov = tensor_view::contiguous(out.data(), dtype::f32, {n, H, D});
      const layer_attention_report r = subset.attend(layer, ov, x.qv, x.kv, x.vv, pool);
      attention_block_sparse(tensor_view::contiguous(dense.data(), dtype::f32, {n, H, D}), {},
                             nullptr, x.qv, x.kv, x.vv, block_mask::dense_causal(n, 64, H), pool);
      const int64_t causal = causal_tile_count(16);
      if (layer == 0) {
        EXPECT_EQ(sp::testing::max_abs_diff(out.data(), dense.data(), n * H * D), 0.0);
        EXPECT_EQ(r.tiles, H * causal);
        continue;
      }
      const planned_layer p = attend_planned_layer(
          pl, state, layer, tensor_view::contiguous(planned.data(), dtype::f32, {n, H, D}), x.qv,
          x.kv, x.vv, pool);
      const int64_t head_tiles = p.mask_of(2).head_tiles(2);
      ASSERT_LT(head_tiles, causal) << "the planner must be sparse here for the test to mean much";
      EXPECT_EQ(r.tiles, 3 * causal + head_tiles);
      EXPECT_EQ(r.causal_tiles, H * causal);
      double listed = 0.0, others = 0.0, listed_vs_dense = 0.0;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t e = 0; e < D; ++e) {
            const size_t i = static_cast<size_t>((t * H + h) * D + e);
            if (h == 2) {
              listed = std::max(listed, double(std::fabs(out[i] - planned[i])));
              listed_vs_dense = std::max(listed_vs_dense, double(std::fabs(out[i] - dense[i])));
            } else {
              others = std::max(others, double(std::fabs(out[i] - dense[i])));
            }
          }
      EXPECT_EQ(listed, 0.0);
      EXPECT_EQ(others, 0.0);
      EXPECT_GT(listed_vs_dense, 1e-4) << "the sparse head must differ from dense";
    }
    EXPECT_EQ(cache.outputs.size(), 1u) << "only layer 0 lies below the first listed layer";
  }
}

TEST(EvalHeads, ProbeMeasuresAgainstDense) {
  const int64_t n = 777, H = 3, Hkv = 1, D = 8, dim = 12;
  thread_pool pool(2);
  llama_weights w;
  w.config.n_layers = 1;
  w.config.n_heads = H;
  w.config.dim = dim;
  w.layers.resize(1);
  w.layers[0].wo = sp::testing::random_values(dim * H * D, 7);
  planner_params pp;
  pp.block_size = 32;
  pp.min_budget = 64;
  pp.gamma = 0.5;
  pp.mode = plan_mode::vslash;
  const planner pl(pp, 1, H, nullptr);
  head_error_probe probe(pl, w);
  probe.begin_prompt(n);
  layer_inputs x = random_layer(n, H, Hkv, D, 500);
  std::vector<float> out(x.q.size()), planned(x.q.size());
  const auto ov = tensor_view::contiguous(out.data(), dtype::f32, {n, H, D});
  EXPECT_NE(error_of([&] { probe.attend(0, ov, x.qv, x.kv, x.vv, pool); }).find("not observed"),
            std::string::npos);
  const auto resid = sp::testing::random_values(n * dim, 9);
  probe.observe_residual(0, resid.data());
  probe.attend(0, ov, x.qv, x.kv, x.vv, pool);
  plan_state st;
  const auto pv = tensor_view::contiguous(planned.data(), dtype::f32, {n, H, D});
  const planned_layer p = attend_planned_layer(pl, st, 0, pv, x.qv, x.kv, x.vv, pool);
  std::vector<double> rel(H), abs_out(H);
  head_relative_errors(rel.data(), pv, ov, n / 2);
  head_output_errors(abs_out.data(), pv, ov, w.layers[0].wo.data(), dim, n / 2);
  double rn = 0.0;
  for (int64_t i = (n / 2) * dim; i < n * dim; ++i) rn += double(resid[i]) * resid[i];
  ASSERT_EQ(probe.rows().size(), size_t(H));
  for (const head_error_row& r : probe.rows()) {
    EXPECT_EQ(r.rel_err, rel[static_cast<size_t>(r.head)]);
    EXPECT_NEAR(r.out_err, abs_out[static_cast<size_t>(r.head)] / std::sqrt(rn), 1e-12);
    EXPECT_EQ(r.density, p.mask_of(int32_t(r.head)).head_density(r.head));
    EXPECT_LT(r.density, 1.0);
    EXPECT_GT(r.out_err, 0.0);
  }
}

}  // namespace
}  // namespace sp
