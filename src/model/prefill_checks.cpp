#include "prefill_checks.h"

#include <algorithm>

#include "shareprefill/error.h"

namespace sp {

prefill_shape check_prefill(const char* fn, const llama_config& c, const std::vector<int32_t>& tokens,
                            const prefill_options& options, int64_t held, int64_t capacity) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  check(n > 0, fn, "empty prompt: at least one token is needed");
  check(held == 0, fn, "the session already holds ", held, " tokens; prefill starts a new one");
  check(n <= capacity, fn, "prompt of ", n, " tokens exceeds the session capacity of ", capacity,
        " tokens");
  check(n <= c.context_length || options.rope.type != "none", fn, "prompt of ", n,
        " tokens exceeds the model's trained context of ", c.context_length,
        " tokens; pass a rope scaling (linear, ntk or yarn) to go beyond it");
  check(n <= llama_usable_context(c, options.rope), fn, "prompt of ", n, " tokens exceeds ",
        options.rope.factor, " x the trained context of ", c.context_length,
        " tokens; raise the rope scaling factor");
  for (int64_t i = 0; i < n; ++i)
    check(tokens[static_cast<size_t>(i)] >= 0 && tokens[static_cast<size_t>(i)] < c.vocab_size,
          fn, "token id ", tokens[static_cast<size_t>(i)], " at position ", i,
          " is outside the vocabulary [0, ", c.vocab_size, ")");
  check(options.chunk >= 0, fn, "chunk of ", options.chunk, " tokens must be >= 0 (0: none)");
  prefill_shape shape;
  shape.chunk = options.chunk > 0 ? std::min(options.chunk, n) : n;
  check(shape.chunk == n || shape.chunk % 128 == 0, fn, "chunk of ", shape.chunk,
        " tokens must be a multiple of the block size 128");
  shape.positions = options.logit_positions;
  if (shape.positions.empty()) shape.positions.push_back(n - 1);
  const std::vector<int64_t>& p = shape.positions;
  for (size_t i = 0; i < p.size(); ++i)
    check(p[i] >= 0 && p[i] < n && (i == 0 || p[i - 1] < p[i]), fn,
          "logit positions must be ascending and inside the prompt (got ", p[i], ")");
  return shape;
}

}  // namespace sp
