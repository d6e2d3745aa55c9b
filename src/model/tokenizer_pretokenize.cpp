// Pre-tokenizer regexes (PCRE2, UTF + UCP) and UTF-8 repair for the byte-level BPE tokenizer.
// "smollm" is HF's Sequence[Digits(individual_digits), ByteLevel(use_regex)] and llama.cpp's
// LLAMA_VOCAB_PRE_TYPE_SMOLLM: every \p{N} code point becomes its own piece, and the GPT-2 regex
// runs on each stretch between them as a separate subject (so `\s+(?!\S)` sees the stretch end).
#include "model/tokenizer_pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "shareprefill/error.h"

namespace sp {
namespace {

// GPT-2's split, as HF's ByteLevel pre-tokenizer spells it (the final \s+ takes a whitespace
// run that the lookahead branch had to leave, e.g. a lone tab before a letter).
constexpr const char* GPT2_PATTERN =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* DIGIT_PATTERN = R"(\p{N})";

// Length of the valid UTF-8 sequence starting at s[i], or 0 if none starts there.
size_t utf8_valid_length(std::string_view s, size_t i) {
  const auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = at(i);
  if (c < 0x80) return 1;
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (at(i + 1) < lo || at(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (at(i + k) < 0x80 || at(i + k) > 0xBF) return 0;
  }
  return len;
}

}  // namespace

bool utf8_repair(std::string* out, std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const size_t len = utf8_valid_length(text, i);
    if (len == 0) break;
    i += len;
  }
  if (i == text.size()) return false;
  out->assign(text.substr(0, i));
  while (i < text.size()) {
    const size_t len = utf8_valid_length(text, i);
    if (len == 0) {
      out->append("\xEF\xBF\xBD");
      ++i;
    } else {
      out->append(text.substr(i, len));
      i += len;
    }
  }
  return true;
}

struct pretokenizer::regex {
  pcre2_code* code = nullptr;
  explicit regex(const char* pattern) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      fail("pretokenizer", "PCRE2 cannot compile '", pattern, "' at offset ", error_offset, ": ",
           reinterpret_cast<const char*>(message));
    }
    // JIT is an optimisation only: where it is unavailable pcre2_match interprets the pattern.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  }
  ~regex() { pcre2_code_free(code); }
  regex(const regex&) = delete;
  regex& operator=(const regex&) = delete;
};

pretokenizer::pretokenizer(const std::string& pre) {
  if (pre == "smollm") {
    digits_ = std::make_unique<regex>(DIGIT_PATTERN);
  } else if (pre != "gpt2") {
    fail("pretokenizer", "unsupported pre-tokenizer '", pre, "' (supported: smollm, gpt2)");
  }
  words_ = std::make_unique<regex>(GPT2_PATTERN);
}

pretokenizer::~pretokenizer() = default;

namespace {

// Finds the next match of `code` in text at or after `offset`; returns false when none.
bool next_match(const pcre2_code* code, std::string_view text, size_t offset,
                pcre2_match_data* match, size_t* begin, size_t* end) {
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), offset,
                             PCRE2_NO_UTF_CHECK, match, nullptr);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof(message));
    fail("pretokenizer::split", "PCRE2 match failed at byte ", offset, ": ",
         reinterpret_cast<const char*>(message));
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
  *begin = ovector[0];
  *end = ovector[1];
  return true;
}

// Advances past one UTF-8 code point (used only to step over an empty match).
size_t next_code_point(std::string_view text, size_t i) {
  ++i;
  while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
  return i;
}

}  // namespace

void pretokenizer::split_words(std::vector<std::string_view>* pieces, std::string_view text,
                               void* match_data) const {
  auto* match = static_cast<pcre2_match_data*>(match_data);
  size_t offset = 0, begin = 0, end = 0;
  while (offset < text.size() && next_match(words_->code, text, offset, match, &begin, &end)) {
    if (begin > offset) pieces->push_back(text.substr(offset, begin - offset));
    if (end == begin) end = next_code_point(text, begin);  // the patterns never match empty
    pieces->push_back(text.substr(begin, end - begin));
    offset = end;
  }
  if (offset < text.size()) pieces->push_back(text.substr(offset));
}

void pretokenizer::split(std::vector<std::string_view>* pieces, std::string_view text) const {
  if (text.empty()) return;
  // Ovector sized for the larger pattern; both have no capture groups.
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(words_->code, nullptr);
  check(match != nullptr, "pretokenizer::split", "out of memory for PCRE2 match data");
  try {
    if (!digits_) {
      split_words(pieces, text, match);
    } else {
      size_t offset = 0, begin = 0, end = 0;
      while (offset < text.size() &&
             next_match(digits_->code, text, offset, match, &begin, &end)) {
        if (begin > offset) split_words(pieces, text.substr(offset, begin - offset), match);
        pieces->push_back(text.substr(begin, end - begin));
        offset = end;
      }
      if (offset < text.size()) split_words(pieces, text.substr(offset), match);
    }
  } catch (...) {
    pcre2_match_data_free(match);
    throw;
  }
  pcre2_match_data_free(match);
}

}  // namespace sp
