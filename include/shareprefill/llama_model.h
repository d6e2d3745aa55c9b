// A Llama-family model on the CPU: weights read from a GGUF file and dequantised to fp32 once,
// a batched prefill whose attention goes through a prefill_attention strategy (dense or sparse),
// and a KV cache with single-token decode (dense attention). Matrix products use OpenBLAS when
// the build has it. RoPE rotates adjacent pairs (x[2i], x[2i+1]): the GGUF converter permutes
// the rows of Q and K so that this equals the Hugging Face half-split rotation.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/llama_config.h"
#include "shareprefill/pivot_publishing.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/thread_pool.h"

namespace sp {

struct llama_layer_weights {
  std::vector<float> attn_norm;  // [dim]
  std::vector<float> wq;         // [H*D, dim]    (row = output feature)
  std::vector<float> wk;         // [Hkv*D, dim]
  std::vector<float> wv;         // [Hkv*D, dim]
  std::vector<float> wo;         // [dim, H*D]
  std::vector<float> ffn_norm;   // [dim]
  std::vector<float> w_gate;     // [ffn, dim]
  std::vector<float> w_up;       // [ffn, dim]
  std::vector<float> w_down;     // [dim, ffn]
};

struct llama_weights {
  llama_config config;
  std::vector<float> token_embd;   // [vocab, dim]
  std::vector<float> output_norm;  // [dim]
  std::vector<float> output;       // [vocab, dim]; empty when tied to token_embd
  std::vector<llama_layer_weights> layers;
  const float* output_matrix() const { return output.empty() ? token_embd.data() : output.data(); }
};

// Reads and dequantises every tensor the forward needs. Throws sp::error naming the file.
llama_weights llama_weights_load(const std::string& gguf_path, thread_pool& pool);

// RoPE frequency scaling for prompts beyond the trained context.
struct rope_scaling_options {
  std::string type = "none";  // none, linear, ntk, yarn
  double factor = 1.0;
};

struct prefill_options {
  prefill_attention* attention = nullptr;  // null = dense
  // Positions whose logits are wanted, ascending (empty = only the last one).
  std::vector<int64_t> logit_positions;
  // Called after each layer with (layer, layers) for progress output; may be empty.
  std::function<void(int64_t, int64_t)> on_layer;
  // Called with the residual stream entering layer l (l = 0: the embeddings) and, with
  // l = layers, after the last layer (before the final norm): x is [N, dim]. May be empty. In a
  // chunked prefill (chunk below) only the call with l = layers is made.
  std::function<void(int64_t l, const float* x)> on_hidden;
  // CUDA forward only (the CPU forward never calls it): called after layer l's attention with
  // the tiles the device planner chose for it, every head's CSR as the CPU kernels take it
  // (replay it on the CPU with make_replayed_attention). A device synchronisation per layer,
  // for tests. May be empty.
  std::function<void(int64_t l, const block_mask& plan)> on_plan;
  // CUDA forward only (the CPU forward never calls it), a hook for tests and tools (the GPU
  // calibration capture, calibrate.h): called in layer l before its attention with device views
  // (bf16, heads contiguous in a token, token-strided: not contiguous) of the prompt's rotated
  // queries q [N, H, D] and the layer's cached keys and values k, v [N, Hkv, D]. The views are
  // valid during the call; the forward's work on them is enqueued on the default stream, so work
  // the hook enqueues there sees them complete; any other synchronisation is the hook's business.
  // Refused with chunk > 0 (a chunk's q is not the prompt's). May be empty.
  using attention_inputs_hook =
      std::function<void(int64_t l, const tensor_view& q, const tensor_view& k, const tensor_view& v)>;
  attention_inputs_hook on_attention_inputs;
  rope_scaling_options rope;
  // > 0 prefills the prompt in chunks of this many tokens (a multiple of 128), each chunk's
  // queries over the keys so far (issue 16), the planner moved from chunk to chunk with a fresh
  // sharing state or, with chunk_carried, the carried one (CPU: the attention strategy's
  // begin_chunk; CUDA: prefill_layer_begin_chunk). Both forwards.
  int64_t chunk = 0;
  bool chunk_carried = false;
  // CUDA: when the device planner's pivots compute their block attention A (pivot_publishing.h;
  // the same outputs). Unset: default_pivot_publishing(prompt tokens, chunk_carried, true).
  std::optional<pivot_publishing> pivots;
};

struct prefill_result {
  std::vector<float> logits;  // [positions, vocab] for the requested positions
  std::vector<int64_t> positions;
  std::vector<layer_attention_report> layers;  // per layer (per chunk and layer when chunked)
  double total_ms = 0.0;
  double attention_ms = 0.0;  // planning + attention kernels, summed over layers
  double plan_ms = 0.0;
};

// The longest prompt the model takes: its trained context, or factor x it under rope scaling
// (positions past that would be extrapolated, not interpolated).
int64_t llama_usable_context(const llama_config& c, const rope_scaling_options& rope);

// A running sequence: the KV cache of one prompt and its continuation.
class llama_session {
 public:
  // max_tokens: the capacity (prompt and continuation). Nothing is allocated here: the KV cache
  // grows with the tokens actually run, so a large capacity costs nothing by itself.
  llama_session(const llama_weights& weights, thread_pool& pool, int64_t max_tokens);

  // Runs the prompt through every layer, filling the KV cache. Throws on an empty prompt, a
  // token id out of range, or a prompt longer than the session capacity or the usable context
  // (llama_usable_context). The cache is sized for the prompt here, after those checks.
  prefill_result prefill(const std::vector<int32_t>& tokens, const prefill_options& options);
  // Appends one token and returns its next-token logits [vocab]; dense attention over the cache.
  // Positions past llama_usable_context are allowed (callers decide whether to warn or refuse).
  std::vector<float> decode(int32_t token);

  int64_t length() const { return length_; }
  int64_t capacity() const { return max_tokens_; }

 private:
  const llama_weights& w_;
  thread_pool& pool_;
  int64_t max_tokens_ = 0;
  int64_t length_ = 0;
  rope_scaling_options rope_;
  // Per layer [tokens, Hkv, D], with room reserved for reserve_tokens.
  void resize_cache(int64_t tokens, int64_t reserve_tokens);

  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer [max_tokens, Hkv, D]
};

}  // namespace sp
