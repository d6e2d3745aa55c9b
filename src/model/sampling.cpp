// Greedy and top-p sampling.
#include "shareprefill/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "shareprefill/error.h"

namespace sp {

void sampling_params::validate() const {
  check(temperature >= 0.0 && std::isfinite(temperature), "sampling_params",
        "temperature must be >= 0, got ", temperature);
  check(top_p > 0.0 && top_p <= 1.0, "sampling_params", "top_p must be in (0, 1], got ", top_p);
}

sampler::sampler(const sampling_params& p) : p_(p), rng_(p.seed) { p_.validate(); }

int32_t argmax(const float* logits, int64_t vocab) {
  return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
}

std::vector<int32_t> top_k_indices(const float* logits, int64_t vocab, int64_t k) {
  k = std::min(k, vocab);
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

int32_t sampler::next(const float* logits, int64_t vocab) {
  if (p_.temperature == 0.0) return argmax(logits, vocab);
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const double mx = logits[idx[0]];
  std::vector<double> prob(idx.size());
  double sum = 0.0;
  for (size_t i = 0; i < idx.size(); ++i) sum += prob[i] = std::exp((logits[idx[i]] - mx) / p_.temperature);
  // Keep the smallest prefix whose mass reaches top_p, then sample within it.
  double kept = 0.0;
  size_t n_keep = 0;
  while (n_keep < idx.size() && kept < p_.top_p * sum) kept += prob[n_keep++];
  std::uniform_real_distribution<double> u(0.0, kept);
  double r = u(rng_);
  for (size_t i = 0; i < n_keep; ++i) {
    r -= prob[i];
    if (r <= 0.0) return idx[i];
  }
  return idx[n_keep - 1];
}

}  // namespace sp
