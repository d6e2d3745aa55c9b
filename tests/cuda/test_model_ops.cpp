// The model's device ops (cuda_model_ops.h) against CPU oracles at ragged sizes: dequantisation
// against the CPU dequantisers (dequantize.h), RoPE against src/model/rope.cpp, the rest against
// fp64 loops here. Every output buffer is poisoned (NaN) before the launch and has guard bytes
// after it that must survive. Tolerances are derived from bf16 rounding (unit roundoff 2^-8)
// and fp32 accumulation (2^-24 per operation), written beside each check. The argument checks
// run everywhere; everything that launches is skipped without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <cuda_runtime.h>

#include "model/rope.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_graph.h"
#include "shareprefill/cuda_model_ops.h"
#include "shareprefill/dequantize.h"
#include "model_ops_test_util.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::error_of;
using testing::random_values;

using namespace device_test;

// ---- Dequantisation --------------------------------------------------------------------------

// Valid random data of `type` for n elements: fp16 scales in a realistic range, random quants.
std::vector<uint8_t> random_quantised(ggml_type type, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> scale(1e-3f, 0.1f), offset(-0.5f, 0.5f), value(-2.0f, 2.0f);
  std::vector<uint8_t> bytes(static_cast<size_t>(ggml_row_bytes(type, n)));
  auto put16 = [&](size_t at, uint16_t v) { std::memcpy(&bytes[at], &v, 2); };
  switch (type) {
    case ggml_type::f32:
      for (int64_t i = 0; i < n; ++i) {
        const float f = value(rng);
        std::memcpy(&bytes[static_cast<size_t>(4 * i)], &f, 4);
      }
      break;
    case ggml_type::f16:
      for (int64_t i = 0; i < n; ++i) put16(static_cast<size_t>(2 * i), fp32_to_fp16(value(rng)));
      break;
    case ggml_type::bf16:
      for (int64_t i = 0; i < n; ++i) put16(static_cast<size_t>(2 * i), fp32_to_bf16(value(rng)));
      break;
    default: {
      const int64_t block_bytes = ggml_block_bytes(type);
      for (int64_t b = 0; b < n / 32; ++b) {
        const size_t at = static_cast<size_t>(b * block_bytes);
        for (int64_t i = 0; i < block_bytes; ++i) bytes[at + static_cast<size_t>(i)] = static_cast<uint8_t>(rng());
        put16(at, fp32_to_fp16(scale(rng)));
        if (type == ggml_type::q4_1) put16(at + 2, fp32_to_fp16(offset(rng)));
      }
    }
  }
  return bytes;
}

TEST(ModelOpsDequantize, MatchesTheCpuDequantisers) {
  SP_SKIP_WITHOUT_DEVICE();
  const ggml_type types[] = {ggml_type::q4_1, ggml_type::q8_0, ggml_type::q4_0,
                             ggml_type::f32,  ggml_type::f16,  ggml_type::bf16};
  for (const ggml_type type : types) {
    const int64_t block = ggml_block_size(type);
    for (const int64_t blocks : {1, 127, 129, 1000, 4224}) {
      const int64_t n = blocks * block;
      SCOPED_TRACE(str("dequantize(type=", ggml_type_name(type), ",n=", n, ")"));
      const std::vector<uint8_t> src = random_quantised(type, n, 17 + static_cast<uint64_t>(n));
      std::vector<float> cpu(static_cast<size_t>(n));
      dequantize_row(cpu.data(), src.data(), type, n);
      const device_array<uint8_t> d_src = upload(src);
      const device_array<uint16_t> d_dst = poisoned<uint16_t>(static_cast<size_t>(n));
      cuda_dequantize_to_bf16(d_dst.data(), d_src.data(), type, n, nullptr);
      const std::vector<uint16_t> got = fetch(d_dst, "dequantize");
      // The device computes the CPU's fp32 value (q*d + m unfused; the CPU build may fuse it into
      // one fma, 1 fp32 ulp apart) and rounds it to bf16: within half a bf16 ulp (2^-8 relative)
      // of the CPU value plus one fp32 ulp. A wrong nibble or scale is off by at least d, which
      // exceeds that bound (|y| <= 31 d).
      int64_t exact = 0, bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double ref = cpu[static_cast<size_t>(i)];
        const double v = bf16_to_fp32(got[static_cast<size_t>(i)]);
        exact += got[static_cast<size_t>(i)] == fp32_to_bf16(cpu[static_cast<size_t>(i)]);
        if (!within(v, ref, std::fabs(ref) * (bf16_u + 2 * fp32_u)) && bad++ < 5)
          ADD_FAILURE() << "element " << i << ": device " << v << ", cpu " << ref;
      }
      EXPECT_EQ(bad, 0);
      EXPECT_GE(double(exact), 0.999 * double(n)) << "round-to-nearest-even of the CPU value";
    }
  }
}

// ---- GEMM --------------------------------------------------------------------------------------

struct gemm_case {
  int64_t m, n, k;
  dtype y_type;
  bool accumulate;
};

// One GEMM case's random inputs (x, w bf16 values; y0 the f32 output accumulated into), its fp64
// reference and the tolerance of each output: fp32 accumulation of k products (any order, split
// or not) is within k u32 sum|x w|; the add of y0 one more rounding; a bf16 output rounds once
// more (u_bf16 of the value).
struct gemm_data {
  std::vector<float> x, w, y0;
  std::vector<double> ref, tol;
  device_array<uint16_t> dx, dw;

  explicit gemm_data(const gemm_case& c) {
    const auto seed = static_cast<uint64_t>(c.m * 7 + c.n * 3 + c.k);
    x = random_bf16_values(c.m * c.k, seed);
    w = random_bf16_values(c.n * c.k, seed + 1, -0.2f, 0.2f);
    y0 = random_values(c.m * c.n, seed + 2);
    dx = upload(to_bf16(x));
    dw = upload(to_bf16(w));
    ref.assign(static_cast<size_t>(c.m * c.n), 0.0);
    tol = ref;
    // Rows checked: all up to 1000, else every 13th and the last (tol < 0: not checked).
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        const size_t o = static_cast<size_t>(i * c.n + j);
        if (c.m > 1000 && i % 13 != 0 && i != c.m - 1) {
          tol[o] = -1.0;
          continue;
        }
        double r = 0.0, mag = 0.0;
        for (int64_t e = 0; e < c.k; ++e) {
          const double p = double(x[static_cast<size_t>(i * c.k + e)]) * w[static_cast<size_t>(j * c.k + e)];
          r += p;
          mag += std::fabs(p);
        }
        const double y_mag = c.accumulate ? std::fabs(y0[o]) : 0.0;
        if (c.accumulate) r += y0[o];
        const double acc = double(c.k) * fp32_u * mag + 2 * fp32_u * (y_mag + std::fabs(r));
        ref[o] = r;
        tol[o] = acc + (c.y_type == dtype::bf16 ? bf16_u * (std::fabs(r) + acc) : 0.0);
      }
  }

  // y of one linear() call of `gemm` (y = y0 first when accumulating), as f32 values.
  std::vector<float> run(cuda_gemm& gemm, const gemm_case& c) const {
    if (c.y_type == dtype::f32) {
      device_array<float> dy = c.accumulate ? upload(y0) : poisoned<float>(y0.size());
      gemm.linear(dy.data(), c.y_type, dx.data(), dw.data(), c.m, c.n, c.k, c.accumulate, nullptr);
      return fetch(dy, "y");
    }
    const device_array<uint16_t> dy = poisoned<uint16_t>(y0.size());
    gemm.linear(dy.data(), c.y_type, dx.data(), dw.data(), c.m, c.n, c.k, false, nullptr);
    return from_bf16(fetch(dy, "y"));
  }
};

// Outputs of `got` farther than `slack` x the tolerance from the reference (the first 5 reported).
int64_t gemm_errors(const gemm_data& d, const std::vector<float>& got, const gemm_case& c,
                    double slack = 1.0) {
  int64_t bad = 0;
  for (size_t o = 0; o < got.size(); ++o) {
    if (d.tol[o] < 0) continue;
    if (!within(got[o], d.ref[o], slack * d.tol[o]) && bad++ < 5)
      ADD_FAILURE() << "y[" << o / static_cast<size_t>(c.n) << "," << o % static_cast<size_t>(c.n)
                    << "] = " << got[o] << ", reference " << d.ref[o] << " (tolerance "
                    << slack * d.tol[o] << ")";
  }
  return bad;
}

TEST(ModelOpsGemm, MatchesFp64Reference) {
  SP_SKIP_WITHOUT_DEVICE();
  std::vector<gemm_case> cases;
  for (const int64_t m : {1, 127, 129, 1000, 4224}) {
    cases.push_back({m, 192, 576, dtype::bf16, false});   // K/V projection of SmolLM2
    cases.push_back({m, 576, 1536, dtype::f32, true});    // down projection into the residual
  }
  cases.push_back({129, 3072, 576, dtype::bf16, false});  // fused gate|up
  cases.push_back({1000, 1000, 72, dtype::f32, false});   // ragged n, small k
  cases.push_back({3, 49152, 576, dtype::f32, false});    // logits of a few rows
  cuda_gemm gemm;
  for (const gemm_case& c : cases) {
    SCOPED_TRACE(str("gemm(m=", c.m, ",n=", c.n, ",k=", c.k, ",y=", dtype_name(c.y_type),
                     ",accumulate=", c.accumulate, ")"));
    const gemm_data d(c);
    EXPECT_EQ(gemm_errors(d, d.run(gemm, c), c), 0);
  }
}

// cuda_gemm::tune on the decode step's shapes (m = 1: both orientations offered) and two others:
// the timed algorithm is within the fp64 bound above, so it differs from the heuristic's by at
// most twice that bound (another algorithm may sum the k products in another order or split them);
// a second object takes the first one's choice (the same bits, as two sessions need); and
// forget_tuning gives the heuristic's bits back.
TEST(ModelOpsGemm, TunedAlgorithmMatchesTheHeuristicOne) {
  SP_SKIP_WITHOUT_DEVICE();
  const std::vector<gemm_case> cases = {
      {1, 960, 576, dtype::bf16, false},    // QKV of SmolLM2-135M
      {1, 576, 576, dtype::f32, true},      // O projection into the residual (beta = 1)
      {1, 3072, 576, dtype::bf16, false},   // gate|up
      {1, 576, 1536, dtype::f32, true},     // down into the residual
      {1, 49152, 576, dtype::f32, false},   // output head
      {1, 1000, 72, dtype::bf16, false},    // ragged n, small k
      {129, 3072, 576, dtype::bf16, false}, // m > 1: one orientation only
  };
  for (const gemm_case& c : cases) {
    SCOPED_TRACE(str("gemm(m=", c.m, ",n=", c.n, ",k=", c.k, ",y=", dtype_name(c.y_type),
                     ",accumulate=", c.accumulate, ")"));
    const gemm_data d(c);
    cuda_gemm heuristic, tuned, second;
    const std::vector<float> by_heuristic = d.run(heuristic, c);
    const device_array<float> y_for_alignment = poisoned<float>(d.y0.size());
    const gemm_tuning t = tuned.tune(y_for_alignment.data(), c.y_type, d.dx.data(), d.dw.data(),
                                     c.m, c.n, c.k, c.accumulate);
    EXPECT_GE(t.candidates, 1);
    EXPECT_TRUE(t.chosen >= 0 && t.chosen < t.candidates) << t.chosen << " of " << t.candidates;
    EXPECT_TRUE(c.m == 1 || !t.swapped);
    EXPECT_GT(t.heuristic_us, 0.0);
    EXPECT_GT(t.chosen_us, 0.0);
    EXPECT_LE(t.chosen_us, t.heuristic_us);
    const std::vector<float> by_tuned = d.run(tuned, c);
    EXPECT_EQ(gemm_errors(d, by_tuned, c), 0);
    int64_t apart = 0;
    for (size_t o = 0; o < by_tuned.size(); ++o)
      if (d.tol[o] >= 0 && !within(by_tuned[o], by_heuristic[o], 2 * d.tol[o]) && apart++ < 5)
        ADD_FAILURE() << "y[" << o << "]: tuned " << by_tuned[o] << ", heuristic " << by_heuristic[o];
    EXPECT_EQ(apart, 0);
    const gemm_tuning again = second.tune(y_for_alignment.data(), c.y_type, d.dx.data(),
                                          d.dw.data(), c.m, c.n, c.k, c.accumulate);
    EXPECT_EQ(again.algo_id, t.algo_id);
    EXPECT_EQ(again.swapped, t.swapped);
    EXPECT_EQ(again.chosen_us, t.chosen_us);  // the first one's report, not a new timing
    const std::vector<float> by_second = d.run(second, c);
    EXPECT_EQ(0, std::memcmp(by_second.data(), by_tuned.data(), by_tuned.size() * sizeof(float)));
    tuned.forget_tuning();
    const std::vector<float> forgotten = d.run(tuned, c);
    EXPECT_EQ(0, std::memcmp(forgotten.data(), by_heuristic.data(), by_heuristic.size() * sizeof(float)));
  }
}

// ---- RMSNorm and the output head ---------------------------------------------------------------

TEST(ModelOpsRmsNorm, MatchesFp64Reference) {
  SP_SKIP_WITHOUT_DEVICE();
  const double eps = 1e-5;
  for (const dtype x_type : {dtype::f32, dtype::bf16})
    for (const int64_t rows : {1, 127, 129, 1000, 4224})
      // A warp per row with 1, 8 and 8 vectors a lane (the last ragged); a block per row of 256
      // threads (1002: not whole 4-value vectors) and of 1024 threads (4 and 16 values each)
      for (const int64_t dim : {64, 576, 1000, 1002, 2049, 16383})
        for (const bool gather : {false, true}) {
          if (dim > 2048 && rows > 129) continue;  // the wide rows: a few are enough
          SCOPED_TRACE(str("rms_norm(x=", dtype_name(x_type), ",rows=", rows, ",dim=", dim,
                           ",gather=", gather, ")"));
          const auto seed = static_cast<uint64_t>(rows * 31 + dim);
          const int64_t in_rows = rows + 3;
          std::vector<float> x = random_values(in_rows * dim, seed, -4.0f, 4.0f);
          if (x_type == dtype::bf16)
            for (float& v : x) v = round_to_bf16(v);
          const std::vector<float> weight = random_values(dim, seed + 1, 0.5f, 1.5f);
          std::vector<int64_t> index(static_cast<size_t>(rows));
          std::mt19937_64 rng(seed);
          for (int64_t i = 0; i < rows; ++i)
            index[static_cast<size_t>(i)] = gather ? static_cast<int64_t>(rng() % in_rows) : i;
          const device_array<float> dw = upload(weight);
          const device_array<int64_t> dindex = upload(index);
          const device_array<uint16_t> dy = poisoned<uint16_t>(static_cast<size_t>(rows * dim));
          device_array<float> dx32;
          device_array<uint16_t> dx16;
          const void* dx = nullptr;
          if (x_type == dtype::f32) {
            dx32 = upload(x);
            dx = dx32.data();
          } else {
            dx16 = upload(to_bf16(x));
            dx = dx16.data();
          }
          cuda_rms_norm(dy.data(), dx, x_type, dw.data(), gather ? dindex.data() : nullptr, rows,
                        dim, eps, nullptr);
          const std::vector<float> y = from_bf16(fetch(dy, "y"));
          int64_t bad = 0;
          for (int64_t i = 0; i < rows; ++i) {
            const float* xr = &x[static_cast<size_t>(index[static_cast<size_t>(i)] * dim)];
            double ss = 0.0;
            for (int64_t e = 0; e < dim; ++e) ss += double(xr[e]) * xr[e];
            const double inv = 1.0 / std::sqrt(ss / double(dim) + eps);
            for (int64_t e = 0; e < dim; ++e) {
              const double ref = xr[e] * inv * weight[static_cast<size_t>(e)];
              // fp32 sum of dim squares: <= dim u32 relative, half of it through the square
              // root, a few more roundings; then the bf16 output rounding.
              const double tol = std::fabs(ref) * (bf16_u + (double(dim) / 2 + 4) * fp32_u);
              const double v = y[static_cast<size_t>(i * dim + e)];
              if (!within(v, ref, tol) && bad++ < 5)
                ADD_FAILURE() << "y[" << i << "," << e << "] = " << v << ", reference " << ref;
            }
          }
          EXPECT_EQ(bad, 0);
        }
  const device_array<uint16_t> y = poisoned<uint16_t>(16);
  const device_array<float> x = upload(std::vector<float>(16, 1.0f));
  EXPECT_THROW(cuda_rms_norm(y.data(), x.data(), dtype::f32, x.data(), nullptr, 1,
                             cuda_rms_norm_max_dim + 1, eps, nullptr),
               error);
}

TEST(ModelOpsLogits, SelectedRowsMatchFp64Reference) {
  SP_SKIP_WITHOUT_DEVICE();
  const int64_t n = 1000, dim = 576, vocab = 4224;
  const double eps = 1e-5;
  const std::vector<float> x = random_values(n * dim, 5, -3.0f, 3.0f);
  const std::vector<float> norm_w = random_values(dim, 6, 0.5f, 1.5f);
  const std::vector<float> out_w = random_bf16_values(vocab * dim, 7, -0.1f, 0.1f);
  const std::vector<int64_t> rows = {0, 1, 499, 998, 999};
  const int64_t count = static_cast<int64_t>(rows.size());
  const device_array<float> dx = upload(x), dnorm = upload(norm_w);
  const device_array<uint16_t> dout_w = upload(to_bf16(out_w));
  const device_array<int64_t> drows = upload(rows);
  const device_array<uint16_t> normed = poisoned<uint16_t>(static_cast<size_t>(count * dim));
  const device_array<float> logits = poisoned<float>(static_cast<size_t>(count * vocab));
  cuda_gemm gemm;
  cuda_logits_of_rows(logits.data(), normed.data(), dx.data(), drows.data(), count, dnorm.data(),
                      dout_w.data(), vocab, dim, eps, gemm, nullptr);
  const std::vector<float> got = fetch(logits, "logits");
  fetch(normed, "normed");
  int64_t bad = 0;
  for (int64_t p = 0; p < count; ++p) {
    const float* xr = &x[static_cast<size_t>(rows[static_cast<size_t>(p)] * dim)];
    double ss = 0.0;
    for (int64_t e = 0; e < dim; ++e) ss += double(xr[e]) * xr[e];
    const double inv = 1.0 / std::sqrt(ss / double(dim) + eps);
    for (int64_t t = 0; t < vocab; ++t) {
      double ref = 0.0, mag = 0.0;
      for (int64_t e = 0; e < dim; ++e) {
        const double term = xr[e] * inv * norm_w[static_cast<size_t>(e)] * out_w[static_cast<size_t>(t * dim + e)];
        ref += term;
        mag += std::fabs(term);
      }
      // The normed row is rounded to bf16 (each term off by <= u_bf16 plus the norm's fp32
      // error), then an fp32 GEMM (<= dim u32 sum|terms|).
      const double tol = mag * (bf16_u + (double(dim) * 1.5 + 4) * fp32_u);
      const double v = got[static_cast<size_t>(p * vocab + t)];
      if (!within(v, ref, tol) && bad++ < 5)
        ADD_FAILURE() << "logit[" << p << "," << t << "] = " << v << ", reference " << ref;
    }
  }
  EXPECT_EQ(bad, 0);
}

// ---- Element-wise ops --------------------------------------------------------------------------

TEST(ModelOpsEmbedding, GathersRowsExactly) {
  SP_SKIP_WITHOUT_DEVICE();
  const int64_t vocab = 1000, dim = 576;
  const std::vector<float> table = random_bf16_values(vocab * dim, 11);
  const device_array<uint16_t> dtable = upload(to_bf16(table));
  for (const int64_t n : {1, 127, 129, 1000, 4224}) {
    SCOPED_TRACE(str("embedding(n=", n, ")"));
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    std::mt19937_64 rng(static_cast<uint64_t>(n));
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % vocab);
    tokens.back() = static_cast<int32_t>(vocab);  // out of range: a zero row, no read past the table
    const device_array<int32_t> dtokens = upload(tokens);
    const device_array<float> dx = poisoned<float>(static_cast<size_t>(n * dim));
    cuda_embedding_gather(dx.data(), dtable.data(), dtokens.data(), n, dim, vocab, nullptr);
    const std::vector<float> x = fetch(dx, "x");
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t e = 0; e < dim; ++e) {
        const int32_t t = tokens[static_cast<size_t>(i)];
        const float ref = t < vocab ? table[static_cast<size_t>(t * dim + e)] : 0.0f;
        bad += x[static_cast<size_t>(i * dim + e)] != ref;
      }
    EXPECT_EQ(bad, 0);
  }
}

TEST(ModelOpsResidual, AddsExactly) {
  SP_SKIP_WITHOUT_DEVICE();
  for (const dtype y_type : {dtype::f32, dtype::bf16})
    for (const int64_t count : {1, 127, 129, 1000 * 576, 4224 * 576 + 5}) {
      SCOPED_TRACE(str("residual_add(y=", dtype_name(y_type), ",count=", count, ")"));
      const std::vector<float> x = random_values(count, 21, -5.0f, 5.0f);
      const std::vector<float> y = random_bf16_values(count, 22);
      device_array<float> dx = upload(x);
      device_array<float> dy32;
      device_array<uint16_t> dy16;
      if (y_type == dtype::f32) {
        dy32 = upload(y);
        cuda_residual_add(dx.data(), dy32.data(), y_type, count, nullptr);
      } else {
        dy16 = upload(to_bf16(y));
        cuda_residual_add(dx.data(), dy16.data(), y_type, count, nullptr);
      }
      const std::vector<float> got = fetch(dx, "x");
      int64_t bad = 0;
      for (int64_t i = 0; i < count; ++i)
        bad += got[static_cast<size_t>(i)] != x[static_cast<size_t>(i)] + y[static_cast<size_t>(i)];
      EXPECT_EQ(bad, 0);  // one fp32 addition of the same operands: bitwise equal
    }
}

TEST(ModelOpsSwiglu, MatchesFp64ReferenceOnFusedRows) {
  SP_SKIP_WITHOUT_DEVICE();
  for (const int64_t n : {1, 127, 129, 1000, 4224})
    for (const int64_t ffn : {1536, 100}) {
      SCOPED_TRACE(str("swiglu(n=", n, ",ffn=", ffn, ")"));
      // gate|up as the two halves of one [n, 2 ffn] GEMM output; out rows padded by 8.
      const std::vector<float> fused = random_bf16_values(n * 2 * ffn, static_cast<uint64_t>(n + ffn), -8.0f, 8.0f);
      const device_array<uint16_t> dfused = upload(to_bf16(fused));
      const int64_t out_stride = ffn + 8;
      const device_array<uint16_t> dout = poisoned<uint16_t>(static_cast<size_t>(n * out_stride));
      cuda_swiglu(dout.data(), out_stride, dfused.data(), dfused.data() + ffn, 2 * ffn, n, ffn, nullptr);
      const std::vector<uint16_t> out = fetch(dout, "out");
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t f = 0; f < ffn; ++f) {
          const double g = fused[static_cast<size_t>(i * 2 * ffn + f)];
          const double u = fused[static_cast<size_t>(i * 2 * ffn + ffn + f)];
          const double ref = g / (1.0 + std::exp(-g)) * u;
          // expf within 2 ulp, then a division, an add and a multiply in fp32; bf16 output.
          const double tol = std::fabs(ref) * (bf16_u + 8 * fp32_u);
          const double v = bf16_to_fp32(out[static_cast<size_t>(i * out_stride + f)]);
          if (!within(v, ref, tol) && bad++ < 5)
            ADD_FAILURE() << "out[" << i << "," << f << "] = " << v << ", reference " << ref;
        }
        for (int64_t f = ffn; f < out_stride; ++f)  // the padding is not written
          bad += out[static_cast<size_t>(i * out_stride + f)] != 0xffff;
      }
      EXPECT_EQ(bad, 0);
    }
}

// Programmatic Dependent Launch (programmatic_launch): the RMSNorm and the SwiGLU read an input
// that the kernel before them on the stream writes (a bf16 copy of 4224 rows over a poisoned
// buffer), so they must wait for it; their bits equal those of a plain launch on the finished
// input.
TEST(ModelOpsProgrammaticLaunch, WaitsForThePreviousKernelAndGivesTheSameBits) {
  SP_SKIP_WITHOUT_DEVICE();
  const int64_t rows = 4224, dim = 576, ffn = 1536;
  cuda_stream stream;
  // [count] bf16 values written by a kernel on the stream into a poisoned buffer.
  const auto produced = [&](const device_array<uint16_t>& source, size_t count) {
    device_array<uint16_t> out = poisoned<uint16_t>(count);
    cuda_dequantize_to_bf16(out.data(), source.data(), ggml_type::bf16, static_cast<int64_t>(count),
                            stream.get());
    return out;
  };
  const device_array<uint16_t> x_source = upload(to_bf16(random_bf16_values(rows * dim, 5, -4.0f, 4.0f)));
  const device_array<float> weight = upload(random_values(dim, 6, 0.5f, 1.5f));
  const device_array<uint16_t> gu_source = upload(to_bf16(random_bf16_values(rows * 2 * ffn, 7, -8.0f, 8.0f)));
  for (const bool programmatic : {false, true}) {
    SCOPED_TRACE(programmatic ? "programmatic" : "plain");
    const device_array<uint16_t> x = produced(x_source, static_cast<size_t>(rows * dim));
    const device_array<uint16_t> y = poisoned<uint16_t>(static_cast<size_t>(rows * dim));
    cuda_rms_norm(y.data(), x.data(), dtype::bf16, weight.data(), nullptr, rows, dim, 1e-5,
                  stream.get(), programmatic);
    const device_array<uint16_t> gu = produced(gu_source, static_cast<size_t>(rows * 2 * ffn));
    const device_array<uint16_t> act = poisoned<uint16_t>(static_cast<size_t>(rows * ffn));
    cuda_swiglu(act.data(), ffn, gu.data(), gu.data() + ffn, 2 * ffn, rows, ffn, stream.get(),
                programmatic);
    stream.synchronize();
    // The plain launches on the finished inputs, on the default stream.
    const device_array<uint16_t> y_ref = poisoned<uint16_t>(static_cast<size_t>(rows * dim));
    cuda_rms_norm(y_ref.data(), x.data(), dtype::bf16, weight.data(), nullptr, rows, dim, 1e-5,
                  nullptr);
    const device_array<uint16_t> act_ref = poisoned<uint16_t>(static_cast<size_t>(rows * ffn));
    cuda_swiglu(act_ref.data(), ffn, gu.data(), gu.data() + ffn, 2 * ffn, rows, ffn, nullptr);
    EXPECT_EQ(fetch(y, "rms_norm"), fetch(y_ref, "rms_norm reference"));
    EXPECT_EQ(fetch(act, "swiglu"), fetch(act_ref, "swiglu reference"));
  }
}

// ---- RoPE --------------------------------------------------------------------------------------

struct rope_case {
  int64_t n, heads, kv_heads, head_dim, rope_dim, first_pos;
  const char* type;
  double factor;
};

TEST(ModelOpsRope, MatchesTheCpuRope) {
  SP_SKIP_WITHOUT_DEVICE();
  std::vector<rope_case> cases;
  for (const int64_t n : {1, 127, 129, 1000, 4224}) cases.push_back({n, 9, 3, 64, 64, 0, "none", 1.0});
  cases.push_back({129, 9, 3, 64, 64, 7, "linear", 4.0});
  cases.push_back({1000, 32, 8, 128, 128, 30000, "ntk", 4.0});
  cases.push_back({1000, 9, 3, 64, 64, 127000, "yarn", 16.0});
  cases.push_back({127, 12, 4, 128, 64, 5, "yarn", 4.0});  // partial rotary: dims 64.. untouched
  cases.push_back({4224, 8, 1, 64, 64, 0, "none", 1.0});
  for (const rope_case& c : cases) {
    SCOPED_TRACE(str("rope(n=", c.n, ",h=", c.heads, ",hkv=", c.kv_heads, ",d=", c.head_dim,
                     ",rope_dim=", c.rope_dim, ",pos=", c.first_pos, ",", c.type, "x", c.factor, ")"));
    const rope_table table = rope_make_table(c.rope_dim, 100000.0, c.type, c.factor, 8192);
    // q, k and v as one fused [n, (H + 2 Hkv) D] projection output: q and k are strided views.
    const int64_t D = c.head_dim, stride = (c.heads + 2 * c.kv_heads) * D;
    const std::vector<float> fused = random_bf16_values(c.n * stride, static_cast<uint64_t>(c.n + c.first_pos), -2.0f, 2.0f);
    std::vector<float> q(static_cast<size_t>(c.n * c.heads * D)), k(static_cast<size_t>(c.n * c.kv_heads * D));
    for (int64_t i = 0; i < c.n; ++i) {
      std::copy_n(&fused[static_cast<size_t>(i * stride)], c.heads * D, &q[static_cast<size_t>(i * c.heads * D)]);
      std::copy_n(&fused[static_cast<size_t>(i * stride + c.heads * D)], c.kv_heads * D,
                  &k[static_cast<size_t>(i * c.kv_heads * D)]);
    }
    rope_apply(q.data(), c.n, c.heads, D, c.first_pos, table);
    rope_apply(k.data(), c.n, c.kv_heads, D, c.first_pos, table);
    const device_array<uint16_t> dfused = upload(to_bf16(fused));
    device_array<float> angles;
    cuda_rope_apply(rope_launch(c.n, D, c.first_pos, dfused.data(), stride, c.heads, c.kv_heads,
                                table, angles),
                    nullptr);
    const std::vector<uint16_t> got = fetch(dfused, "qkv");
    int64_t bad = 0;
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t col = 0; col < stride; ++col) {
        const size_t at = static_cast<size_t>(i * stride + col);
        const int64_t head_col = col % D;
        const bool in_q = col < c.heads * D, in_k = !in_q && col < (c.heads + c.kv_heads) * D;
        if (!(in_q || in_k) || head_col >= c.rope_dim) {  // v and unrotated dims: untouched
          bad += got[at] != fp32_to_bf16(fused[at]);
          continue;
        }
        const double ref = in_q ? q[static_cast<size_t>(i * c.heads * D + col)]
                                : k[static_cast<size_t>(i * c.kv_heads * D + col - c.heads * D)];
        const size_t pair = at - static_cast<size_t>(head_col % 2);
        const double mag = (std::fabs(fused[pair]) + std::fabs(fused[pair + 1])) * table.attention_factor;
        // Same fp32 cos/sin (fp64 angle); a*c - b*s in fp32, maybe fused differently: a few
        // fp32 ulps of |a| + |b|; then the bf16 rounding of the result.
        const double tol = bf16_u * std::fabs(ref) + 4 * fp32_u * mag;
        const double v = bf16_to_fp32(got[at]);
        if (!within(v, ref, tol) && bad++ < 5)
          ADD_FAILURE() << "token " << i << " column " << col << ": " << v << ", reference " << ref;
      }
    EXPECT_EQ(bad, 0);
  }
}

// RoPE with the KV append (a prefill's): q rotated in place, k's rotated rows and v's rows
// written to cache rows [pos, pos + n) of one layer, the sources left as they were, the other
// rows and layers untouched. Against the in-place RoPE (tested against the CPU above): equal bits.
// Strides that are multiples of 4 take the two-pairs-a-word path, the padded ones one pair.
TEST(ModelOpsRope, AppendWritesTheCacheRowsExactly) {
  SP_SKIP_WITHOUT_DEVICE();
  struct append_case {
    int64_t n, pos, heads, kv_heads, head_dim, rope_dim, pad;
  };
  const std::vector<append_case> cases = {
      {1, 0, 9, 3, 64, 64, 0},
      {127, 5, 9, 3, 64, 64, 0},
      {129, 300, 9, 3, 64, 64, 2},
      {4000, 0, 9, 3, 64, 64, 0},
      {1000, 17, 32, 8, 128, 128, 0},
      {127, 3, 12, 4, 128, 64, 0},  // partial rotary: the unrotated dims copied as they are
      {333, 1, 12, 4, 128, 62, 2},  // odd pairs (31) and one pair a word
  };
  const rope_table base = rope_make_table(64, 100000.0, "yarn", 4.0, 8192);
  for (const append_case& c : cases) {
    SCOPED_TRACE(str("rope_append(n=", c.n, ",pos=", c.pos, ",h=", c.heads, ",hkv=", c.kv_heads,
                     ",d=", c.head_dim, ",rope_dim=", c.rope_dim, ",pad=", c.pad, ")"));
    const rope_table table = rope_make_table(c.rope_dim, 100000.0, "yarn", 4.0, 8192);
    const int64_t D = c.head_dim, row = c.kv_heads * D, layers = 2, capacity = c.pos + c.n + 3;
    const int64_t stride = (c.heads + 2 * c.kv_heads) * D + c.pad;
    const std::vector<uint16_t> fused =
        to_bf16(random_bf16_values(c.n * stride, static_cast<uint64_t>(c.n + c.pos), -2.0f, 2.0f));
    // In place: the reference q and k.
    const device_array<uint16_t> in_place = upload(fused);
    device_array<float> angles;
    cuda_rope_apply(
        rope_launch(c.n, D, c.pos, in_place.data(), stride, c.heads, c.kv_heads, table, angles),
        nullptr);
    const std::vector<uint16_t> expect = fetch(in_place, "in-place RoPE");
    // With the append, into layer 1 of a cache whose every element starts as 0x7fc1 (a NaN).
    cuda_kv_cache cache(layers, capacity, c.kv_heads, D);
    const std::vector<uint16_t> sentinel(static_cast<size_t>(capacity * row), 0x7fc1);
    for (int64_t l = 0; l < layers; ++l) {
      ASSERT_EQ(
          cudaMemcpy(cache.k(l), sentinel.data(), sentinel.size() * 2, cudaMemcpyHostToDevice),
          cudaSuccess);
      ASSERT_EQ(
          cudaMemcpy(cache.v(l), sentinel.data(), sentinel.size() * 2, cudaMemcpyHostToDevice),
          cudaSuccess);
    }
    const device_array<uint16_t> appended = upload(fused);
    cuda_rope_params r =
        rope_launch(c.n, D, c.pos, appended.data(), stride, c.heads, c.kv_heads, table, angles);
    r.v = appended.data() + (c.heads + c.kv_heads) * D;
    r.v_token_stride = stride;
    r.k_out = cache.k(1) + c.pos * row;
    r.v_out = cache.v(1) + c.pos * row;
    r.kv_out_token_stride = row;
    cuda_rope_apply(r, nullptr);
    const std::vector<uint16_t> got = fetch(appended, "q | k | v after the append");
    int64_t bad_q = 0, bad_sources = 0;
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t col = 0; col < stride; ++col) {
        const size_t at = static_cast<size_t>(i * stride + col);
        if (col < c.heads * D)
          bad_q += got[at] != expect[at];
        else
          bad_sources += got[at] != fused[at];
      }
    EXPECT_EQ(bad_q, 0) << "q rotated in place as without the append";
    EXPECT_EQ(bad_sources, 0) << "k and v left as they were";
    for (int64_t l = 0; l < layers; ++l) {
      std::vector<uint16_t> k(sentinel.size()), v(sentinel.size());
      ASSERT_EQ(cudaMemcpy(k.data(), cache.k(l), k.size() * 2, cudaMemcpyDeviceToHost),
                cudaSuccess);
      ASSERT_EQ(cudaMemcpy(v.data(), cache.v(l), v.size() * 2, cudaMemcpyDeviceToHost),
                cudaSuccess);
      std::vector<uint16_t> expect_k = sentinel, expect_v = sentinel;
      if (l == 1)
        for (int64_t i = 0; i < c.n; ++i)
          for (int64_t e = 0; e < row; ++e) {
            const size_t to = static_cast<size_t>((c.pos + i) * row + e);
            expect_k[to] = expect[static_cast<size_t>(i * stride + c.heads * D + e)];
            expect_v[to] = fused[static_cast<size_t>(i * stride + (c.heads + c.kv_heads) * D + e)];
          }
      EXPECT_TRUE(k == expect_k) << "K of layer " << l;
      EXPECT_TRUE(v == expect_v) << "V of layer " << l;
    }
  }
  // The append's pieces go together, and its strides are checked.
  device_array<float> angles;
  const device_array<uint16_t> qkv = poisoned<uint16_t>(64 * 5 * 64);
  cuda_rope_params r = rope_launch(64, 64, 0, qkv.data(), 5 * 64, 3, 1, base, angles);
  r.k_out = qkv.data();
  EXPECT_NE(
      error_of([&] { cuda_rope_apply(r, nullptr); }).find("needs k, v, k_out and v_out together"),
      std::string::npos);
  r.v = qkv.data() + 4 * 64;
  r.v_out = qkv.data();
  r.v_token_stride = 5 * 64;
  r.kv_out_token_stride = 63;
  EXPECT_NE(error_of([&] { cuda_rope_apply(r, nullptr); }).find("kv_out_token_stride=63"),
            std::string::npos);
}

// ---- Greedy argmax ---------------------------------------------------------------------------

TEST(ModelOpsArgmax, FindsTheFirstLargest) {
  SP_SKIP_WITHOUT_DEVICE();
  for (const int64_t n : {1, 31, 1025, 49152, 151937}) {
    SCOPED_TRACE(str("argmax(n=", n, ")"));
    std::vector<float> x = random_values(n, static_cast<uint64_t>(n), -30.0f, 30.0f);
    const auto run = [&] {
      const device_array<float> dx = upload(x);
      const device_array<int32_t> dout = poisoned<int32_t>(1);
      cuda_argmax(dout.data(), dx.data(), n, nullptr);
      return static_cast<int64_t>(fetch(dout, "out")[0]);
    };
    EXPECT_EQ(run(), std::max_element(x.begin(), x.end()) - x.begin());
    if (n < 31) continue;
    // The maximum at two places: the first one wins.
    x[static_cast<size_t>(n - 2)] = x[17] = 100.0f;
    EXPECT_EQ(run(), 17);
    // A NaN is skipped.
    x[3] = NAN;
    EXPECT_EQ(run(), 17);
  }
}

// ---- Argument checks (no device needed: they fail before any launch) --------------------------

TEST(ModelOpsArguments, RejectBadValuesWithTheirNames) {
  uint16_t* fake = reinterpret_cast<uint16_t*>(uintptr_t(256));
  EXPECT_NE(error_of([&] { cuda_dequantize_to_bf16(fake, fake, ggml_type::q4_k, 256, nullptr); })
                .find("[cuda_dequantize_to_bf16] ggml type id 12"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cuda_dequantize_to_bf16(fake, fake, ggml_type::q4_1, 33, nullptr); })
                .find("element count 33"),
            std::string::npos);
  cuda_decode_params d;
  d.len = 10;
  d.heads = 9;
  d.kv_heads = 3;
  d.head_dim = 96;
  EXPECT_NE(error_of([&] { cuda_decode_attention(d, nullptr); }).find("head_dim=96"), std::string::npos);
  d.head_dim = 64;
  d.heads = 48;
  EXPECT_NE(error_of([&] { cuda_decode_attention(d, nullptr); }).find("GQA group of 16"),
            std::string::npos);
  d.heads = 65;
  d.kv_heads = 65;
  EXPECT_NE(error_of([&] { cuda_decode_attention(d, nullptr); }).find("kv_heads=65"), std::string::npos);
  d.heads = 9;
  d.kv_heads = 3;
  d.k = d.v = d.q = d.out = fake;
  d.kv_token_stride = 192;
  d.new_token.k = fake;
  d.new_token.v = fake;
  EXPECT_NE(error_of([&] { cuda_decode_attention(d, nullptr); }).find("cache_k == k"), std::string::npos);
  cuda_rope_params r;
  r.n = 4;
  r.head_dim = 64;
  r.pairs = 33;
  EXPECT_NE(error_of([&] { cuda_rope_apply(r, nullptr); }).find("pairs=33"), std::string::npos);
  r.pairs = 32;
  r.q = fake;
  r.heads = 1;
  r.q_token_stride = 65;  // pairs move as 32-bit words
  r.cos_sin = reinterpret_cast<const float*>(fake);
  EXPECT_NE(error_of([&] { cuda_rope_apply(r, nullptr); }).find("q_token_stride=65"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              cuda_rope_angles(reinterpret_cast<float*>(fake), 0, 4, nullptr, 0, 1.0f, nullptr);
            }).find("pairs=0"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cuda_rms_norm(fake, fake, dtype::f16, nullptr, nullptr, 1, 8, 1e-5, nullptr); })
                .find("input dtype f16"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cuda_swiglu(fake, 4, fake, fake, 8, 1, 8, nullptr); })
                .find("row strides (out 4, in 8)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cuda_kv_cache cache(2, 16, 3, 60); }).find("head_dim=60"), std::string::npos);
}

}  // namespace
}  // namespace sp
