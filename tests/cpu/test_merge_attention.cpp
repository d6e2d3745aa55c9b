// merge_attention_states: attention over two disjoint key sets, each from the fp64 oracle with a
// token mask, merged by LSE, against the oracle over the union; ragged sizes, GQA 1/3/4, rows
// with no key in one or both sets, output dtypes, aliasing and bad views.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "shareprefill/attention.h"
#include "shareprefill/merge_attention.h"
#include "shareprefill/thread_pool.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::error_of;
using testing::random_values;

struct partial {
  std::vector<float> o, lse;
  tensor_view ov, lv;
  partial(int64_t n, int64_t heads, int64_t dim)
      : o(static_cast<size_t>(n * heads * dim)), lse(static_cast<size_t>(heads * n)) {
    ov = tensor_view::contiguous(o.data(), dtype::f32, {n, heads, dim});
    lv = tensor_view::contiguous(lse.data(), dtype::f32, {heads, n});
  }
};

struct merge_case {
  int64_t n, heads, kv_heads, dim;
};

// Oracle attention of every head over the keys j with in_set(j) (and j <= i).
template <class F>
partial oracle(const merge_case& c, const tensor_view& q, const tensor_view& k,
               const tensor_view& v, F in_set) {
  std::vector<uint8_t> mask(static_cast<size_t>(c.heads * c.n * c.n));
  for (int64_t h = 0; h < c.heads; ++h)
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t j = 0; j < c.n; ++j)
        mask[static_cast<size_t>((h * c.n + i) * c.n + j)] = in_set(i, j) ? 1 : 0;
  partial p(c.n, c.heads, c.dim);
  attention_reference(p.ov, p.lv, q, k, v, mask.data());
  return p;
}

class MergeAttention : public ::testing::TestWithParam<merge_case> {};

TEST_P(MergeAttention, SplitKeysMergeToTheUnion) {
  const merge_case c = GetParam();
  const auto qs = random_values(c.n * c.heads * c.dim, 11, -2.0f, 2.0f);
  const auto ks = random_values(c.n * c.kv_heads * c.dim, 12, -2.0f, 2.0f);
  const auto vs = random_values(c.n * c.kv_heads * c.dim, 13);
  const auto q = tensor_view::contiguous(qs.data(), dtype::f32, {c.n, c.heads, c.dim});
  const auto k = tensor_view::contiguous(ks.data(), dtype::f32, {c.n, c.kv_heads, c.dim});
  const auto v = tensor_view::contiguous(vs.data(), dtype::f32, {c.n, c.kv_heads, c.dim});
  const int64_t split = c.n / 2;
  // Two splits: a prefix/suffix of the keys (rows before `split` see no key of the suffix),
  // and keys by parity (disjoint sets that interleave).
  const partial full = oracle(c, q, k, v, [](int64_t i, int64_t j) { return j <= i; });
  for (int split_kind = 0; split_kind < 2; ++split_kind) {
    auto in_a = [&](int64_t i, int64_t j) {
      return j <= i && (split_kind == 0 ? j < split : j % 2 == 0);
    };
    const partial a = oracle(c, q, k, v, in_a);
    const partial b = oracle(c, q, k, v, [&](int64_t i, int64_t j) { return j <= i && !in_a(i, j); });
    partial merged(c.n, c.heads, c.dim), pooled(c.n, c.heads, c.dim);
    merge_attention_states(merged.ov, merged.lv, a.ov, a.lv, b.ov, b.lv);
    thread_pool pool(3);  // blocks of 64 rows in parallel: the serial result, bit for bit
    merge_attention_states(pooled.ov, pooled.lv, a.ov, a.lv, b.ov, b.lv, &pool);
    ASSERT_EQ(pooled.o, merged.o);
    ASSERT_EQ(pooled.lse, merged.lse);
    for (size_t x = 0; x < full.o.size(); ++x)
      ASSERT_NEAR(merged.o[x], full.o[x], 2e-6 * (1.0 + std::fabs(full.o[x])))
          << "split " << split_kind << " element " << x;
    for (size_t x = 0; x < full.lse.size(); ++x)
      ASSERT_NEAR(merged.lse[x], full.lse[x], 2e-6 * (1.0 + std::fabs(full.lse[x])))
          << "split " << split_kind << " lse " << x;
  }
}

INSTANTIATE_TEST_SUITE_P(Ragged, MergeAttention,
                         ::testing::Values(merge_case{1, 1, 1, 8}, merge_case{127, 3, 1, 16},
                                           merge_case{129, 4, 4, 64}, merge_case{200, 8, 2, 32},
                                           merge_case{300, 2, 1, 16}));

TEST(MergeAttentionStates, RowsWithoutKeysGiveZeroAndMinusInf) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> oa = {1, 2, 3, 4}, ob = {5, 6, 7, 8}, la = {-inf, 0.5f}, lb = {-inf, -inf};
  std::vector<float> o(4, 9.0f), l(2, 9.0f);
  auto view = [](std::vector<float>& x) {
    return tensor_view::contiguous(x.data(), dtype::f32, {2, 1, 2});
  };
  auto lse = [](std::vector<float>& x) { return tensor_view::contiguous(x.data(), dtype::f32, {1, 2}); };
  merge_attention_states(view(o), lse(l), view(oa), lse(la), view(ob), lse(lb));
  EXPECT_EQ(o[0], 0.0f);
  EXPECT_EQ(o[1], 0.0f);
  EXPECT_EQ(l[0], -inf);
  EXPECT_FLOAT_EQ(o[2], 3.0f);  // row 1: only a has keys
  EXPECT_FLOAT_EQ(o[3], 4.0f);
  EXPECT_FLOAT_EQ(l[1], 0.5f);
}

TEST(MergeAttentionStates, OutputMayAliasAnInputAndBeBf16) {
  const int64_t n = 5, h = 2, d = 4;
  auto oa = random_values(n * h * d, 1), ob = random_values(n * h * d, 2);
  auto la = random_values(h * n, 3, -3.0f, 3.0f), lb = random_values(h * n, 4, -3.0f, 3.0f);
  std::vector<float> expect(oa.size()), expect_lse(la.size());
  auto view = [&](std::vector<float>& x) { return tensor_view::contiguous(x.data(), dtype::f32, {n, h, d}); };
  auto lse = [&](std::vector<float>& x) { return tensor_view::contiguous(x.data(), dtype::f32, {h, n}); };
  merge_attention_states(view(expect), lse(expect_lse), view(oa), lse(la), view(ob), lse(lb));
  std::vector<uint16_t> out_bf16(oa.size());
  const auto bf = tensor_view::contiguous(out_bf16.data(), dtype::bf16, {n, h, d});
  merge_attention_states(bf, lse(la), view(oa), lse(la), view(ob), lse(lb));  // lse aliases a
  for (size_t x = 0; x < expect.size(); ++x)
    EXPECT_EQ(out_bf16[x], fp32_to_bf16(expect[x])) << x;
  for (size_t x = 0; x < expect_lse.size(); ++x) EXPECT_EQ(la[x], expect_lse[x]) << x;
}

TEST(MergeAttentionStates, BadViewsAreNamed) {
  std::vector<float> o(24), l(6);
  const auto ov = tensor_view::contiguous(o.data(), dtype::f32, {3, 2, 4});
  const auto lv = tensor_view::contiguous(l.data(), dtype::f32, {2, 3});
  const auto wrong = tensor_view::contiguous(o.data(), dtype::f32, {2, 3, 4});
  const auto lse_wrong = tensor_view::contiguous(l.data(), dtype::f32, {3, 2});
  EXPECT_NE(error_of([&] { merge_attention_states(ov, lv, ov, lv, wrong, lv); }).find("o_b has shape"),
            std::string::npos);
  EXPECT_NE(error_of([&] { merge_attention_states(ov, lv, ov, lse_wrong, ov, lv); }).find("lse_a"),
            std::string::npos);
  tensor_view dev = ov;
  dev.on_device = true;
  EXPECT_NE(error_of([&] { merge_attention_states(ov, lv, ov, lv, dev, lv); }).find("device"),
            std::string::npos);
  l[4] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of([&] { merge_attention_states(ov, lv, ov, lv, ov, lv); }).find("lse of head 1"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
