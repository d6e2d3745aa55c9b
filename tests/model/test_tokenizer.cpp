// Tokenizer tests on a small hand-built byte-level vocabulary (no model file needed): BPE merge
// order, the smollm digit split vs plain GPT-2, special tokens, empty and invalid UTF-8 input,
// bytes without a token, long pieces, and the validation errors of from_vocab/encode/decode.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/tokenizer_bpe.h"
#include "shareprefill/error.h"
#include "shareprefill/tokenizer.h"
#include "test_util.h"

namespace {

// The byte-level spelling of `bytes` (GPT-2 alphabet), e.g. " t" -> "Ġt".
std::string spell(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) sp::utf8_append(&out, sp::byte_to_code_point(c));
  return out;
}

// Ids 0-2: control tokens; 3..258: the 256 single-byte tokens (byte b has id 3 + b) unless
// `missing_byte` names one to leave out; then the merged tokens in merge order.
struct small_vocab {
  sp::tokenizer_vocab vocab;
  explicit small_vocab(const std::string& pre = "smollm", int missing_byte = -1) {
    vocab.pre = pre;
    vocab.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    vocab.token_types = {sp::TOKEN_TYPE_CONTROL, sp::TOKEN_TYPE_CONTROL, sp::TOKEN_TYPE_CONTROL};
    for (int b = 0; b < 256; ++b) {
      vocab.tokens.push_back(b == missing_byte ? "<unused" + std::to_string(b) + ">"
                                               : spell(std::string(1, static_cast<char>(b))));
      vocab.token_types.push_back(sp::TOKEN_TYPE_NORMAL);
    }
    const std::vector<std::pair<std::string, std::string>> merges = {
        {"h", "e"}, {"l", "l"}, {"ll", "o"}, {" ", "t"}, {" t", "he"},
        {"a", "a"}, {"aa", "aa"}, {"1", "2"}, {" ", " "}};
    for (const auto& [left, right] : merges) {
      vocab.merges.push_back(spell(left) + " " + spell(right));
      vocab.tokens.push_back(spell(left + right));
      vocab.token_types.push_back(sp::TOKEN_TYPE_NORMAL);
    }
    vocab.bos = 1;
    vocab.eos = 2;
  }
  int32_t id(const std::string& bytes) const {
    const std::string text = spell(bytes);
    for (size_t i = 3; i < vocab.tokens.size(); ++i) {
      if (vocab.tokens[i] == text) return static_cast<int32_t>(i);
    }
    ADD_FAILURE() << "no token for '" << bytes << "'";
    return -1;
  }
};

TEST(tokenizer, merges_follow_rank_order) {
  small_vocab v;
  const sp::tokenizer tok = sp::tokenizer::from_vocab(v.vocab);
  // h e l l o: "h e" (rank 0), "l l" (1), then "ll o" (2).
  EXPECT_EQ(tok.encode("hello", false), (std::vector<int32_t>{v.id("he"), v.id("llo")}));
  // " the": "h e" first, then "Ġ t", then "Ġt he".
  EXPECT_EQ(tok.encode(" the", false), (std::vector<int32_t>{v.id(" the")}));
  // Five a's: the leftmost equal-rank pairs merge first, (aa)(aa)a, then (aaaa)a.
  EXPECT_EQ(tok.encode("aaaaa", false), (std::vector<int32_t>{v.id("aaaa"), v.id("a")}));
  EXPECT_EQ(tok.decode(tok.encode("hello the aaaaa", false)), "hello the aaaaa");
}

TEST(tokenizer, smollm_isolates_digits_and_splits_stretches_separately) {
  small_vocab smollm("smollm"), gpt2("gpt2");
  const sp::tokenizer a = sp::tokenizer::from_vocab(smollm.vocab);
  const sp::tokenizer b = sp::tokenizer::from_vocab(gpt2.vocab);
  EXPECT_EQ(a.encode("12", false), (std::vector<int32_t>{smollm.id("1"), smollm.id("2")}));
  EXPECT_EQ(b.encode("12", false), (std::vector<int32_t>{gpt2.id("12")}));
  // smollm: "x", "  " (the stretch ends before the digit), "2"; gpt2: "x", " ", " 2".
  EXPECT_EQ(a.encode("x  2", false),
            (std::vector<int32_t>{smollm.id("x"), smollm.id("  "), smollm.id("2")}));
  EXPECT_EQ(b.encode("x  2", false),
            (std::vector<int32_t>{gpt2.id("x"), gpt2.id(" "), gpt2.id(" "), gpt2.id("2")}));
}

TEST(tokenizer, special_tokens_are_matched_whole) {
  small_vocab v;
  const sp::tokenizer tok = sp::tokenizer::from_vocab(v.vocab);
  EXPECT_EQ(tok.encode("a<|im_start|>b<|im_end|><|endoftext|>", false),
            (std::vector<int32_t>{v.id("a"), 1, v.id("b"), 2, 0}));
  const std::string partial = "<|im_start";
  const std::vector<int32_t> ids = tok.encode(partial, false);
  EXPECT_EQ(ids.size(), partial.size());  // no merges apply: one byte token each
  EXPECT_EQ(tok.decode(ids), partial);
  EXPECT_EQ(tok.decode({1, 2, 0}), "<|im_start|><|im_end|><|endoftext|>");
  EXPECT_EQ(tok.type_of(1), sp::TOKEN_TYPE_CONTROL);
  EXPECT_EQ(tok.token_text(v.id(" the")), "\xC4\xA0the");  // "Ġthe"
}

TEST(tokenizer, empty_text_and_bos) {
  small_vocab v;
  const sp::tokenizer tok = sp::tokenizer::from_vocab(v.vocab);
  EXPECT_TRUE(tok.encode("", false).empty());
  EXPECT_EQ(tok.encode("", true), (std::vector<int32_t>{1}));
  EXPECT_EQ(tok.encode("a", true), (std::vector<int32_t>{1, v.id("a")}));
  EXPECT_EQ(tok.decode({}), "");
}

TEST(tokenizer, invalid_utf8_becomes_replacement_characters) {
  small_vocab v;
  const sp::tokenizer tok = sp::tokenizer::from_vocab(v.vocab);
  const std::string fffd = "\xEF\xBF\xBD";
  // A stray lead byte, a truncated sequence at the end, an encoded surrogate (3 bytes, each
  // invalid on its own) and an overlong '/'.
  const std::string bad = std::string("\xFF") + "a" + "\xED\xA0\x80" + "b" + "\xC0\xAF" + "\xE2\x82";
  const std::string repaired = fffd + "a" + fffd + fffd + fffd + "b" + fffd + fffd + fffd + fffd;
  EXPECT_EQ(tok.encode(bad, false), tok.encode(repaired, false));
  EXPECT_EQ(tok.decode(tok.encode(bad, false)), repaired);
}

TEST(tokenizer, bytes_without_a_token_are_dropped) {
  small_vocab v("smollm", 0x01);
  const sp::tokenizer tok = sp::tokenizer::from_vocab(v.vocab);
  // "\x01" is a piece of its own (punctuation class), so h and e stay apart.
  EXPECT_EQ(tok.encode(std::string("h\x01") + "e", false),
            (std::vector<int32_t>{v.id("h"), v.id("e")}));
  EXPECT_TRUE(tok.encode("\x01", false).empty());
}

TEST(tokenizer, decoding_pieces_of_a_multibyte_character_concatenates_exactly) {
  small_vocab v;
  const sp::tokenizer tok = sp::tokenizer::from_vocab(v.vocab);
  const std::vector<int32_t> ids = tok.encode("\xC3\xA9", false);  // "é": two byte tokens
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(tok.decode({ids[0]}) + tok.decode({ids[1]}), "\xC3\xA9");
}

TEST(tokenizer, long_piece_merges_completely) {
  small_vocab v;
  const sp::tokenizer tok = sp::tokenizer::from_vocab(v.vocab);
  const std::string text(100001, 'a');  // one pre-token piece of 100001 letters
  const std::vector<int32_t> ids = tok.encode(text, false);
  ASSERT_EQ(ids.size(), 25001u);
  EXPECT_EQ(ids.front(), v.id("aaaa"));
  EXPECT_EQ(ids.back(), v.id("a"));
  EXPECT_EQ(tok.decode(ids), text);
}

using sp::testing::error_of;

TEST(tokenizer, invalid_vocabularies_and_ids_are_rejected) {
  const auto build = [](sp::tokenizer_vocab vocab) { sp::tokenizer::from_vocab(std::move(vocab)); };
  small_vocab v;
  auto bad = v.vocab;
  bad.pre = "llama3";
  EXPECT_NE(error_of([&] { build(bad); }).find("unsupported pre-tokenizer 'llama3'"),
            std::string::npos);
  bad = v.vocab;
  bad.model = "llama";
  EXPECT_NE(error_of([&] { build(bad); }).find("[tokenizer::from_vocab] unsupported tokenizer model"),
            std::string::npos);
  bad = v.vocab;
  bad.merges.push_back("q zz");
  EXPECT_NE(error_of([&] { build(bad); }).find("not in the vocabulary"), std::string::npos);
  bad = v.vocab;
  bad.merges.push_back("nospace");
  EXPECT_NE(error_of([&] { build(bad); }).find("is not 'left right'"), std::string::npos);
  bad = v.vocab;
  bad.token_types.pop_back();
  EXPECT_NE(error_of([&] { build(bad); }).find("token_types has"), std::string::npos);
  bad = v.vocab;
  bad.bos = static_cast<int32_t>(bad.tokens.size());
  EXPECT_NE(error_of([&] { build(bad); }).find("bos id"), std::string::npos);

  const sp::tokenizer tok = sp::tokenizer::from_vocab(v.vocab);
  EXPECT_NE(error_of([&] { tok.decode({5, -1}); }).find("[tokenizer::decode] id -1 at position 1"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tok.token_text(tok.vocab_size()); }).find("[tokenizer::token_text]"),
            std::string::npos);
  auto no_bos = v.vocab;
  no_bos.bos = -1;
  const sp::tokenizer without = sp::tokenizer::from_vocab(no_bos);
  EXPECT_NE(error_of([&] { without.encode("a", true); }).find("no BOS token"), std::string::npos);
}

}  // namespace
