// End to end on synthetic inputs with a clear group structure (N = 4096, 2 layers, 8 heads, 2 KV
// heads, D = 64): every head that shareprefill mode shares has a lower attention-output error
// than the same head under flexprefill mode; and the safetensors reader round-trips the inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "shareprefill/planner.h"
#include "shareprefill/safetensors.h"
#include "shareprefill/synthetic.h"
#include "test_util.h"

namespace sp {
namespace {

constexpr int64_t n = 4096, heads = 8, kv = 2, dim = 64, layers = 2;

synthetic_params gen() {
  synthetic_params p;
  p.n_tokens = n;
  p.layers = layers;
  p.heads = heads;
  p.kv_heads = kv;
  p.dim = dim;
  p.seed = 1;
  return p;
}

// Per layer, per head: relative output error of `mode` vs dense, and the kinds.
void run_mode(plan_mode mode, std::vector<std::vector<double>>& err,
              std::vector<std::vector<head_kind>>& kinds) {
  const synthetic_params g = gen();
  const cluster_map map = synthetic_cluster_map(g);
  planner_params p;
  p.mode = mode;
  const planner pl(p, layers, heads, &map);
  thread_pool pool(2);
  plan_state state;
  const int64_t nb = n / 128;
  for (int64_t l = 0; l < layers; ++l) {
    const synthetic_layer in = synthetic_generate_layer(g, l);
    const auto q = tensor_view::contiguous(in.q.data(), dtype::f32, {n, heads, dim});
    const auto k = tensor_view::contiguous(in.k.data(), dtype::f32, {n, kv, dim});
    const auto v = tensor_view::contiguous(in.v.data(), dtype::f32, {n, kv, dim});
    const layer_plan lp = pl.plan(l, q, k, state, pool);
    std::vector<float> out(n * heads * dim), ref(out.size());
    std::vector<float> a(lp.pivot_heads.size() * nb * nb);
    const block_attention_output ba{lp.pivot_heads, a.data()};
    attention_block_sparse(tensor_view::contiguous(out.data(), dtype::f32, {n, heads, dim}), {},
                           lp.pivot_heads.empty() ? nullptr : &ba, q, k, v, lp.mask, pool);
    pl.publish(l, lp.pivot_heads, a.data(), state);
    attention_block_sparse(tensor_view::contiguous(ref.data(), dtype::f32, {n, heads, dim}), {},
                           nullptr, q, k, v, block_mask::dense_causal(n, 128, heads), pool);
    std::vector<double> e(heads);
    for (int64_t h = 0; h < heads; ++h) {
      double e2 = 0.0, r2 = 0.0;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t d = 0; d < dim; ++d) {
          const double x = out[(t * heads + h) * dim + d], y = ref[(t * heads + h) * dim + d];
          e2 += (x - y) * (x - y);
          r2 += y * y;
        }
      e[h] = std::sqrt(e2 / r2);
    }
    err.push_back(e);
    kinds.push_back(lp.kinds);
  }
}

TEST(EndToEnd, SharedHeadsBeatFlexPrefillOnTheSameHeads) {
  std::vector<std::vector<double>> e_share, e_flex;
  std::vector<std::vector<head_kind>> k_share, k_flex;
  run_mode(plan_mode::shareprefill, e_share, k_share);
  run_mode(plan_mode::flexprefill, e_flex, k_flex);
  int shared = 0;
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t h = 0; h < heads; ++h) {
      if (k_share[l][h] == head_kind::pivot) {
        // Pivots run all causal tiles: only fp32 summation-order differences remain.
        EXPECT_LT(e_share[l][h], 1e-5) << "layer " << l << " head " << h;
      }
      if (k_share[l][h] != head_kind::shared) continue;
      ++shared;
      EXPECT_LT(e_share[l][h], e_flex[l][h]) << "layer " << l << " head " << h;
    }
  EXPECT_GE(shared, 1);  // the generator's groups must give sharing something to find
}

TEST(Safetensors, RoundTripAndBadFiles) {
  const synthetic_layer in = synthetic_generate_layer(gen(), 0);
  std::vector<uint16_t> k16(in.k.size());
  for (size_t i = 0; i < k16.size(); ++i) k16[i] = fp32_to_bf16(in.k[i]);
  const std::string path = testing::temp_path("plan_inputs.safetensors");
  safetensors_save(path,
                   {{"layer0.q", tensor_view::contiguous(in.q.data(), dtype::f32, {n, heads, dim})},
                    {"layer0.k", tensor_view::contiguous(k16.data(), dtype::bf16, {n, kv, dim})}});
  const safetensors_file f = safetensors_load(path);
  ASSERT_TRUE(f.has("layer0.q"));
  EXPECT_EQ(f.get("layer0.k").type, dtype::bf16);
  EXPECT_EQ(f.get("layer0.k").shape[1], kv);
  EXPECT_EQ(load_as_fp32(f.get("layer0.q"), 12345), in.q[12345]);
  EXPECT_EQ(load_as_fp32(f.get("layer0.k"), 77), bf16_to_fp32(k16[77]));
  bool threw = false;
  try {
    f.get("layer1.q");
  } catch (const sp::error& e) {
    threw = std::string(e.what()).find("layer1.q") != std::string::npos;
  }
  EXPECT_TRUE(threw);
  std::FILE* fp = std::fopen(path.c_str(), "wb");
  std::fputs("garbage", fp);
  std::fclose(fp);
  EXPECT_THROW(safetensors_load(path), sp::error);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace sp
