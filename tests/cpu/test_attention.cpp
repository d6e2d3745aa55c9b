// CPU attention kernels: attention_block_sparse on the shared cases of tests/attention_cases.h
// (the CUDA test runs the same list) against the fp64 oracle attention_reference under the
// expanded mask, with block attention A of the pivot heads against an fp64 computation; plus
// f32 and bf16 input checks, the single-row oracle and the argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "attention_cases.h"
#include "shareprefill/attention.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::attention_case;
using testing::attention_inputs;
using testing::error_of;
using testing::make_mask;
using testing::mask_kind;
using testing::max_abs_diff;
using testing::random_values;

// The case's inputs as views of its dtype (f32, or 16-bit words for bf16 and f16).
struct inputs {
  attention_inputs values;
  std::vector<uint16_t> q16, k16, v16;
  tensor_view qv, kv, vv;
  explicit inputs(const attention_case& c) : values(c) {
    const bool f32 = c.type == dtype::f32;
    if (!f32) {
      q16 = testing::encode_all(c.type, values.q);
      k16 = testing::encode_all(c.type, values.k);
      v16 = testing::encode_all(c.type, values.v);
    }
    qv = tensor_view::contiguous(f32 ? static_cast<const void*>(values.q.data()) : q16.data(),
                                 c.type, {c.n, c.heads, c.dim});
    kv = tensor_view::contiguous(f32 ? static_cast<const void*>(values.k.data()) : k16.data(),
                                 c.type, {c.n, c.kv_heads, c.dim});
    vv = tensor_view::contiguous(f32 ? static_cast<const void*>(values.v.data()) : v16.data(),
                                 c.type, {c.n, c.kv_heads, c.dim});
  }
  const std::vector<float>& q() const { return values.q; }
  const std::vector<float>& k() const { return values.k; }
};

// Dense [H, N, N] token mask from the CSR mask.
std::vector<uint8_t> expand_all(const block_mask& m) {
  std::vector<uint8_t> all;
  for (int64_t h = 0; h < m.heads; ++h) {
    auto t = m.expand_to_token_mask(h);
    all.insert(all.end(), t.begin(), t.end());
  }
  return all;
}

// Exact block attention of one head from fp64 probabilities (independent of the kernels).
std::vector<double> block_attention_fp64(const inputs& x, const attention_case& c, int64_t h,
                                         const std::vector<uint8_t>& token_mask, int64_t bs) {
  const int64_t n = c.n, nb = (n + bs - 1) / bs, kh = h / (c.heads / c.kv_heads);
  std::vector<double> a(static_cast<size_t>(nb * nb), 0.0), s(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double mx = -INFINITY;
    for (int64_t j = 0; j <= i; ++j) {
      if (!token_mask[static_cast<size_t>((h * n + i) * n + j)]) continue;
      double dot = 0;
      for (int64_t e = 0; e < c.dim; ++e)
        dot += double(x.q()[(i * c.heads + h) * c.dim + e]) * x.k()[(j * c.kv_heads + kh) * c.dim + e];
      s[j] = dot / std::sqrt(double(c.dim));
      mx = std::max(mx, s[j]);
    }
    if (std::isinf(mx)) continue;
    double sum = 0;
    for (int64_t j = 0; j <= i; ++j)
      if (token_mask[static_cast<size_t>((h * n + i) * n + j)]) sum += std::exp(s[j] - mx);
    const int64_t r = i / bs, rows = std::min(bs, n - r * bs);
    for (int64_t j = 0; j <= i; ++j)
      if (token_mask[static_cast<size_t>((h * n + i) * n + j)])
        a[r * nb + j / bs] += std::exp(s[j] - mx) / sum / double(rows);
  }
  return a;
}

// fp32 accumulation over up to ~4K keys: error ~ sqrt(N)*eps32*|v| ≈ 65*1.2e-7 ≈ 8e-6 on
// outputs bounded by max|v| = 1, plus the 2e-7 relative error of the vectorised exp.
constexpr double out_tol = 3e-5;
// lse = max + log(sum): the same accumulation error, relative to the sum, then log.
constexpr double lse_tol = 3e-5;

void check_case(const attention_case& c) {
  SCOPED_TRACE(c.name());
  const inputs x(c);
  const block_mask mask = make_mask(c, testing::mask_seed(c));
  const bool pivots = !c.pivots.empty();
  const auto token_mask = expand_all(mask);
  fp32_tensor ref({c.n, c.heads, c.dim}), ref_lse({c.heads, c.n});
  attention_reference(ref.view, ref_lse.view, x.qv, x.kv, x.vv, token_mask.data());

  // Guard values after every output catch out-of-bounds writes.
  const float guard = 12345.0f;
  const int64_t out_n = c.n * c.heads * c.dim, nb = mask.n_blocks;
  std::vector<float> out(static_cast<size_t>(out_n + 16), guard), lse(static_cast<size_t>(c.heads * c.n + 16), guard);
  block_attention_output ba;
  std::vector<float> a_values;
  if (pivots) {
    ba.heads = c.pivots;
    a_values.assign(static_cast<size_t>(ba.heads.size() * nb * nb + 16), guard);
    ba.values = a_values.data();
  }
  thread_pool pool(2);
  attention_block_sparse(tensor_view::contiguous(out.data(), dtype::f32, {c.n, c.heads, c.dim}),
                         tensor_view::contiguous(lse.data(), dtype::f32, {c.heads, c.n}),
                         pivots ? &ba : nullptr, x.qv, x.kv, x.vv, mask, pool);
  EXPECT_LE(max_abs_diff(out.data(), ref.values.data(), out_n), out_tol);
  for (int64_t i = 0; i < c.heads * c.n; ++i) {
    const float a = lse[i], b = ref_lse.values[i];
    if (std::isinf(b)) {
      ASSERT_TRUE(std::isinf(a) && a < 0) << "row " << i;
    } else {
      ASSERT_NEAR(a, b, lse_tol) << "row " << i;
    }
  }
  for (int i = 0; i < 16; ++i) {
    ASSERT_EQ(out[out_n + i], guard);
    ASSERT_EQ(lse[c.heads * c.n + i], guard);
  }
  if (!pivots) return;
  for (size_t p = 0; p < ba.heads.size(); ++p) {
    const auto expect = block_attention_fp64(x, c, ba.heads[p], token_mask, 128);
    for (int64_t r = 0; r < nb; ++r) {
      double row_sum = 0;
      for (int64_t col = 0; col < nb; ++col) {
        const double got = a_values[(p * nb + r) * nb + col];
        // Each entry is a mean of probabilities accumulated in fp32/fp64: 1e-5 absolute.
        ASSERT_NEAR(got, expect[r * nb + col], 1e-5) << "head " << ba.heads[p] << " tile (" << r << "," << col << ")";
        row_sum += got;
      }
      const bool row_empty = mask.row_begin(ba.heads[p], r) == mask.row_end(ba.heads[p], r);
      ASSERT_NEAR(row_sum, row_empty ? 0.0 : 1.0, 1e-5) << "row " << r;
    }
    ASSERT_EQ(a_values[ba.heads.size() * nb * nb], guard);
  }
}

// The shared cases the CPU kernel runs: all but the sampled long ones and those whose fp64
// oracle costs more than the 4224-token, 3-head, D=64 case (N^2 * H * D), so the quick suite
// stays under a minute; the CUDA test runs them all.
std::vector<attention_case> cpu_cases() {
  const double budget = 4224.0 * 4224.0 * 3 * 64;
  std::vector<attention_case> cases;
  for (const attention_case& c : testing::attention_cases())
    if (!c.sampled && double(c.n) * double(c.n) * double(c.heads * c.dim) <= budget)
      cases.push_back(c);
  return cases;
}

class AttentionShared : public ::testing::TestWithParam<attention_case> {};

TEST_P(AttentionShared, MatchesOracle) { check_case(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Cases, AttentionShared, ::testing::ValuesIn(cpu_cases()),
                         [](const ::testing::TestParamInfo<attention_case>& i) {
                           return i.param.name();
                         });

TEST(AttentionBlockSparse, Bf16InputsWithinReferenceRoundingError) {
  const attention_case c{1000, 4, 1, 64, mask_kind::full, {}, dtype::f32};
  inputs x(c);
  std::vector<uint16_t> qb(x.values.q.size()), kb(x.values.k.size()), vb(x.values.v.size());
  for (size_t i = 0; i < qb.size(); ++i) qb[i] = fp32_to_bf16(x.values.q[i]);
  for (size_t i = 0; i < kb.size(); ++i) kb[i] = fp32_to_bf16(x.values.k[i]);
  for (size_t i = 0; i < vb.size(); ++i) vb[i] = fp32_to_bf16(x.values.v[i]);
  auto qv = tensor_view::contiguous(qb.data(), dtype::bf16, {c.n, c.heads, c.dim});
  auto kv = tensor_view::contiguous(kb.data(), dtype::bf16, {c.n, c.kv_heads, c.dim});
  auto vv = tensor_view::contiguous(vb.data(), dtype::bf16, {c.n, c.kv_heads, c.dim});
  fp32_tensor ref32({c.n, c.heads, c.dim}), ref_bf({c.n, c.heads, c.dim}), out({c.n, c.heads, c.dim});
  attention_reference(ref32.view, {}, x.qv, x.kv, x.vv);
  attention_reference(ref_bf.view, {}, qv, kv, vv);
  thread_pool pool(2);
  attention_block_sparse(out.view, {}, nullptr, qv, kv, vv,
                         block_mask::dense_causal(c.n, 128, c.heads), pool);
  const int64_t n = c.n * c.heads * c.dim;
  // FA3 rule: the kernel's error vs the fp32 truth may be at most twice the error that bf16
  // rounding of the inputs alone causes in the oracle, plus the fp32 accumulation tolerance.
  const double rounding_err = max_abs_diff(ref_bf.values.data(), ref32.values.data(), n);
  EXPECT_GT(rounding_err, 0.0);
  EXPECT_LE(max_abs_diff(out.values.data(), ref32.values.data(), n), 2 * rounding_err + out_tol);
}

TEST(AttentionReference, SingleRowMatchesFullOracleUnderBlockMask) {
  const attention_case c{300, 4, 2, 64, mask_kind::random, {}, dtype::f32};
  inputs x(c);
  const block_mask mask = make_mask(c, 5);
  const auto token_mask = expand_all(mask);
  fp32_tensor ref({c.n, c.heads, c.dim}), lse({c.heads, c.n});
  attention_reference(ref.view, lse.view, x.qv, x.kv, x.vv, token_mask.data());
  std::vector<float> row(static_cast<size_t>(c.heads * c.dim)), row_lse(static_cast<size_t>(c.heads));
  for (int64_t i : {0, 127, 128, 299}) {
    attention_reference_row(row.data(), row_lse.data(), x.qv, x.kv, x.vv, i, &mask);
    // Same fp64 arithmetic in the same order: equal up to the final fp32 rounding.
    EXPECT_EQ(max_abs_diff(row.data(), ref.values.data() + i * c.heads * c.dim, c.heads * c.dim), 0.0);
    for (int64_t h = 0; h < c.heads; ++h) EXPECT_EQ(row_lse[h], lse.values[h * c.n + i]);
  }
  EXPECT_NE(error_of([&] { attention_reference_row(row.data(), nullptr, x.qv, x.kv, x.vv, 300); })
                .find("out of range"),
            std::string::npos);
}

TEST(AttentionBlockSparse, RejectsBadInput) {
  const attention_case c{256, 4, 2, 64, mask_kind::full, {}, dtype::f32};
  inputs x(c);
  fp32_tensor out({c.n, c.heads, c.dim});
  thread_pool pool(1);
  const auto mask = block_mask::dense_causal(c.n, 128, c.heads);
  auto run = [&](const tensor_view& q, const tensor_view& k, const block_mask& m) {
    return error_of([&] { attention_block_sparse(out.view, {}, nullptr, q, k, x.vv, m, pool); });
  };
  std::vector<float> k3_values(static_cast<size_t>(c.n * 3 * c.dim), 0.5f);
  auto k3 = tensor_view::contiguous(k3_values.data(), dtype::f32, {c.n, 3, c.dim});
  EXPECT_NE(run(x.qv, k3, mask).find("not divisible"), std::string::npos);
  auto q_short = tensor_view::contiguous(x.values.q.data(), dtype::f32, {c.n - 1, c.heads, c.dim});
  EXPECT_NE(run(q_short, x.kv, mask).find("tokens"), std::string::npos);
  EXPECT_NE(run(x.qv, x.kv, block_mask::dense_causal(c.n, 128, 3)).find("mask has 3 heads"),
            std::string::npos);
  tensor_view device_q = x.qv;
  device_q.on_device = true;
  EXPECT_NE(run(device_q, x.kv, mask).find("host views"), std::string::npos);
  x.values.q[5 * c.heads * c.dim + 3] = NAN;
  EXPECT_NE(run(x.qv, x.kv, mask).find("q holds a non-finite value"), std::string::npos);
  x.values.q[5 * c.heads * c.dim + 3] = 0.5f;
  block_attention_output bad{{7}, nullptr};
  std::vector<float> a(4);
  bad.values = a.data();
  EXPECT_NE(error_of([&] { attention_block_sparse(out.view, {}, &bad, x.qv, x.kv, x.vv, mask, pool); })
                .find("out of range"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
