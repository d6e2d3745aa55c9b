// Chunked prefill on the device planner (device_planner::plan_chunk, issue 16 item 2) against
// the host planner, the oracle, called as bench chunk-plan calls it: per chunk [s, e) a fresh
// sharing state, planner::plan on the keys [0, e) with the chunk's queries in place and zeros
// before them, publish of the pivots' exact A over the chunk's rows (rows before s are 0).
// Ragged prompts (N = 3000, 5000, chunks of 1024 / 2048, a last chunk shorter than a block),
// GQA 4/3, D 128/64, every sparse mode. Compared on the chunk's rows: head kinds, tiles (equal,
// or the attention mass that moves within 1% where ties round differently, as
// test_device_planner.cpp does), the schedule (the chunk's query blocks only, longest first),
// and the state after publish. The device's A rows before the chunk are left as junk by this
// test (the workspace is filled with 0x3f bytes and only the chunk's rows are uploaded), so
// publish agrees with the host only if plan_chunk clears them.
// With a carried sharing state (device_planner::begin_chunk against planner::begin_chunk, 2-4
// chunks, shareprefill with the synthetic cluster map): the same comparisons with one state per
// prompt, plus the state right after each begin_chunk (pivots kept, profiles of the earlier
// chunk's length, patterns extended to the new rows); the cases must contain heads that share
// only through the carried state (at or before their cluster's pivot layer) and carried pivots.
// Also: a dense-plan chunked run through prefill_layer equals the one-shot run bit for bit on
// the chunk's rows; a shareprefill chunked run matches the CPU's prefill_layer chunks (fresh and
// carried); bad chunk starts, q/k length mismatches, a state reused for another chunk and bad
// begin_chunk calls give clear errors.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "device_planner_test_util.h"
#include "shareprefill/prefill_layer.h"
#include "shareprefill/statistics.h"
#include "test_util.h"

namespace sp {
namespace {

using namespace sp::testing;

// A prompt's inputs of every layer on the device (full N; chunks are views into them).
struct device_layer {
  layer_inputs x;
  device_buffer q, k, v;
};

std::vector<device_layer> upload_layers(const planner_case& c) {
  std::vector<device_layer> out;
  for (int64_t l = 0; l < c.layers; ++l) {
    device_layer d{make_inputs(c, l), {}, {}, {}};
    d.q = device_buffer(d.x.q.size() * 2);
    d.k = device_buffer(d.x.k.size() * 2);
    d.v = device_buffer(d.x.v.size() * 2);
    d.q.upload(d.x.q.data(), d.q.size());
    d.k.upload(d.x.k.data(), d.k.size());
    d.v.upload(d.x.v.data(), d.v.size());
    out.push_back(std::move(d));
  }
  return out;
}

// Tokens [t0, t1) of a [N, heads, dim] bf16 tensor at `base` (host or device memory).
tensor_view rows_of(const void* base, int64_t t0, int64_t t1, int64_t heads, int64_t dim,
                    bool device) {
  const auto* p = static_cast<const uint16_t*>(base) + t0 * heads * dim;
  tensor_view t = tensor_view::contiguous(p, dtype::bf16, {t1 - t0, heads, dim});
  t.on_device = device;
  return t;
}

// Tiles of rows [first_row, nb) of one head.
std::vector<tile> chunk_tiles(const block_mask& m, int64_t h, int64_t first_row) {
  std::vector<tile> out;
  for (const tile& t : m.tiles_of(h))
    if (t.first >= first_row) out.push_back(t);
  return out;
}

// Workspace for every chunk end of a prompt in chunks of `chunk` tokens (the sizes need not
// grow with the chunk end everywhere: the CUB temporaries are queried per size).
int64_t chunk_workspace_bytes(const device_planner& dp, const planner_case& c, int64_t chunk) {
  int64_t bytes = 0;
  for (int64_t s = 0; s < c.n; s += chunk)
    bytes =
        std::max(bytes, dp.workspace_bytes({std::min(c.n, s + chunk), c.heads, c.kv_heads, c.dim}));
  return bytes;
}

// What a carried run exercised (host kinds): heads of chunks after the first that share at or
// before their cluster's pivot layer (possible only through the carried pattern), pivots
// planned again in a later chunk, and gates against profiles of an earlier chunk (checked by
// expect_gate_distances).
struct carry_counts {
  int64_t carried_shares = 0, carried_pivots = 0, carried_gates = 0;
};

// The device's gate distances (gate_dist [H, 2], -1 where no gate applied) against the host's
// sharing_gate, which decides by max(JSd v, JSd s) < tau_sim once vs_ratio passes: with the
// host's profiles of each head (last_block_statistics of the padded queries) and its cluster's
// slot as the host planner saw it at that head (`before` the layer; `after` for heads after a
// pivot re-planned in this layer, which took the chunk's profiles), the gate must pass at
// tau_sim = max + 1e-4 and fail at max - 1e-4. Counts the gates whose pivot profiles were of
// another length (carried_sharing_gate) in *carried_gates.
void expect_gate_distances(const std::vector<float>& gate, const tensor_view& q_padded,
                           const tensor_view& k, const planner_params& params,
                           const std::vector<int32_t>& cluster_of, int64_t layer,
                           const std::vector<cluster_slot>& before,
                           const std::vector<cluster_slot>& after, thread_pool& pool,
                           int64_t* carried_gates) {
  const int64_t heads = q_padded.shape[1], nb = (q_padded.shape[0] + 127) / 128;
  const budget_rule rule{128, params.gamma, params.min_blocks(), params.max_blocks(nb)};
  const std::vector<head_statistics> stats = last_block_statistics(q_padded, k, rule, pool);
  for (int64_t h = 0; h < heads; ++h) {
    if (gate[2 * h] < 0.0f) continue;
    const int32_t c = cluster_of[layer * heads + h];
    const bool replanned = before[c].pivot_layer == layer && before[c].pivot_head < h;
    cluster_slot slot = replanned ? after[c] : before[c];
    slot.pivot_vs_ratio = 0.0;  // the distances alone
    const double d = std::max(gate[2 * h], gate[2 * h + 1]);
    planner_params p = params;
    p.tau_fb = 1.0;
    p.tau_sim = d + 1e-4;
    const head_statistics& st = stats[static_cast<size_t>(h)];
    EXPECT_TRUE(sharing_gate(p, slot, st.v_blk.data(), st.s_blk.data(), nb))
        << "head " << h << ": the host's distances exceed the device's max " << d;
    p.tau_sim = d - 1e-4;
    if (p.tau_sim > 0.0) {
      EXPECT_FALSE(sharing_gate(p, slot, st.v_blk.data(), st.s_blk.data(), nb))
          << "head " << h << ": the host's distances are below the device's max " << d;
    }
    *carried_gates += static_cast<int64_t>(slot.pivot_v_blk.size()) != nb;
  }
}

// Plans every chunk of a case on both planners, comparing as the header says; `carried`: one
// sharing state for the prompt, moved by begin_chunk (else a fresh one per chunk), what it
// exercised added to *counts.
void compare_chunks(const planner_case& c, int64_t chunk, bool carried = false,
                    carry_counts* counts = nullptr) {
  SCOPED_TRACE(str(name_of(c), " chunk=", chunk, carried ? " carried" : " fresh"));
  const cluster_map map = map_of(c);
  const planner_params params = params_of(c);
  const cluster_map* clusters = c.mode == plan_mode::shareprefill ? &map : nullptr;
  const planner host(params, c.layers, c.heads, clusters);
  const device_planner dp(params, c.layers, c.heads, clusters);
  const std::vector<device_layer> layers = upload_layers(c);
  device_buffer ws(static_cast<size_t>(chunk_workspace_bytes(dp, c, chunk)));
  device_buffer st(static_cast<size_t>(dp.state_bytes(c.n)));
  ws.fill_bytes(0x3f);  // junk (0.747f) where nothing writes
  thread_pool pool;
  int64_t moved_heads = 0;
  carry_counts local;
  carry_counts& n = counts != nullptr ? *counts : local;
  const std::vector<int32_t> cluster_of =
      clusters != nullptr ? map.head_table(c.layers, c.heads) : std::vector<int32_t>{};
  plan_state host_state;
  device_plan_state state;
  for (int64_t s = 0; s < c.n; s += chunk) {
    const int64_t e = std::min(c.n, s + chunk), nb = (e + 127) / 128, first_row = s / 128;
    SCOPED_TRACE(str("chunk [", s, ", ", e, ")"));
    if (carried && s > 0) {
      host.begin_chunk(host_state, e);
      dp.begin_chunk(state, e, nullptr);
      if (clusters != nullptr) {
        SCOPED_TRACE("after begin_chunk");
        expect_same_state(dp.download_state(state), host_state, moved_heads);
      }
    } else {
      host_state.reset();
      dp.begin_prompt(state, st.data(), static_cast<int64_t>(st.size()), e, nullptr);
    }
    for (int64_t layer = 0; layer < c.layers; ++layer) {
      SCOPED_TRACE(str("layer ", layer));
      const device_layer& d = layers[static_cast<size_t>(layer)];
      std::vector<uint16_t> q_pad(static_cast<size_t>(e * c.heads * c.dim), 0);
      std::copy(d.x.q.begin() + s * c.heads * c.dim, d.x.q.begin() + e * c.heads * c.dim,
                q_pad.begin() + s * c.heads * c.dim);
      const tensor_view k_host = rows_of(d.x.k.data(), 0, e, c.kv_heads, c.dim, false);
      const tensor_view v_host = rows_of(d.x.v.data(), 0, e, c.kv_heads, c.dim, false);
      const std::vector<cluster_slot> slots_before = host_state.clusters;
      const tensor_view q_padded = rows_of(q_pad.data(), 0, e, c.heads, c.dim, false);
      const layer_plan hp = host.plan(layer, q_padded, k_host, host_state, pool);
      const device_plan_output dpo =
          dp.plan_chunk(layer, s, rows_of(d.q.data(), s, e, c.heads, c.dim, true),
                        rows_of(d.k.data(), 0, e, c.kv_heads, c.dim, true), state, ws.data(),
                        static_cast<int64_t>(ws.size()), nullptr);
      ASSERT_NO_THROW(device_plan_check(state, nullptr));
      ASSERT_EQ(dpo.plan.query_offset, s);
      const std::vector<head_kind> kinds = device_planner::download_kinds(dpo.plan);
      const block_mask dmask = device_planner::download_mask(dpo.plan);
      ASSERT_EQ(dmask.n_blocks, nb);

      // Kinds: equal, or a decision within rounding of its threshold (then stop the case).
      for (int64_t h = 0; h < c.heads; ++h) {
        if (kinds[h] == hp.kinds[h]) continue;
        const auto qa = download(ws, dpo.qa_distance, c.heads);
        const auto gate = download(ws, dpo.gate_distance, 2 * c.heads);
        const bool edge = std::abs(qa[h] - params.tau_qa) < 1e-4 ||
                          std::abs(gate[2 * h] - params.tau_sim) < 1e-4 ||
                          std::abs(gate[2 * h + 1] - params.tau_sim) < 1e-4;
        ASSERT_TRUE(edge) << "head " << h << ": device kind " << head_kind_name(kinds[h])
                          << ", host " << head_kind_name(hp.kinds[h]) << " (qa distance " << qa[h]
                          << ", gate distances " << gate[2 * h] << ", " << gate[2 * h + 1] << ")";
        GTEST_LOG_(INFO) << "borderline decision at head " << h << "; the case stops here";
        return;
      }
      if (clusters != nullptr && !dpo.all_dense)
        expect_gate_distances(download(ws, dpo.gate_distance, 2 * c.heads), q_padded, k_host,
                              params, cluster_of, layer, slots_before, host_state.clusters, pool,
                              &n.carried_gates);
      for (int64_t h = 0; h < c.heads && carried && s > 0 && clusters != nullptr; ++h) {
        const cluster_slot& slot = host_state.clusters[cluster_of[layer * c.heads + h]];
        n.carried_shares += hp.kinds[h] == head_kind::shared && slot.pivot_layer >= layer;
        n.carried_pivots += hp.kinds[h] == head_kind::pivot;
      }

      // Tiles of the chunk's rows: equal, or at most 1% of the rows' mass moved.
      const tensor_view q_chunk = rows_of(d.x.q.data(), s, e, c.heads, c.dim, false);
      std::vector<int32_t> differing;
      for (int64_t h = 0; h < c.heads; ++h)
        if (chunk_tiles(dmask, h, first_row) != chunk_tiles(hp.mask, h, first_row))
          differing.push_back(static_cast<int32_t>(h));
      if (!differing.empty()) {
        const std::vector<float> a =
            exact_block_attention(q_chunk, k_host, v_host, differing, pool, s);
        for (size_t i = 0; i < differing.size(); ++i) {
          const int32_t h = differing[i];
          const std::vector<float> ah(a.begin() + i * nb * nb, a.begin() + (i + 1) * nb * nb);
          const double dm = kept_mass(ah, nb, dmask.tiles_of(h), first_row);
          const double hm = kept_mass(ah, nb, hp.mask.tiles_of(h), first_row);
          EXPECT_NEAR(dm, hm, 0.01) << "head " << h << " (" << head_kind_name(kinds[h])
                                    << "): tiles differ, kept mass device " << dm << " host " << hm;
          ++moved_heads;
        }
      }

      // Schedule: the chunk's work items only, each once, the walked (dense) heads' last, each
      // part longest first.
      const int64_t items = c.heads * (nb - first_row);
      ASSERT_EQ(layer_plan_work_items(dpo.plan), items);
      const std::vector<int32_t> walked = download_walk_heads(dpo.plan);
      for (const int32_t h : walked) EXPECT_EQ(kinds[h], head_kind::dense) << "walked head " << h;
      const int64_t first_walked = items - static_cast<int64_t>(walked.size()) * (nb - first_row);
      const auto schedule = download(ws, dpo.plan.schedule, 2 * items);
      int64_t previous = INT64_MAX;
      std::set<int64_t> seen;
      for (int64_t i = 0; i < items; ++i) {
        const int32_t h = schedule[2 * i], r = schedule[2 * i + 1];
        ASSERT_TRUE(h >= 0 && h < c.heads && r >= first_row && r < nb) << "item " << i;
        ASSERT_EQ(std::count(walked.begin(), walked.end(), h) == 1, i >= first_walked)
            << "schedule item " << i << " (head " << h << ")";
        if (i == first_walked) previous = INT64_MAX;
        const int64_t t = dmask.row_end(h, r) - dmask.row_begin(h, r);
        ASSERT_LE(t, previous) << "schedule item " << i << " is longer than the one before";
        previous = t;
        seen.insert(h * nb + r);
      }
      EXPECT_EQ(static_cast<int64_t>(seen.size()), items) << "schedule items repeat";

      // Publish the same exact A: all of it on the host, the chunk's rows on the device.
      const std::vector<float> a =
          exact_block_attention(q_chunk, k_host, v_host, hp.pivot_heads, pool, s);
      host.publish(layer, hp.pivot_heads, a.data(), host_state);
      const size_t base = static_cast<size_t>(static_cast<const char*>(dpo.block_attention.data) -
                                              static_cast<const char*>(ws.data()));
      for (size_t i = 0; i < hp.pivot_heads.size(); ++i) {
        const size_t from = (i * nb + first_row) * nb;
        ws.upload(a.data() + from, (nb - first_row) * nb * sizeof(float), base + 4 * from);
      }
      dp.publish(layer, dpo, state, nullptr);
      ASSERT_NO_THROW(device_plan_check(state, nullptr));
      if (c.mode == plan_mode::shareprefill && !host_state.clusters.empty())
        expect_same_state(dp.download_state(state), host_state, moved_heads);
    }
  }
  GTEST_LOG_(INFO) << name_of(c) << " chunk=" << chunk << (carried ? " carried" : " fresh")
                   << ": heads with different tiles (mass-checked): " << moved_heads
                   << "; so far carried shares " << n.carried_shares << ", carried pivots "
                   << n.carried_pivots << ", carried gates " << n.carried_gates;
}

class DevicePlannerChunks : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(DevicePlannerChunks, ShareprefillRagged) {
  compare_chunks(make_case(3000, 8, 2, 128, 3, plan_mode::shareprefill, true, 512), 1024);
  compare_chunks(make_case(5000, 9, 3, 64, 3, plan_mode::shareprefill, true, 512), 2048);
  compare_chunks(make_case(5000, 8, 2, 128, 3), 1024);  // minB 1024: early chunks dense
  compare_chunks(make_case(4160, 6, 2, 64, 2, plan_mode::shareprefill, true, 256),
                 2048);  // 64 rows
}

TEST_F(DevicePlannerChunks, ShareprefillCarried) {
  std::vector<std::pair<planner_case, int64_t>> cases = {
      {make_case(4096, 8, 2, 128, 3, plan_mode::shareprefill, true, 512), 1024},  // 4 chunks
      {make_case(5000, 9, 3, 64, 3, plan_mode::shareprefill, true, 512), 2048},   // ragged
      {make_case(3000, 8, 2, 128, 4, plan_mode::shareprefill, true, 256), 1024},
      {make_case(4096, 8, 2, 64, 3, plan_mode::shareprefill, false, 512), 1024},  // random
      {make_case(4096, 8, 2, 128, 3, plan_mode::shareprefill, true, 512, {1}), 2048}};
  cases.back().first.dense_heads = {{0, 3}, {2, 5}};
  carry_counts total;
  for (const auto& [c, chunk] : cases) compare_chunks(c, chunk, true, &total);
  EXPECT_GT(total.carried_shares, 0) << "no head shared through a carried pattern";
  EXPECT_GT(total.carried_pivots, 0) << "no pivot was planned again in a later chunk";
  EXPECT_GT(total.carried_gates, 0) << "no gate compared profiles of different lengths";
}

TEST_F(DevicePlannerChunks, Modes) {
  for (plan_mode m : {plan_mode::vslash, plan_mode::flexprefill})
    compare_chunks(make_case(3000, 8, 2, 64, 2, m, true, 512), 1024);
  compare_chunks(make_case(3000, 8, 2, 64, 2, plan_mode::shareprefill, false, 512), 1024);
}

// Runs a prompt through prefill_layer on the GPU, one-shot (chunk = 0) or in chunks with a
// fresh state per chunk (or one carried state); returns every layer's output [N, H, D] as bf16
// bits.
std::vector<std::vector<uint16_t>> run_prefill(const planner_case& c, const device_planner& dp,
                                               const std::vector<device_layer>& layers,
                                               int64_t chunk, bool carried = false) {
  prefill_layer_params p;
  p.device = &dp;
  device_buffer ws(static_cast<size_t>(chunk_workspace_bytes(dp, c, chunk > 0 ? chunk : c.n)));
  device_buffer st(static_cast<size_t>(dp.state_bytes(c.n)));
  ws.fill_bytes(0x3f);
  std::vector<device_buffer> out;
  for (int64_t l = 0; l < c.layers; ++l) out.emplace_back(layers[0].x.q.size() * 2);
  const int64_t step = chunk > 0 ? chunk : c.n;
  prefill_layer_state state;
  for (int64_t s = 0; s < c.n; s += step) {
    const int64_t e = std::min(c.n, s + step);
    if (carried && s > 0)
      prefill_layer_begin_chunk(state, p, e, nullptr);
    else
      prefill_layer_begin(state, p, e, true, st.data(), static_cast<int64_t>(st.size()), nullptr);
    p.query_offset = s;
    for (int64_t l = 0; l < c.layers; ++l) {
      const device_layer& d = layers[static_cast<size_t>(l)];
      p.layer = l;
      prefill_layer(rows_of(d.q.data(), s, e, c.heads, c.dim, true),
                    rows_of(d.k.data(), 0, e, c.kv_heads, c.dim, true),
                    rows_of(d.v.data(), 0, e, c.kv_heads, c.dim, true),
                    rows_of(out[static_cast<size_t>(l)].data(), s, e, c.heads, c.dim, true), state,
                    p, ws.data(), static_cast<int64_t>(ws.size()), nullptr);
    }
    device_plan_check(state.device, nullptr);
  }
  std::vector<std::vector<uint16_t>> result;
  for (const device_buffer& o : out) {
    result.emplace_back(o.size() / 2);
    o.download(result.back().data(), o.size());
  }
  return result;
}

TEST_F(DevicePlannerChunks, DenseChunksEqualOneShotBitwise) {
  for (const auto& [n, chunk] : {std::pair<int64_t, int64_t>{3000, 1024}, {5000, 2048}}) {
    const planner_case c = make_case(n, 8, 2, 128, 2, plan_mode::dense);
    SCOPED_TRACE(str(name_of(c), " chunk=", chunk));
    const device_planner dp(params_of(c), c.layers, c.heads, nullptr);
    const std::vector<device_layer> layers = upload_layers(c);
    const auto one_shot = run_prefill(c, dp, layers, 0);
    const auto chunked = run_prefill(c, dp, layers, chunk);
    for (int64_t l = 0; l < c.layers; ++l)
      EXPECT_EQ(std::memcmp(one_shot[l].data(), chunked[l].data(), one_shot[l].size() * 2), 0)
          << "layer " << l << ": the chunked output differs from the one-shot output";
  }
}

// The GPU's chunks against the CPU's prefill_layer chunks (the host planner on the padded
// queries, the CPU kernel), fresh states per chunk or one carried state: output within bf16
// rounding.
void expect_prefill_chunks_match_cpu(bool carried) {
  SCOPED_TRACE(carried ? "carried" : "fresh");
  const planner_case c = make_case(3000, 8, 2, 128, 3, plan_mode::shareprefill, true, 512);
  const int64_t chunk = 1024;
  const cluster_map map = map_of(c);
  const planner host(params_of(c), c.layers, c.heads, &map);
  const device_planner dp(params_of(c), c.layers, c.heads, &map);
  const std::vector<device_layer> layers = upload_layers(c);
  const auto gpu = run_prefill(c, dp, layers, chunk, carried);
  thread_pool pool;
  prefill_layer_params hp;
  hp.host = &host;
  hp.pool = &pool;
  std::vector<float> out(static_cast<size_t>(c.n * c.heads * c.dim));
  std::vector<double> err(static_cast<size_t>(c.layers)), ref(static_cast<size_t>(c.layers));
  prefill_layer_state state;
  for (int64_t s = 0; s < c.n; s += chunk) {
    const int64_t e = std::min(c.n, s + chunk);
    if (carried && s > 0)
      prefill_layer_begin_chunk(state, hp, e, nullptr);
    else
      prefill_layer_begin(state, hp, e, false, nullptr, 0, nullptr);
    hp.query_offset = s;
    for (int64_t l = 0; l < c.layers; ++l) {
      const device_layer& d = layers[static_cast<size_t>(l)];
      hp.layer = l;
      float* o = out.data() + s * c.heads * c.dim;
      prefill_layer(rows_of(d.x.q.data(), s, e, c.heads, c.dim, false),
                    rows_of(d.x.k.data(), 0, e, c.kv_heads, c.dim, false),
                    rows_of(d.x.v.data(), 0, e, c.kv_heads, c.dim, false),
                    tensor_view::contiguous(o, dtype::f32, {e - s, c.heads, c.dim}), state, hp,
                    nullptr, 0, nullptr);
      for (int64_t i = 0; i < (e - s) * c.heads * c.dim; ++i) {
        const double g = bf16_to_fp32(gpu[l][static_cast<size_t>(s * c.heads * c.dim + i)]);
        err[l] += (g - o[i]) * (g - o[i]);
        ref[l] += static_cast<double>(o[i]) * o[i];
      }
    }
  }
  for (int64_t l = 0; l < c.layers; ++l)
    EXPECT_LT(std::sqrt(err[l] / ref[l]), 1e-2) << "layer " << l << ": GPU chunks vs CPU chunks";
}

TEST_F(DevicePlannerChunks, PrefillLayerChunksMatchCpu) {
  expect_prefill_chunks_match_cpu(false);
  expect_prefill_chunks_match_cpu(true);
}

TEST_F(DevicePlannerChunks, Errors) {
  const planner_case c = make_case(3000, 4, 2, 64, 2, plan_mode::shareprefill, true, 256);
  const cluster_map map = map_of(c);
  const device_planner dp(params_of(c), c.layers, c.heads, &map);
  const std::vector<device_layer> layers = upload_layers(c);
  const device_layer& d = layers[0];
  prefill_layer_params p;
  p.device = &dp;
  device_buffer ws(static_cast<size_t>(chunk_workspace_bytes(dp, c, 1024)));
  device_buffer st(static_cast<size_t>(dp.state_bytes(c.n))), out(d.x.q.size() * 2);
  const int64_t bytes = static_cast<int64_t>(ws.size());
  auto q = [&](int64_t t0, int64_t t1) {
    return rows_of(d.q.data(), t0, t1, c.heads, c.dim, true);
  };
  auto kv = [&](const device_buffer& b, int64_t t1) {
    return rows_of(b.data(), 0, t1, c.kv_heads, c.dim, true);
  };
  auto o = [&](int64_t t0, int64_t t1) {
    return rows_of(out.data(), t0, t1, c.heads, c.dim, true);
  };
  prefill_layer_state state;
  prefill_layer_begin(state, p, 2048, true, st.data(), static_cast<int64_t>(st.size()), nullptr);
  auto run = [&](int64_t layer, int64_t s, int64_t q0, int64_t q1, int64_t keys) {
    p.layer = layer;
    p.query_offset = s;
    return error_of([&] {
      prefill_layer(q(q0, q1), kv(d.k, keys), kv(d.v, keys), o(q0, q1), state, p, ws.data(), bytes,
                    nullptr);
    });
  };
  EXPECT_NE(run(0, 1000, 1000, 2048, 2048).find("multiple of the block size"), std::string::npos);
  EXPECT_NE(run(0, 1024, 1000, 2048, 2048).find("q has 1048 tokens"), std::string::npos);
  EXPECT_NE(run(0, 1024, 1024, 2048, 3000).find("k has 3000 tokens"), std::string::npos);
  EXPECT_EQ(run(0, 1024, 1024, 2048, 2048), "");
  EXPECT_NE(run(1, 0, 0, 2048, 2048).find("chunk starting at 1024"), std::string::npos);
  EXPECT_EQ(run(1, 1024, 1024, 2048, 2048), "");
  device_plan_check(state.device, nullptr);

  // The device planner directly: the same rules.
  device_plan_state ds;
  dp.begin_prompt(ds, st.data(), static_cast<int64_t>(st.size()), 2048, nullptr);
  EXPECT_NE(error_of([&] {
              dp.plan_chunk(0, 64, q(64, 2048), kv(d.k, 2048), ds, ws.data(), bytes, nullptr);
            }).find("multiple of the block size"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              dp.plan_chunk(0, 1024, q(1024, 2048), kv(d.k, 2000), ds, ws.data(), bytes, nullptr);
            }).find("k has shape"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              dp.plan_chunk(0, 0, q(1024, 2048), kv(d.k, 1024), ds, ws.data(), bytes, nullptr);
            }).find("the state belongs to a prompt"),
            std::string::npos);
  const device_plan_output first =
      dp.plan_chunk(0, 1024, q(1024, 2048), kv(d.k, 2048), ds, ws.data(), bytes, nullptr);
  dp.publish(0, first, ds, nullptr);
  EXPECT_NE(error_of([&] {
              dp.plan_chunk(1, 1152, q(1152, 2048), kv(d.k, 2048), ds, ws.data(), bytes, nullptr);
            }).find("chunk starting at 1024"),
            std::string::npos);
  device_plan_check(ds, nullptr);
}

// begin_chunk's preconditions, on the device planner and through prefill_layer.
TEST_F(DevicePlannerChunks, CarriedErrors) {
  const planner_case c = make_case(3000, 4, 2, 64, 2, plan_mode::shareprefill, true, 256);
  const cluster_map map = map_of(c);
  const device_planner dp(params_of(c), c.layers, c.heads, &map);
  const std::vector<device_layer> layers = upload_layers(c);
  device_buffer ws(static_cast<size_t>(std::max(
      chunk_workspace_bytes(dp, c, 1024), dp.workspace_bytes({2000, c.heads, c.kv_heads, c.dim}))));
  device_buffer st(static_cast<size_t>(dp.state_bytes(c.n)));
  device_buffer small(static_cast<size_t>(dp.state_bytes(2048)));
  const int64_t bytes = static_cast<int64_t>(ws.size());
  ws.fill_bytes(0);  // the pivots' A: zeros (valid for publish; no attention runs here)
  auto q = [&](int64_t l, int64_t t0, int64_t t1) {
    return rows_of(layers[static_cast<size_t>(l)].q.data(), t0, t1, c.heads, c.dim, true);
  };
  auto k = [&](int64_t l, int64_t t1) {
    return rows_of(layers[static_cast<size_t>(l)].k.data(), 0, t1, c.kv_heads, c.dim, true);
  };
  // Plans layers [from, to) of the chunk [s, e), publishing all but the last; returns the last.
  auto plan_layers = [&](device_plan_state& ds, int64_t from, int64_t to, int64_t s, int64_t e) {
    device_plan_output o;
    for (int64_t l = from; l < to; ++l) {
      if (l > from) dp.publish(l - 1, o, ds, nullptr);
      o = dp.plan_chunk(l, s, q(l, s, e), k(l, e), ds, ws.data(), bytes, nullptr);
    }
    return o;
  };
  auto begin_error = [&](device_plan_state& ds, int64_t e) {
    return error_of([&] { dp.begin_chunk(ds, e, nullptr); });
  };
  device_plan_state ds;
  EXPECT_NE(begin_error(ds, 2048).find("the state is not bound"), std::string::npos);
  dp.begin_prompt(ds, st.data(), static_cast<int64_t>(st.size()), 1024, nullptr);
  dp.publish(0, plan_layers(ds, 0, 1, 0, 1024), ds, nullptr);
  EXPECT_NE(begin_error(ds, 2048).find("planned up to layer 0 of 2"), std::string::npos);
  const device_plan_output last = plan_layers(ds, 1, 2, 0, 1024);
  EXPECT_NE(begin_error(ds, 2048).find("publish() was not called after layer 1"),
            std::string::npos);
  dp.publish(1, last, ds, nullptr);
  EXPECT_NE(begin_error(ds, 1024).find("must end past the state's 1024 tokens"),
            std::string::npos);
  EXPECT_EQ(begin_error(ds, 2048), "");
  EXPECT_NE(error_of([&] {
              dp.plan_chunk(0, 1152, q(0, 1152, 2048), k(0, 2048), ds, ws.data(), bytes,
                            nullptr);
            }).find("moved by begin_chunk() to the chunk starting at 1024"),
            std::string::npos);
  EXPECT_EQ(error_of([&] {
              dp.plan_chunk(0, 1024, q(0, 1024, 2048), k(0, 2048), ds, ws.data(), bytes, nullptr);
            }),
            "");
  device_plan_check(ds, nullptr);

  // A chunk start that is not a multiple of the block size; memory for the first chunk only.
  device_plan_state ragged;
  dp.begin_prompt(ragged, st.data(), static_cast<int64_t>(st.size()), 2000, nullptr);
  dp.publish(1, plan_layers(ragged, 0, 2, 0, 2000), ragged, nullptr);
  EXPECT_NE(begin_error(ragged, 3000).find("not a multiple of the block size"),
            std::string::npos);
  device_plan_state tight;
  dp.begin_prompt(tight, small.data(), static_cast<int64_t>(small.size()), 2048, nullptr);
  dp.publish(1, plan_layers(tight, 0, 2, 0, 2048), tight, nullptr);
  // (state_bytes rounds each region up to 256 bytes: 3000 tokens may fit in 2048's memory; the
  // state of 16384 tokens does not.)
  ASSERT_GT(dp.state_bytes(16384), static_cast<int64_t>(small.size()));
  EXPECT_NE(begin_error(tight, 16384).find("too small for a chunk ending at 16384"),
            std::string::npos);

  // Through prefill_layer: a state never begun, and the chunk start begin_chunk fixed.
  prefill_layer_params p;
  p.device = &dp;
  prefill_layer_state state;
  EXPECT_NE(error_of([&] { prefill_layer_begin_chunk(state, p, 2048, nullptr); })
                .find("the state is not begun"),
            std::string::npos);
  device_buffer out(layers[0].x.q.size() * 2);
  prefill_layer_begin(state, p, 1024, true, st.data(), static_cast<int64_t>(st.size()), nullptr);
  for (int64_t l = 0; l < c.layers; ++l) {
    p.layer = l;
    prefill_layer(q(l, 0, 1024), k(l, 1024),
                  rows_of(layers[static_cast<size_t>(l)].v.data(), 0, 1024, c.kv_heads, c.dim,
                          true),
                  rows_of(out.data(), 0, 1024, c.heads, c.dim, true), state, p, ws.data(), bytes,
                  nullptr);
  }
  prefill_layer_begin_chunk(state, p, 2048, nullptr);
  p.layer = 0;
  p.query_offset = 0;
  EXPECT_NE(error_of([&] {
              prefill_layer(q(0, 0, 2048), k(0, 2048),
                            rows_of(layers[0].v.data(), 0, 2048, c.kv_heads, c.dim, true),
                            rows_of(out.data(), 0, 2048, c.heads, c.dim, true), state, p,
                            ws.data(), bytes, nullptr);
            }).find("the state was moved to the chunk starting at 1024"),
            std::string::npos);
  device_plan_check(state.device, nullptr);
}

}  // namespace
}  // namespace sp
