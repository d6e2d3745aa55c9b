// CPU attention kernels: attention_block_sparse against the fp64 oracle attention_reference
// under the expanded mask, at ragged lengths, GQA ratios 1/3/4, head dims 64/128.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "shareprefill/attention.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::error_of;
using testing::max_abs_diff;
using testing::random_values;

struct case_shape {
  int64_t n, heads, kv_heads, dim;
};

std::string name_of(const case_shape& c, const char* mask) {
  return str("attn(n=", c.n, ",h=", c.heads, ",hkv=", c.kv_heads, ",d=", c.dim, ",mask=", mask, ")");
}

struct inputs {
  std::vector<float> q, k, v;
  tensor_view qv, kv, vv;
  inputs(const case_shape& c, uint64_t seed)
      : q(random_values(c.n * c.heads * c.dim, seed, -2.0f, 2.0f)),
        k(random_values(c.n * c.kv_heads * c.dim, seed + 1, -2.0f, 2.0f)),
        v(random_values(c.n * c.kv_heads * c.dim, seed + 2)) {
    qv = tensor_view::contiguous(q.data(), dtype::f32, {c.n, c.heads, c.dim});
    kv = tensor_view::contiguous(k.data(), dtype::f32, {c.n, c.kv_heads, c.dim});
    vv = tensor_view::contiguous(v.data(), dtype::f32, {c.n, c.kv_heads, c.dim});
  }
};

enum class mask_kind { full, diagonal, random, single_tile, empty_rows };

block_mask make_mask(mask_kind kind, int64_t n, int64_t heads, uint64_t seed) {
  const int64_t bs = 128, nb = (n + bs - 1) / bs;
  std::mt19937_64 rng(seed);
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(heads));
  for (int64_t h = 0; h < heads; ++h) {
    auto& t = tiles[static_cast<size_t>(h)];
    for (int32_t r = 0; r < nb; ++r) {
      switch (kind) {
        case mask_kind::full:
          for (int32_t c = 0; c <= r; ++c) t.emplace_back(r, c);
          break;
        case mask_kind::diagonal: t.emplace_back(r, r); break;
        case mask_kind::random:
          for (int32_t c = 0; c <= r; ++c)
            if (rng() % 3 == 0 || c == r) t.emplace_back(r, c);
          break;
        case mask_kind::single_tile:
          if (r == nb - 1) t.emplace_back(r, static_cast<int32_t>(rng() % (r + 1)));
          break;
        case mask_kind::empty_rows:  // odd rows have no tiles at all
          if (r % 2 == 0) t.emplace_back(r, 0);
          break;
      }
    }
  }
  return block_mask::from_tiles(n, bs, tiles);
}

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
std::vector<double> block_attention_fp64(const inputs& x, const case_shape& c, int64_t h,
                                         const std::vector<uint8_t>& token_mask, int64_t bs) {
  const int64_t n = c.n, nb = (n + bs - 1) / bs, kh = h / (c.heads / c.kv_heads);
  std::vector<double> a(static_cast<size_t>(nb * nb), 0.0), s(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double mx = -INFINITY;
    for (int64_t j = 0; j <= i; ++j) {
      if (!token_mask[static_cast<size_t>((h * n + i) * n + j)]) continue;
      double dot = 0;
      for (int64_t e = 0; e < c.dim; ++e)
        dot += double(x.q[(i * c.heads + h) * c.dim + e]) * x.k[(j * c.kv_heads + kh) * c.dim + e];
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

void check_case(const case_shape& c, mask_kind kind, const char* kind_name, bool pivots) {
  SCOPED_TRACE(name_of(c, kind_name));
  inputs x(c, 1000 + static_cast<uint64_t>(c.n) * 7 + static_cast<uint64_t>(c.dim));
  const block_mask mask = make_mask(kind, c.n, c.heads, 99);
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
    for (int32_t h = 0; h < c.heads; h += 2) ba.heads.push_back(h);
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

TEST(AttentionBlockSparse, MatchesReferenceAcrossShapesAndMasks) {
  const case_shape shapes[] = {{1, 3, 1, 64},   {2, 4, 1, 128}, {127, 3, 3, 64},
                               {128, 4, 1, 64}, {129, 3, 1, 128}, {1000, 4, 4, 64}};
  const std::pair<mask_kind, const char*> kinds[] = {{mask_kind::full, "full"},
                                                     {mask_kind::diagonal, "diagonal"},
                                                     {mask_kind::random, "random"},
                                                     {mask_kind::single_tile, "single"},
                                                     {mask_kind::empty_rows, "empty_rows"}};
  for (const auto& c : shapes)
    for (const auto& [kind, name] : kinds) check_case(c, kind, name, /*pivots=*/true);
}

TEST(AttentionBlockSparse, LongRaggedSequence) {
  check_case({4224, 3, 1, 64}, mask_kind::random, "random", /*pivots=*/true);
}

TEST(AttentionBlockSparse, FullMaskEqualsDenseReference) {
  check_case({1000, 4, 1, 128}, mask_kind::full, "full", /*pivots=*/false);
}

TEST(AttentionBlockSparse, Bf16InputsWithinReferenceRoundingError) {
  const case_shape c{1000, 4, 1, 64};
  inputs x(c, 7);
  std::vector<uint16_t> qb(x.q.size()), kb(x.k.size()), vb(x.v.size());
  for (size_t i = 0; i < qb.size(); ++i) qb[i] = fp32_to_bf16(x.q[i]);
  for (size_t i = 0; i < kb.size(); ++i) kb[i] = fp32_to_bf16(x.k[i]);
  for (size_t i = 0; i < vb.size(); ++i) vb[i] = fp32_to_bf16(x.v[i]);
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
  const case_shape c{300, 4, 2, 64};
  inputs x(c, 11);
  const block_mask mask = make_mask(mask_kind::random, c.n, c.heads, 5);
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
  const case_shape c{256, 4, 2, 64};
  inputs x(c, 3);
  fp32_tensor out({c.n, c.heads, c.dim});
  thread_pool pool(1);
  const auto mask = block_mask::dense_causal(c.n, 128, c.heads);
  auto run = [&](const tensor_view& q, const tensor_view& k, const block_mask& m) {
    return error_of([&] { attention_block_sparse(out.view, {}, nullptr, q, k, x.vv, m, pool); });
  };
  std::vector<float> k3_values(static_cast<size_t>(c.n * 3 * c.dim), 0.5f);
  auto k3 = tensor_view::contiguous(k3_values.data(), dtype::f32, {c.n, 3, c.dim});
  EXPECT_NE(run(x.qv, k3, mask).find("not divisible"), std::string::npos);
  auto q_short = tensor_view::contiguous(x.q.data(), dtype::f32, {c.n - 1, c.heads, c.dim});
  EXPECT_NE(run(q_short, x.kv, mask).find("tokens"), std::string::npos);
  EXPECT_NE(run(x.qv, x.kv, block_mask::dense_causal(c.n, 128, 3)).find("mask has 3 heads"),
            std::string::npos);
  tensor_view device_q = x.qv;
  device_q.on_device = true;
  EXPECT_NE(run(device_q, x.kv, mask).find("host views"), std::string::npos);
  x.q[5 * c.heads * c.dim + 3] = NAN;
  EXPECT_NE(run(x.qv, x.kv, mask).find("q holds a non-finite value"), std::string::npos);
  x.q[5 * c.heads * c.dim + 3] = 0.5f;
  block_attention_output bad{{7}, nullptr};
  std::vector<float> a(4);
  bad.values = a.data();
  EXPECT_NE(error_of([&] { attention_block_sparse(out.view, {}, &bad, x.qv, x.kv, x.vv, mask, pool); })
                .find("out of range"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
