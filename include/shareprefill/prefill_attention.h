// The attention step of a prefill, as a strategy the model runner calls once per layer:
// dense (every causal tile) or planned by the SharePrefill planner or one of its baselines.
// The strategy owns the per-prompt planner state, so one object serves one prompt at a time.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"

namespace sp {

// What one layer's attention did: tiles visited, head kinds, time spent planning and attending.
struct layer_attention_report {
  int64_t layer = 0;
  int64_t tiles = 0;         // visited tiles over all heads
  int64_t causal_tiles = 0;  // heads * nb*(nb+1)/2
  std::array<int64_t, 6> kind_counts{};  // indexed by sp::head_kind
  double plan_ms = 0.0;
  double attention_ms = 0.0;
  // [H, 2] JS distances of each head's vertical and slash block profiles to its cluster's pivot
  // where a sharing gate applied, -1 for the other heads (layers the CUDA forward planned with
  // statistics; empty for the CPU forward and layers planned all dense).
  std::vector<float> gate_distance;
  double density() const { return causal_tiles ? double(tiles) / double(causal_tiles) : 0.0; }
};

class prefill_attention {
 public:
  virtual ~prefill_attention() = default;
  // Resets per-prompt state (planner pivots, patterns) before the first layer of a prompt (or of
  // its first chunk, n_tokens = that chunk's end).
  virtual void begin_prompt(int64_t n_tokens) = 0;
  // Chunked prefill (issue 16): the prompt's next chunk, keys up to n_tokens; `carried` keeps the
  // planner's sharing state from the previous chunk (planner::begin_chunk), otherwise a fresh
  // one. Strategies that cannot run chunks throw (the default).
  virtual void begin_chunk(int64_t n_tokens, bool carried);
  // out: [Nq, H, D] f32; q: [Nq, H, D]; k, v: [N, Hkv, D] (RoPE applied, f32, contiguous). Nq = N
  // for a whole prompt; a chunk's queries are the last Nq of the N tokens (N - Nq a multiple of
  // the block size), and the report counts that chunk's rows only.
  virtual layer_attention_report attend(int64_t layer, const tensor_view& out,
                                        const tensor_view& q, const tensor_view& k,
                                        const tensor_view& v, thread_pool& pool) = 0;
  virtual const char* name() const = 0;
};

class planner;

// All causal tiles through the block-sparse kernel.
std::unique_ptr<prefill_attention> make_dense_attention(int64_t block_size = 128);

// One layer through the CPU block-sparse kernel on a given mask (over k's N tokens; q holds the
// last q.shape[0] of them), reported with its tiles and time for the rows computed (kind_counts
// left to the caller): what the fixed-mask strategies share.
layer_attention_report attend_mask(int64_t layer, const block_mask& mask, const tensor_view& out,
                                   const tensor_view& q, const tensor_view& k,
                                   const tensor_view& v, thread_pool& pool);

// Per layer: plan (DESIGN.md 2A-2E), block-sparse attention with the pivots' exact block
// attention (2F), publish (2G), and with share_within_layer a second pass for the heads that
// waited for a pivot of their own layer. The planner must outlive the returned object.
std::unique_ptr<prefill_attention> make_planned_attention(const planner& pl);

}  // namespace sp
