// The CPU Llama forward against Hugging Face transformers (fp32) on the same GGUF: the golden
// file tests/data/model_golden.json is written by scripts/make_model_golden.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model_fixture.h"
#include "test_util.h"

namespace sp {
namespace {

nlohmann::json load_golden() {
  std::ifstream f(std::string(SP_SOURCE_DIR) + "/tests/data/model_golden.json");
  EXPECT_TRUE(f.good()) << "tests/data/model_golden.json missing";
  nlohmann::json j = nlohmann::json::parse(f);
  EXPECT_EQ(j.at("format"), "shareprefill.model_golden/1")
      << "re-generate with scripts/make_model_golden.py";
  return j;
}

TEST(LlamaForward, MatchesTransformersLogits) {
  SP_SKIP_WITHOUT_MODEL();
  const nlohmann::json g = load_golden();
  thread_pool pool(2);
  const llama_weights& w = testing::default_model_weights(pool);
  const auto ids = g.at("token_ids").get<std::vector<int32_t>>();
  const auto probe = g.at("probe_ids").get<std::vector<int32_t>>();
  prefill_options opt;
  for (const auto& row : g.at("positions")) opt.logit_positions.push_back(row.at("position"));
  // RMS of the residual stream entering each layer, at the golden positions.
  std::vector<std::vector<double>> hidden_rms(opt.logit_positions.size());
  opt.on_hidden = [&](int64_t l, const float* x) {
    if (l >= w.config.n_layers) return;  // HF reports the last state after the final norm
    for (size_t p = 0; p < opt.logit_positions.size(); ++p) {
      const float* row = x + opt.logit_positions[p] * w.config.dim;
      double ss = 0;
      for (int64_t e = 0; e < w.config.dim; ++e) ss += double(row[e]) * row[e];
      hidden_rms[p].push_back(std::sqrt(ss / double(w.config.dim)));
    }
  };
  llama_session s(w, pool, static_cast<int64_t>(ids.size()));
  const prefill_result r = s.prefill(ids, opt);
  const int64_t vocab = w.config.vocab_size;
  double max_delta = 0.0;
  for (size_t p = 0; p < opt.logit_positions.size(); ++p) {
    const auto& row = g.at("positions")[p];
    const float* logits = r.logits.data() + p * vocab;
    const int64_t top1 = std::max_element(logits, logits + vocab) - logits;
    EXPECT_EQ(top1, row.at("top_ids")[0].get<int64_t>()) << "position " << row.at("position");
    const auto top_ids = row.at("top_ids").get<std::vector<int32_t>>();
    const auto top_logits = row.at("top_logits").get<std::vector<double>>();
    for (size_t i = 0; i < top_ids.size(); ++i)
      max_delta = std::max(max_delta, std::fabs(logits[top_ids[i]] - top_logits[i]));
    const auto rms = row.at("hidden_rms").get<std::vector<double>>();
    ASSERT_EQ(rms.size(), hidden_rms[p].size());
    for (size_t l = 0; l < rms.size(); ++l)  // fp32 noise, relative; stored with 6 decimals
      EXPECT_NEAR(hidden_rms[p][l], rms[l], 1e-4 * rms[l] + 1e-5) << "layer " << l;
    const auto probe_logits = row.at("probe_logits").get<std::vector<double>>();
    for (size_t i = 0; i < probe.size(); ++i)
      max_delta = std::max(max_delta, std::fabs(logits[probe[i]] - probe_logits[i]));
  }
  // Both sides run fp32 on the same dequantised weights; the differences are summation order
  // (OpenBLAS vs torch GEMMs, our online softmax vs HF's eager softmax) amplified through 30
  // layers. Seen: 5.6e-5 on logits of magnitude ~10-20. 1e-3 leaves room for other BLAS
  // builds and still catches any real bug (a wrong RoPE pairing or norm moves logits by units).
  EXPECT_LT(max_delta, 1e-3);
  RecordProperty("max_abs_logit_delta", std::to_string(max_delta));
}

TEST(LlamaForward, DecodeContinuesThePrefillExactly) {
  SP_SKIP_WITHOUT_MODEL();
  const nlohmann::json g = load_golden();
  thread_pool pool(2);
  const llama_weights& w = testing::default_model_weights(pool);
  auto ids = g.at("token_ids").get<std::vector<int32_t>>();
  ids.resize(100);
  // Prefill of 100 tokens then decode of token 100 must equal a prefill of 101 tokens.
  llama_session a(w, pool, 101), b(w, pool, 101);
  a.prefill(ids, {});
  const int32_t next = g.at("token_ids")[100];
  const std::vector<float> decoded = a.decode(next);
  ids.push_back(next);
  const prefill_result full = b.prefill(ids, {});
  // Same math, different kernels (tiled online softmax vs the decode loop): fp32 noise only.
  EXPECT_LT(testing::max_abs_diff(decoded.data(), full.logits.data(), w.config.vocab_size), 2e-3);
}

TEST(LlamaForward, ChunkedPrefillMatchesTheWholePrompt) {
  SP_SKIP_WITHOUT_MODEL();
  const nlohmann::json g = load_golden();
  thread_pool pool(2);
  const llama_weights& w = testing::default_model_weights(pool);
  auto ids = g.at("token_ids").get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), 300u);
  ids.resize(300);  // chunks of 128: [0, 128), [128, 256), [256, 300)
  prefill_options opt;
  opt.logit_positions = {100, 200, 299};
  llama_session whole(w, pool, 301), chunked(w, pool, 301);
  const prefill_result a = whole.prefill(ids, opt);
  opt.chunk = 128;
  const prefill_result b = chunked.prefill(ids, opt);
  // Dense attention over the same keys; only the row batches of the GEMMs differ: fp32 noise.
  EXPECT_LT(testing::max_abs_diff(a.logits.data(), b.logits.data(), a.logits.size()), 2e-3);
  EXPECT_EQ(b.layers.size(), 3 * static_cast<size_t>(w.config.n_layers));  // per chunk and layer
  // The cache holds the whole prompt: decode continues both alike.
  const std::vector<float> da = whole.decode(ids[0]), db = chunked.decode(ids[0]);
  EXPECT_LT(testing::max_abs_diff(da.data(), db.data(), da.size()), 2e-3);
  llama_session bad(w, pool, 300);
  opt.chunk = 100;
  EXPECT_NE(testing::error_of([&] { bad.prefill(ids, opt); })
                .find("chunk of 100 tokens must be a multiple of the block size 128"),
            std::string::npos);
  opt.chunk = 128;
  opt.chunk_carried = true;  // the dense strategy has no sharing state to carry
  EXPECT_NE(testing::error_of([&] { bad.prefill(ids, opt); })
                .find("chunk_carried needs a planned attention strategy"),
            std::string::npos);
}

TEST(LlamaForward, RejectsBadPrompts) {
  SP_SKIP_WITHOUT_MODEL();
  thread_pool pool(2);
  const llama_weights& w = testing::default_model_weights(pool);
  llama_session s(w, pool, 16);
  EXPECT_NE(testing::error_of([&] { s.prefill({}, {}); }).find("empty prompt"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { s.prefill({1, -4}, {}); }).find("token id -4"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { s.prefill(std::vector<int32_t>(17, 1), {}); })
                .find("exceeds the session capacity"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { s.decode(1); }).find("prefill first"), std::string::npos);
  llama_session big(w, pool, w.config.context_length + 1);
  EXPECT_NE(testing::error_of([&] {
              big.prefill(std::vector<int32_t>(static_cast<size_t>(w.config.context_length + 1), 1), {});
            }).find("trained context"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
