// Merging partial attention results (issue 16, "partial attention"): attention of the same
// query rows over two disjoint key ranges, each with its row log-sum-exp, combines exactly into
// the attention over the union (FlashAttention's split-KV combine, FlashInfer's merge_state):
//   m = max(lse_a, lse_b), w_a = exp(lse_a - m), w_b = exp(lse_b - m)
//   o = (w_a * o_a + w_b * o_b) / (w_a + w_b),   lse = m + log(w_a + w_b)
// A row whose two LSEs are both -inf (no key in either range) gets o = 0 and lse = -inf.
// Math in fp32 on both devices. Layout as everywhere: o [N, H, D] (any token and head strides,
// dimension stride 1), lse [H, N] natural log (any strides).
#pragma once

#include <cstdint>

#include "shareprefill/tensor.h"

namespace sp {

class thread_pool;

// Validated shape of a merge: every o view [n, heads, dim] of f32/f16/bf16, every lse view
// [heads, n] f32, all on the same device (host or CUDA as `on_device` says), the output's o
// dtype free. fn names the caller for error messages.
struct merge_shape {
  int64_t n = 0, heads = 0, dim = 0;
};
merge_shape merge_shape_of(const char* fn, const tensor_view& o_out, const tensor_view& lse_out,
                           const tensor_view& o_a, const tensor_view& lse_a,
                           const tensor_view& o_b, const tensor_view& lse_b);

// CPU merge (host views). o_out may alias o_a or o_b, lse_out may alias lse_a or lse_b (each
// row is read fully before it is written). With a pool, blocks of 64 rows run in parallel (the
// same result: every row is merged on its own).
void merge_attention_states(const tensor_view& o_out, const tensor_view& lse_out,
                            const tensor_view& o_a, const tensor_view& lse_a,
                            const tensor_view& o_b, const tensor_view& lse_b,
                            thread_pool* pool = nullptr);

// CUDA merge (device views), asynchronous on `stream` (a cudaStream_t; null = default stream).
// Same aliasing rule. Builds without CUDA throw "[cuda_merge_attention_states] built without
// CUDA".
void cuda_merge_attention_states(const tensor_view& o_out, const tensor_view& lse_out,
                                 const tensor_view& o_a, const tensor_view& lse_a,
                                 const tensor_view& o_b, const tensor_view& lse_b,
                                 void* stream = nullptr);

}  // namespace sp
