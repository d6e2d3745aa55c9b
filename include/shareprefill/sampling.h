// Next-token choice from logits: greedy (temperature 0) or temperature + nucleus (top-p)
// sampling with a seeded generator.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace sp {

struct sampling_params {
  double temperature = 0.0;  // 0 = greedy
  double top_p = 1.0;        // nucleus mass in (0, 1]
  uint64_t seed = 1;
  void validate() const;
};

class sampler {
 public:
  explicit sampler(const sampling_params& p);
  // logits: [vocab]
  int32_t next(const float* logits, int64_t vocab);

 private:
  sampling_params p_;
  std::mt19937_64 rng_;
};

// Index of the largest logit (lowest index on ties). logits: [vocab]
int32_t argmax(const float* logits, int64_t vocab);
// Indices of the k largest logits, largest first. logits: [vocab]
std::vector<int32_t> top_k_indices(const float* logits, int64_t vocab, int64_t k);

}  // namespace sp
