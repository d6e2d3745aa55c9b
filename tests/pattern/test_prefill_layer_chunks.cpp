// prefill_layer on the CPU with a chunk start (prefill_layer_params::query_offset, issue 16):
// a dense-mode chunked prompt equals the one-shot prompt bit for bit on every row (ragged N,
// a last chunk shorter than a block); a shareprefill chunk equals the host planner and CPU
// kernel called as bench chunk-plan calls them (keys [0, e), zeros before the chunk's queries);
// bad chunk starts, q/k lengths and a state reused for another chunk give clear errors.
#include <gtest/gtest.h>

#include <cstring>

#include "shareprefill/attention.h"
#include "shareprefill/prefill_layer.h"
#include "shareprefill/synthetic.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::error_of;

synthetic_params small_prompt(int64_t n) {
  synthetic_params p;
  p.n_tokens = n, p.layers = 2, p.heads = 4, p.kv_heads = 2, p.dim = 32, p.seed = 3;
  return p;
}

tensor_view rows(const std::vector<float>& x, int64_t t0, int64_t t1, int64_t heads, int64_t dim) {
  return tensor_view::contiguous(x.data() + t0 * heads * dim, dtype::f32, {t1 - t0, heads, dim});
}

// Every layer's output [N, H, D] of a prompt run in chunks of `chunk` tokens (N: one-shot).
std::vector<std::vector<float>> run_prompt(const planner& pl, const synthetic_params& sp,
                                           const std::vector<synthetic_layer>& layers,
                                           int64_t chunk, thread_pool& pool) {
  prefill_layer_params p;
  p.host = &pl;
  p.pool = &pool;
  const int64_t n = sp.n_tokens, h = sp.heads, hkv = sp.kv_heads, d = sp.dim;
  std::vector<std::vector<float>> out(layers.size(), std::vector<float>(n * h * d));
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t e = std::min(n, s + chunk);
    prefill_layer_state state;
    prefill_layer_begin(state, p, e, false, nullptr, 0, nullptr);
    p.query_offset = s;
    for (size_t l = 0; l < layers.size(); ++l) {
      p.layer = static_cast<int64_t>(l);
      prefill_layer(rows(layers[l].q, s, e, h, d), rows(layers[l].k, 0, e, hkv, d),
                    rows(layers[l].v, 0, e, hkv, d), rows(out[l], s, e, h, d), state, p, nullptr, 0,
                    nullptr);
    }
  }
  return out;
}

TEST(PrefillLayerChunks, DenseChunksEqualOneShotBitwise) {
  thread_pool pool(2);
  for (const auto& [n, chunk] : {std::pair<int64_t, int64_t>{1000, 384}, {1100, 512}}) {
    const synthetic_params sp = small_prompt(n);
    std::vector<synthetic_layer> layers;
    for (int64_t l = 0; l < sp.layers; ++l) layers.push_back(synthetic_generate_layer(sp, l));
    planner_params params;
    params.mode = plan_mode::dense;
    const planner pl(params, sp.layers, sp.heads, nullptr);
    const auto one_shot = run_prompt(pl, sp, layers, n, pool);
    const auto chunked = run_prompt(pl, sp, layers, chunk, pool);
    for (size_t l = 0; l < layers.size(); ++l)
      EXPECT_EQ(std::memcmp(one_shot[l].data(), chunked[l].data(), one_shot[l].size() * 4), 0)
          << "n=" << n << " chunk=" << chunk << " layer " << l;
  }
}

TEST(PrefillLayerChunks, ShareprefillChunkIsThePaddedHostPlan) {
  thread_pool pool(2);
  const synthetic_params sp = small_prompt(1500);
  const int64_t h = sp.heads, d = sp.dim, s = 1024, e = 1500;
  const synthetic_layer x = synthetic_generate_layer(sp, 0);
  const cluster_map map = synthetic_cluster_map(sp);
  planner_params params;
  params.mode = plan_mode::shareprefill;
  params.min_budget = 256;
  const planner pl(params, sp.layers, h, &map);
  prefill_layer_params p;
  p.host = &pl;
  p.pool = &pool;
  p.query_offset = s;
  prefill_layer_state state;
  prefill_layer_begin(state, p, e, false, nullptr, 0, nullptr);
  std::vector<float> out((e - s) * h * d);
  const prefill_layer_result r = prefill_layer(
      rows(x.q, s, e, h, d), rows(x.k, 0, e, sp.kv_heads, d), rows(x.v, 0, e, sp.kv_heads, d),
      rows(out, 0, e - s, h, d), state, p, nullptr, 0, nullptr);
  // The same chunk by hand: zeros before the chunk's queries, the kernel with the offset.
  std::vector<float> padded(e * h * d, 0.0f);
  std::copy(x.q.begin() + s * h * d, x.q.begin() + e * h * d, padded.begin() + s * h * d);
  plan_state direct;
  const layer_plan want =
      pl.plan(0, rows(padded, 0, e, h, d), rows(x.k, 0, e, sp.kv_heads, d), direct, pool);
  EXPECT_EQ(r.host.plan.kinds, want.kinds);
  for (int64_t head = 0; head < h; ++head)
    EXPECT_EQ(r.host.plan.mask.tiles_of(head), want.mask.tiles_of(head)) << "head " << head;
  const int64_t nb = want.mask.n_blocks;
  std::vector<float> a(want.pivot_heads.size() * nb * nb, 0.0f), expected((e - s) * h * d);
  const block_attention_output ba{want.pivot_heads, a.data()};
  attention_block_sparse(rows(expected, 0, e - s, h, d), {},
                         want.pivot_heads.empty() ? nullptr : &ba, rows(x.q, s, e, h, d),
                         rows(x.k, 0, e, sp.kv_heads, d), rows(x.v, 0, e, sp.kv_heads, d),
                         want.mask, pool, s);
  EXPECT_EQ(std::memcmp(out.data(), expected.data(), out.size() * 4), 0);
}

TEST(PrefillLayerChunks, Errors) {
  thread_pool pool(1);
  const synthetic_params sp = small_prompt(1000);
  const synthetic_layer x = synthetic_generate_layer(sp, 0);
  const int64_t h = sp.heads, hkv = sp.kv_heads, d = sp.dim;
  planner_params params;
  params.mode = plan_mode::vslash;
  const planner pl(params, sp.layers, h, nullptr);
  prefill_layer_params p;
  p.host = &pl;
  p.pool = &pool;
  std::vector<float> out(1000 * h * d);
  prefill_layer_state state;
  auto run = [&](int64_t layer, int64_t s, int64_t q0, int64_t q1, int64_t keys) {
    p.layer = layer;
    p.query_offset = s;
    return error_of([&] {
      prefill_layer(rows(x.q, q0, q1, h, d), rows(x.k, 0, keys, hkv, d), rows(x.v, 0, keys, hkv, d),
                    rows(out, q0, q1, h, d), state, p, nullptr, 0, nullptr);
    });
  };
  EXPECT_NE(run(0, 0, 0, 768, 768).find("prefill_layer_begin"), std::string::npos);
  prefill_layer_begin(state, p, 768, false, nullptr, 0, nullptr);
  EXPECT_NE(run(0, 300, 300, 768, 768).find("multiple of the block size"), std::string::npos);
  EXPECT_NE(run(0, 384, 300, 768, 768).find("q has 468 tokens"), std::string::npos);
  EXPECT_NE(run(0, 384, 384, 768, 1000).find("k has 1000 tokens"), std::string::npos);
  EXPECT_EQ(run(0, 384, 384, 768, 768), "");
  EXPECT_NE(run(1, 256, 256, 768, 768).find("chunk starting at 384"), std::string::npos);
  EXPECT_EQ(run(1, 384, 384, 768, 768), "");
}

}  // namespace
}  // namespace sp
