// Two layers of the synthetic generator run through a planner (or dense attention), for the
// calibration tests that compare a planner's heads against another's and against dense.
#pragma once

#include <memory>
#include <vector>

#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/synthetic.h"

namespace sp::test {

constexpr int64_t n_tok = 1000, n_heads = 4, n_kv = 2, n_dim = 32;

// Outputs [2][n_tok, n_heads, n_dim] of layers 0 and 1 (seed picks the inputs); pl null = dense.
// reps (optional) receives each layer's report.
inline std::vector<std::vector<float>> run_two_layers(const planner* pl, uint64_t seed,
                                                      std::vector<layer_attention_report>* reps) {
  synthetic_params p;
  p.n_tokens = n_tok;
  p.layers = 2;
  p.heads = n_heads;
  p.kv_heads = n_kv;
  p.dim = n_dim;
  p.seed = seed;
  thread_pool pool(2);
  std::unique_ptr<prefill_attention> a = pl ? make_planned_attention(*pl) : make_dense_attention();
  a->begin_prompt(n_tok);
  std::vector<std::vector<float>> outs;
  for (int64_t l = 0; l < 2; ++l) {
    const synthetic_layer in = synthetic_generate_layer(p, l);
    outs.emplace_back(static_cast<size_t>(n_tok * n_heads * n_dim));
    const layer_attention_report r = a->attend(
        l, tensor_view::contiguous(outs.back().data(), dtype::f32, {n_tok, n_heads, n_dim}),
        tensor_view::contiguous(in.q.data(), dtype::f32, {n_tok, n_heads, n_dim}),
        tensor_view::contiguous(in.k.data(), dtype::f32, {n_tok, n_kv, n_dim}),
        tensor_view::contiguous(in.v.data(), dtype::f32, {n_tok, n_kv, n_dim}), pool);
    if (reps) reps->push_back(r);
  }
  return outs;
}

}  // namespace sp::test
