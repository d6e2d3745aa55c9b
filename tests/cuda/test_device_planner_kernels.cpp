// Single kernels of the device planner against their CPU references, at ragged sizes:
// launch_token_profiles (plan_statistics.cu), the vertical and slash token profiles of step A,
// against last_block_statistics (the CPU oracle) on random bf16 q/k at ragged N, one and several
// key ranges, D 64 and 128, GQA; bitwise equal across two runs (fixed summation order); a NaN
// key flags plan_error_nonfinite_input with its head.
// launch_cover_budgets (plan_budgets.cu), the budgets of step A by a radix select: cover counts
// equal to cover_count (std::sort + fp64 running sum) on normalised random profiles, profiles of
// few levels (ties), uniform ones, zeros, a single spike and profiles that never reach gamma,
// and the budgets equal to budget_blocks of those counts, with each row in 1, 3, 7 and 64
// thread blocks (the scratch reused across calls), also when no counts are asked for (the
// planner's call, which may stop once the budget is known).
// launch_query_aware_select (plan_qa_select.cu), step E's budget by a radix select: the kept
// entries of each query-aware head's lower triangle equal the host rule (std::stable_sort
// descending, fp64 running sum <= gamma * nb) on random keys, keys of few levels (many ties at
// the cut, kept in index order), one-hot rows and a budget larger than the total (all kept), at
// the global and at per-head gammas; heads of other kinds get no bits.
// launch_rank_rows (plan_rank.cu), the ranking of the block profiles for step D's top-k: rank of
// each entry in its row's descending order, ties to the lower index (std::stable_sort here).
// Keys drawn from few levels so ties are common, with +inf (the forced entries) and zeros.
// launch_schedule_sort (plan_schedule.cu), the work schedule in one block: (h, row) of the
// items in descending tile count, ties in item order (std::stable_sort here), at ragged sizes up
// to schedule_block_max items.
// Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "cuda/plan_layout.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/statistics.h"
#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"
#include "test_util.h"

namespace sp {
namespace {

struct profile_case {
  int64_t n, heads, kv_heads, dim, target_ctas;  // target_ctas sets the key ranges per head
};

// The device's token profiles [2H, N] and error words for bf16 q [N, H, D], k [N, Hkv, D].
struct device_profiles {
  std::vector<float> tok;
  std::vector<int32_t> error;
};

device_profiles run_token_profiles(const cuda::plan_sizes& s, const std::vector<uint16_t>& q,
                                   const std::vector<uint16_t>& k) {
  device_buffer dq(q.size() * 2), dk(k.size() * 2);
  dq.upload(q.data(), dq.size());
  dk.upload(k.data(), dk.size());
  device_buffer row_stats(static_cast<size_t>(s.heads * s.splits * cuda::stats_rows * 2 * 4));
  device_buffer spill(static_cast<size_t>(s.heads * s.splits * cuda::stats_rows * 4));
  device_buffer tok(static_cast<size_t>(2 * s.heads * s.n * 4)), error(3 * 4);
  tok.fill_bytes(0xff);  // NaN: every entry must be written
  error.fill_bytes(0);
  cuda::qk_views x;
  x.q = dq.data();
  x.k = dk.data();
  x.q_token_stride = s.heads * s.dim;
  x.q_head_stride = s.dim;
  x.k_token_stride = s.kv_heads * s.dim;
  x.k_head_stride = s.dim;
  cuda::launch_token_profiles(s, x, static_cast<float*>(row_stats.data()),
                              static_cast<float*>(tok.data()), static_cast<float*>(spill.data()),
                              static_cast<int32_t*>(error.data()), 5, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  device_profiles out{std::vector<float>(static_cast<size_t>(2 * s.heads * s.n)),
                      std::vector<int32_t>(3)};
  tok.download(out.tok.data(), tok.size());
  error.download(out.error.data(), error.size());
  return out;
}

std::vector<uint16_t> random_bf16(int64_t count, uint64_t seed) {
  const std::vector<float> x = testing::random_values(count, seed, -3.0f, 3.0f);
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = fp32_to_bf16(x[i]);
  return out;
}

TEST(DevicePlannerKernels, TokenProfilesMatchCpuStatistics) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  thread_pool pool;
  const profile_case cases[] = {{1, 3, 1, 64, 264},       {77, 3, 1, 64, 264},
                                {128, 4, 2, 128, 264},    {129, 3, 3, 64, 264},
                                {200, 2, 1, 128, 1000},   {1000, 3, 1, 64, 6},
                                {1000, 4, 1, 128, 1000},  {4097, 9, 3, 64, 261},
                                {5000, 8, 2, 128, 16}};
  for (const profile_case& c : cases) {
    const cuda::plan_sizes s =
        cuda::make_plan_sizes(c.n, c.heads, c.kv_heads, c.dim, 1, c.target_ctas);
    SCOPED_TRACE(str("n=", c.n, " heads=", c.heads, "/", c.kv_heads, " dim=", c.dim,
                     " splits=", s.splits));
    const std::vector<uint16_t> q = random_bf16(c.n * c.heads * c.dim, 100 + c.n);
    const std::vector<uint16_t> k = random_bf16(c.n * c.kv_heads * c.dim, 200 + c.n);
    const device_profiles got = run_token_profiles(s, q, k);
    EXPECT_EQ(got.error[0], 0);
    budget_rule rule;
    const std::vector<head_statistics> want = last_block_statistics(
        tensor_view::contiguous(q.data(), dtype::bf16, {c.n, c.heads, c.dim}),
        tensor_view::contiguous(k.data(), dtype::bf16, {c.n, c.kv_heads, c.dim}), rule, pool);
    for (int64_t h = 0; h < c.heads; ++h) {
      for (int which = 0; which < 2; ++which) {
        const std::vector<float>& ref = which == 0 ? want[h].v_tok : want[h].s_tok;
        const float* dev = got.tok.data() + (which * c.heads + h) * c.n;
        double total = 0.0;
        int64_t bad = 0;
        for (int64_t j = 0; j < c.n; ++j) {
          total += dev[j];
          // fp32 tensor-core scores in another summation order than the host's sgemm.
          if (!(std::fabs(dev[j] - ref[j]) <= 1e-3f * std::fabs(ref[j]) + 1e-7f) && bad++ < 3)
            ADD_FAILURE() << (which ? "slash" : "vertical") << " head " << h << " token " << j
                          << ": device " << dev[j] << ", host " << ref[j];
        }
        EXPECT_EQ(bad, 0) << (which ? "slash" : "vertical") << " head " << h;
        EXPECT_NEAR(total, 1.0, 1e-4) << (which ? "slash" : "vertical") << " head " << h;
      }
    }
    const device_profiles again = run_token_profiles(s, q, k);
    EXPECT_EQ(0, std::memcmp(again.tok.data(), got.tok.data(), got.tok.size() * 4))
        << "two runs differ: the summation order is not fixed";
  }
}

TEST(DevicePlannerKernels, TokenProfilesFlagNonFiniteKeys) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t n = 700, heads = 4, kv_heads = 2, dim = 64;
  const cuda::plan_sizes s = cuda::make_plan_sizes(n, heads, kv_heads, dim, 1, 16);
  const std::vector<uint16_t> q = random_bf16(n * heads * dim, 1);
  std::vector<uint16_t> k = random_bf16(n * kv_heads * dim, 2);
  k[static_cast<size_t>((300 * kv_heads + 1) * dim + 7)] = fp32_to_bf16(std::nanf(""));
  const device_profiles got = run_token_profiles(s, q, k);
  EXPECT_EQ(got.error[0], static_cast<int32_t>(cuda::plan_error_nonfinite_input));
  EXPECT_EQ(got.error[1], 5);                    // the layer passed
  EXPECT_TRUE(got.error[2] == 2 || got.error[2] == 3) << got.error[2];  // a head of kv head 1
}

std::vector<int32_t> rank_reference(const std::vector<float>& keys, int64_t segs, int64_t nb) {
  std::vector<int32_t> rank(keys.size());
  for (int64_t s = 0; s < segs; ++s) {
    const float* row = keys.data() + s * nb;
    std::vector<int32_t> order(static_cast<size_t>(nb));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    for (int64_t i = 0; i < nb; ++i) rank[static_cast<size_t>(s * nb + order[i])] = static_cast<int32_t>(i);
  }
  return rank;
}

// Profiles [rows, n] of several kinds, each normalised to sum 1 in fp64 (except kind 5: 0.5).
std::vector<float> budget_profiles(int64_t rows, int64_t n, std::mt19937_64& rng) {
  std::vector<float> tok(static_cast<size_t>(rows * n));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t r = 0; r < rows; ++r) {
    float* x = tok.data() + r * n;
    const int kind = static_cast<int>(r % 6);
    for (int64_t j = 0; j < n; ++j) {
      switch (kind) {
        case 0: x[j] = static_cast<float>(std::pow(u(rng), 8.0)); break;       // skewed
        case 1: x[j] = static_cast<float>(1 + rng() % 5); break;               // few levels: ties
        case 2: x[j] = 1.0f; break;                                            // uniform
        case 3:  // zeros (not all)
          x[j] = j > 0 && rng() % 3 == 0 ? 0.0f : static_cast<float>(u(rng) + 0.01);
          break;
        case 4: x[j] = j == n / 2 ? 1.0f : 0.0f; break;                        // one spike
        default: x[j] = static_cast<float>(u(rng) + 0.01); break;
      }
    }
    double total = 0.0;
    for (int64_t j = 0; j < n; ++j) total += x[j];
    const double target = kind == 5 ? 0.5 : 1.0;
    for (int64_t j = 0; j < n; ++j) x[j] = static_cast<float>(x[j] / total * target);
  }
  return tok;
}

TEST(DevicePlannerKernels, CoverBudgetsMatchSortedRunningSum) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(13);
  for (int64_t n : {1, 2, 127, 128, 1000, 4097, 32771}) {
    for (int64_t heads : {1, 3, 6}) {
      for (double gamma : {0.5, 0.9, 0.95}) {
        const std::vector<float> tok = budget_profiles(2 * heads, n, rng);
        cuda::plan_rules r;
        r.gamma = gamma;
        r.min_blocks = 2;
        const int64_t nb = (n + cuda::plan_block - 1) / cuda::plan_block;
        r.max_blocks = static_cast<int32_t>(std::max<int64_t>(nb - 1, 1));
        budget_rule rule;
        rule.gamma = gamma;
        rule.min_blocks = r.min_blocks;
        rule.max_blocks = r.max_blocks;
        device_buffer dt(tok.size() * 4), db(static_cast<size_t>(2 * heads * 4)),
            dc(static_cast<size_t>(2 * heads * 4)),
            ds(static_cast<size_t>(cuda::cover_select_scratch_bytes(2 * heads)));
        dt.upload(tok.data(), dt.size());
        // One block per row, several (ragged ranges), more blocks than entries (empty parts);
        // with the counts, and without (the select may stop once the budget is known).
        for (int64_t parts : {1, 3, 7, 64})
        for (const bool with_counts : {true, false}) {
          SCOPED_TRACE(str("n=", n, " heads=", heads, " gamma=", gamma, " parts=", parts,
                           with_counts ? " with counts" : " budgets only"));
          cuda::launch_cover_budgets(static_cast<const float*>(dt.data()), heads, n, parts, r,
                                     ds.data(), static_cast<int32_t*>(db.data()),
                                     with_counts ? static_cast<int32_t*>(dc.data()) : nullptr,
                                     nullptr);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          std::vector<int32_t> budgets(static_cast<size_t>(2 * heads)), counts(budgets.size());
          db.download(budgets.data(), db.size());
          dc.download(counts.data(), dc.size());
          for (int64_t row = 0; row < 2 * heads; ++row) {
            const int64_t want = cover_count(tok.data() + row * n, n, gamma);
            if (with_counts) {
              EXPECT_EQ(counts[static_cast<size_t>(row)], want) << "row " << row;
            }
            const int64_t h = row % heads, which = row / heads;
            EXPECT_EQ(budgets[static_cast<size_t>(h * 2 + which)], budget_blocks(want, rule, nb))
                << "row " << row;
          }
        }
      }
    }
  }
}

// The kept entries of one head's triangle by the host rule (query_aware_tiles' budget).
std::vector<uint8_t> query_aware_kept(const float* keys, int64_t tri, double budget) {
  std::vector<int64_t> order(static_cast<size_t>(tri));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return keys[a] > keys[b]; });
  std::vector<uint8_t> kept(static_cast<size_t>(tri), 0);
  double running = 0.0;
  for (const int64_t e : order) {
    running += keys[e];
    if (running > budget) break;
    kept[static_cast<size_t>(e)] = 1;
  }
  return kept;
}

TEST(DevicePlannerKernels, QueryAwareSelectMatchesStableSort) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(19);
  const std::vector<uint8_t> kinds = {cuda::kind_query_aware, cuda::kind_vertical_slash,
                                      cuda::kind_query_aware, cuda::kind_query_aware,
                                      cuda::kind_query_aware};
  const int64_t heads = static_cast<int64_t>(kinds.size());
  for (int64_t nb : {1, 2, 33, 200, 1100}) {
    const cuda::plan_sizes s = cuda::make_plan_sizes(nb * cuda::plan_block, heads, 1, 64, 0, 132);
    const cuda::workspace_layout layout = cuda::make_workspace_layout(s);
    device_buffer ws(static_cast<size_t>(layout.total));
    const cuda::plan_pointers p = cuda::bind_workspace(layout, ws.data());
    // Keys per head: random (softmax-like rows), few levels (ties), one-hot rows, all tiny
    // (the budget exceeds the total), random again.
    std::vector<float> keys(static_cast<size_t>(heads * s.tri));
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::uniform_int_distribution<int> level(0, 6);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t e = 0; e < s.tri; ++e) {
        float& k = keys[static_cast<size_t>(h * s.tri + e)];
        const int64_t r = static_cast<int64_t>((std::sqrt(8.0 * e + 1) - 1) / 2);
        switch (h) {
          case 2: k = static_cast<float>(level(rng)) / 8.0f; break;
          case 3: k = e == r * (r + 1) / 2 + r / 2 ? 1.0f : 0.0f; break;
          case 4: k = 1e-6f; break;
          default: k = static_cast<float>(std::exp(8.0 * u(rng)) / std::exp(8.0) / (r + 1)); break;
        }
      }
    ASSERT_EQ(cudaMemcpy(p.big_keys, keys.data(), keys.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(p.kinds, kinds.data(), kinds.size(), cudaMemcpyHostToDevice), cudaSuccess);
    const std::vector<double> head_gammas = {0.6, 0.5, 0.95, 0.3, 0.9};
    device_buffer dg(head_gammas.size() * 8);
    dg.upload(head_gammas.data(), dg.size());
    for (double gamma : {0.5, 0.9, 0.95, -1.0}) {  // -1: the per-head gammas
      SCOPED_TRACE(str("nb=", nb, " gamma=", gamma));
      cuda::plan_rules r;
      r.gamma = gamma;
      if (gamma < 0) r.head_gamma = static_cast<const double*>(dg.data());
      ASSERT_EQ(cudaMemset(p.bitmask, 0, static_cast<size_t>(4 * heads * nb * s.words)), cudaSuccess);
      cuda::cub_plan c{p.cub_temp, p.cub_temp_bytes};
      cuda::launch_query_aware_select(p, r, c, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<uint32_t> bits(static_cast<size_t>(heads * nb * s.words));
      ASSERT_EQ(cudaMemcpy(bits.data(), p.bitmask, bits.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      for (int64_t h = 0; h < heads; ++h) {
        const double g = gamma < 0 ? head_gammas[static_cast<size_t>(h)] : gamma;
        const std::vector<uint8_t> want =
            query_aware_kept(keys.data() + h * s.tri, s.tri, g * static_cast<double>(nb));
        int64_t wrong = 0, kept = 0;
        for (int64_t row = 0, e = 0; row < nb; ++row)
          for (int64_t col = 0; col <= row; ++col, ++e) {
            const bool got = (bits[static_cast<size_t>((h * nb + row) * s.words + col / 32)] >> (col % 32)) & 1u;
            const bool expect = kinds[static_cast<size_t>(h)] == cuda::kind_query_aware && want[static_cast<size_t>(e)];
            wrong += got != expect;
            kept += got;
          }
        EXPECT_EQ(wrong, 0) << "head " << h << " (" << kept << " kept)";
      }
    }
  }
}

TEST(DevicePlannerKernels, RankRowsMatchesStableSort) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(11);
  for (int64_t nb : {1, 2, 31, 255, 256, 257, 1000, 1024, 1025, 2049, 4096}) {
    for (int64_t segs : {1, 3, 18}) {
      SCOPED_TRACE(str("nb=", nb, " segs=", segs));
      std::uniform_int_distribution<int> level(0, nb < 64 ? 3 : 40);
      std::vector<float> keys(static_cast<size_t>(segs * nb));
      for (float& k : keys) k = level(rng) == 0 ? 0.0f : static_cast<float>(level(rng)) / 64.0f;
      for (int64_t s = 0; s < segs; ++s) keys[static_cast<size_t>(s * nb + (s % 2 ? nb - 1 : 0))] = INFINITY;
      device_buffer dk(keys.size() * 4), dr(keys.size() * 4);
      dk.upload(keys.data(), dk.size());
      ASSERT_TRUE(cuda::launch_rank_rows(static_cast<const float*>(dk.data()),
                                         static_cast<int32_t*>(dr.data()), segs, nb, nullptr));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<int32_t> got(keys.size());
      dr.download(got.data(), dr.size());
      EXPECT_EQ(got, rank_reference(keys, segs, nb));
    }
  }
  // Longer rows are left to the CUB path: nothing is launched.
  EXPECT_FALSE(cuda::launch_rank_rows(nullptr, nullptr, 2, cuda::rank_block_max + 1, nullptr));
}

TEST(DevicePlannerKernels, ScheduleSortMatchesStableSort) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937_64 rng(17);
  for (int64_t nb : {1, 3, 64, 255, 256, 257, 1024}) {
    for (int64_t heads : {1, 5, 8, 32}) {
      const int64_t items = heads * nb;
      if (items > cuda::schedule_block_max) continue;
      SCOPED_TRACE(str("nb=", nb, " heads=", heads));
      // Tile counts 0..nb, from few levels so ties are common, nb itself included.
      std::uniform_int_distribution<int64_t> level(0, std::min<int64_t>(nb, 6));
      std::vector<int32_t> keys(static_cast<size_t>(items));
      for (int32_t& k : keys) k = static_cast<int32_t>(level(rng) * nb / std::min<int64_t>(nb, 6));
      keys[0] = static_cast<int32_t>(nb);
      std::vector<int32_t> order(keys.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return keys[static_cast<size_t>(a)] > keys[static_cast<size_t>(b)];
      });
      std::vector<int32_t> want(2 * keys.size());
      for (size_t i = 0; i < order.size(); ++i) {
        want[2 * i] = static_cast<int32_t>(order[i] / nb);
        want[2 * i + 1] = static_cast<int32_t>(order[i] % nb);
      }
      device_buffer dk(keys.size() * 4), ds(want.size() * 4);
      dk.upload(keys.data(), dk.size());
      ASSERT_TRUE(cuda::launch_schedule_sort(static_cast<const int32_t*>(dk.data()),
                                             static_cast<int32_t*>(ds.data()), heads, nb, nullptr));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<int32_t> got(want.size());
      ds.download(got.data(), ds.size());
      EXPECT_EQ(got, want);
    }
  }
  // Larger plans are left to the CUB path: nothing is launched.
  EXPECT_FALSE(cuda::launch_schedule_sort(nullptr, nullptr, 1, cuda::schedule_block_max + 1,
                                          nullptr));
}

}  // namespace
}  // namespace sp
