// Evaluation arithmetic without the model: option lists, window placement and second-half
// scoring, log-softmax and perplexity on constructed logits, needles file parsing errors,
// sentence boundaries and needle placement (a one-byte-per-token vocabulary), relative error and
// recall on constructed inputs, the probe on random q/k/v, interpolation and the figures.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "model/tokenizer_bpe.h"
#include "shareprefill/attention.h"
#include "shareprefill/eval.h"
#include "shareprefill/plot.h"
#include "shareprefill/png_image.h"
#include "test_util.h"

namespace sp {
namespace {

using sp::testing::error_of;

TEST(EvalLists, ModesLengthsNumbers) {
  EXPECT_EQ(eval_parse_modes("dense, shareprefill"),
            (std::vector<std::string>{"dense", "shareprefill"}));
  EXPECT_NE(
      error_of([] { eval_parse_modes("dense,minference"); }).find("unknown mode 'minference'"),
      std::string::npos);
  EXPECT_NE(error_of([] { eval_parse_modes("dense,,vslash"); }).find("empty item"),
            std::string::npos);
  EXPECT_EQ(eval_parse_lengths("2048,4096", 128), (std::vector<int64_t>{2048, 4096}));
  EXPECT_NE(error_of([] {
              eval_parse_lengths("2048,1000", 128);
            }).find("length 1000 is not a multiple of the block size 128"),
            std::string::npos);
  EXPECT_NE(error_of([] { eval_parse_lengths("2k", 0); }).find("'2k'"), std::string::npos);
  EXPECT_EQ(eval_parse_numbers("0,0.5,1", 0, 1, "depth"), (std::vector<double>{0, 0.5, 1}));
  EXPECT_NE(error_of([] { eval_parse_numbers("1.5", 0, 1, "depth"); }).find("depth 1.5"),
            std::string::npos);
}

TEST(EvalPpl, WindowsAndScoredPositions) {
  EXPECT_EQ(ppl_window_starts(10000, 4096, 0), (std::vector<int64_t>{0, 4096}));
  EXPECT_EQ(ppl_window_starts(10000, 2048, 3), (std::vector<int64_t>{0, 2048, 4096}));
  EXPECT_NE(error_of([] {
              ppl_window_starts(1000, 2048, 1);
            }).find("the text has 1000 tokens, fewer than one window of 2048"),
            std::string::npos);
  // Window of 8: targets 4..7, predicted by logits at 3..6.
  EXPECT_EQ(ppl_logit_positions(8), (std::vector<int64_t>{3, 4, 5, 6}));
  EXPECT_EQ(ppl_logit_positions(7), (std::vector<int64_t>{2, 3, 4, 5}));  // targets 3..6
}

TEST(EvalPpl, LogprobAndPerplexityOnConstructedLogits) {
  // Uniform logits over 4: log p = -ln 4 for any target, perplexity 4.
  const float uniform[4] = {2, 2, 2, 2};
  EXPECT_NEAR(token_logprob(uniform, 4, 3), -std::log(4.0), 1e-12);
  // [ln 1, ln 3] -> p = 1/4, 3/4.
  const float two[2] = {0.0f, float(std::log(3.0))};
  EXPECT_NEAR(token_logprob(two, 2, 0), std::log(0.25), 1e-7);  // float rounding of ln 3
  EXPECT_NEAR(token_logprob(two, 2, 1), std::log(0.75), 1e-7);
  // Large logits do not overflow (max subtracted first).
  const float big[2] = {1000.0f, 1000.0f};
  EXPECT_NEAR(token_logprob(big, 2, 1), -std::log(2.0), 1e-12);
  EXPECT_NEAR(perplexity_from_logprobs({std::log(0.25), std::log(0.75)}),
              1.0 / std::sqrt(0.25 * 0.75), 1e-12);
  EXPECT_NE(error_of([] { perplexity_from_logprobs({}); }).find("no scored tokens"),
            std::string::npos);
  EXPECT_NE(error_of([&] { token_logprob(uniform, 4, 4); }).find("target 4"), std::string::npos);
}

TEST(EvalNeedle, ParseNeedlesNamesLineAndField) {
  const std::vector<needle_item> ok = parse_needles(
      "{\"needle\": \"N.\", \"question\": \"Q?\", \"answer\": \"A\"}\n\n"
      "{\"needle\": \"M.\", \"question\": \"R?\", \"answer\": \"B\"}\n",
      "f.jsonl");
  ASSERT_EQ(ok.size(), 2u);
  EXPECT_EQ(ok[1].answer, "B");
  EXPECT_NE(error_of([] {
              parse_needles(
                  "{\"needle\": \"N.\", \"question\": \"Q?\", \"answer\": \"A\"}\n"
                  "{\"needle\": \"N.\", \"question\": \"Q?\"}\n",
                  "f.jsonl");
            }).find("f.jsonl line 2: field 'answer' is missing"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_needles("{\"needle\": \"N.\", \"question\": 3, \"answer\": \"A\"}", "g");
            }).find("g line 1: field 'question' must be a non-empty string"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_needles("\n{oops\n", "h"); }).find("h line 2: not valid JSON"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_needles("[1]", "h"); }).find("expected a JSON object"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_needles("  \n", "h"); }).find("no needles"), std::string::npos);
}

TEST(EvalNeedle, GreedyAnswerKeepsEveryChoicesMargin) {
  // Vocabulary of 4; token 2 stops. Choices: 1 (3 over 2.5), 0 (5 over 1), then the stop 2 (2
  // over 0): the stop's margin is kept too.
  const std::vector<std::vector<float>> after = {{5, 0, 0, 1}, {0, 0, 2, 0}};
  std::vector<int32_t> fed;
  auto next = [&](int32_t t) {
    fed.push_back(t);
    return after[fed.size() - 1];
  };
  const greedy_answer a = decode_greedy_answer({0, 3, 1, 2.5f}, 4, {2}, 8, next);
  EXPECT_EQ(a.tokens, (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(a.margins, (std::vector<double>{0.5, 4.0, 2.0}));
  EXPECT_EQ(fed, (std::vector<int32_t>{1, 0}));
  // max_new ends it without asking for more logits; a tie picks the lower index, margin 0.
  fed.clear();
  const greedy_answer one = decode_greedy_answer({1, 1, 0, 0}, 4, {2}, 1, next);
  EXPECT_EQ(one.tokens, (std::vector<int32_t>{0}));
  EXPECT_EQ(one.margins, (std::vector<double>{0.0}));
  EXPECT_TRUE(fed.empty());
  // A stop as the first choice: no tokens, one margin.
  const greedy_answer none = decode_greedy_answer({0, 0, 3, 0}, 4, {2}, 8, next);
  EXPECT_TRUE(none.tokens.empty());
  EXPECT_EQ(none.margins, (std::vector<double>{3.0}));
  EXPECT_NE(error_of([&] {
              decode_greedy_answer({0, 1}, 4, {2}, 8, next);
            }).find("logits of 2 entries for a vocabulary of 4"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              decode_greedy_answer({0, 1, 2, 3}, 4, {2}, 0, next);
            }).find("max_new must be > 0"),
            std::string::npos);
}

TEST(EvalNeedle, SentenceBoundaries) {
  // Boundaries after "home." and after "!\"" (quote closes), not after "Mr." nor mid-sentence.
  const std::vector<std::string> pieces = {"She",    " went", " home", ".",     " Mr", ".",
                                           " Darcy", " came", "!\"",   " Then", "\n"};
  EXPECT_EQ(sentence_boundaries(pieces), (std::vector<int64_t>{0, 4, 9, 11}));
  EXPECT_EQ(sentence_boundaries({}), (std::vector<int64_t>{0}));
  const std::vector<int64_t> b = {0, 4, 9, 11};
  EXPECT_EQ(needle_insert_index(b, 11, 0.0), 0);
  EXPECT_EQ(needle_insert_index(b, 11, 1.0), 11);
  EXPECT_EQ(needle_insert_index(b, 11, 0.5), 4);   // target 5.5: 4 is nearer than 9
  EXPECT_EQ(needle_insert_index(b, 11, 0.65), 9);  // target 7.15
  EXPECT_NE(error_of([&] { needle_insert_index(b, 11, 1.2); }).find("depth 1.2"),
            std::string::npos);
}

// One token per byte plus the chat control tokens: token counts equal byte counts.
tokenizer byte_tokenizer() {
  tokenizer_vocab v;
  v.pre = "gpt2";
  v.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  v.token_types = {TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL};
  for (int b = 0; b < 256; ++b) {
    std::string s;
    utf8_append(&s, byte_to_code_point(static_cast<unsigned char>(b)));
    v.tokens.push_back(s);
    v.token_types.push_back(TOKEN_TYPE_NORMAL);
  }
  v.bos = 1;
  v.eos = 2;
  return tokenizer::from_vocab(v);
}

TEST(EvalNeedle, PromptHasExactLengthAndNeedleAtSentenceBoundary) {
  const tokenizer tok = byte_tokenizer();
  std::string hay;
  for (int i = 0; i < 40; ++i) hay += "Sentence number " + std::to_string(i % 10) + " ends. ";
  const std::vector<int32_t> ids = tok.encode(hay, false);  // 22 bytes per sentence
  const needle_item item{"The code is Kiwi.", "What is the code?", "Kiwi"};
  for (double depth : {0.0, 0.5, 1.0}) {
    const needle_prompt p = build_needle_prompt(tok, ids, item, 600, depth);
    ASSERT_EQ(p.tokens.size(), 600u);
    const std::string text = tok.decode(p.tokens);
    EXPECT_EQ(text.rfind("<|im_start|>user\n", 0), 0u);
    EXPECT_NE(text.find("\n\nWhat is the code?<|im_end|>\n<|im_start|>assistant\n"),
              std::string::npos);
    const std::vector<int32_t> needle(p.tokens.begin() + p.needle_begin,
                                      p.tokens.begin() + p.needle_end);
    EXPECT_EQ(tok.decode(needle), " The code is Kiwi.");
    // Inserted at a sentence boundary: the haystack text before it (after the 6 tokens of
    // "<|im_start|>user\n") is empty or ends with the period (the space follows the needle).
    const std::string before =
        tok.decode(std::vector<int32_t>(p.tokens.begin() + 6, p.tokens.begin() + p.needle_begin));
    EXPECT_TRUE(before.empty() || before.back() == '.' || p.needle_begin - 6 == p.haystack_tokens)
        << "depth " << depth << ": '" << before.substr(before.size() > 10 ? before.size() - 10 : 0)
        << "'";
    // Placement within half a sentence (22 tokens) of the requested depth.
    EXPECT_NEAR(p.actual_depth * double(p.haystack_tokens), depth * double(p.haystack_tokens),
                12.0);
  }
  EXPECT_NE(
      error_of([&] { build_needle_prompt(tok, ids, item, 5000, 0.5); }).find("fewer than the"),
      std::string::npos);
  EXPECT_NE(error_of([&] { build_needle_prompt(tok, ids, item, 20, 0.5); }).find("leaves no room"),
            std::string::npos);
  EXPECT_TRUE(answer_matches("The code is KIWI!", "Kiwi"));
  EXPECT_FALSE(answer_matches("Kiw", "Kiwi"));
}

TEST(EvalAttn, RelativeErrorAndRecall) {
  // [N=2, H=2, D=2]: head 0 = (1,0 | 0,1) exact; head 1 = (3,4 | 0,0), off by (0.3, 0.4) on
  // token 1.
  std::vector<float> ref = {1, 0, 3, 4, 0, 1, 0, 0};
  std::vector<float> out = ref;
  out[6] += 0.3f;
  out[7] += 0.4f;
  double err[2];
  head_relative_errors(err, tensor_view::contiguous(out.data(), dtype::f32, {2, 2, 2}),
                       tensor_view::contiguous(ref.data(), dtype::f32, {2, 2, 2}));
  EXPECT_DOUBLE_EQ(err[0], 0.0);
  EXPECT_NEAR(err[1], 0.5 / 5.0, 1e-7);  // |(0.3,0.4)| / |(3,4)|; 0.3f, 0.4f round at 1e-8
  // From token 1 on: head 0's reference is (0,1), exact; head 1's is 0, so the error is the
  // absolute norm 0.5.
  head_relative_errors(err, tensor_view::contiguous(out.data(), dtype::f32, {2, 2, 2}),
                       tensor_view::contiguous(ref.data(), dtype::f32, {2, 2, 2}), 1);
  EXPECT_DOUBLE_EQ(err[0], 0.0);
  EXPECT_NEAR(err[1], 0.5, 1e-7);  // 0.3f, 0.4f are exact to ~1e-8

  // 3 blocks of 16 over 40 tokens (last block 8 rows). Block attention rows sum to 1.
  const std::vector<float> a = {1.0f, 0,    0,  //
                                0.6f, 0.4f, 0,  //
                                0.5f, 0.2f, 0.3f};
  const block_mask m = block_mask::from_tiles(40, 16, {{{0, 0}, {1, 1}, {2, 0}, {2, 2}}});
  // Kept: row 0: 1 (16 rows), row 1: 0.4 (16 rows), row 2: 0.8 (8 rows) -> 28.8 / 40.
  EXPECT_NEAR(tile_recall(a.data(), m, 0), 0.72, 1e-6);
  const block_mask full = block_mask::dense_causal(40, 16, 1);
  EXPECT_NEAR(tile_recall(a.data(), full, 0), 1.0, 1e-6);
  EXPECT_NE(error_of([&] { tile_recall(a.data(), m, 1); }).find("head 1"), std::string::npos);
}

TEST(EvalAttn, ProbeOnRandomInputs) {
  // 2 layers of random q/k/v, 1024 tokens, block 64, min budget 256: vslash and flexprefill
  // plan real sparse masks. Dense passes through unchanged; each candidate's rows are in range.
  const int64_t n = 1024, H = 4, Hkv = 2, D = 32;
  thread_pool pool(2);
  planner_params pp;
  pp.block_size = 64;
  pp.min_budget = 256;
  pp.mode = plan_mode::vslash;
  const planner vs(pp, 2, H, nullptr);
  pp.mode = plan_mode::flexprefill;
  const planner fp(pp, 2, H, nullptr);
  attention_probe probe({{"vslash", 0.95, &vs}, {"flexprefill", 0.95, &fp}}, 64);
  probe.begin_prompt(n);
  for (int64_t layer = 0; layer < 2; ++layer) {
    auto q = sp::testing::random_values(n * H * D, 10 + layer);
    auto k = sp::testing::random_values(n * Hkv * D, 20 + layer);
    auto v = sp::testing::random_values(n * Hkv * D, 30 + layer);
    std::vector<float> out(q.size()), ref(q.size());
    const auto qv = tensor_view::contiguous(q.data(), dtype::f32, {n, H, D});
    const auto kv = tensor_view::contiguous(k.data(), dtype::f32, {n, Hkv, D});
    const auto vv = tensor_view::contiguous(v.data(), dtype::f32, {n, Hkv, D});
    probe.attend(layer, tensor_view::contiguous(out.data(), dtype::f32, {n, H, D}), qv, kv, vv,
                 pool);
    attention_block_sparse(tensor_view::contiguous(ref.data(), dtype::f32, {n, H, D}), {}, nullptr,
                           qv, kv, vv, block_mask::dense_causal(n, 64, H), pool);
    EXPECT_EQ(sp::testing::max_abs_diff(out.data(), ref.data(), n * H * D), 0.0)
        << "the probe passes dense attention on";
  }
  ASSERT_EQ(probe.rows().size(), 2u * 2u * size_t(H));
  for (const probe_row& r : probe.rows()) {
    EXPECT_GE(r.recall, 0.0);
    EXPECT_LE(r.recall, 1.0 + 1e-5);  // block attention rows sum to 1 up to float rounding
    EXPECT_GT(r.density, 0.0);
    EXPECT_LE(r.density, 1.0);
    EXPECT_TRUE(std::isfinite(r.rel_err));
    if (r.density == 1.0) {
      EXPECT_LT(r.rel_err, 1e-6);  // same tiles, same kernel: only summation order differs
      EXPECT_NEAR(r.recall, 1.0, 1e-5);
    }
  }
}

TEST(EvalPlot, InterpolationAndFigures) {
  EXPECT_DOUBLE_EQ(interpolate_at({0.1, 0.3}, {1.0, 3.0}, 0.2), 2.0);
  EXPECT_DOUBLE_EQ(interpolate_at({0.1, 0.3}, {1.0, 3.0}, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(interpolate_at({0.1, 0.3}, {1.0, 3.0}, 0.9), 3.0);
  if (!png_supported()) GTEST_SKIP() << "built without libpng";
  const testing::scoped_temp_dir temp("plots");
  const std::string& dir = temp.path;
  std::filesystem::create_directories(dir);
  plot_save_lines(dir + "/lines.png", {"T", "X", "Y", {{"a", {0, 1, 2}, {1, 10, 100}}}, true});
  plot_save_heatmap(dir + "/heat.png", {"H", "L", "D", {"1K", "2K"}, {"0", "1"}, {1, 0, 0.5, 1}});
  for (const char* f : {"/lines.png", "/heat.png"}) {
    std::ifstream in(dir + f, std::ios::binary);
    char sig[8] = {};
    in.read(sig, 8);
    EXPECT_EQ(std::string(sig + 1, 3), "PNG") << f;
  }
  EXPECT_NE(error_of([&] {
              plot_save_lines(dir + "/bad.png", {"T", "X", "Y", {{"a", {0, 1}, {1, -1}}}, true});
            }).find("log axis"),
            std::string::npos);
}

}  // namespace
}  // namespace sp
