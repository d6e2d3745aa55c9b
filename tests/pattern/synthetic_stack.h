// Test helper: every layer of one structured-generator prompt (shareprefill/synthetic.h).
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/synthetic.h"

namespace sp::testing {

// Layers [0, layers) of an N x heads x dim prompt (K/V: kv_heads) from `seed`.
inline std::vector<synthetic_layer> synthetic_stack(int64_t n_tokens, int64_t layers,
                                                    int64_t heads, int64_t kv_heads, int64_t dim,
                                                    uint64_t seed) {
  synthetic_params p;
  p.n_tokens = n_tokens;
  p.layers = layers;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.dim = dim;
  p.seed = seed;
  std::vector<synthetic_layer> out;
  for (int64_t l = 0; l < layers; ++l) out.push_back(synthetic_generate_layer(p, l));
  return out;
}

}  // namespace sp::testing
