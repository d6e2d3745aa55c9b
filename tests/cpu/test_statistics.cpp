// Last-block statistics (DESIGN.md 2A), block pooling and the pooled estimate (2B, 2E) against
// direct fp64 computation on small ragged inputs with several GQA ratios, head dims and dtypes.
#include <gtest/gtest.h>

#include <cmath>

#include "shareprefill/statistics.h"
#include "test_util.h"

namespace sp {
namespace {

// Direct computation of v_tok and s_tok for one head over its last min(last_rows, N) queries,
// fp64, materialising P.
void direct_profiles(std::vector<double>& v, std::vector<double>& s, const std::vector<float>& q,
                     const std::vector<float>& k, int64_t n, int64_t heads, int64_t kv_heads,
                     int64_t dim, int64_t h, int64_t last_rows) {
  const int64_t rows = std::min(last_rows, n), q0 = n - rows, kh = h / (heads / kv_heads);
  v.assign(static_cast<size_t>(n), 0.0);
  s.assign(static_cast<size_t>(n), 0.0);
  for (int64_t i = q0; i < n; ++i) {
    std::vector<double> p(static_cast<size_t>(i + 1));
    double mx = -HUGE_VAL, sum = 0.0;
    for (int64_t j = 0; j <= i; ++j) {
      double d = 0.0;
      for (int64_t e = 0; e < dim; ++e)
        d += static_cast<double>(q[(i * heads + h) * dim + e]) * k[(j * kv_heads + kh) * dim + e];
      p[j] = d / std::sqrt(static_cast<double>(dim));
      mx = std::max(mx, p[j]);
    }
    for (auto& x : p) sum += (x = std::exp(x - mx));
    for (int64_t j = 0; j <= i; ++j) {
      v[j] += p[j] / sum / rows;
      s[n - 1 - (i - j)] += p[j] / sum / rows;
    }
  }
}

struct stats_case {
  int64_t n, heads, kv_heads, dim;
  dtype type;
  int64_t estimation_blocks = 1;
};

class StatisticsVsDirect : public ::testing::TestWithParam<stats_case> {};

TEST_P(StatisticsVsDirect, ProfilesBudgetsAndBlockSums) {
  const stats_case c = GetParam();
  const int64_t bs = 128;
  std::vector<float> q = testing::random_values(c.n * c.heads * c.dim, 11 + c.n, -2.0f, 2.0f);
  std::vector<float> k = testing::random_values(c.n * c.kv_heads * c.dim, 12 + c.n, -2.0f, 2.0f);
  std::vector<uint16_t> q16(q.size()), k16(k.size());
  if (c.type != dtype::f32) {  // round to the dtype so the direct fp64 check sees the same values
    for (size_t i = 0; i < q.size(); ++i) {
      q16[i] = c.type == dtype::bf16 ? fp32_to_bf16(q[i]) : fp32_to_fp16(q[i]);
      q[i] = c.type == dtype::bf16 ? bf16_to_fp32(q16[i]) : fp16_to_fp32(q16[i]);
    }
    for (size_t i = 0; i < k.size(); ++i) {
      k16[i] = c.type == dtype::bf16 ? fp32_to_bf16(k[i]) : fp32_to_fp16(k[i]);
      k[i] = c.type == dtype::bf16 ? bf16_to_fp32(k16[i]) : fp16_to_fp32(k16[i]);
    }
  }
  const void* qd = c.type == dtype::f32 ? static_cast<const void*>(q.data()) : q16.data();
  const void* kd = c.type == dtype::f32 ? static_cast<const void*>(k.data()) : k16.data();
  const auto qv = tensor_view::contiguous(qd, c.type, {c.n, c.heads, c.dim});
  const auto kv = tensor_view::contiguous(kd, c.type, {c.n, c.kv_heads, c.dim});
  thread_pool pool(2);
  const budget_rule rule{bs, 0.9, 1, 0, c.estimation_blocks};
  const int64_t rows = std::min(c.estimation_blocks * bs, c.n);
  const auto stats = last_block_statistics(qv, kv, rule, pool);
  ASSERT_EQ(static_cast<int64_t>(stats.size()), c.heads);
  const int64_t nb = (c.n + bs - 1) / bs;
  for (int64_t h = 0; h < c.heads; ++h) {
    std::vector<double> v, s;
    direct_profiles(v, s, q, k, c.n, c.heads, c.kv_heads, c.dim, h, rows);
    const head_statistics& st = stats[h];
    EXPECT_EQ(st.rows, rows);
    double v_sum = 0.0, s_sum = 0.0;
    for (int64_t j = 0; j < c.n; ++j) {
      // fp32 scores (|score| <= ~60 here) and fp32 exp: relative error ~1e-5 per probability.
      EXPECT_NEAR(st.v_tok[j], v[j], 2e-5 * v[j] + 1e-7) << "head " << h << " key " << j;
      EXPECT_NEAR(st.s_tok[j], s[j], 2e-5 * s[j] + 1e-7) << "head " << h << " t " << j;
      v_sum += st.v_tok[j];
      s_sum += st.s_tok[j];
    }
    EXPECT_NEAR(v_sum, 1.0, 1e-5);  // each row sums to 1: fp32 rounding over <= 1000 terms
    EXPECT_NEAR(s_sum, 1.0, 1e-5);
    ASSERT_EQ(static_cast<int64_t>(st.v_blk.size()), nb);
    for (int64_t b = 0; b < nb; ++b) {
      double vb = 0.0, sb = 0.0;
      for (int64_t j = b * bs; j < std::min(c.n, (b + 1) * bs); ++j) vb += v[j], sb += s[j];
      EXPECT_NEAR(st.v_blk[b], vb, 1e-5);
      EXPECT_NEAR(st.s_blk[b], sb, 1e-5);
    }
    EXPECT_EQ(st.vertical_blocks, budget_blocks(cover_count(st.v_tok.data(), c.n, 0.9), rule, nb));
    EXPECT_GE(st.vertical_blocks, 1);
    EXPECT_LE(st.vertical_blocks, nb);
  }
}

INSTANTIATE_TEST_SUITE_P(Ragged, StatisticsVsDirect,
                         ::testing::Values(stats_case{1, 1, 1, 64, dtype::f32},
                                           stats_case{2, 3, 1, 64, dtype::f32},
                                           stats_case{127, 4, 1, 128, dtype::f32},
                                           stats_case{128, 3, 3, 64, dtype::bf16},
                                           stats_case{129, 4, 1, 64, dtype::f16},
                                           stats_case{1000, 4, 1, 128, dtype::f32},
                                           stats_case{1000, 6, 2, 64, dtype::bf16},
                                           // several estimation blocks (issue 17)
                                           stats_case{200, 3, 1, 64, dtype::f32, 2},
                                           stats_case{257, 4, 2, 64, dtype::f32, 2},
                                           stats_case{1000, 6, 2, 64, dtype::bf16, 3}));

TEST(BudgetRules, CoverCountIsOnePlusEntriesWithRunningSumAtMostGamma) {
  // Sorted: 0.5, 0.25, 0.125, 0.125 -> running sums 0.5, 0.75, 0.875, 1.0 (exact in binary).
  const float x[] = {0.125f, 0.5f, 0.125f, 0.25f};
  EXPECT_EQ(cover_count(x, 4, 0.75), 3);  // 0.5, 0.75 stay <= 0.75 -> 2 + 1
  EXPECT_EQ(cover_count(x, 4, 0.7), 2);   // only 0.5 -> 1 + 1
  EXPECT_EQ(cover_count(x, 4, 0.4), 1);   // none -> 0 + 1
  EXPECT_EQ(cover_count(x, 4, 1.0), 5);   // all four -> 4 + 1 (may exceed n; clamped later)
}

TEST(BudgetRules, TokenCountToBlocksThenClamp) {
  budget_rule rule{128, 0.95, 8, 0};
  EXPECT_EQ(budget_blocks(1, rule, 100), 8);         // 1//128 + 1 = 1 -> raised to minB 8
  EXPECT_EQ(budget_blocks(1279, rule, 100), 10);     // 9 + 1
  EXPECT_EQ(budget_blocks(1280, rule, 100), 11);     // 10 + 1
  EXPECT_EQ(budget_blocks(100000, rule, 100), 100);  // clamped to nb
  rule.max_blocks = 20;
  EXPECT_EQ(budget_blocks(100000, rule, 100), 20);  // clamped to maxB
  EXPECT_EQ(budget_blocks(100000, rule, 12), 12);   // maxB itself never exceeds nb
}

TEST(Pooling, BlockMeanOverRealTokensAndLastRowsMean) {
  const int64_t n = 5, heads = 2, dim = 2, bs = 2;
  std::vector<float> x(static_cast<size_t>(n * heads * dim));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t d = 0; d < dim; ++d) x[(t * heads + h) * dim + d] = float(t * 10 + h + d);
  const auto xv = tensor_view::contiguous(x.data(), dtype::f32, {n, heads, dim});
  std::vector<float> pooled(3 * heads * dim);
  block_mean_pool(pooled.data(), xv, bs);
  EXPECT_FLOAT_EQ(pooled[0], 5.0f);                           // block 0, head 0, d 0: mean(0, 10)
  EXPECT_FLOAT_EQ(pooled[(1 * heads + 1) * dim + 1], 27.0f);  // mean(21, 31) + ... = 27
  EXPECT_FLOAT_EQ(pooled[(2 * heads + 0) * dim + 0], 40.0f);  // partial block: token 4 only
  std::vector<float> m(heads * dim);
  last_rows_mean(m.data(), xv, 4);  // tokens 1..4, scaled by 1/sqrt(2)
  EXPECT_NEAR(m[0], 25.0 / std::sqrt(2.0), 1e-5);
}

TEST(Pooling, PooledEstimateIsSoftmaxOfDots) {
  const float qm[] = {1.0f, 0.0f};
  const float kp[] = {0.0f, 0.0f, std::log(3.0f), 0.0f};  // [nb=2, Hkv=1, D=2]
  float est[2];
  pooled_block_estimate(est, qm, kp, 2, 1, 0, 2);
  EXPECT_NEAR(est[0], 0.25, 1e-6);  // softmax(0, ln 3) = (1/4, 3/4)
  EXPECT_NEAR(est[1], 0.75, 1e-6);
}

TEST(Statistics, BadInputsThrow) {
  thread_pool pool(1);
  std::vector<float> q(4 * 3 * 16), k(4 * 2 * 16);
  const auto qv = tensor_view::contiguous(q.data(), dtype::f32, {4, 3, 16});
  const auto kv = tensor_view::contiguous(k.data(), dtype::f32, {4, 2, 16});
  EXPECT_NE(
      testing::error_of([&] { last_block_statistics(qv, kv, {}, pool); }).find("not divisible"),
      std::string::npos);
  const auto k1 = tensor_view::contiguous(k.data(), dtype::f32, {4, 1, 16});
  budget_rule bad{100, 0.9, 1, 0};
  EXPECT_NE(testing::error_of([&] { last_block_statistics(qv, k1, bad, pool); }).find("100"),
            std::string::npos);
  const budget_rule no_rows{128, 0.9, 1, 0, 0};
  EXPECT_NE(testing::error_of([&] {
              last_block_statistics(qv, k1, no_rows, pool);
            }).find("estimation_blocks must be in [1, 4096], got 0"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
