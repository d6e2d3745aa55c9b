// One case list and one mask maker for the attention tests of both backends, as ggml's
// test-backend-ops: tests/cpu/test_attention.cpp (attention_block_sparse) and
// tests/cuda/test_cuda_attention.cpp (cuda_attention_block_sparse) run every case of
// attention_cases() that their backend supports against the same fp64 oracle
// (attention_reference under the expanded mask), on inputs rounded to the case's dtype, so every
// reference sees the values the kernel sees. Ragged lengths 1..16384, GQA 1/3/4/8, head dims 64
// and 128, masks full / diagonal / random / single tile / empty rows / sparse, pivot heads (with
// block attention A) dense or on the case's own mask.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/error.h"
#include "shareprefill/tensor.h"
#include "test_util.h"

namespace sp::testing {

enum class mask_kind { full, diagonal, random, single_tile, empty_rows, sparse };

inline const char* mask_kind_name(mask_kind k) {
  switch (k) {
    case mask_kind::full: return "full";
    case mask_kind::diagonal: return "diagonal";
    case mask_kind::random: return "random";
    case mask_kind::single_tile: return "single_tile";
    case mask_kind::empty_rows: return "empty_rows";
    case mask_kind::sparse: return "sparse";
  }
  return "unknown";
}

struct attention_case {
  int64_t n, heads, kv_heads, dim;
  mask_kind mask;
  std::vector<int32_t> pivots;  // heads that also produce block attention A (ascending)
  dtype type = dtype::bf16;     // q/k/v values are rounded to it (f32: not rounded)
  bool fused_kv = false;        // K and V as strided views of one [N, 2*Hkv*D] buffer (CUDA)
  bool sampled = false;         // long case: only sampled rows are checked (CUDA)
  bool dense_pivots = true;     // pivot heads visit every causal tile (else they use `mask`)

  // Printed as OP(...) for filtering and bug reports; also a valid gtest parameter name.
  std::string name() const {
    std::string pivot_list;
    for (int32_t h : pivots) pivot_list += str("_", h);
    return str("attn_n", n, "_h", heads, "_hkv", kv_heads, "_d", dim, "_", mask_kind_name(mask),
               "_piv", pivot_list.empty() ? "_none" : pivot_list, dense_pivots ? "" : "_sparse",
               "_", dtype_name(type), fused_kv ? "_fusedkv" : "", sampled ? "_sampled" : "");
  }
};

// The case's mask, block size 128: pivot heads full when dense_pivots, every other head the
// case's kind (random choices from `seed`).
inline block_mask make_mask(const attention_case& c, uint64_t seed) {
  const int64_t bs = 128, nb = (c.n + bs - 1) / bs;
  std::mt19937_64 rng(seed);
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(c.heads));
  for (int64_t h = 0; h < c.heads; ++h) {
    const bool pivot = std::find(c.pivots.begin(), c.pivots.end(), h) != c.pivots.end();
    const mask_kind kind = pivot && c.dense_pivots ? mask_kind::full : c.mask;
    auto& t = tiles[static_cast<size_t>(h)];
    for (int32_t r = 0; r < nb; ++r) {
      switch (kind) {
        case mask_kind::full:
          for (int32_t col = 0; col <= r; ++col) t.emplace_back(r, col);
          break;
        case mask_kind::diagonal: t.emplace_back(r, r); break;
        case mask_kind::random:
          for (int32_t col = 0; col <= r; ++col)
            if (rng() % 3 == 0 || col == r) t.emplace_back(r, col);
          break;
        case mask_kind::single_tile:
          if (r == nb - 1) t.emplace_back(r, static_cast<int32_t>(rng() % (r + 1)));
          break;
        case mask_kind::empty_rows:  // odd rows visit nothing; even rows only the sink block
          if (r % 2 == 0) t.emplace_back(r, 0);
          break;
        case mask_kind::sparse:  // sink, diagonal and three random blocks: ~5 tiles per row
          t.emplace_back(r, 0);
          t.emplace_back(r, r);
          for (int i = 0; i < 3; ++i) t.emplace_back(r, static_cast<int32_t>(rng() % (r + 1)));
          break;
      }
    }
  }
  return block_mask::from_tiles(c.n, bs, tiles);
}

// The mask seed of a case (both backends see the same mask).
inline uint64_t mask_seed(const attention_case& c) { return 4242 + static_cast<uint64_t>(c.n); }

inline float round_to(dtype t, float x) {
  if (t == dtype::f32) return x;
  return t == dtype::bf16 ? round_to_bf16(x) : fp16_to_fp32(fp32_to_fp16(x));
}

// q [N, H, D], k and v [N, Hkv, D] fp32 values, seeded, already rounded to the case's dtype.
struct attention_inputs {
  std::vector<float> q, k, v;
  explicit attention_inputs(const attention_case& c)
      : q(random_values(c.n * c.heads * c.dim, seed_of(c), -2.0f, 2.0f)),
        k(random_values(c.n * c.kv_heads * c.dim, seed_of(c) + 1, -2.0f, 2.0f)),
        v(random_values(c.n * c.kv_heads * c.dim, seed_of(c) + 2)) {
    for (auto* x : {&q, &k, &v})
      for (float& f : *x) f = round_to(c.type, f);
  }
  static uint64_t seed_of(const attention_case& c) {
    return 7000 + static_cast<uint64_t>(c.n) * 3 + static_cast<uint64_t>(c.dim);
  }
};

// The values as 16-bit bf16 or f16 words.
inline std::vector<uint16_t> encode_all(dtype t, const std::vector<float>& x) {
  std::vector<uint16_t> e(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    e[i] = t == dtype::bf16 ? fp32_to_bf16(x[i]) : fp32_to_fp16(x[i]);
  return e;
}

// Every case of both backends; each runs those it supports (the CPU kernel: every case but the
// sampled ones, whose full oracle is too slow for the quick suite; the CUDA kernel: bf16 and f16
// inputs). The grid of short shapes x mask kinds has pivots on every other head with their own
// masks (empty rows included); the cases after it have dense pivots mixed with sparse heads.
inline std::vector<attention_case> attention_cases() {
  std::vector<attention_case> cases;
  const attention_case shapes[] = {{1, 3, 1, 64, mask_kind::full, {}},
                                   {2, 4, 1, 128, mask_kind::full, {}},
                                   {127, 3, 3, 64, mask_kind::full, {}},
                                   {128, 4, 1, 64, mask_kind::full, {}},
                                   {129, 3, 1, 128, mask_kind::full, {}},
                                   {1000, 4, 4, 64, mask_kind::full, {}}};
  const mask_kind kinds[] = {mask_kind::full, mask_kind::diagonal, mask_kind::random,
                             mask_kind::single_tile, mask_kind::empty_rows};
  for (const attention_case& s : shapes)
    for (mask_kind kind : kinds) {
      attention_case c = s;
      c.mask = kind;
      for (int32_t h = 0; h < c.heads; h += 2) c.pivots.push_back(h);
      c.dense_pivots = false;
      cases.push_back(c);
    }
  cases.push_back({1, 2, 1, 64, mask_kind::full, {}});
  cases.push_back({127, 4, 1, 128, mask_kind::full, {}});
  cases.push_back({129, 8, 1, 64, mask_kind::random, {}});
  cases.push_back({1000, 4, 4, 128, mask_kind::diagonal, {}});
  cases.push_back({1000, 4, 2, 128, mask_kind::empty_rows, {}});
  cases.push_back({1000, 4, 1, 128, mask_kind::full, {}, dtype::f32});
  cases.push_back({1000, 8, 2, 64, mask_kind::random, {1, 6}, dtype::bf16, true});
  cases.push_back({1000, 4, 2, 128, mask_kind::random, {}, dtype::f16});
  cases.push_back({4224, 2, 2, 64, mask_kind::single_tile, {}});
  cases.push_back({4224, 3, 1, 64, mask_kind::random, {0, 2}, dtype::f32, false, false, false});
  cases.push_back({4224, 4, 1, 128, mask_kind::random, {0, 2}});
  cases.push_back({16384, 8, 1, 128, mask_kind::sparse, {3}, dtype::bf16, false, true});
  cases.push_back({16384, 4, 1, 64, mask_kind::full, {}, dtype::bf16, false, true});
  // Full masks at D = 64 without pivots: the Hopper kernel's causal walk (items of 192 rows)
  // at lengths around its item edges, GQA 1/3/6, f16 and a fused K/V buffer.
  cases.push_back({191, 3, 3, 64, mask_kind::full, {}});
  cases.push_back({193, 6, 1, 64, mask_kind::full, {}, dtype::f16});
  cases.push_back({577, 9, 3, 64, mask_kind::full, {}, dtype::bf16, true});
  return cases;
}

// The tiles of `m` in the query blocks below the block of token `end` (exclusive), as a mask over
// `end` tokens: the keys a chunk prefill of [.., end) sees, for comparing against one-shot rows.
inline block_mask prefix_mask(const block_mask& m, int64_t end) {
  const int32_t nb = static_cast<int32_t>((end + m.block_size - 1) / m.block_size);
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(m.heads));
  for (int64_t h = 0; h < m.heads; ++h)
    for (const tile& t : m.tiles_of(h))
      if (t.first < nb) tiles[static_cast<size_t>(h)].push_back(t);
  return block_mask::from_tiles(end, m.block_size, tiles);
}

}  // namespace sp::testing
