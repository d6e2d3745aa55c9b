// Serving shapes on the CPU (issue 16): chunked prefill (queries [s, s + c), keys [0, s + c))
// against the matching rows of the one-shot call on the same tiles, bit for bit (same tiles in
// the same order per row, so the fp32 arithmetic is identical), with a dense plan and with a
// random plan plus pivot heads (block attention A rows); varlen batches against per-sequence
// calls, bit for bit; the batch plan's schedule; and the errors for bad offsets and bad
// cu_seqlens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>
#include <random>

#include "shareprefill/attention.h"
#include "shareprefill/varlen_plan.h"
#include "attention_cases.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::prefix_mask;
using testing::error_of;
using testing::random_values;

constexpr int64_t bs = 128;

bool same_bits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}

// Random tiles per head over n tokens (diagonal always, about a third of the others).
block_mask random_mask(int64_t n, int64_t heads, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t nb = (n + bs - 1) / bs;
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(heads));
  for (auto& t : tiles)
    for (int32_t r = 0; r < nb; ++r)
      for (int32_t c = 0; c <= r; ++c)
        if (c == r || rng() % 3 == 0) t.emplace_back(r, c);
  return block_mask::from_tiles(n, bs, tiles);
}

struct chunk_case {
  int64_t n, heads, kv_heads, dim, chunk;
  bool dense;
  std::vector<int32_t> pivots;
};

void run_chunked(const chunk_case& c) {
  SCOPED_TRACE(str("n=", c.n, " H=", c.heads, "/", c.kv_heads, " D=", c.dim, " chunk=", c.chunk,
                   c.dense ? " dense" : " random"));
  const auto q = random_values(c.n * c.heads * c.dim, 11 + c.n, -2.0f, 2.0f);
  const auto k = random_values(c.n * c.kv_heads * c.dim, 12 + c.n, -2.0f, 2.0f);
  const auto v = random_values(c.n * c.kv_heads * c.dim, 13 + c.n);
  const block_mask full =
      c.dense ? block_mask::dense_causal(c.n, bs, c.heads) : random_mask(c.n, c.heads, 77 + c.n);
  const int64_t nb = full.n_blocks, np = static_cast<int64_t>(c.pivots.size());
  thread_pool pool(2);
  std::vector<float> out(q.size()), lse(static_cast<size_t>(c.heads * c.n));
  std::vector<float> a(static_cast<size_t>(np * nb * nb));
  block_attention_output ba{c.pivots, a.data()};
  attention_block_sparse(tensor_view::contiguous(out.data(), dtype::f32, {c.n, c.heads, c.dim}),
                         tensor_view::contiguous(lse.data(), dtype::f32, {c.heads, c.n}), &ba,
                         tensor_view::contiguous(q.data(), dtype::f32, {c.n, c.heads, c.dim}),
                         tensor_view::contiguous(k.data(), dtype::f32, {c.n, c.kv_heads, c.dim}),
                         tensor_view::contiguous(v.data(), dtype::f32, {c.n, c.kv_heads, c.dim}),
                         full, pool);
  for (int64_t s = 0; s < c.n; s += c.chunk) {
    const int64_t end = std::min(c.n, s + c.chunk), rows = end - s;
    const block_mask m =
        c.dense ? block_mask::dense_causal(end, bs, c.heads) : prefix_mask(full, end);
    const int64_t mb = m.n_blocks;
    std::vector<float> o(static_cast<size_t>(rows * c.heads * c.dim), -7.0f);
    std::vector<float> l(static_cast<size_t>(c.heads * rows), -7.0f);
    std::vector<float> ca(static_cast<size_t>(np * mb * mb), -7.0f);
    block_attention_output cba{c.pivots, ca.data()};
    attention_block_sparse(
        tensor_view::contiguous(o.data(), dtype::f32, {rows, c.heads, c.dim}),
        tensor_view::contiguous(l.data(), dtype::f32, {c.heads, rows}), &cba,
        tensor_view::contiguous(q.data() + s * c.heads * c.dim, dtype::f32, {rows, c.heads, c.dim}),
        tensor_view::contiguous(k.data(), dtype::f32, {end, c.kv_heads, c.dim}),
        tensor_view::contiguous(v.data(), dtype::f32, {end, c.kv_heads, c.dim}), m, pool, s);
    EXPECT_TRUE(same_bits(o.data(), out.data() + s * c.heads * c.dim, rows * c.heads * c.dim))
        << "chunk at " << s;
    for (int64_t h = 0; h < c.heads; ++h)
      EXPECT_TRUE(same_bits(l.data() + h * rows, lse.data() + h * c.n + s, rows))
          << "lse of head " << h << ", chunk at " << s;
    for (int64_t p = 0; p < np; ++p)
      for (int64_t r = s / bs; r < mb; ++r)  // the chunk's rows of A; its columns < mb
        EXPECT_TRUE(same_bits(ca.data() + (p * mb + r) * mb, a.data() + (p * nb + r) * nb, mb))
            << "A row " << r << " of pivot " << p << ", chunk at " << s;
  }
}

TEST(AttentionChunked, DensePlanEqualsOneShotRows) {
  run_chunked({1000, 4, 2, 64, 256, true, {}});
  run_chunked({129, 3, 1, 128, 128, true, {}});
  run_chunked({4224, 2, 2, 64, 1024, true, {}});
}

TEST(AttentionChunked, RandomPlanWithPivotsEqualsOneShotRows) {
  run_chunked({1000, 4, 1, 64, 384, false, {0, 3}});
  run_chunked({1, 2, 1, 64, 128, false, {1}});
  run_chunked({777, 8, 2, 128, 128, false, {2}});
}

TEST(AttentionChunked, RejectsBadOffsetsAndShapes) {
  const int64_t n = 300, h = 2, d = 64;
  const auto x = random_values(n * h * d, 5);
  std::vector<float> o(x.size()), l(static_cast<size_t>(h * n));
  thread_pool pool(1);
  const block_mask m = block_mask::dense_causal(n, bs, h);
  auto view = [&](const float* p, int64_t rows) {
    return tensor_view::contiguous(p, dtype::f32, {rows, h, d});
  };
  auto run = [&](int64_t rows, int64_t offset) {
    attention_block_sparse(tensor_view::contiguous(o.data(), dtype::f32, {rows, h, d}), {}, nullptr,
                           view(x.data(), rows), view(x.data(), n), view(x.data(), n), m, pool,
                           offset);
  };
  EXPECT_NE(error_of([&] { run(200, 100); }).find("not a multiple of the block size"),
            std::string::npos);
  EXPECT_NE(error_of([&] { run(100, 128); }).find("expected 228"), std::string::npos);
  EXPECT_NE(error_of([&] { run(300, -128); }).find("query_offset=-128"), std::string::npos);
  EXPECT_EQ(error_of([&] { run(172, 128); }), "");
}

// Packed q/k/v of a batch and a mask per sequence.
struct batch {
  int64_t heads = 4, kv_heads = 2, dim = 64, total = 0;
  std::vector<int32_t> cu;
  std::vector<float> q, k, v;
  std::vector<block_mask> masks;
  explicit batch(const std::vector<int32_t>& lens) : cu{0} {
    for (int32_t len : lens) cu.push_back(cu.back() + len);
    total = cu.back();
    q = random_values(total * heads * dim, 21, -2.0f, 2.0f);
    k = random_values(total * kv_heads * dim, 22, -2.0f, 2.0f);
    v = random_values(total * kv_heads * dim, 23);
    for (size_t b = 0; b < lens.size(); ++b) masks.push_back(random_mask(lens[b], heads, 90 + b));
  }
  tensor_view qv(int64_t t0, int64_t n) const {
    return tensor_view::contiguous(q.data() + t0 * heads * dim, dtype::f32, {n, heads, dim});
  }
  tensor_view kv(const std::vector<float>& x, int64_t t0, int64_t n) const {
    return tensor_view::contiguous(x.data() + t0 * kv_heads * dim, dtype::f32, {n, kv_heads, dim});
  }
};

TEST(AttentionVarlen, EqualsPerSequenceCallsBitwise) {
  const batch b({1000, 1, 129, 300, 127, 4224});
  thread_pool pool(2);
  std::vector<float> out(b.q.size(), -7.0f), lse(static_cast<size_t>(b.heads * b.total), -7.0f);
  attention_block_sparse_varlen(
      tensor_view::contiguous(out.data(), dtype::f32, {b.total, b.heads, b.dim}),
      tensor_view::contiguous(lse.data(), dtype::f32, {b.heads, b.total}), b.qv(0, b.total),
      b.kv(b.k, 0, b.total), b.kv(b.v, 0, b.total), b.cu, b.masks, pool);
  for (size_t s = 0; s + 1 < b.cu.size(); ++s) {
    const int64_t t0 = b.cu[s], n = b.cu[s + 1] - t0;
    std::vector<float> o(static_cast<size_t>(n * b.heads * b.dim)),
        l(static_cast<size_t>(b.heads * n));
    attention_block_sparse(tensor_view::contiguous(o.data(), dtype::f32, {n, b.heads, b.dim}),
                           tensor_view::contiguous(l.data(), dtype::f32, {b.heads, n}), nullptr,
                           b.qv(t0, n), b.kv(b.k, t0, n), b.kv(b.v, t0, n), b.masks[s], pool);
    EXPECT_TRUE(same_bits(o.data(), out.data() + t0 * b.heads * b.dim, n * b.heads * b.dim))
        << "sequence " << s;
    for (int64_t h = 0; h < b.heads; ++h)
      EXPECT_TRUE(same_bits(l.data() + h * n, lse.data() + h * b.total + t0, n))
          << "lse of sequence " << s << " head " << h;
  }
}

TEST(AttentionVarlen, PlanScheduleIsLongestFirstAndCoversEveryItem) {
  const batch b({1000, 1, 129, 4224});
  const varlen_plan plan = varlen_plan_build(b.cu, b.masks);
  int64_t expected_items = 0;
  for (const block_mask& m : b.masks) expected_items += m.heads * m.n_blocks;
  ASSERT_EQ(plan.work_items(), expected_items);
  std::vector<std::vector<int>> seen(b.masks.size());
  for (size_t s = 0; s < b.masks.size(); ++s)
    seen[s].assign(static_cast<size_t>(b.heads * b.masks[s].n_blocks), 0);
  int64_t previous = INT64_MAX;
  for (int64_t i = 0; i < plan.work_items(); ++i) {
    const int32_t s = plan.item_sequence[static_cast<size_t>(i)];
    const int32_t h = plan.schedule[2 * i], r = plan.schedule[2 * i + 1];
    const varlen_sequence& seq = plan.sequences[static_cast<size_t>(s)];
    const int64_t* rp = plan.row_ptr.data() + seq.row_ptr0 + h * (seq.n_blocks + 1) + r;
    const int64_t tiles = rp[1] - rp[0];
    EXPECT_EQ(tiles, b.masks[static_cast<size_t>(s)].row_end(h, r) -
                         b.masks[static_cast<size_t>(s)].row_begin(h, r));
    EXPECT_LE(tiles, previous) << "item " << i;
    previous = tiles;
    ++seen[static_cast<size_t>(s)][static_cast<size_t>(h * seq.n_blocks + r)];
  }
  for (const auto& v : seen)
    for (int count : v) EXPECT_EQ(count, 1);
}

TEST(AttentionVarlen, PlanScheduleBandsKeepASequenceTogether) {
  const batch b({4224, 1000, 4224, 129});
  const int64_t band = 8;
  const varlen_plan plan = varlen_plan_build(b.cu, b.masks, band);
  const varlen_plan plain = varlen_plan_build(b.cu, b.masks);
  ASSERT_EQ(plan.work_items(), plain.work_items());
  std::vector<std::tuple<int32_t, int32_t, int32_t>> banded, longest;
  int64_t previous_band = INT64_MAX, previous_seq = -1, previous_tiles = INT64_MAX;
  for (int64_t i = 0; i < plan.work_items(); ++i) {
    const int32_t s = plan.item_sequence[static_cast<size_t>(i)];
    const int32_t h = plan.schedule[2 * i], r = plan.schedule[2 * i + 1];
    const block_mask& m = b.masks[static_cast<size_t>(s)];
    const int64_t tiles = m.row_end(h, r) - m.row_begin(h, r), this_band = tiles / band;
    ASSERT_LE(this_band, previous_band) << "item " << i;
    if (this_band == previous_band) {
      ASSERT_GE(s, previous_seq) << "item " << i << ": sequences within a band in order";
      if (s == previous_seq) EXPECT_LE(tiles, previous_tiles) << "item " << i;
    }
    previous_band = this_band, previous_seq = s, previous_tiles = tiles;
    banded.emplace_back(s, h, r);
    longest.emplace_back(plain.item_sequence[static_cast<size_t>(i)], plain.schedule[2 * i],
                         plain.schedule[2 * i + 1]);
  }
  std::sort(banded.begin(), banded.end());
  std::sort(longest.begin(), longest.end());
  EXPECT_EQ(banded, longest) << "the same items, reordered";
  EXPECT_THROW(varlen_plan_build(b.cu, b.masks, 0), error);
}

TEST(AttentionVarlen, RejectsBadCuSeqlens) {
  const batch b({100, 200});
  thread_pool pool(1);
  std::vector<float> out(b.q.size());
  auto run = [&](const std::vector<int32_t>& cu, const std::vector<block_mask>& masks) {
    return error_of([&] {
      attention_block_sparse_varlen(
          tensor_view::contiguous(out.data(), dtype::f32, {b.total, b.heads, b.dim}), {},
          b.qv(0, b.total), b.kv(b.k, 0, b.total), b.kv(b.v, 0, b.total), cu, masks, pool);
    });
  };
  EXPECT_NE(run({0, 200, 100, 300}, b.masks).find("not ascending"), std::string::npos);
  EXPECT_NE(run({0, 100, 400}, b.masks).find("past the end"), std::string::npos);
  EXPECT_NE(run({0, 100, 100, 300}, b.masks).find("sequence 1 is empty"), std::string::npos);
  EXPECT_NE(run({5, 100, 300}, b.masks).find("cu_seqlens[0] = 5"), std::string::npos);
  EXPECT_NE(run({0}, {}).find("B + 1 >= 2"), std::string::npos);
  EXPECT_NE(run({0, 100, 250}, b.masks).find("ends at 250"), std::string::npos);
  EXPECT_NE(run({0, 100, 300}, {b.masks[0]}).find("1 masks for 2 sequences"), std::string::npos);
  EXPECT_NE(run({0, 200, 300}, b.masks).find("mask of sequence 0 is for 100 tokens"),
            std::string::npos);
  EXPECT_EQ(run(b.cu, b.masks), "");
}

}  // namespace
}  // namespace sp
