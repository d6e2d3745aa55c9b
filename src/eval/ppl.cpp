// Perplexity over windows: window placement, the second-half scoring rule, log-softmax in double
// precision, and the scoring of one window through a prefill whose final hidden states are
// projected to the vocabulary in chunks (the [positions, vocab] logits never exist at once).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/tile_math.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"

namespace sp {

std::vector<int64_t> ppl_window_starts(int64_t n_tokens, int64_t length, int64_t max_windows) {
  check(length >= 2, "ppl_window_starts", "window length ", length, " must be at least 2");
  check(max_windows >= 0, "ppl_window_starts", "window count ", max_windows, " must be >= 0");
  check(n_tokens >= length, "ppl_window_starts", "the text has ", n_tokens,
        " tokens, fewer than one window of ", length);
  std::vector<int64_t> starts;
  for (int64_t b = 0; b + length <= n_tokens; b += length) {
    if (max_windows > 0 && static_cast<int64_t>(starts.size()) == max_windows) break;
    starts.push_back(b);
  }
  return starts;
}

std::vector<int64_t> ppl_logit_positions(int64_t length) {
  check(length >= 2, "ppl_logit_positions", "window length ", length, " must be at least 2");
  std::vector<int64_t> pos;
  for (int64_t t = length / 2; t < length; ++t) pos.push_back(t - 1);
  return pos;
}

double token_logprob(const float* logits, int64_t vocab, int32_t target) {
  check(target >= 0 && target < vocab, "token_logprob", "target ", target,
        " outside the vocabulary [0, ", vocab, ")");
  double mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, double(logits[i]));
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - mx);
  return double(logits[target]) - mx - std::log(sum);
}

double perplexity_from_logprobs(const std::vector<double>& logprobs) {
  check(!logprobs.empty(), "perplexity_from_logprobs", "no scored tokens");
  double s = 0.0;
  for (double l : logprobs) s += l;
  return std::exp(-s / double(logprobs.size()));
}

double prefill_density(const prefill_result& r) {
  int64_t tiles = 0, causal = 0;
  for (const auto& l : r.layers) {
    tiles += l.tiles;
    causal += l.causal_tiles;
  }
  return causal ? double(tiles) / double(causal) : 0.0;
}

window_score score_window(const llama_weights& w, thread_pool& pool,
                          const std::vector<int32_t>& tokens, prefill_options options) {
  const llama_config& c = w.config;
  const int64_t n = static_cast<int64_t>(tokens.size()), dim = c.dim, vocab = c.vocab_size;
  const std::vector<int64_t> positions = ppl_logit_positions(n);
  const int64_t np = static_cast<int64_t>(positions.size());
  std::vector<float> hidden(static_cast<size_t>(np * dim));  // [np, dim]
  options.logit_positions.clear();
  options.on_hidden = [&](int64_t l, const float* x) {
    if (l != c.n_layers) return;
    for (int64_t p = 0; p < np; ++p)
      std::memcpy(&hidden[static_cast<size_t>(p * dim)],
                  x + positions[static_cast<size_t>(p)] * dim,
                  sizeof(float) * static_cast<size_t>(dim));
  };
  llama_session session(w, pool, n);
  window_score out;
  out.prefill = session.prefill(tokens, options);

  // Final RMS norm, then the output projection in chunks of `chunk` positions.
  for (int64_t p = 0; p < np; ++p) {
    float* x = &hidden[static_cast<size_t>(p * dim)];
    double ss = 0.0;
    for (int64_t e = 0; e < dim; ++e) ss += double(x[e]) * x[e];
    const float inv = float(1.0 / std::sqrt(ss / double(dim) + double(c.rms_eps)));
    for (int64_t e = 0; e < dim; ++e) x[e] = x[e] * inv * w.output_norm[static_cast<size_t>(e)];
  }
  constexpr int64_t chunk = 256;
  std::vector<float> logits(static_cast<size_t>(chunk * vocab));
  out.logprobs.resize(static_cast<size_t>(np));
  const tile_math::blas_thread_scope all_blas_threads(pool.size());
  for (int64_t p0 = 0; p0 < np; p0 += chunk) {
    const int64_t m = std::min(chunk, np - p0);
    tile_math::gemm_abt(logits.data(), vocab, &hidden[static_cast<size_t>(p0 * dim)], dim,
                        w.output_matrix(), dim, m, vocab, dim, 1.0f);
    pool.parallel_for(m, [&](int64_t i, int) {
      const int64_t p = p0 + i;
      out.logprobs[static_cast<size_t>(p)] =
          token_logprob(&logits[static_cast<size_t>(i * vocab)], vocab,
                        tokens[static_cast<size_t>(positions[static_cast<size_t>(p)] + 1)]);
    });
  }
  return out;
}

}  // namespace sp
