// The decode GEMVs (cuda_rms_norm_gemv, cuda_swiglu_gemv_residual, cuda_gemv_residual) against a
// CPU reference in fp64 at ragged sizes (n not a multiple of a block's rows, 4 R for R = 1, 2, 4
// rows per warp; k not a multiple of the 256 values a warp reads at once; k past one chunk of 8
// vectors per lane), their
// argument checks, Programmatic Dependent Launch giving the same bits, and a whole decode step of
// cuda_llama_session with the fused GEMVs against the cuBLASLt path and the CPU forward.
//
// Tolerance of the kernels: the reference rounds its input vector to bf16 as the kernel does
// (x * inv * weight for the norm, silu(gate) * up for SwiGLU) from values computed in fp64. The
// kernel computes them in fp32 (inv from an fp32 sum of k squares: relative error <= (k + 16) u;
// SwiGLU: <= 16 u), so an element within that distance of a bf16 rounding boundary may round the
// other way: such an element adds |w| times the spread of its two roundings to the tolerance. The
// fp32 dot product adds (k + 64) u sum |w a| and the output rounding (bf16: 2^-8 |y|, fp32 or the
// residual add: 2 u |y|). A wrong, missing or doubled element costs |w a| ~ 0.1-1, far above.
// Everything that launches is skipped without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "model_ops_test_util.h"
#include "random_llama.h"
#include "shareprefill/cuda_graph.h"
#include "shareprefill/cuda_llama.h"
#include "shareprefill/cuda_model_ops.h"
#include "shareprefill/llama_model.h"
#include "shareprefill/sampling.h"
#include "shareprefill/thread_pool.h"
#include "test_util.h"

namespace sp {
namespace {

using namespace device_test;
using testing::random_values;

// An input vector as the kernel rounds it: the bf16 value of v (computed in fp64) and the spread
// of the bf16 roundings of every value within relative distance rel of v (0 when they agree).
struct rounded_input {
  std::vector<float> a;
  std::vector<double> spread;
};

void push_rounded(rounded_input& in, double v, double rel) {
  const double a = round_to_bf16(static_cast<float>(v));
  const double lo = round_to_bf16(static_cast<float>(v * (1.0 - rel)));
  const double hi = round_to_bf16(static_cast<float>(v * (1.0 + rel)));
  in.a.push_back(static_cast<float>(a));
  in.spread.push_back(std::max(std::fabs(a - lo), std::fabs(a - hi)));
}

// a = bf16(x / sqrt(mean(x^2) + eps) * weight); the kernel's inv carries an fp32 sum of k terms.
rounded_input rms_norm_input(const std::vector<float>& x, const std::vector<float>& weight,
                             double eps) {
  const int64_t k = static_cast<int64_t>(x.size());
  double ss = 0.0;
  for (float v : x) ss += double(v) * v;
  const double inv = 1.0 / std::sqrt(ss / double(k) + double(static_cast<float>(eps)));
  rounded_input in;
  for (int64_t i = 0; i < k; ++i)
    push_rounded(in, double(x[size_t(i)]) * inv * weight[size_t(i)], double(k + 16) * fp32_u);
  return in;
}

// a = bf16(silu(gate) * up), gate and up bf16 values.
rounded_input swiglu_input(const std::vector<float>& gate, const std::vector<float>& up) {
  rounded_input in;
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    push_rounded(in, g / (1.0 + std::exp(-g)) * up[i], 16 * fp32_u);
  }
  return in;
}

rounded_input exact_input(const std::vector<float>& a) {
  return {a, std::vector<double>(a.size(), 0.0)};
}

// [n]: w . a in fp64, and the allowed |device - y| before the output's rounding.
struct reference {
  std::vector<double> y, tol;
};

reference gemv_reference(const std::vector<float>& w, int64_t n, int64_t k,
                         const rounded_input& in) {
  reference r;
  for (int64_t row = 0; row < n; ++row) {
    const float* wr = w.data() + row * k;
    double sum = 0.0, magnitude = 0.0, ambiguity = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      sum += double(wr[i]) * in.a[size_t(i)];
      magnitude += std::fabs(double(wr[i]) * in.a[size_t(i)]);
      ambiguity += std::fabs(double(wr[i])) * in.spread[size_t(i)];
    }
    r.y.push_back(sum);
    r.tol.push_back(double(k + 64) * fp32_u * magnitude + ambiguity);
  }
  return r;
}

struct gemv_case {
  int64_t n, k;
};

// Rows not a multiple of a block's (4 below 2048 rows, 8 below 8192, else 16), k of 1 .. 3072
// vectors (VPL 1, 2, 3, 4, 6 and 8, the last with 1, 2, 3 and 12 chunks), the model's shapes
// (SmolLM2: qkv 960 x 576, gate|up 3072 x 576, down 576 x 1536, wo 576 x 576, head 49152 x 576).
const std::vector<gemv_case> norm_cases = {
    {1, 8},      {5, 72},    {17, 392},   {100, 776}, {963, 576},   {960, 576}, {3072, 576},
    {2051, 584}, {37, 2056}, {501, 4104}, {6, 1544},  {49152, 576}, {8197, 72}, {8195, 2056}};
const std::vector<gemv_case> residual_cases = {{1, 8},      {9, 392},     {576, 576}, {577, 584},
                                               {576, 1536}, {33, 776},    {3, 2056},  {64, 4104},
                                               {7, 24576},  {2049, 1544}, {8193, 776}};

std::vector<uint16_t> random_weights(int64_t n, int64_t k, uint64_t seed) {
  return to_bf16(random_bf16_values(n * k, seed, -1.0f, 1.0f));
}

TEST(ModelGemv, RmsNormGemvMatchesFp64Reference) {
  SP_SKIP_WITHOUT_DEVICE();
  for (const gemv_case& c : norm_cases) {
    for (const dtype y_type : {dtype::bf16, dtype::f32}) {
      const uint64_t seed = static_cast<uint64_t>(c.n * 7 + c.k);
      const std::vector<uint16_t> w = random_weights(c.n, c.k, seed);
      const std::vector<float> x = random_values(c.k, seed + 1, -2.0f, 2.0f);
      const std::vector<float> g = random_values(c.k, seed + 2, 0.8f, 1.2f);
      const double eps = 1e-5;
      const reference ref = gemv_reference(from_bf16(w), c.n, c.k, rms_norm_input(x, g, eps));
      const auto dw = upload(w);
      const auto dx = upload(x), dg = upload(g);
      std::vector<float> got;
      if (y_type == dtype::bf16) {
        const auto y = poisoned<uint16_t>(size_t(c.n));
        cuda_rms_norm_gemv(y.data(), y_type, dx.data(), dg.data(), dw.data(), c.n, c.k, eps,
                           nullptr);
        got = from_bf16(fetch(y, "y"));
      } else {
        const auto y = poisoned<float>(size_t(c.n));
        cuda_rms_norm_gemv(y.data(), y_type, dx.data(), dg.data(), dw.data(), c.n, c.k, eps,
                           nullptr);
        got = fetch(y, "y");
      }
      const double out_u = y_type == dtype::bf16 ? bf16_u : 2 * fp32_u;
      int64_t bad = 0;
      for (int64_t r = 0; r < c.n; ++r) {
        const double tol =
            ref.tol[size_t(r)] + out_u * (std::fabs(ref.y[size_t(r)]) + ref.tol[size_t(r)]);
        if (!within(got[size_t(r)], ref.y[size_t(r)], tol) && bad++ < 3)
          ADD_FAILURE() << "n=" << c.n << " k=" << c.k << " " << dtype_name(y_type) << " row " << r
                        << ": got " << got[size_t(r)] << ", reference " << ref.y[size_t(r)]
                        << " +- " << tol;
      }
      EXPECT_EQ(bad, 0) << "n=" << c.n << " k=" << c.k << " " << dtype_name(y_type);
    }
  }
}

// The residual kernels: x0 + w . a against the reference, for the SwiGLU input and a plain one.
void expect_residual(const std::vector<float>& got, const std::vector<float>& x0,
                     const reference& ref, const std::string& what) {
  int64_t bad = 0;
  for (size_t r = 0; r < x0.size(); ++r) {
    const double want = double(x0[r]) + ref.y[r];
    const double tol =
        ref.tol[r] + 2 * fp32_u * (std::fabs(x0[r]) + std::fabs(ref.y[r]) + ref.tol[r]);
    if (!within(got[r], want, tol) && bad++ < 3)
      ADD_FAILURE() << what << " row " << r << ": got " << got[r] << ", reference " << want
                    << " +- " << tol;
  }
  EXPECT_EQ(bad, 0) << what;
}

TEST(ModelGemv, SwigluGemvResidualMatchesFp64Reference) {
  SP_SKIP_WITHOUT_DEVICE();
  for (const gemv_case& c : residual_cases) {
    const uint64_t seed = static_cast<uint64_t>(c.n * 11 + c.k);
    const std::vector<uint16_t> w = random_weights(c.n, c.k, seed);
    // gate | up as the halves of one [2k] row, as the gate|up GEMM leaves them
    const std::vector<float> gate = random_bf16_values(c.k, seed + 1, -6.0f, 6.0f);
    const std::vector<float> up = random_bf16_values(c.k, seed + 2, -2.0f, 2.0f);
    std::vector<float> gate_up = gate;
    gate_up.insert(gate_up.end(), up.begin(), up.end());
    const std::vector<float> x0 = random_values(c.n, seed + 3, -4.0f, 4.0f);
    const reference ref = gemv_reference(from_bf16(w), c.n, c.k, swiglu_input(gate, up));
    const auto dw = upload(w);
    const auto dgu = upload(to_bf16(gate_up));
    const auto x = upload(x0);
    cuda_swiglu_gemv_residual(x.data(), dgu.data(), dgu.data() + c.k, dw.data(), c.n, c.k, nullptr);
    expect_residual(fetch(x, "x"), x0, ref,
                    "swiglu n=" + std::to_string(c.n) + " k=" + std::to_string(c.k));
  }
}

TEST(ModelGemv, GemvResidualMatchesFp64Reference) {
  SP_SKIP_WITHOUT_DEVICE();
  for (const gemv_case& c : residual_cases) {
    const uint64_t seed = static_cast<uint64_t>(c.n * 13 + c.k);
    const std::vector<uint16_t> w = random_weights(c.n, c.k, seed);
    const std::vector<float> a = random_bf16_values(c.k, seed + 1, -1.0f, 1.0f);
    const std::vector<float> x0 = random_values(c.n, seed + 2, -4.0f, 4.0f);
    const reference ref = gemv_reference(from_bf16(w), c.n, c.k, exact_input(a));
    const auto dw = upload(w);
    const auto da = upload(to_bf16(a));
    const auto x = upload(x0);
    cuda_gemv_residual(x.data(), da.data(), dw.data(), c.n, c.k, nullptr);
    expect_residual(fetch(x, "x"), x0, ref,
                    "plain n=" + std::to_string(c.n) + " k=" + std::to_string(c.k));
  }
}

// Each kernel twice in a row on a stream of its own (the second reads what the first wrote: x for
// the norm and the residual sums), the second launched plainly or by Programmatic Dependent
// Launch: the same bits (it waits for the first before reading), and the same bits again on a
// second run (no atomics: deterministic).
TEST(ModelGemv, ProgrammaticLaunchGivesTheSameBits) {
  SP_SKIP_WITHOUT_DEVICE();
  const int64_t n = 601, k = 584;  // n >= k: x [n] is also the norm's input [k]
  const std::vector<uint16_t> w = random_weights(n, k, 21);
  const auto dw = upload(w);
  const auto norm_weight = upload(random_values(k, 22, 0.8f, 1.2f));
  const auto a = upload(to_bf16(random_bf16_values(2 * k, 23, -3.0f, 3.0f)));
  const std::vector<float> x0 = random_values(n, 24, -2.0f, 2.0f);
  cuda_stream stream;
  const auto run = [&](bool programmatic) {
    const auto x = upload(x0);
    const auto y = poisoned<uint16_t>(size_t(n));
    const auto y2 = poisoned<float>(size_t(n));
    void* const s = stream.get();
    cuda_gemv_residual(x.data(), a.data(), dw.data(), n, k, s);
    cuda_gemv_residual(x.data(), a.data(), dw.data(), n, k, s, programmatic);
    cuda_swiglu_gemv_residual(x.data(), a.data(), a.data() + k, dw.data(), n, k, s, programmatic);
    cuda_rms_norm_gemv(y.data(), dtype::bf16, x.data(), norm_weight.data(), dw.data(), n, k, 1e-5,
                       s, programmatic);
    cuda_rms_norm_gemv(y2.data(), dtype::f32, x.data(), norm_weight.data(), dw.data(), n, k, 1e-5,
                       s, programmatic);
    stream.synchronize();
    std::vector<float> out = fetch(x, "x");
    for (const float v : from_bf16(fetch(y, "y"))) out.push_back(v);
    for (const float v : fetch(y2, "y2")) out.push_back(v);
    return out;
  };
  const std::vector<float> plain = run(false), overlapped = run(true), again = run(false);
  EXPECT_EQ(std::memcmp(plain.data(), overlapped.data(), plain.size() * sizeof(float)), 0)
      << "max |diff| "
      << testing::max_abs_diff(plain.data(), overlapped.data(), int64_t(plain.size()));
  EXPECT_EQ(std::memcmp(plain.data(), again.data(), plain.size() * sizeof(float)), 0);
}

// The argument checks run before any launch: no device needed.
TEST(ModelGemv, RejectsShapesAndPointersItCannotTake) {
  auto* const y = reinterpret_cast<uint16_t*>(uintptr_t{1} << 20);  // never dereferenced
  auto* const x = reinterpret_cast<float*>(uintptr_t{2} << 20);
  auto* const w = reinterpret_cast<const uint16_t*>(uintptr_t{4} << 20);
  const auto error = [](auto&& f) { return testing::error_of(f); };
  EXPECT_NE(error([&] { cuda_gemv_residual(x, y, w, 4, 12, nullptr); }).find("multiple of 8"),
            std::string::npos);
  EXPECT_NE(error([&] {
              cuda_gemv_residual(x, y, w + 1, 4, 16, nullptr);
            }).find("w must be 16-byte aligned"),
            std::string::npos);
  EXPECT_NE(error([&] { cuda_gemv_residual(x, y + 4, w, 4, 16, nullptr); }).find("16-byte aligned"),
            std::string::npos);
  EXPECT_NE(error([&] { cuda_gemv_residual(x, y, w, 0, 16, nullptr); }).find("n=0"),
            std::string::npos);
  EXPECT_NE(error([&] {
              cuda_swiglu_gemv_residual(x, y, y + 8, w, 4, 24584, nullptr);
            }).find("exceeds 24576"),
            std::string::npos);
  EXPECT_NE(error([&] {
              cuda_rms_norm_gemv(x + 8, dtype::f32, x, x, w, 16, 64, 1e-5, nullptr);
            }).find("y overlaps x"),
            std::string::npos);
  EXPECT_NE(error([&] {
              cuda_rms_norm_gemv(y, dtype::f16, x, x, w, 16, 64, 1e-5, nullptr);
            }).find("bf16 or f32"),
            std::string::npos);
  EXPECT_NE(error([&] {
              cuda_rms_norm_gemv(y, dtype::bf16, x, x, w, 16, 64, 0.0, nullptr);
            }).find("eps must be positive"),
            std::string::npos);
  EXPECT_NE(error([&] {
              cuda_rms_norm_gemv(y, dtype::bf16, nullptr, x, w, 16, 64, 1e-5, nullptr);
            }).find("null pointer"),
            std::string::npos);
}

// ---- A whole decode step
// -------------------------------------------------------------------------

// The random Llama of test_llama_cuda.cpp with an FFN of 776 (97 vectors: ragged against a
// warp's 32 lanes) and a vocabulary of 504.
llama_weights ragged_llama(uint64_t seed) { return testing::random_llama(seed, 776, 504); }
using testing::random_tokens;
using testing::rounded_to_bf16;

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  return testing::max_abs_diff(a.data(), b.data(), static_cast<int64_t>(a.size()));
}

// Decode steps with the fused GEMVs against the same steps on the cuBLASLt path and against the
// CPU forward on the fp32 weights. e_w, the logits' change when the CPU forward's weights are
// rounded to bf16, scales the tolerances as in test_llama_cuda.cpp: each GPU path within 4 e_w
// of the CPU forward, and the two GPU paths within e_w of each other (they compute the same bf16
// values but for fp32 summation order and the roundings it tips: far below the weight rounding).
// Top-1 agrees where the CPU's lead exceeds 2 x 4 e_w.
TEST(ModelGemv, FusedDecodeStepMatchesTheCublasLtPathAndTheCpuForward) {
  SP_SKIP_WITHOUT_DEVICE();
  thread_pool pool(2);
  const llama_weights w = ragged_llama(31), w16 = rounded_to_bf16(w);
  const int64_t n = 250, steps = 6, vocab = w.config.vocab_size;
  const std::vector<int32_t> prompt = random_tokens(n, vocab, 32);
  const std::vector<int32_t> next = random_tokens(steps, vocab, 33);
  llama_session cpu(w, pool, n + steps), cpu16(w16, pool, n + steps);
  const cuda_llama_weights dw = cuda_llama_weights_upload(w);
  cuda_llama_session fused(dw, n + steps), cublas(dw, n + steps);
  fused.set_decode_fused_gemv(true);
  cublas.set_decode_fused_gemv(false);
  EXPECT_TRUE(fused.decode_fused_gemv());
  EXPECT_FALSE(cublas.decode_fused_gemv());
  const double prefill_e_w =
      max_diff(cpu16.prefill(prompt, {}).logits, cpu.prefill(prompt, {}).logits);
  fused.prefill(prompt, {});
  cublas.prefill(prompt, {});
  double largest_gpu_diff = 0.0;
  for (int64_t i = 0; i < steps; ++i) {
    const int32_t t = next[static_cast<size_t>(i)];
    const std::vector<float> r = cpu.decode(t), r16 = cpu16.decode(t), f = fused.decode(t),
                             b = cublas.decode(t);
    const double e_w = std::max(max_diff(r16, r), prefill_e_w);  // as test_llama_cuda.cpp's
    ASSERT_GT(e_w, 0.0) << "bf16 rounding of the weights must move the logits";
    const double gpu_diff = max_diff(f, b);
    largest_gpu_diff = std::max(largest_gpu_diff, gpu_diff);
    std::printf(
        "decode step %lld: fused vs cuBLASLt %.3g, fused vs CPU %.3g, cuBLASLt vs CPU %.3g, "
        "e_w %.3g\n",
        static_cast<long long>(i), gpu_diff, max_diff(f, r), max_diff(b, r), e_w);
    EXPECT_LE(gpu_diff, e_w) << "step " << i;
    EXPECT_LE(max_diff(f, r), 4 * e_w) << "step " << i;
    EXPECT_LE(max_diff(b, r), 4 * e_w) << "step " << i;
    const int64_t best = std::max_element(r.begin(), r.end()) - r.begin();
    double second = -INFINITY;
    for (int64_t v = 0; v < vocab; ++v)
      if (v != best) second = std::max(second, double(r[size_t(v)]));
    if (double(r[size_t(best)]) - second > 8 * e_w) {
      EXPECT_EQ(argmax(f.data(), vocab), best) << "step " << i;
    }
  }
  // The fused path must actually have run: other summation orders leave some logit different.
  EXPECT_GT(largest_gpu_diff, 0.0) << "fused and cuBLASLt decode gave identical bits";
  EXPECT_EQ(fused.length(), n + steps);
}

// With the fused GEMVs a decode step replayed from captured graphs gives the eager launches'
// logits bit for bit, across a length bucket (lengths 251..262: buckets 256 and the capacity),
// and so does the step with Programmatic Dependent Launch; decode_greedy returns their argmax.
// Switching the GEMVs off and on between steps drops the graphs: a graphed session switched so
// gives the bits of an eager one switched alike (a stale graph would run the other path).
TEST(ModelGemv, FusedDecodeGraphMatchesEagerLaunchesBitForBit) {
  SP_SKIP_WITHOUT_DEVICE();
  const llama_weights w = ragged_llama(41);
  const cuda_llama_weights dw = cuda_llama_weights_upload(w);
  const int64_t n = 250, capacity = 300, steps = 12, vocab = w.config.vocab_size;
  const std::vector<int32_t> prompt = random_tokens(n, vocab, 42);
  cuda_llama_session graphed(dw, capacity), eager(dw, capacity), greedy(dw, capacity),
      overlapped(dw, capacity), toggled(dw, capacity), toggled_eager(dw, capacity);
  for (cuda_llama_session* s : {&graphed, &eager, &greedy, &overlapped, &toggled, &toggled_eager}) {
    s->set_decode_fused_gemv(true);
    s->set_decode_programmatic_launch(s == &overlapped);  // on by default
  }
  eager.set_decode_graphs(false);
  toggled_eager.set_decode_graphs(false);
  const prefill_result first = graphed.prefill(prompt, {});
  for (cuda_llama_session* s : {&eager, &greedy, &overlapped, &toggled, &toggled_eager})
    s->prefill(prompt, {});
  int32_t token = argmax(first.logits.data(), vocab);
  for (int64_t i = 0; i < steps; ++i) {
    const std::vector<float> g = graphed.decode(token), e = eager.decode(token),
                             o = overlapped.decode(token);
    EXPECT_EQ(std::memcmp(g.data(), e.data(), g.size() * sizeof(float)), 0)
        << "step " << i << ": max |diff| " << max_diff(g, e);
    EXPECT_EQ(std::memcmp(o.data(), e.data(), o.size() * sizeof(float)), 0)
        << "programmatic launch, step " << i;
    const bool fused = i % 3 != 1;  // steps 1, 4, 7, 10 on the cuBLASLt path
    toggled.set_decode_fused_gemv(fused);
    toggled_eager.set_decode_fused_gemv(fused);
    const std::vector<float> t = toggled.decode(token), te = toggled_eager.decode(token);
    EXPECT_EQ(std::memcmp(t.data(), te.data(), t.size() * sizeof(float)), 0)
        << "switched to " << (fused ? "fused" : "cuBLASLt") << ", step " << i;
    if (i == 0) {
      EXPECT_EQ(std::memcmp(t.data(), e.data(), t.size() * sizeof(float)), 0) << "toggled, step 0";
    }
    const int32_t best = argmax(e.data(), vocab);
    EXPECT_EQ(greedy.decode_greedy(token), best) << "step " << i;
    token = best;
  }
  EXPECT_EQ(graphed.length(), n + steps);
  EXPECT_EQ(toggled.length(), n + steps);
}

}  // namespace
}  // namespace sp
