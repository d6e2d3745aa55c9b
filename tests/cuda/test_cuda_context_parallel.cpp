// The context-parallel ranks simulated on one GPU (cuda_context_simulation) against one
// cuda_attention_block_sparse call over the whole plan: all-gather bit for bit (out, lse and the
// pivots' block attention, zigzag and balanced splits, 1-4 ranks), ring within two bf16
// roundings; ragged N, GQA, D 64/128, random masks with empty rows. Outputs start as NaN bytes,
// so a row no rank gathered fails. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "shareprefill/context_parallel_device.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_copy.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/synthetic.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::error_of;
using testing::random_values;

struct cp_case {
  int64_t n, heads, kv_heads, dim;
  std::string name() const { return str("n", n, "_h", heads, "_hkv", kv_heads, "_d", dim); }
};

// Block size 128; head 1 dense (the pivot), others random with every fifth row empty.
block_mask random_mask(const cp_case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t nb = (c.n + 127) / 128;
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(c.heads));
  for (int64_t h = 0; h < c.heads; ++h)
    for (int32_t r = 0; r < nb; ++r)
      for (int32_t col = 0; col <= r; ++col)
        if (h == 1 || (r % 5 != 3 && (col == r || rng() % 3 == 0)))
          tiles[static_cast<size_t>(h)].push_back({r, col});
  return block_mask::from_tiles(c.n, 128, tiles);
}

tensor_view device_view(const device_buffer& b, dtype t, std::initializer_list<int64_t> shape) {
  tensor_view v = tensor_view::contiguous(b.data(), t, shape);
  v.on_device = true;
  return v;
}

device_buffer upload_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> bits(x.size());
  for (size_t i = 0; i < x.size(); ++i) bits[i] = fp32_to_bf16(x[i]);
  device_buffer b(bits.size() * 2);
  b.upload(bits.data(), b.size());
  return b;
}

template <class T>
std::vector<T> download(const device_buffer& b) {
  std::vector<T> x(b.size() / sizeof(T));
  b.download(x.data(), b.size());
  return x;
}

struct outputs {
  device_buffer out, lse, a;
  outputs(const cp_case& c, int64_t nb, int64_t slots)
      : out(static_cast<size_t>(c.n * c.heads * c.dim * 2)),
        lse(static_cast<size_t>(c.heads * c.n * 4)),
        a(static_cast<size_t>(std::max<int64_t>(slots, 1) * nb * nb * 4)) {
    out.fill_bytes(0xff), lse.fill_bytes(0xff), a.fill_bytes(0xff);  // NaN until written
  }
};

class CudaContextParallel : public ::testing::TestWithParam<cp_case> {};

TEST_P(CudaContextParallel, AllGatherRanksEqualOneCallBitForBit) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const cp_case c = GetParam();
  const device_buffer q = upload_bf16(random_values(c.n * c.heads * c.dim, 1));
  const device_buffer k = upload_bf16(random_values(c.n * c.kv_heads * c.dim, 2));
  const device_buffer v = upload_bf16(random_values(c.n * c.kv_heads * c.dim, 3));
  const tensor_view qv = device_view(q, dtype::bf16, {c.n, c.heads, c.dim});
  const tensor_view kv = device_view(k, dtype::bf16, {c.n, c.kv_heads, c.dim});
  const tensor_view vv = device_view(v, dtype::bf16, {c.n, c.kv_heads, c.dim});
  const block_mask mask = random_mask(c, static_cast<uint64_t>(c.n));
  const int64_t nb = mask.n_blocks;
  const device_layer_plan whole(mask, {1});
  std::vector<int32_t> slots(static_cast<size_t>(c.heads), -1);
  slots[1] = 0;
  EXPECT_EQ(download_pivot_slots(whole.plan()), slots);
  outputs one(c, nb, 1);
  cuda_attention_block_sparse(device_view(one.out, dtype::bf16, {c.n, c.heads, c.dim}),
                              device_view(one.lse, dtype::f32, {c.heads, c.n}),
                              device_view(one.a, dtype::f32, {1, nb, nb}), qv, kv, vv, whole.plan(),
                              whole.scratch());
  cuda_synchronize();
  const std::vector<int64_t> work = context_row_work(mask);
  for (int64_t ranks : {1, 2, 3, 4})
    for (bool balanced : {false, true}) {
      const context_partition p = balanced ? context_partition_balanced(work, ranks, 1.0)
                                           : context_partition_zigzag(work, ranks);
      cuda_context_simulation sim(mask, slots, p, context_kv_exchange::all_gather, c.dim,
                                  dtype::bf16);
      outputs got(c, nb, 1);
      for (int64_t r = 0; r < ranks; ++r) {
        sim.run_rank(r, qv, kv, vv, {}, nullptr);
        sim.gather_rank(r, device_view(got.out, dtype::bf16, {c.n, c.heads, c.dim}),
                        device_view(got.lse, dtype::f32, {c.heads, c.n}),
                        device_view(got.a, dtype::f32, {1, nb, nb}), nullptr);
      }
      cuda_synchronize();
      const std::string what = str(c.name(), " ranks ", ranks, balanced ? " balanced" : " zigzag");
      EXPECT_EQ(download<uint16_t>(got.out), download<uint16_t>(one.out)) << what;
      EXPECT_EQ(download<uint32_t>(got.lse), download<uint32_t>(one.lse)) << what;
      EXPECT_EQ(download<uint32_t>(got.a), download<uint32_t>(one.a)) << what;
      EXPECT_GT(sim.plan_bytes_uploaded(), 0);
    }
}

TEST_P(CudaContextParallel, RingRanksMergeToOneCall) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const cp_case c = GetParam();
  const device_buffer q = upload_bf16(random_values(c.n * c.heads * c.dim, 11));
  const device_buffer k = upload_bf16(random_values(c.n * c.kv_heads * c.dim, 12));
  const device_buffer v = upload_bf16(random_values(c.n * c.kv_heads * c.dim, 13));
  const tensor_view qv = device_view(q, dtype::bf16, {c.n, c.heads, c.dim});
  const tensor_view kv = device_view(k, dtype::bf16, {c.n, c.kv_heads, c.dim});
  const tensor_view vv = device_view(v, dtype::bf16, {c.n, c.kv_heads, c.dim});
  const block_mask mask = random_mask(c, static_cast<uint64_t>(c.n) + 1);
  const device_layer_plan whole(mask);
  outputs one(c, mask.n_blocks, 0);
  cuda_attention_block_sparse(device_view(one.out, dtype::bf16, {c.n, c.heads, c.dim}),
                              device_view(one.lse, dtype::f32, {c.heads, c.n}), {}, qv, kv, vv,
                              whole.plan(), whole.scratch());
  const std::vector<int32_t> no_pivots(static_cast<size_t>(c.heads), -1);
  for (int64_t ranks : {2, 3, 4}) {
    const context_partition p = context_partition_balanced(context_row_work(mask), ranks, 1.0);
    cuda_context_simulation sim(mask, no_pivots, p, context_kv_exchange::ring, c.dim, dtype::bf16);
    outputs got(c, mask.n_blocks, 0);
    for (int64_t r = 0; r < ranks; ++r) {
      sim.run_rank(r, qv, kv, vv, {}, nullptr);
      sim.gather_rank(r, device_view(got.out, dtype::bf16, {c.n, c.heads, c.dim}),
                      device_view(got.lse, dtype::f32, {c.heads, c.n}), {}, nullptr);
    }
    cuda_synchronize();
    const std::vector<uint16_t> a = download<uint16_t>(got.out), b = download<uint16_t>(one.out);
    const std::vector<float> la = download<float>(got.lse), lb = download<float>(one.lse);
    // |v| <= 1, so |o| <= 1. The ring's partials are rounded to bf16 (2^-9 relative) before the
    // fp32 merge, its result once more, and the one call's result once: at most 3 * 2^-9 < 0.006
    // apart; 0.008 allows the fp32 sums' own differences. lse is fp32 on both sides, summed in a
    // different tile order: 1e-4 relative to |lse| <= log(N) + max score.
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i)
      worst =
          std::max(worst, std::fabs(static_cast<double>(bf16_to_fp32(a[i])) - bf16_to_fp32(b[i])));
    EXPECT_LE(worst, 0.008) << c.name() << " ranks " << ranks;
    for (size_t i = 0; i < la.size(); ++i) {
      if (std::isinf(lb[i])) {
        EXPECT_TRUE(std::isinf(la[i]) && la[i] < 0) << i;
        continue;
      }
      ASSERT_NEAR(la[i], lb[i], 1e-4 * std::max(1.0f, std::fabs(lb[i])))
          << c.name() << " row " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaContextParallel,
                         ::testing::Values(cp_case{1, 2, 1, 64}, cp_case{239, 4, 2, 128},
                                           cp_case{1023, 6, 3, 64}, cp_case{4224, 8, 2, 128}),
                         [](const ::testing::TestParamInfo<cp_case>& shape) {
                           return shape.param.name();
                         });

// The bench's path: the device planner's plans of consecutive shareprefill layers (synthetic
// structured inputs, pivots and shared heads), downloaded, split over 3 ranks and simulated;
// out and the pivots' A equal the one call's bit for bit, then the layer is published.
TEST(CudaContextParallelPlanner, DevicePlansSplitOverRanksEqualOneCall) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  synthetic_params sp;
  sp.n_tokens = 8192 + 77, sp.layers = 3, sp.heads = 8, sp.kv_heads = 2, sp.dim = 128, sp.seed = 5;
  const cluster_map map = synthetic_cluster_map(sp);
  planner_params params;
  params.mode = plan_mode::shareprefill;
  const device_planner dp(params, sp.layers, sp.heads, &map);
  const int64_t n = sp.n_tokens, h = sp.heads, hkv = sp.kv_heads, d = sp.dim;
  const layer_shape shape{n, h, hkv, d};
  device_buffer ws(static_cast<size_t>(dp.workspace_bytes(shape)));
  device_buffer st(static_cast<size_t>(dp.state_bytes(n)));
  device_plan_state state;
  dp.begin_prompt(state, st.data(), static_cast<int64_t>(st.size()), n, nullptr);
  int64_t pivot_layers = 0;
  for (int64_t l = 0; l < sp.layers; ++l) {
    const synthetic_layer x = synthetic_generate_layer(sp, l);
    const device_buffer q = upload_bf16(x.q), k = upload_bf16(x.k), v = upload_bf16(x.v);
    const tensor_view qv = device_view(q, dtype::bf16, {n, h, d});
    const tensor_view kv = device_view(k, dtype::bf16, {n, hkv, d});
    const tensor_view vv = device_view(v, dtype::bf16, {n, hkv, d});
    const device_plan_output p =
        dp.plan(l, qv, kv, state, ws.data(), static_cast<int64_t>(ws.size()), nullptr);
    device_buffer one(static_cast<size_t>(n * h * d * 2)), got(one.size());
    cuda_attention_block_sparse(device_view(one, dtype::bf16, {n, h, d}), {}, p.block_attention, qv,
                                kv, vv, p.plan, p.scratch);
    const block_mask mask = device_planner::download_mask(p.plan);
    const std::vector<int32_t> slots = download_pivot_slots(p.plan);
    int32_t max_slot = -1;
    for (int32_t slot : slots) max_slot = std::max(max_slot, slot);
    pivot_layers += max_slot >= 0;
    const int64_t nb = mask.n_blocks;
    device_buffer a(static_cast<size_t>(std::max(max_slot + 1, 1) * nb * nb * 4));
    got.fill_bytes(0xff), a.fill_bytes(0xff);
    const context_partition part = context_partition_balanced(context_row_work(mask), 3, 1.0);
    cuda_context_simulation sim(mask, slots, part, context_kv_exchange::all_gather, d, dtype::bf16);
    for (int64_t r = 0; r < 3; ++r) {
      sim.run_rank(r, qv, kv, vv, {}, nullptr);
      sim.gather_rank(
          r, device_view(got, dtype::bf16, {n, h, d}), {},
          max_slot >= 0 ? device_view(a, dtype::f32, {max_slot + 1, nb, nb}) : tensor_view{},
          nullptr);
    }
    cuda_synchronize();
    EXPECT_EQ(download<uint16_t>(got), download<uint16_t>(one)) << "layer " << l;
    for (int32_t slot : slots) {
      if (slot < 0) continue;
      std::vector<uint32_t> want(static_cast<size_t>(nb * nb)), have(want.size());
      cuda_copy_2d(want.data(), nb * nb * 4,
                   static_cast<const float*>(p.block_attention.data) + slot * nb * nb, nb * nb * 4,
                   nb * nb * 4, 1);
      cuda_copy_2d(have.data(), nb * nb * 4, static_cast<const float*>(a.data()) + slot * nb * nb,
                   nb * nb * 4, nb * nb * 4, 1);
      EXPECT_EQ(have, want) << "layer " << l << " slot " << slot;
    }
    dp.publish(l, p, state, nullptr);
  }
  device_plan_check(state, nullptr);
  EXPECT_GT(pivot_layers, 0);  // the case exercises the pivots' A
}

TEST(CudaContextParallelBad, RingWithPivotsAndBadViewsAreErrors) {
  const block_mask mask = block_mask::dense_causal(300, 128, 2);
  const context_partition p = context_partition_zigzag(context_row_work(mask), 2);
  EXPECT_NE(
      error_of([&] {
        cuda_context_simulation(mask, {0, -1}, p, context_kv_exchange::ring, 128, dtype::bf16);
      }).find("cannot produce block attention"),
      std::string::npos);
  EXPECT_NE(error_of([&] {
              cuda_context_simulation(mask, {-1}, p, context_kv_exchange::all_gather, 128,
                                      dtype::bf16);
            }).find("pivot_slot has 1 entries"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              cuda_context_simulation(mask, {-1, -1}, p, context_kv_exchange::all_gather, 96,
                                      dtype::bf16);
            }).find("dim=96"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
