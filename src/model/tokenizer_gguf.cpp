// Builds the tokenizer from a GGUF file's tokenizer.ggml.* metadata.
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"
#include "shareprefill/tokenizer.h"

namespace sp {

tokenizer tokenizer_from_gguf(const gguf_file& file) {
  tokenizer_vocab v;
  v.model = file.get_string("tokenizer.ggml.model");
  v.pre = file.get_string_or("tokenizer.ggml.pre", "default");
  v.tokens = file.get_string_array("tokenizer.ggml.tokens");
  v.merges = file.get_string_array("tokenizer.ggml.merges");
  if (file.has("tokenizer.ggml.token_type"))
    v.token_types = file.get_int32_array("tokenizer.ggml.token_type");
  v.bos = static_cast<int32_t>(file.get_int_or("tokenizer.ggml.bos_token_id", -1));
  v.eos = static_cast<int32_t>(file.get_int_or("tokenizer.ggml.eos_token_id", -1));
  return tokenizer::from_vocab(std::move(v));
}

}  // namespace sp
