// Pre-tokenization for the byte-level BPE tokenizer: UTF-8 repair and the regex split that
// decides which bytes BPE may merge together. Private to src/model (tokenizer*.cpp).
// Patterns follow HF `tokenizers` / llama.cpp for each GGUF `tokenizer.ggml.pre` we support;
// they run under PCRE2 in UTF + UCP mode so \p{L}, \p{N} and \s are Unicode-aware.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sp {

// Writes `text` to *out with every byte that does not start a valid UTF-8 sequence (overlong
// forms, surrogates and code points above U+10FFFF included) replaced by U+FFFD.
// Returns false, leaving *out untouched, when `text` is already valid.
bool utf8_repair(std::string* out, std::string_view text);

class pretokenizer {
 public:
  // pre: "smollm" (each \p{N} code point alone, then the GPT-2 regex on the runs between) or
  // "gpt2" (the GPT-2 regex alone). Throws sp::error for any other name.
  explicit pretokenizer(const std::string& pre);
  ~pretokenizer();
  pretokenizer(const pretokenizer&) = delete;
  pretokenizer& operator=(const pretokenizer&) = delete;

  // Appends to *pieces the consecutive pieces that tile `text` (valid UTF-8; views into it).
  void split(std::vector<std::string_view>* pieces, std::string_view text) const;

 private:
  struct regex;
  void split_words(std::vector<std::string_view>* pieces, std::string_view text,
                   void* match_data) const;
  std::unique_ptr<regex> digits_;  // null when the pre-tokenizer has no digit split
  std::unique_ptr<regex> words_;
};

}  // namespace sp
