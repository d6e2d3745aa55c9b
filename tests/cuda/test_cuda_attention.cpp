// CUDA block-sparse attention on the shared cases of tests/attention_cases.h (the CPU test runs
// the same list) against the fp64 oracle attention_reference (expanded token mask) and a
// tile-walking fp64 reference: ragged lengths 1..16384, GQA 1/3/4/8, head dims 64/128, bf16 and
// fp16, masks full / diagonal / random / single tile / empty rows / sparse, pivot heads with
// block attention A (dense or sparse), K/V as strided views of a fused buffer. Outputs are
// poisoned before the launch and guarded after, and reruns must be bitwise identical. Every case
// runs on both kernels (cuda_attention_options: portable, hopper with one CTA per SM and with a
// 3-CTA grid, where full masks at D = 64 take the causal walk, and hopper on the plan's items
// throughout); a kernel the build or device cannot run is skipped, as is everything without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>
#include <memory>
#include <random>

#include "shareprefill/attention.h"
#include "shareprefill/cuda_attention.h"
#include "attention_cases.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::attention_case;
using testing::attention_inputs;
using testing::encode_all;
using testing::make_mask;
using testing::mask_kind;
using testing::round_to;

float decode(dtype t, uint16_t x) { return t == dtype::bf16 ? bf16_to_fp32(x) : fp16_to_fp32(x); }

constexpr size_t guard_bytes = 4096;
constexpr uint8_t poison = 0xff;  // NaN in bf16, fp16 and fp32

struct cuda_output {
  std::vector<float> out, lse, a;
  std::vector<uint8_t> raw_out;  // bytes as written, for the rerun comparison
};

// Downloads a poisoned+guarded buffer: checks the guard and returns the payload bytes.
std::vector<uint8_t> fetch_checked(const device_buffer& b, size_t payload, const char* what) {
  std::vector<uint8_t> all(b.size());
  b.download(all.data(), all.size());
  for (size_t i = payload; i < all.size(); ++i)
    if (all[i] != poison) {
      ADD_FAILURE() << what << ": guard byte " << i - payload << " past the end overwritten";
      break;
    }
  all.resize(payload);
  return all;
}

// A [n, heads, dim] device view with heads contiguous in a token of `token_stride` elements.
tensor_view device_rows(const void* data, dtype type, int64_t n, int64_t heads, int64_t dim,
                        int64_t token_stride) {
  tensor_view t = tensor_view::contiguous(data, type, {n, heads, dim});
  t.stride[0] = token_stride;
  t.on_device = true;
  return t;
}

tensor_view device_contiguous(void* data, std::initializer_list<int64_t> shape) {
  tensor_view t = tensor_view::contiguous(data, dtype::f32, shape);
  t.on_device = true;
  return t;
}

cuda_output run_cuda(const attention_case& c, const attention_inputs& x, const block_mask& mask,
                     const cuda_attention_options& options) {
  const int64_t hd = c.heads * c.dim, kvd = c.kv_heads * c.dim, nb = mask.n_blocks;
  const auto q16 = encode_all(c.type, x.q), k16 = encode_all(c.type, x.k), v16 = encode_all(c.type, x.v);
  device_buffer dq(q16.size() * 2), dk, dv, dkv;
  dq.upload(q16.data(), dq.size());
  const tensor_view q = device_rows(dq.data(), c.type, c.n, c.heads, c.dim, hd);
  tensor_view k, v;
  if (c.fused_kv) {  // token row = [K heads | V heads]
    std::vector<uint16_t> fused(static_cast<size_t>(c.n * 2 * kvd));
    for (int64_t i = 0; i < c.n; ++i) {
      std::copy_n(&k16[i * kvd], kvd, &fused[i * 2 * kvd]);
      std::copy_n(&v16[i * kvd], kvd, &fused[i * 2 * kvd + kvd]);
    }
    dkv = device_buffer(fused.size() * 2);
    dkv.upload(fused.data(), dkv.size());
    k = device_rows(dkv.data(), c.type, c.n, c.kv_heads, c.dim, 2 * kvd);
    v = device_rows(static_cast<const uint16_t*>(dkv.data()) + kvd, c.type, c.n, c.kv_heads,
                    c.dim, 2 * kvd);
  } else {
    dk = device_buffer(k16.size() * 2);
    dv = device_buffer(v16.size() * 2);
    dk.upload(k16.data(), dk.size());
    dv.upload(v16.data(), dv.size());
    k = device_rows(dk.data(), c.type, c.n, c.kv_heads, c.dim, kvd);
    v = device_rows(dv.data(), c.type, c.n, c.kv_heads, c.dim, kvd);
  }
  const size_t out_bytes = static_cast<size_t>(c.n * hd) * 2, lse_bytes = static_cast<size_t>(c.heads * c.n) * 4;
  const int64_t pivots = static_cast<int64_t>(c.pivots.size());
  const size_t a_bytes = static_cast<size_t>(pivots * nb * nb) * 4;
  device_buffer dout(out_bytes + guard_bytes), dlse(lse_bytes + guard_bytes), da(a_bytes + guard_bytes);
  dout.fill_bytes(poison);
  dlse.fill_bytes(poison);
  da.fill_bytes(poison);
  const device_layer_plan plan(mask, c.pivots);
  cuda_attention_block_sparse(device_rows(dout.data(), c.type, c.n, c.heads, c.dim, hd),
                              device_contiguous(dlse.data(), {c.heads, c.n}),
                              pivots > 0 ? device_contiguous(da.data(), {pivots, nb, nb})
                                         : tensor_view{},
                              q, k, v, plan.plan(), plan.scratch(), options);
  cuda_synchronize();

  cuda_output r;
  r.raw_out = fetch_checked(dout, out_bytes, "out");
  const auto lse_raw = fetch_checked(dlse, lse_bytes, "lse");
  const auto a_raw = fetch_checked(da, a_bytes, "block_attention");
  r.out.resize(static_cast<size_t>(c.n * hd));
  for (size_t i = 0; i < r.out.size(); ++i) {
    uint16_t e;
    std::memcpy(&e, &r.raw_out[2 * i], 2);
    r.out[i] = decode(c.type, e);
  }
  r.lse.resize(static_cast<size_t>(c.heads * c.n));
  std::memcpy(r.lse.data(), lse_raw.data(), lse_bytes);
  r.a.resize(a_bytes / 4);
  std::memcpy(r.a.data(), a_raw.data(), a_bytes);
  return r;
}

// Tile-walking fp64 reference of one (head, row), independent of the kernel: visits the row's
// tiles with the causal rule. Also gives the emulated-precision output (P and O rounded to the
// kernel's dtype, the FA3 `ref_bf16`) and the row's probability mass per key block.
struct row_reference {
  std::vector<double> out, out_rounded, mass;  // [D], [D], [nb]
  double lse = -std::numeric_limits<double>::infinity();
};

row_reference reference_row(const attention_case& c, const attention_inputs& x, const block_mask& m, int64_t h,
                            int64_t i) {
  const int64_t d = c.dim, kh = h / (c.heads / c.kv_heads), r = i / 128;
  row_reference ref;
  ref.out.assign(static_cast<size_t>(d), 0.0);
  ref.out_rounded.assign(static_cast<size_t>(d), 0.0);
  ref.mass.assign(static_cast<size_t>(m.n_blocks), 0.0);
  std::vector<std::pair<int64_t, double>> scores;
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t t = m.row_begin(h, r); t < m.row_end(h, r); ++t) {
    const int64_t col = m.col_idx[static_cast<size_t>(t)];
    for (int64_t j = col * 128; j < std::min({col * 128 + 128, i + 1, c.n}); ++j) {
      double dot = 0.0;
      for (int64_t e = 0; e < d; ++e)
        dot += double(x.q[(i * c.heads + h) * d + e]) * x.k[(j * c.kv_heads + kh) * d + e];
      scores.emplace_back(j, dot / std::sqrt(double(d)));
      mx = std::max(mx, scores.back().second);
    }
  }
  if (scores.empty()) return ref;
  double sum = 0.0;
  for (auto& [j, s] : scores) sum += std::exp(s - mx);
  ref.lse = mx + std::log(sum);
  for (auto& [j, s] : scores) {
    const double p = std::exp(s - mx), p_rounded = round_to(c.type, static_cast<float>(p));
    ref.mass[static_cast<size_t>(j / 128)] += p / sum;
    for (int64_t e = 0; e < d; ++e) {
      const double ve = x.v[(j * c.kv_heads + kh) * d + e];
      ref.out[static_cast<size_t>(e)] += p * ve / sum;
      ref.out_rounded[static_cast<size_t>(e)] += p_rounded * ve;
    }
  }
  for (auto& o : ref.out_rounded) o = round_to(c.type, static_cast<float>(o / sum));
  return ref;
}

// Tolerances (each measured against the fp64 reference on the kernel's own rounded inputs):
// - out: the FA3 rule max|out - ref| <= 2 * max|ref_rounded - ref| + atol, where ref_rounded
//   rounds P and O to the kernel's 16-bit dtype as the kernel does; atol covers fp32 summation
//   over up to 16384 terms of magnitude <= 1 (random walk: sqrt(16384) * 2^-24 ≈ 8e-6).
constexpr double out_atol = 1e-5;
// - lse: fp32 dot products of D terms in [-2, 2]: D * 2^-24 * (D * 4) / sqrt(D) ≈ 3.5e-4 at
//   D = 128 in the worst case, plus lg2/ex2.approx (2^-22 relative).
constexpr double lse_tol = 5e-4;
// - A: fp32 probabilities (not rounded to 16 bits) summed per block: ~1e-6 relative error per
//   mass; 1e-4 absolute on values in [0, 1] still catches any misplaced or unnormalised tile.
constexpr double a_tol = 1e-4;

// What a case must produce, independent of the kernel configuration: inputs, mask, the rows
// to check and their fp64 references. Computed once per case and shared by every
// configuration (the references dominate the test's run time).
struct expectation {
  attention_inputs x;
  block_mask mask;
  std::vector<int64_t> rows;       // rows to check: all, or three query blocks plus 64 random
  std::vector<bool> full_block;    // [nb]: every row checked (A is compared there)
  std::vector<row_reference> refs;  // [heads, rows]
  double oracle_gap = 0.0;         // tile-walking reference vs attention_reference (full cases)

  explicit expectation(const attention_case& c) : x(c), mask(make_mask(c, mask_seed(c))) {
    const int64_t nb = mask.n_blocks, d = c.dim;
    full_block.assign(static_cast<size_t>(nb), !c.sampled);
    if (!c.sampled) {
      for (int64_t i = 0; i < c.n; ++i) rows.push_back(i);
    } else {
      for (int64_t r : {int64_t{0}, nb / 2, nb - 1}) {
        full_block[static_cast<size_t>(r)] = true;
        for (int64_t i = r * 128; i < std::min(c.n, r * 128 + 128); ++i) rows.push_back(i);
      }
      std::mt19937_64 rng(5);
      for (int i = 0; i < 64; ++i) rows.push_back(static_cast<int64_t>(rng() % c.n));
      std::sort(rows.begin(), rows.end());
      rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    }
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i : rows) refs.push_back(reference_row(c, x, mask, h, i));
    if (c.sampled) return;
    // The oracle on full cases; the tile-walking reference must agree with it.
    fp32_tensor oracle({c.n, c.heads, d}), oracle_lse({c.heads, c.n});
    std::vector<uint8_t> token_mask;
    for (int64_t h = 0; h < c.heads; ++h) {
      const auto t = mask.expand_to_token_mask(h);
      token_mask.insert(token_mask.end(), t.begin(), t.end());
    }
    attention_reference(oracle.view, oracle_lse.view,
                        tensor_view::contiguous(x.q.data(), dtype::f32, {c.n, c.heads, d}),
                        tensor_view::contiguous(x.k.data(), dtype::f32, {c.n, c.kv_heads, d}),
                        tensor_view::contiguous(x.v.data(), dtype::f32, {c.n, c.kv_heads, d}),
                        token_mask.data());
    for (int64_t h = 0; h < c.heads; ++h)
      for (size_t ri = 0; ri < rows.size(); ++ri) {
        const row_reference& ref = refs[static_cast<size_t>(h) * rows.size() + ri];
        for (int64_t e = 0; e < d; ++e) {
          const size_t at = static_cast<size_t>((rows[ri] * c.heads + h) * d + e);
          oracle_gap = std::max(oracle_gap, std::fabs(oracle.values[at] - ref.out[static_cast<size_t>(e)]));
        }
      }
  }
};

const expectation& expectation_of(const attention_case& c) {
  static std::map<std::string, std::unique_ptr<expectation>> cache;
  auto& slot = cache[c.name()];
  if (!slot) slot = std::make_unique<expectation>(c);
  return *slot;
}

void check_case(const attention_case& c, const cuda_attention_options& options) {
  SCOPED_TRACE(c.name() + " kernel " + cuda_kernel_name(cuda_attention_kernel(options)) + " ctas " +
               std::to_string(options.ctas) + (options.causal_kernel ? "" : " plan items only"));
  const expectation& want = expectation_of(c);
  const attention_inputs& x = want.x;
  const block_mask& mask = want.mask;
  const std::vector<int64_t>& rows = want.rows;
  const std::vector<bool>& full_block = want.full_block;
  const int64_t nb = mask.n_blocks, d = c.dim;
  const cuda_output got = run_cuda(c, x, mask, options);
  for (size_t i = 0; i < got.out.size(); ++i)
    ASSERT_FALSE(std::isnan(got.out[i])) << "out element " << i << " never written";
  // The kernel writes every column of a pivot row of A (no clearing before the launch).
  for (size_t i = 0; i < got.a.size(); ++i)
    ASSERT_FALSE(std::isnan(got.a[i])) << "block_attention element " << i << " never written";

  double out_err = 0.0, rounding_err = 0.0, lse_err = 0.0;
  std::vector<double> a_ref(c.pivots.size() * static_cast<size_t>(nb * nb), 0.0);
  for (int64_t h = 0; h < c.heads; ++h) {
    const auto pivot_it = std::find(c.pivots.begin(), c.pivots.end(), h);
    const int64_t slot = pivot_it == c.pivots.end() ? -1 : pivot_it - c.pivots.begin();
    for (size_t ri = 0; ri < rows.size(); ++ri) {
      const int64_t i = rows[ri];
      const row_reference& ref = want.refs[static_cast<size_t>(h) * rows.size() + ri];
      for (int64_t e = 0; e < d; ++e) {
        const size_t at = static_cast<size_t>((i * c.heads + h) * d + e);
        out_err = std::max(out_err, std::fabs(got.out[at] - ref.out[static_cast<size_t>(e)]));
        rounding_err = std::max(rounding_err, std::fabs(ref.out_rounded[static_cast<size_t>(e)] -
                                                        ref.out[static_cast<size_t>(e)]));
      }
      const float lse = got.lse[static_cast<size_t>(h * c.n + i)];
      if (std::isinf(ref.lse)) {
        EXPECT_TRUE(std::isinf(lse) && lse < 0) << "head " << h << " row " << i << " lse " << lse;
      } else {
        lse_err = std::max(lse_err, std::fabs(lse - ref.lse));
      }
      if (slot >= 0 && full_block[static_cast<size_t>(i / 128)]) {
        const int64_t r = i / 128, valid = std::min<int64_t>(128, c.n - r * 128);
        for (int64_t col = 0; col < nb; ++col)
          a_ref[static_cast<size_t>((slot * nb + r) * nb + col)] += ref.mass[static_cast<size_t>(col)] / double(valid);
      }
    }
  }
  EXPECT_LE(want.oracle_gap, 1e-6) << "tile-walking reference disagrees with attention_reference";
  EXPECT_LE(out_err, 2.0 * rounding_err + out_atol) << "rounding_err " << rounding_err;
  EXPECT_LE(lse_err, lse_tol);

  double a_err = 0.0, row_sum_err = 0.0;
  for (size_t s = 0; s < c.pivots.size(); ++s)
    for (int64_t r = 0; r < nb; ++r) {
      if (!full_block[static_cast<size_t>(r)]) continue;
      double row_sum = 0.0;
      for (int64_t col = 0; col < nb; ++col) {
        const size_t at = (s * static_cast<size_t>(nb) + static_cast<size_t>(r)) * static_cast<size_t>(nb) + static_cast<size_t>(col);
        a_err = std::max(a_err, std::fabs(got.a[at] - a_ref[at]));
        row_sum += got.a[at];
      }
      // Rows with tiles sum to 1, rows without (sparse pivot masks) to 0.
      const int64_t h = c.pivots[s];
      const double expect = mask.row_begin(h, r) == mask.row_end(h, r) ? 0.0 : 1.0;
      row_sum_err = std::max(row_sum_err, std::fabs(row_sum - expect));
    }
  EXPECT_LE(a_err, a_tol);
  // Rows of A sum to 1 (0 without tiles): the block masses of a row add up to the row's own fp32 sum, so the
  // row sum is off by at most nb * 2^-24 relative (< 1e-5 at nb = 128), well inside a_tol.
  if (!c.pivots.empty()) {
    EXPECT_LE(row_sum_err, a_tol);
  }

  // Rerun-stable: the same launch gives the same bytes.
  const cuda_output again = run_cuda(c, x, mask, options);
  EXPECT_TRUE(got.raw_out == again.raw_out) << "output differs between identical launches";
  EXPECT_EQ(0, std::memcmp(got.lse.data(), again.lse.data(), got.lse.size() * 4));
  // The causal walk does each row's arithmetic in the same order as the plan's items: same bytes.
  if (!options.causal_kernel) {
    cuda_attention_options walk = options;
    walk.causal_kernel = true;
    const cuda_output walked = run_cuda(c, x, mask, walk);
    EXPECT_TRUE(got.raw_out == walked.raw_out) << "the causal walk differs from the plan's items";
    EXPECT_EQ(0, std::memcmp(got.lse.data(), walked.lse.data(), got.lse.size() * 4));
  }
}

// One kernel configuration of cuda_attention_options.
struct kernel_config {
  const char* name;
  cuda_kernel kernel;
  int64_t ctas;        // Hopper grid; 0 = one CTA per SM
  bool causal_kernel;  // full causal plans at D = 64: the causal walk (else the plan's items)
  cuda_attention_options options() const { return {kernel, ctas, causal_kernel}; }
};

// Skips what cannot run here: everything without a GPU, a kernel the build or device lacks.
void skip_unless_runnable(const kernel_config& config) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const std::string why = testing::error_of([&] { cuda_attention_kernel(config.options()); });
  if (!why.empty()) GTEST_SKIP() << why;
  ASSERT_EQ(cuda_attention_kernel(config.options()), config.kernel);
}

const kernel_config kernel_configs[] = {{"portable", cuda_kernel::portable, 0, true},
                                        {"hopper", cuda_kernel::hopper, 0, true},
                                        {"hopper_3ctas", cuda_kernel::hopper, 3, true},
                                        {"hopper_plan_items", cuda_kernel::hopper, 0, false}};

// The shared cases this kernel supports: 16-bit inputs.
std::vector<attention_case> cuda_cases() {
  std::vector<attention_case> cases;
  for (const attention_case& c : testing::attention_cases())
    if (c.type == dtype::bf16 || c.type == dtype::f16) cases.push_back(c);
  return cases;
}

// Every case under every kernel configuration. The 3-CTA grid makes each CTA claim many items
// even in the small cases, empty rows and pivots included.
class CudaAttention
    : public ::testing::TestWithParam<std::tuple<kernel_config, attention_case>> {
 protected:
  void SetUp() override { skip_unless_runnable(std::get<0>(GetParam())); }
};

TEST_P(CudaAttention, MatchesOracle) {
  const kernel_config& config = std::get<0>(GetParam());
  const attention_case& c = std::get<1>(GetParam());
  cuda_attention_options walk = config.options();
  walk.causal_kernel = true;
  if (!config.causal_kernel &&
      !(c.mask == mask_kind::full && c.pivots.empty() && cuda_attention_walks_causal(walk, c.dim)))
    GTEST_SKIP() << "no causal walk for this case: the same launch as `hopper`";
  check_case(c, config.options());
}

INSTANTIATE_TEST_SUITE_P(
    Shared, CudaAttention,
    ::testing::Combine(::testing::ValuesIn(kernel_configs), ::testing::ValuesIn(cuda_cases())),
    [](const ::testing::TestParamInfo<std::tuple<kernel_config, attention_case>>& i) {
      return std::string(std::get<0>(i.param).name) + "_" + std::get<1>(i.param).name();
    });

// The plans the causal walk may take: the full causal mask (a prompt's or a chunk's) without
// pivot heads.
TEST(CudaAttentionPlan, OnlyTheFullCausalMaskIsMarked) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const block_mask full = block_mask::dense_causal(1000, 128, 4);
  EXPECT_TRUE(device_layer_plan(full).plan().full_causal);
  EXPECT_TRUE(device_layer_plan(full, {}, nullptr, 128).plan().full_causal);  // a chunk
  EXPECT_FALSE(device_layer_plan(full, {1}).plan().full_causal);              // a pivot head
  std::vector<std::vector<tile>> tiles(4, full.tiles_of(0));
  tiles[2].erase(tiles[2].begin());
  EXPECT_FALSE(device_layer_plan(block_mask::from_tiles(1000, 128, tiles)).plan().full_causal);
}

class CudaAttentionArguments : public ::testing::TestWithParam<kernel_config> {
 protected:
  void SetUp() override { skip_unless_runnable(GetParam()); }
};

INSTANTIATE_TEST_SUITE_P(Kernel, CudaAttentionArguments, ::testing::ValuesIn(kernel_configs),
                         [](const ::testing::TestParamInfo<kernel_config>& i) {
                           return std::string(i.param.name);
                         });

TEST_P(CudaAttentionArguments, RejectsBadArguments) {
  const attention_case c{256, 2, 1, 128, mask_kind::full, {1}};
  const block_mask mask = make_mask(c, 1);
  const device_layer_plan plan(mask, c.pivots);
  device_buffer dq(256 * 2 * 128 * 2), dk(256 * 128 * 2), dout(256 * 2 * 128 * 2), da(4 * 4 * 4);
  const tensor_view q = device_rows(dq.data(), dtype::bf16, 256, 2, 128, 256);
  const tensor_view k = device_rows(dk.data(), dtype::bf16, 256, 1, 128, 128);
  const tensor_view out = device_rows(dout.data(), dtype::bf16, 256, 2, 128, 256);
  const tensor_view a = device_contiguous(da.data(), {1, 2, 2});
  const cuda_attention_options options = GetParam().options();
  auto error = [&](const tensor_view& a_view, const tensor_view& q_view, const tensor_view& k_view,
                   const cuda_attention_options& o) {
    return testing::error_of([&] {
      cuda_attention_block_sparse(out, {}, a_view, q_view, k_view, k_view, plan.plan(),
                                  plan.scratch(), o);
    });
  };
  EXPECT_EQ(error(a, q, k, options), "");
  cuda_synchronize();
  EXPECT_NE(error({}, q, k, options).find("block_attention is empty"), std::string::npos);
  EXPECT_NE(error(device_contiguous(da.data(), {2, 2, 2}), q, k, options).find("[1, 2, 2]"),
            std::string::npos);
  EXPECT_NE(error(a, device_rows(dq.data(), dtype::bf16, 256, 2, 96, 256), k, options)
                .find("dim=96"),
            std::string::npos);
  EXPECT_NE(error(a, q, device_rows(dk.data(), dtype::bf16, 256, 1, 128, 100), options)
                .find("token stride 100"),
            std::string::npos);
  EXPECT_NE(error(a, q, device_rows(dk.data(), dtype::f16, 256, 1, 128, 128), options)
                .find("k has dtype"),
            std::string::npos);
  tensor_view host_q = q;
  host_q.on_device = false;
  EXPECT_NE(error(a, host_q, k, options).find("host memory"), std::string::npos);
  cuda_attention_options negative = options;
  negative.ctas = -1;
  EXPECT_NE(error(a, q, k, negative).find("ctas=-1"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { device_layer_plan bad(mask, {1, 1}); }).find("ascending"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
