// Byte-level BPE tokenizer (GPT-2 style), built from the vocabulary a GGUF model declares.
// It reproduces Hugging Face `tokenizers` for the supported pre-tokenizers: special tokens in
// the text are matched whole first (leftmost-longest), the rest is split by the pre-tokenizer
// regex (PCRE2, Unicode properties), each piece is mapped byte -> printable code point
// (GPT-2's bytes_to_unicode) and merged by BPE rank. Checked against HF ids in
// tests/model/test_tokenizer.cpp (golden file from scripts/make_tokenizer_golden.py).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sp {

// GGUF `tokenizer.ggml.token_type` values (llama.cpp's numbering).
enum token_type : int32_t {
  TOKEN_TYPE_UNDEFINED = 0,
  TOKEN_TYPE_NORMAL = 1,
  TOKEN_TYPE_UNKNOWN = 2,
  TOKEN_TYPE_CONTROL = 3,       // e.g. <|im_start|>: matched whole in the text, decoded verbatim
  TOKEN_TYPE_USER_DEFINED = 4,  // matched whole in the text, decoded verbatim
  TOKEN_TYPE_UNUSED = 5,
  TOKEN_TYPE_BYTE = 6,
};

// Everything the tokenizer needs, one field per GGUF key, so a GGUF reader fills it directly:
//   model       <- tokenizer.ggml.model       (only "gpt2", byte-level BPE, is supported)
//   pre         <- tokenizer.ggml.pre         ("smollm": each \p{N} isolated, then the GPT-2
//                                              regex; "gpt2": the GPT-2 regex alone)
//   tokens      <- tokenizer.ggml.tokens      (id -> text in the byte-level alphabet)
//   merges      <- tokenizer.ggml.merges      ("left right"; rank = index, lower merges first)
//   token_types <- tokenizer.ggml.token_type  (empty means every token is normal)
//   bos, eos    <- tokenizer.ggml.bos_token_id / eos_token_id (-1 when the file has none)
struct tokenizer_vocab {
  std::vector<std::string> tokens;
  std::vector<std::string> merges;
  std::vector<int32_t> token_types;
  int32_t bos = -1;
  int32_t eos = -1;
  std::string pre;
  std::string model = "gpt2";
};

class tokenizer {
 public:
  // Validates the vocabulary (unknown model/pre, merges naming tokens that are not in the
  // vocabulary, bad ids or type counts throw sp::error) and builds the lookup tables.
  static tokenizer from_vocab(tokenizer_vocab vocab);

  tokenizer(tokenizer&&) noexcept;
  tokenizer& operator=(tokenizer&&) noexcept;
  ~tokenizer();

  // Token ids of `text`, with the BOS id first when add_bos (throws if the vocabulary has none).
  // Control and user-defined tokens written in the text ("<|im_start|>") become their ids.
  // Invalid UTF-8 never throws: each byte that does not start a valid sequence is replaced by
  // U+FFFD first (as llama.cpp does). Bytes whose single-byte token the vocabulary lacks are
  // dropped (as HF's BPE without an unknown token does; SmolLM2 lacks 21, e.g. 0x04 and 0xff).
  // Thread-safe; pieces already seen are served from an internal cache.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;

  // The bytes the ids stand for, concatenated: control/user-defined tokens verbatim, others
  // mapped back through the byte alphabet. Not UTF-8-repaired: ids that split a multi-byte
  // character yield its partial bytes, so decoding pieces and concatenating is exact.
  // Throws sp::error on an id outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;

  // The vocabulary entry of `id` as the model file spells it (e.g. "Ġthe" for " the").
  std::string token_text(int32_t id) const;

  int32_t vocab_size() const;
  int32_t bos() const;
  int32_t eos() const;
  int32_t type_of(int32_t id) const;  // a token_type value

 private:
  struct impl;
  explicit tokenizer(std::unique_ptr<impl> state);
  std::unique_ptr<impl> impl_;
};

class gguf_file;
// The tokenizer a GGUF file declares (tokenizer.ggml.model/pre/tokens/merges/token_type, BOS and
// EOS ids). Throws sp::error naming a missing key or an unsupported model/pre-tokenizer.
tokenizer tokenizer_from_gguf(const gguf_file& file);

}  // namespace sp
