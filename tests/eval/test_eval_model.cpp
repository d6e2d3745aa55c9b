// Evaluation pieces on the real model (skipped when it is not cached), kept short (<= 1K
// tokens): chunked window scoring equals log-softmax of the prefill's own logits, and a needle
// prompt built with the real tokenizer has the exact length with the needle intact.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "../model/model_fixture.h"
#include "shareprefill/eval.h"
#include "shareprefill/gguf.h"

namespace sp {
namespace {

std::string golden_text() {
  std::ifstream f(std::string(SP_SOURCE_DIR) + "/data/prompts/golden_prompt.txt");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(EvalModel, ChunkedScoringMatchesPrefillLogits) {
  SP_SKIP_WITHOUT_MODEL();
  thread_pool pool(2);
  const llama_weights& w = testing::default_model_weights(pool);
  const tokenizer tok = tokenizer_from_gguf(gguf_file(default_model_path()));
  std::vector<int32_t> ids = tok.encode(golden_text(), false);
  ASSERT_GE(ids.size(), 200u);
  ids.resize(200);
  const window_score s = score_window(w, pool, ids, prefill_options{});
  ASSERT_EQ(s.logprobs.size(), 100u);

  prefill_options po;
  po.logit_positions = ppl_logit_positions(200);
  llama_session session(w, pool, 200);
  const prefill_result r = session.prefill(ids, po);
  const int64_t vocab = w.config.vocab_size;
  for (size_t p = 0; p < s.logprobs.size(); ++p) {
    const double direct = token_logprob(&r.logits[p * static_cast<size_t>(vocab)], vocab,
                                        ids[static_cast<size_t>(po.logit_positions[p] + 1)]);
    // Same hidden state and weights; only the sgemm blocking of the projection may differ
    // (fp32 dot products of length 576 -> ~1e-5 relative in the logits).
    EXPECT_NEAR(s.logprobs[p], direct, 1e-3) << "position " << po.logit_positions[p];
  }
  const double ppl = perplexity_from_logprobs(s.logprobs);
  EXPECT_GT(ppl, 1.0);
  EXPECT_LT(ppl, 200.0);  // a coherent English passage; a broken forward gives thousands
}

TEST(EvalModel, NeedlePromptWithRealTokenizer) {
  SP_SKIP_WITHOUT_MODEL();
  const tokenizer tok = tokenizer_from_gguf(gguf_file(default_model_path()));
  const std::vector<int32_t> hay = tok.encode(golden_text(), false);
  const needle_item item{"The secret code word is Tangerine-42.", "What is the secret code word?",
                         "Tangerine-42"};
  const needle_prompt p = build_needle_prompt(tok, hay, item, 256, 0.5);
  ASSERT_EQ(p.tokens.size(), 256u);
  const std::string needle = tok.decode(
      std::vector<int32_t>(p.tokens.begin() + p.needle_begin, p.tokens.begin() + p.needle_end));
  EXPECT_EQ(needle, " The secret code word is Tangerine-42.");
  const std::string text = tok.decode(p.tokens);
  EXPECT_NE(text.find("<|im_start|>assistant\n"), std::string::npos);
  EXPECT_GT(p.actual_depth, 0.2);
  EXPECT_LT(p.actual_depth, 0.8);
}

}  // namespace
}  // namespace sp
