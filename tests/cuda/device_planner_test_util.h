// Shared by the device-planner tests (test_device_planner.cpp, test_device_planner_chunks.cpp):
// the cases (shape, mode, generator), their bf16 inputs and planner parameters, the exact block
// attention of pivot heads on the host, the attention mass a tile set keeps, device copies, and
// the comparison of the device planner's per-prompt state with the host planner's.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "shareprefill/attention.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/error.h"
#include "shareprefill/planner.h"
#include "shareprefill/synthetic.h"
#include "test_util.h"

namespace sp::testing {

struct planner_case {
  int64_t n = 0, heads = 0, kv_heads = 0, dim = 0, layers = 0;
  plan_mode mode = plan_mode::shareprefill;
  bool synthetic = true;
  int64_t min_budget = 1024;
  std::vector<int64_t> dense_layers;
  std::vector<std::pair<int64_t, int64_t>> dense_heads;  // (layer, head), sorted
  std::vector<head_gamma> head_gammas;                    // sorted by (layer, head)
  double tau_sim = 0.5;
  int64_t gate_bins = 0;  // planner_params::gate_bins
  double gate_coverage = 0.0;  // planner_params::gate_coverage
  bool shared_keeps_budget = false;
  bool exact_last_row = false;
  double last_row_gamma = 0.0;
  uint64_t seed = 7;
};

inline planner_case make_case(int64_t n, int64_t heads, int64_t kv_heads, int64_t dim,
                              int64_t layers, plan_mode mode = plan_mode::shareprefill,
                              bool synthetic = true, int64_t min_budget = 1024,
                              std::vector<int64_t> dense_layers = {}) {
  planner_case c;
  c.n = n, c.heads = heads, c.kv_heads = kv_heads, c.dim = dim, c.layers = layers;
  c.mode = mode, c.synthetic = synthetic, c.min_budget = min_budget;
  c.dense_layers = std::move(dense_layers);
  return c;
}

inline std::string name_of(const planner_case& c) {
  return str("n=", c.n, " h=", c.heads, " hkv=", c.kv_heads, " d=", c.dim, " L=", c.layers,
             " mode=", plan_mode_name(c.mode), c.synthetic ? " synthetic" : " random",
             " min_budget=", c.min_budget, " dense_layers=", c.dense_layers.size(),
             " dense_heads=", c.dense_heads.size(), " head_gammas=", c.head_gammas.size(), " tau_sim=", c.tau_sim,
             " gate_bins=", c.gate_bins, " gate_coverage=", c.gate_coverage,
             c.shared_keeps_budget ? " shared_keeps_budget" : "",
             c.exact_last_row ? " exact_last_row" : "", " last_row_gamma=", c.last_row_gamma);
}

// One layer's inputs as bf16 bits (for the device) and the same values as bf16 host views.
struct layer_inputs {
  std::vector<uint16_t> q, k, v;
  tensor_view qv, kv, vv;
};

// The structured generator's parameters for a case's shape and seed.
inline synthetic_params synthetic_params_of(const planner_case& c) {
  synthetic_params sp;
  sp.n_tokens = c.n;
  sp.layers = c.layers;
  sp.heads = c.heads;
  sp.kv_heads = c.kv_heads;
  sp.dim = c.dim;
  sp.seed = c.seed;
  return sp;
}

inline layer_inputs make_inputs(const planner_case& c, int64_t layer) {
  std::vector<float> q, k, v;
  if (c.synthetic) {
    synthetic_layer s = synthetic_generate_layer(synthetic_params_of(c), layer);
    q = std::move(s.q);
    k = std::move(s.k);
    v = std::move(s.v);
  } else {
    const uint64_t seed = c.seed * 1000 + static_cast<uint64_t>(layer) * 3;
    q = testing::random_values(c.n * c.heads * c.dim, seed, -3.0f, 3.0f);
    k = testing::random_values(c.n * c.kv_heads * c.dim, seed + 1, -3.0f, 3.0f);
    v = testing::random_values(c.n * c.kv_heads * c.dim, seed + 2);
  }
  layer_inputs x;
  for (auto [dst, src] : {std::pair{&x.q, &q}, std::pair{&x.k, &k}, std::pair{&x.v, &v}}) {
    dst->resize(src->size());
    for (size_t i = 0; i < src->size(); ++i) (*dst)[i] = fp32_to_bf16((*src)[i]);
  }
  x.qv = tensor_view::contiguous(x.q.data(), dtype::bf16, {c.n, c.heads, c.dim});
  x.kv = tensor_view::contiguous(x.k.data(), dtype::bf16, {c.n, c.kv_heads, c.dim});
  x.vv = tensor_view::contiguous(x.v.data(), dtype::bf16, {c.n, c.kv_heads, c.dim});
  return x;
}

inline cluster_map map_of(const planner_case& c) { return synthetic_cluster_map(synthetic_params_of(c)); }

inline planner_params params_of(const planner_case& c) {
  planner_params p;
  p.mode = c.mode;
  p.min_budget = c.min_budget;
  p.dense_layers = c.dense_layers;
  p.dense_heads = c.dense_heads;
  p.head_gammas = c.head_gammas;
  p.tau_sim = c.tau_sim;
  p.gate_bins = c.gate_bins;
  p.gate_coverage = c.gate_coverage;
  p.shared_keeps_budget = c.shared_keeps_budget;
  p.exact_last_row = c.exact_last_row;
  p.last_row_gamma = c.last_row_gamma;
  return p;
}

// The gamma head (layer, head) plans its budgets and query-aware tiles with: its own
// (head_gammas) or the global one.
inline double gamma_of(const planner_params& p, int64_t layer, int64_t head) {
  for (const head_gamma& g : p.head_gammas)
    if (g.layer == layer && g.head == head) return g.gamma;
  return p.gamma;
}

// Exact block attention [heads.size(), nb, nb] of the listed heads over the queries [s, n) of
// the prompt, s = query_offset (q: [n - s, H, D]; k, v: [n, Hkv, D]); the rows before s are 0.
// The other heads visit one tile.
inline std::vector<float> exact_block_attention(const tensor_view& q, const tensor_view& k,
                                                const tensor_view& v,
                                                const std::vector<int32_t>& heads,
                                                thread_pool& pool, int64_t query_offset = 0) {
  const int64_t n = k.shape[0], nq = q.shape[0], n_heads = q.shape[1], dim = q.shape[2];
  const int64_t nb = (n + 127) / 128;
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(n_heads));
  for (int64_t h = 0; h < n_heads; ++h) {
    const bool full = std::find(heads.begin(), heads.end(), h) != heads.end();
    tiles[h] = full ? causal_tiles(nb) : std::vector<tile>{{0, 0}};
  }
  const block_mask mask = block_mask::from_tiles(n, 128, tiles);
  std::vector<float> out(static_cast<size_t>(nq * n_heads * dim));
  std::vector<float> a(heads.size() * static_cast<size_t>(nb * nb), 0.0f);
  const block_attention_output ba{heads, a.data()};
  attention_block_sparse(tensor_view::contiguous(out.data(), dtype::f32, {nq, n_heads, dim}), {},
                         heads.empty() ? nullptr : &ba, q, k, v, mask, pool, query_offset);
  return a;
}

// Attention mass of `tiles` in rows [first_row, nb) of one head's A [nb, nb], per row.
inline double kept_mass(const std::vector<float>& a, int64_t nb, const std::vector<tile>& tiles,
                        int64_t first_row = 0) {
  double m = 0.0;
  for (const tile& t : tiles)
    if (t.first >= first_row) m += a[static_cast<size_t>(t.first * nb + t.second)];
  return m / static_cast<double>(nb - first_row);
}

// Copies `count` values from device memory (inside the workspace) to the host.
template <class T>
std::vector<T> download(const device_buffer& ws, const T* at, int64_t count) {
  std::vector<T> out(static_cast<size_t>(count));
  const size_t offset = reinterpret_cast<const char*>(at) - static_cast<const char*>(ws.data());
  ws.download(out.data(), out.size() * sizeof(T), offset);
  return out;
}

// The plan's walked heads (layer_plan_view::walk_heads), ascending: walk_head_count of them, or
// as many as its device count (walk_count) says.
inline std::vector<int32_t> download_walk_heads(const layer_plan_view& plan) {
  int64_t count = plan.walk_head_count;
  if (plan.walk_count != nullptr) {
    int32_t on_device = -1;
    EXPECT_EQ(cudaMemcpy(&on_device, plan.walk_count, 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_TRUE(on_device >= 0 && on_device <= count) << on_device << " walked, bound " << count;
    count = on_device;
  }
  std::vector<int32_t> heads(static_cast<size_t>(count));
  if (!heads.empty()) {
    EXPECT_EQ(cudaMemcpy(heads.data(), plan.walk_heads, heads.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return heads;
}

inline tensor_view on_device(const void* data, dtype type, std::initializer_list<int64_t> shape) {
  tensor_view t = tensor_view::contiguous(data, type, shape);
  t.on_device = true;
  return t;
}

// A layer's inputs on the device: q [N, H, D], k and v [N, Hkv, D] as bf16 views.
struct device_inputs {
  device_buffer dq, dk, dv;
  tensor_view q, k, v;
  device_inputs(const planner_case& c, const layer_inputs& x)
      : dq(x.q.size() * 2), dk(x.k.size() * 2), dv(x.v.size() * 2) {
    dq.upload(x.q.data(), dq.size());
    dk.upload(x.k.data(), dk.size());
    dv.upload(x.v.data(), dv.size());
    q = on_device(dq.data(), dtype::bf16, {c.n, c.heads, c.dim});
    k = on_device(dk.data(), dtype::bf16, {c.n, c.kv_heads, c.dim});
    v = on_device(dv.data(), dtype::bf16, {c.n, c.kv_heads, c.dim});
  }
};

// The device state's clusters against the host state's (pivot identity, profiles to rounding
// and of the same length (a chunk's nb; shorter when carried from an earlier chunk), patterns
// and vs_ratio); counts the pivots whose vertical-slash tiles differ (ties, bounded by the
// caller's mass checks) in moved_heads.
inline void expect_same_state(const std::vector<device_cluster_slot>& ds,
                              const plan_state& host_state, int64_t& moved_heads) {
  ASSERT_EQ(ds.size(), host_state.clusters.size());
  for (size_t i = 0; i < ds.size(); ++i) {
    SCOPED_TRACE(str("cluster ", i));
    const cluster_slot& hs = host_state.clusters[i];
    const device_cluster_slot& d = ds[i];
    ASSERT_EQ(d.has_pivot, hs.has_pivot);
    if (!hs.has_pivot) continue;
    EXPECT_EQ(d.pivot_layer, hs.pivot_layer);
    EXPECT_EQ(d.pivot_head, hs.pivot_head);
    EXPECT_EQ(d.has_pattern, hs.has_pattern);
    ASSERT_EQ(d.pivot_v_blk.size(), hs.pivot_v_blk.size());
    ASSERT_EQ(d.pivot_s_blk.size(), hs.pivot_s_blk.size());
    for (size_t b = 0; b < hs.pivot_v_blk.size(); ++b) {
      EXPECT_NEAR(d.pivot_v_blk[b], hs.pivot_v_blk[b], 2e-6 + 2e-4 * hs.pivot_v_blk[b]);
      EXPECT_NEAR(d.pivot_s_blk[b], hs.pivot_s_blk[b], 2e-6 + 2e-4 * hs.pivot_s_blk[b]);
    }
    if (d.pivot_vs_tiles != hs.pivot_vs_tiles) ++moved_heads;  // ties: bounded below
    if (hs.has_pattern) {
      EXPECT_EQ(d.pivot_pattern, hs.pivot_pattern);
      // Same A, the same tiles: only the order of an fp64 sum differs; with different tiles
      // (ties) the ratio moves by at most the mass the tiles moved.
      EXPECT_NEAR(d.pivot_vs_ratio, hs.pivot_vs_ratio,
                  d.pivot_vs_tiles == hs.pivot_vs_tiles ? 1e-9 : 0.01);
    }
  }
}

}  // namespace sp::testing
