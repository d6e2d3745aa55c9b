// What both Llama forwards (llama_forward.cpp, llama_forward_cuda.cpp) check before a prefill,
// with the same messages, and what they take from it.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/llama_model.h"

namespace sp {

struct prefill_shape {
  int64_t chunk = 0;                // tokens per chunk (the prompt's length when not chunked)
  std::vector<int64_t> positions;   // rows whose logits are wanted, ascending
};

// Throws sp::error (prefixed by fn) for an empty prompt, a session that already holds tokens,
// a prompt past the session's capacity or the usable context (llama_usable_context), a token id
// outside the vocabulary, a chunk that is negative or not a multiple of the block size 128, and
// logit positions that are not ascending inside the prompt.
prefill_shape check_prefill(const char* fn, const llama_config& c, const std::vector<int32_t>& tokens,
                            const prefill_options& options, int64_t held, int64_t capacity);

}  // namespace sp
