// The GPU calibration capture (calibrate.h, cuda_capture) against the CPU capture
// (make_capture_attention), and the CUDA forward's on_attention_inputs hook that feeds it.
//  - Same inputs: random bf16 q, k, v (strided in one fused buffer, as the forward holds them)
//    into both captures. Both compute fp32 softmax mass from the same bf16 values, differing only
//    in summation order and the GPU's exp2 approximation (relative ~1e-6 per probability), so A
//    agrees within 1e-4 absolute (entries are O(1/nb) or more; a layout or normalisation error is
//    orders larger). vs_coverage is covered / total mass of A (sums of up to nb * nb entries,
//    each total ~nb), so it moves by at most 2 nb x A's error; the statistics are the same CPU
//    code on the same bf16 values.
//  - The model: the random Llama (random_llama.h), the GPU forward with the capture hook against
//    the CPU forward with the CPU capture. The tolerance is bf16's own error measured as in
//    test_llama_cuda: the CPU capture on the weights rounded to bf16 moves A by e_A from the fp32
//    reference; the GPU also rounds its activations (the same order), so |A_gpu - A_ref| <=
//    4 e_A + 1e-4 (the kernel's own, above), and vs_coverage within max(4 e_cov, 2 nb tol_A).
//    The hook must leave the forward's logits bit for bit unchanged. The real model (when
//    cached) on the golden prompt is held to the same bound.
// The CPU halves run here without a device (they check that the comparisons can fail: coverage
// below 1, e_A > 0); the GPU halves are skipped without one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model_fixture.h"
#include "random_llama.h"
#include "shareprefill/calibrate.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_llama.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::random_llama;
using testing::random_tokens;
using testing::rounded_to_bf16;

constexpr double kernel_tol = 1e-4;  // |A_gpu - A_cpu| on the same inputs (header comment)

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return testing::max_abs_diff(a.data(), b.data(), static_cast<int64_t>(std::min(a.size(), b.size())));
}

void expect_same_shape(const calibration_input& got, const calibration_input& ref) {
  EXPECT_EQ(got.n_tokens, ref.n_tokens);
  EXPECT_EQ(got.block_size, ref.block_size);
  EXPECT_EQ(got.n_blocks, ref.n_blocks);
  EXPECT_EQ(got.layers, ref.layers);
  EXPECT_EQ(got.heads, ref.heads);
  EXPECT_EQ(got.block_attention.size(), ref.block_attention.size());
  EXPECT_EQ(got.vs_coverage.size(), ref.vs_coverage.size());
}

// Every row of every head's A sums to 1 over c <= r and is 0 above the diagonal.
void expect_normalised(const calibration_input& in, double tol) {
  const int64_t nb = in.n_blocks;
  for (int64_t h = 0; h < in.head_count(); ++h)
    for (int64_t r = 0; r < nb; ++r) {
      const float* row = in.block_attention.data() + (h * nb + r) * nb;
      double sum = 0.0;
      for (int64_t c = 0; c <= r; ++c) sum += row[c];
      EXPECT_NEAR(sum, 1.0, tol) << "head " << h << " row " << r;
      for (int64_t c = r + 1; c < nb; ++c) ASSERT_EQ(row[c], 0.0f) << "head " << h << " row " << r;
    }
}

// q, k, v of one layer as the CUDA forward holds them: one fused bf16 row per token
// [q (H D) | k (Hkv D) | v (Hkv D)], uniform, q in [-3, 3] and k, v in [-1, 1] (scores of
// standard deviation ~1).
struct fused_qkv {
  int64_t n, heads, kv_heads, dim;
  std::vector<uint16_t> rows;  // [n, (H + 2 Hkv) D]
  int64_t width() const { return (heads + 2 * kv_heads) * dim; }
  tensor_view view(void* base, int64_t offset, int64_t h) const {
    tensor_view t;
    t.data = static_cast<uint16_t*>(base) + offset;
    t.type = dtype::bf16;
    t.rank = 3;
    t.shape[0] = n;
    t.shape[1] = h;
    t.shape[2] = dim;
    t.stride[0] = width();
    t.stride[1] = dim;
    t.stride[2] = 1;
    return t;
  }
  tensor_view q(void* base) const { return view(base, 0, heads); }
  tensor_view k(void* base) const { return view(base, heads * dim, kv_heads); }
  tensor_view v(void* base) const { return view(base, (heads + kv_heads) * dim, kv_heads); }
  // A contiguous host copy of one part, for the CPU capture.
  std::vector<uint16_t> part(const tensor_view& t) const {
    std::vector<uint16_t> out;
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t* r = static_cast<const uint16_t*>(t.data) + i * width();
      out.insert(out.end(), r, r + t.shape[1] * dim);
    }
    return out;
  }
};

fused_qkv random_qkv(int64_t n, uint64_t seed) {
  fused_qkv f{n, 6, 2, 64, {}};
  const std::vector<float> x = testing::random_values(n * f.width(), seed);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < f.width(); ++j)
      f.rows.push_back(fp32_to_bf16(x[static_cast<size_t>(i * f.width() + j)] *
                                    (j < f.heads * f.dim ? 3.0f : 1.0f)));
  return f;
}

const int64_t lengths[] = {300, 1536};  // three blocks (the last ragged), and twelve

TEST(CudaCapture, KernelMatchesTheCpuCaptureOnTheSameInputs) {
  thread_pool pool(2);
  const double gamma = 0.5;        // small budgets, so that coverage is not trivially 1
  const int64_t min_budget = 128;  // minB = 1
  std::vector<fused_qkv> inputs;
  std::vector<calibration_input> refs;
  for (const int64_t n : lengths) {  // the CPU half
    const fused_qkv& f = inputs.emplace_back(random_qkv(n, 40 + static_cast<uint64_t>(n)));
    void* host = const_cast<uint16_t*>(f.rows.data());
    std::vector<uint16_t> q = f.part(f.q(host)), k = f.part(f.k(host)), v = f.part(f.v(host));
    std::vector<float> out(static_cast<size_t>(n * f.heads * f.dim));
    calibration_input& ref = refs.emplace_back();
    auto cpu = make_capture_attention(&ref, 1, 128, gamma, min_budget);
    cpu->begin_prompt(n);
    cpu->attend(0, tensor_view::contiguous(out.data(), dtype::f32, {n, f.heads, f.dim}),
                tensor_view::contiguous(q.data(), dtype::bf16, {n, f.heads, f.dim}),
                tensor_view::contiguous(k.data(), dtype::bf16, {n, f.kv_heads, f.dim}),
                tensor_view::contiguous(v.data(), dtype::bf16, {n, f.kv_heads, f.dim}), pool);
  }
  const calibration_input& longest = refs.back();
  EXPECT_LT(*std::min_element(longest.vs_coverage.begin(), longest.vs_coverage.end()), 0.99)
      << "every head's coverage is ~1: the coverage comparison could not fail";
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device (the CPU half ran)";

  for (size_t i = 0; i < inputs.size(); ++i) {
    const fused_qkv& f = inputs[i];
    const calibration_input& ref = refs[i];
    SCOPED_TRACE("n = " + std::to_string(f.n));
    device_buffer d(f.rows.size() * 2);
    d.upload(f.rows.data(), f.rows.size() * 2);
    tensor_view dq = f.q(d.data()), dk = f.k(d.data()), dv = f.v(d.data());
    dq.on_device = dk.on_device = dv.on_device = true;
    calibration_input got;
    cuda_capture gpu(&got, 1, pool, gamma, min_budget);
    gpu.capture_layer(0, dq, dk, dv);

    expect_same_shape(got, ref);
    expect_normalised(got, kernel_tol * static_cast<double>(got.n_blocks));
    const double a_diff = max_diff(got.block_attention, ref.block_attention);
    const double cov_diff = max_diff(got.vs_coverage, ref.vs_coverage);
    std::printf("n %lld: max |A diff| %.3g, max |coverage diff| %.3g\n",
                static_cast<long long>(f.n), a_diff, cov_diff);
    EXPECT_LE(a_diff, kernel_tol);
    EXPECT_LE(cov_diff, 2.0 * static_cast<double>(got.n_blocks) * kernel_tol);
  }
}

TEST(CudaCapture, ModelHookMatchesTheCpuCapture) {
  thread_pool pool(2);
  const llama_weights w = random_llama(7);
  const llama_weights w16 = rounded_to_bf16(w);
  const int64_t layers = w.config.n_layers;
  std::vector<calibration_input> refs, refs16;
  for (const int64_t n : lengths) {  // the CPU half: the reference and bf16's own error
    const std::vector<int32_t> prompt = random_tokens(n, w.config.vocab_size, 8);
    for (auto [weights, dst] :
         {std::pair{&w, &refs.emplace_back()}, std::pair{&w16, &refs16.emplace_back()}}) {
      auto capture = make_capture_attention(dst, layers);
      llama_session cpu(*weights, pool, n);
      prefill_options po;
      po.attention = capture.get();
      cpu.prefill(prompt, po);
    }
    const double e_a = max_diff(refs16.back().block_attention, refs.back().block_attention);
    std::printf("random model n %lld on the CPU: bf16 weights move A by e_A %.3g, coverage by "
                "%.3g\n", static_cast<long long>(n), e_a,
                max_diff(refs16.back().vs_coverage, refs.back().vs_coverage));
    ASSERT_GT(e_a, 0.0) << "bf16 rounding of the weights must move A";
  }
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device (the CPU half ran)";

  const cuda_llama_weights dw = cuda_llama_weights_upload(w);
  for (size_t i = 0; i < refs.size(); ++i) {
    const int64_t n = lengths[i];
    SCOPED_TRACE("n = " + std::to_string(n));
    const calibration_input &ref = refs[i], &ref16 = refs16[i];
    const std::vector<int32_t> prompt = random_tokens(n, w.config.vocab_size, 8);
    cuda_llama_session plain(dw, n), hooked(dw, n);
    const prefill_result without = plain.prefill(prompt, {});
    calibration_input got;
    cuda_capture capture(&got, layers, pool);
    prefill_options po;
    po.on_attention_inputs = capture.hook();
    const prefill_result with = hooked.prefill(prompt, po);
    EXPECT_EQ(with.logits, without.logits) << "the capture hook changed the forward";

    expect_same_shape(got, ref);
    expect_normalised(got, kernel_tol * static_cast<double>(got.n_blocks));
    const double e_a = max_diff(ref16.block_attention, ref.block_attention);
    const double e_cov = max_diff(ref16.vs_coverage, ref.vs_coverage);
    const double tol_a = 4.0 * e_a + kernel_tol;
    const double tol_cov = std::max(4.0 * e_cov, 2.0 * static_cast<double>(got.n_blocks) * tol_a);
    const double a_diff = max_diff(got.block_attention, ref.block_attention);
    const double cov_diff = max_diff(got.vs_coverage, ref.vs_coverage);
    std::printf("model n %lld: max |A diff| %.3g (e_A %.3g), max |coverage diff| %.3g (e_cov %.3g)\n",
                static_cast<long long>(n), a_diff, e_a, cov_diff, e_cov);
    EXPECT_LE(a_diff, tol_a);
    EXPECT_LE(cov_diff, tol_cov);
  }
}

// The real model (the cached default GGUF, dequantised on the device as calibrate --device cuda
// loads it) on the golden prompt (tests/data/model_golden.json, 361 tokens): the same bound as
// the random model's. Printed besides: the js distances' largest change and the agreement (ARI)
// of the clusterings at the default cut.
TEST(CudaCapture, RealModelMatchesTheCpuCapture) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  SP_SKIP_WITHOUT_MODEL();
  std::ifstream f(std::string(SP_SOURCE_DIR) + "/tests/data/model_golden.json");
  ASSERT_TRUE(f.good());
  const auto ids = nlohmann::json::parse(f).at("token_ids").get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(ids.size());
  thread_pool pool(4);
  const llama_weights& w = testing::default_model_weights(pool);
  const int64_t layers = w.config.n_layers;
  calibration_input ref, ref16, got;
  {
    const llama_weights w16 = rounded_to_bf16(w);
    for (auto [weights, dst] : {std::pair{&w, &ref}, std::pair{&w16, &ref16}}) {
      auto capture = make_capture_attention(dst, layers);
      llama_session cpu(*weights, pool, n);
      prefill_options po;
      po.attention = capture.get();
      cpu.prefill(ids, po);
    }
  }
  const cuda_llama_weights dw = cuda_llama_weights_load(default_model_path());
  cuda_llama_session gpu(dw, n);
  cuda_capture capture(&got, layers, pool);
  prefill_options po;
  po.on_attention_inputs = capture.hook();
  gpu.prefill(ids, po);

  expect_same_shape(got, ref);
  expect_normalised(got, kernel_tol * static_cast<double>(got.n_blocks));
  const double e_a = max_diff(ref16.block_attention, ref.block_attention);
  const double e_cov = max_diff(ref16.vs_coverage, ref.vs_coverage);
  const double tol_a = 4.0 * e_a + kernel_tol;
  const double a_diff = max_diff(got.block_attention, ref.block_attention);
  const double cov_diff = max_diff(got.vs_coverage, ref.vs_coverage);
  EXPECT_LE(a_diff, tol_a) << "e_A = " << e_a;
  EXPECT_LE(cov_diff, std::max(4.0 * e_cov, 2.0 * static_cast<double>(got.n_blocks) * tol_a));
  const distance_matrix d_ref = js_distances(ref), d_got = js_distances(got);
  double d_diff = 0.0;
  for (size_t i = 0; i < d_ref.d.size(); ++i)
    d_diff = std::max(d_diff, std::fabs(d_ref.d[i] - d_got.d[i]));
  const int64_t heads = ref.head_count();
  const double ari =
      adjusted_rand_index(cut_at_distance(average_linkage(d_got), heads, 0.15),
                          cut_at_distance(average_linkage(d_ref), heads, 0.15));
  std::printf("real model, %lld tokens: max |A diff| %.3g (e_A %.3g), max |coverage diff| %.3g "
              "(e_cov %.3g), max |js distance diff| %.3g, ARI of the clusterings at cut 0.15 %.3f\n",
              static_cast<long long>(n), a_diff, e_a, cov_diff, e_cov, d_diff, ari);
  RecordProperty("real_model_max_abs_a_diff", std::to_string(a_diff));
  RecordProperty("real_model_cluster_ari", std::to_string(ari));
}

TEST(CudaCapture, HookIsRefusedInAChunkedPrefill) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const llama_weights w = random_llama(7);
  const cuda_llama_weights dw = cuda_llama_weights_upload(w);
  cuda_llama_session s(dw, 512);
  thread_pool pool(2);
  calibration_input got;
  cuda_capture capture(&got, w.config.n_layers, pool);
  prefill_options po;
  po.chunk = 128;
  po.on_attention_inputs = capture.hook();
  const std::string e =
      testing::error_of([&] { s.prefill(random_tokens(300, w.config.vocab_size, 3), po); });
  EXPECT_NE(e.find("on_attention_inputs"), std::string::npos) << e;
  EXPECT_NE(e.find("chunked prefill"), std::string::npos) << e;
}

TEST(CudaCapture, RefusesHostViewsAndBadSettings) {
  thread_pool pool(1);
  calibration_input got;
  EXPECT_NE(testing::error_of([&] { cuda_capture c(&got, 0, pool); }).find("layers must be"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { cuda_capture c(nullptr, 1, pool); }).find("null"),
            std::string::npos);
  std::vector<uint16_t> x(128 * 2 * 64);
  const tensor_view host = tensor_view::contiguous(x.data(), dtype::bf16, {128, 2, 64});
  cuda_capture c(&got, 1, pool);
  EXPECT_NE(testing::error_of([&] { c.capture_layer(0, host, host, host); })
                .find("q must be a rank-3 bf16 device view"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
