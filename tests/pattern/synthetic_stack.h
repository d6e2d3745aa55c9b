// Test helper: one prompt of the structured generator (shareprefill/synthetic.h), every layer,
// and a prefill of all its layers through a prefill_attention strategy.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/prefill_attention.h"
#include "shareprefill/synthetic.h"
#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"

namespace sp::testing {

struct stack_run {
  std::vector<layer_attention_report> reports;
  std::vector<std::vector<float>> outputs;  // per layer [N, H, D]
};

class synthetic_stack {
 public:
  // Layers [0, layers) of an N x heads x dim prompt (K/V: kv_heads) from `seed`.
  synthetic_stack(int64_t n_tokens, int64_t layers, int64_t heads, int64_t kv_heads, int64_t dim,
                  uint64_t seed) {
    p_.n_tokens = n_tokens;
    p_.layers = layers;
    p_.heads = heads;
    p_.kv_heads = kv_heads;
    p_.dim = dim;
    p_.seed = seed;
    for (int64_t l = 0; l < layers; ++l) layers_.push_back(synthetic_generate_layer(p_, l));
  }

  tensor_view q(int64_t l) const { return view(layer(l).q, p_.heads); }  // [N, heads, dim]
  tensor_view k(int64_t l) const { return view(layer(l).k, p_.kv_heads); }  // [N, kv_heads, dim]
  tensor_view v(int64_t l) const { return view(layer(l).v, p_.kv_heads); }
  // o resized to [N, heads, dim] zeros, as a view.
  tensor_view out(std::vector<float>& o) const {
    o.assign(static_cast<size_t>(p_.n_tokens * p_.heads * p_.dim), 0.0f);
    return tensor_view::contiguous(o.data(), dtype::f32, {p_.n_tokens, p_.heads, p_.dim});
  }

  // Every layer in order as one prompt through `attention` (2 threads).
  stack_run run(prefill_attention& attention) const {
    thread_pool pool(2);
    stack_run r;
    attention.begin_prompt(p_.n_tokens);
    for (int64_t l = 0; l < p_.layers; ++l) {
      r.outputs.emplace_back();
      r.reports.push_back(attention.attend(l, out(r.outputs.back()), q(l), k(l), v(l), pool));
    }
    return r;
  }

 private:
  const synthetic_layer& layer(int64_t l) const { return layers_[static_cast<size_t>(l)]; }
  tensor_view view(const std::vector<float>& x, int64_t heads) const {
    return tensor_view::contiguous(x.data(), dtype::f32, {p_.n_tokens, heads, p_.dim});
  }

  synthetic_params p_;
  std::vector<synthetic_layer> layers_;
};

}  // namespace sp::testing
