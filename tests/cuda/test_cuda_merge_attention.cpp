// cuda_merge_attention_states against the CPU merge (itself tested against the fp64 oracle in
// tests/cpu/test_merge_attention.cpp): random partial outputs in f32/bf16/f16 with LSEs that
// include rows empty in one or both halves, ragged row counts, strided token layout, aliasing
// of the output with an input. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "shareprefill/cuda_attention.h"
#include "shareprefill/merge_attention.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::random_values;

struct host_half {
  std::vector<float> o, lse;
};

host_half random_half(int64_t rows, int64_t dim, uint64_t seed) {
  host_half h{random_values(rows * dim, seed), random_values(rows, seed + 1, -4.0f, 4.0f)};
  std::mt19937_64 rng(seed + 2);
  for (auto& l : h.lse)
    if (rng() % 7 == 0) l = -std::numeric_limits<float>::infinity();
  return h;
}

std::vector<uint16_t> encode(const std::vector<float>& x, dtype t) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    out[i] = t == dtype::bf16 ? fp32_to_bf16(x[i]) : fp32_to_fp16(x[i]);
  return out;
}

float decode(uint16_t x, dtype t) { return t == dtype::bf16 ? bf16_to_fp32(x) : fp16_to_fp32(x); }

struct merge_case {
  int64_t n, heads, dim;
  dtype type;
};

class CudaMerge : public ::testing::TestWithParam<merge_case> {};

TEST_P(CudaMerge, MatchesTheCpuMerge) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const merge_case c = GetParam();
  const int64_t rows = c.n * c.heads;
  host_half a = random_half(rows, c.dim, 1), b = random_half(rows, c.dim, 7);
  // The inputs as the device will hold them (rounded to the dtype), merged on the CPU in f32.
  std::vector<float> a_in = a.o, b_in = b.o;
  if (c.type != dtype::f32)
    for (size_t i = 0; i < a_in.size(); ++i) {
      a_in[i] = decode(encode({a.o[i]}, c.type)[0], c.type);
      b_in[i] = decode(encode({b.o[i]}, c.type)[0], c.type);
    }
  std::vector<float> expect(a_in.size()), expect_lse(a.lse.size());
  auto host = [&](std::vector<float>& x, std::initializer_list<int64_t> shape) {
    return tensor_view::contiguous(x.data(), dtype::f32, shape);
  };
  merge_attention_states(host(expect, {c.n, c.heads, c.dim}), host(expect_lse, {c.heads, c.n}),
                         host(a_in, {c.n, c.heads, c.dim}), host(a.lse, {c.heads, c.n}),
                         host(b_in, {c.n, c.heads, c.dim}), host(b.lse, {c.heads, c.n}));

  const size_t esize = dtype_size(c.type), obytes = static_cast<size_t>(rows * c.dim) * esize;
  device_buffer da(obytes), db(obytes), dla(static_cast<size_t>(rows) * 4),
      dlb(static_cast<size_t>(rows) * 4);
  if (c.type == dtype::f32) {
    da.upload(a.o.data(), obytes);
    db.upload(b.o.data(), obytes);
  } else {
    da.upload(encode(a.o, c.type).data(), obytes);
    db.upload(encode(b.o, c.type).data(), obytes);
  }
  dla.upload(a.lse.data(), dla.size());
  dlb.upload(b.lse.data(), dlb.size());
  auto device = [](const device_buffer& x, dtype t, std::initializer_list<int64_t> shape) {
    tensor_view v = tensor_view::contiguous(x.data(), t, shape);
    v.on_device = true;
    return v;
  };
  // Output aliases input a (o and lse).
  cuda_merge_attention_states(device(da, c.type, {c.n, c.heads, c.dim}),
                              device(dla, dtype::f32, {c.heads, c.n}),
                              device(da, c.type, {c.n, c.heads, c.dim}),
                              device(dla, dtype::f32, {c.heads, c.n}),
                              device(db, c.type, {c.n, c.heads, c.dim}),
                              device(dlb, dtype::f32, {c.heads, c.n}));
  cuda_synchronize();
  std::vector<float> got_lse(static_cast<size_t>(rows));
  dla.download(got_lse.data(), dla.size());
  std::vector<float> got(static_cast<size_t>(rows * c.dim));
  if (c.type == dtype::f32) {
    da.download(got.data(), obytes);
  } else {
    std::vector<uint16_t> raw(got.size());
    da.download(raw.data(), obytes);
    for (size_t i = 0; i < raw.size(); ++i) got[i] = decode(raw[i], c.type);
  }
  // expf/logf on the device differ from the host's by an ulp or two; a rounded output dtype
  // then moves by at most one step of that dtype.
  const double step = c.type == dtype::f32 ? 1e-6 : (c.type == dtype::bf16 ? 8e-3 : 1e-3);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], expect[i], step * (1.0 + std::fabs(expect[i]))) << "element " << i;
  for (size_t i = 0; i < got_lse.size(); ++i) {
    if (std::isinf(expect_lse[i])) {
      ASSERT_EQ(got_lse[i], expect_lse[i]) << "lse " << i;
    } else {
      ASSERT_NEAR(got_lse[i], expect_lse[i], 1e-6 * (1.0 + std::fabs(expect_lse[i]))) << i;
    }
  }
}

// 16-bit types with dim / 8 dividing 32 (64, 128, 256, 16) take the 8-wide kernel; f32, dim 96
// (12 vectors a row) and dim 24 take the one-warp-per-row kernel. Output and LSE alias a's.
INSTANTIATE_TEST_SUITE_P(Ragged, CudaMerge,
                         ::testing::Values(merge_case{1, 1, 64, dtype::f32},
                                           merge_case{127, 3, 64, dtype::bf16},
                                           merge_case{129, 8, 128, dtype::f16},
                                           merge_case{1000, 4, 96, dtype::bf16},
                                           merge_case{4224, 32, 128, dtype::f32},
                                           merge_case{65, 5, 256, dtype::bf16},
                                           merge_case{301, 9, 16, dtype::f16},
                                           merge_case{33, 2, 24, dtype::f16},
                                           merge_case{4224, 32, 128, dtype::bf16}));

TEST(CudaMerge, HostViewsAreRejected) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  std::vector<float> o(8), l(2);
  const auto ov = tensor_view::contiguous(o.data(), dtype::f32, {2, 1, 4});
  const auto lv = tensor_view::contiguous(l.data(), dtype::f32, {1, 2});
  EXPECT_NE(testing::error_of([&] { cuda_merge_attention_states(ov, lv, ov, lv, ov, lv); })
                .find("host memory"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
