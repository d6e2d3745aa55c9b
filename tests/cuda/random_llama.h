// A small random Llama for the CUDA forward tests (test_llama_cuda, test_model_gemv): GQA 3,
// three layers, uniform entries scaled by 1/sqrt(fan-in) so activations keep their size through
// the layers, the query weights twice that (peaked attention), embeddings tied to the output;
// the same weights rounded to bf16 (the CPU side of e_w); random token ids; a cluster map of its
// shape.
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "shareprefill/cluster_map.h"
#include "shareprefill/llama_model.h"
#include "shareprefill/tensor.h"
#include "test_util.h"

namespace sp::testing {

inline llama_weights random_llama(uint64_t seed, int64_t ffn_dim = 768, int64_t vocab = 512) {
  llama_weights w;
  llama_config& c = w.config;
  c.name = "random";
  c.n_layers = 3;
  c.n_heads = 6;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.dim = 384;
  c.ffn_dim = ffn_dim;
  c.vocab_size = vocab;
  c.context_length = 4096;
  c.rope_dim = 64;
  c.rms_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tied_embeddings = true;
  const int64_t dim = c.dim, qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
  const auto fan = [](int64_t in) { return std::sqrt(3.0f / float(in)); };
  const auto uniform = [](int64_t n, uint64_t s, float scale) {
    return random_values(n, s, -scale, scale);
  };
  w.token_embd = uniform(c.vocab_size * dim, seed, 1.0f);
  w.output_norm = random_values(dim, seed + 1, 0.8f, 1.2f);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const uint64_t s = seed + 100 * static_cast<uint64_t>(l + 1);
    llama_layer_weights L;
    L.attn_norm = random_values(dim, s, 0.8f, 1.2f);
    L.ffn_norm = random_values(dim, s + 1, 0.8f, 1.2f);
    L.wq = uniform(qd * dim, s + 2, 2 * fan(dim));  // larger q: peaked attention
    L.wk = uniform(kvd * dim, s + 3, fan(dim));
    L.wv = uniform(kvd * dim, s + 4, fan(dim));
    L.wo = uniform(dim * qd, s + 5, fan(qd));
    L.w_gate = uniform(c.ffn_dim * dim, s + 6, fan(dim));
    L.w_up = uniform(c.ffn_dim * dim, s + 7, fan(dim));
    L.w_down = uniform(dim * c.ffn_dim, s + 8, fan(c.ffn_dim));
    w.layers.push_back(std::move(L));
  }
  return w;
}

inline llama_weights rounded_to_bf16(const llama_weights& w) {
  llama_weights r = w;
  for (auto* m : {&r.token_embd, &r.output})
    for (float& v : *m) v = round_to_bf16(v);
  for (auto& L : r.layers)
    for (auto* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      for (float& v : *m) v = round_to_bf16(v);
  return r;
}

inline std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

// A cluster map of the random Llama's shape: one shared cluster per head index over layers
// [first, layers) (every head of index h there can share the pattern of the first pivot among
// them), the heads of the earlier layers in one cluster that is not shared.
inline cluster_map per_head_index_clusters(int64_t first, int64_t layers, int64_t heads) {
  cluster_map map;
  head_cluster rest;
  rest.id = "unshared";
  for (int64_t h = 0; h < heads; ++h) {
    head_cluster c;
    c.id = std::to_string(h);
    c.shared = true;
    for (int64_t l = 0; l < layers; ++l)
      (l < first ? rest : c).members.push_back({static_cast<int32_t>(l), static_cast<int32_t>(h)});
    map.clusters.push_back(c);
  }
  if (!rest.members.empty()) map.clusters.push_back(rest);
  return map;
}

}  // namespace sp::testing
