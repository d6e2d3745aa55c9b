// Llama-family model configuration read from a GGUF file's `llama.*` metadata, validated
// against the tensor table: every tensor the forward pass reads must be present with the shape
// the configuration implies (ggml order, ne[0] = input features):
//   token_embd [dim, vocab]          output_norm [dim]        output [dim, vocab] (optional)
//   blk.N.attn_norm / ffn_norm [dim]
//   blk.N.attn_q [dim, n_heads*head_dim]   blk.N.attn_k / attn_v [dim, n_kv_heads*head_dim]
//   blk.N.attn_output [n_heads*head_dim, dim]
//   blk.N.ffn_gate / ffn_up [dim, ffn_dim] blk.N.ffn_down [ffn_dim, dim]
#pragma once

#include <cstdint>
#include <string>

#include "shareprefill/gguf.h"

namespace sp {

struct llama_rope_scaling {
  std::string type = "none";            // llama.rope.scaling.type: none, linear, yarn, ...
  double factor = 1.0;                  // llama.rope.scaling.factor
  int64_t original_context_length = 0;  // llama.rope.scaling.original_context_length
};

struct llama_config {
  std::string name;             // general.name, or "" when absent
  int64_t n_layers = 0;         // llama.block_count
  int64_t n_heads = 0;          // llama.attention.head_count
  int64_t n_kv_heads = 0;       // llama.attention.head_count_kv (defaults to n_heads)
  int64_t dim = 0;              // llama.embedding_length
  int64_t head_dim = 0;         // llama.attention.key_length, else dim / n_heads
  int64_t ffn_dim = 0;          // llama.feed_forward_length
  int64_t vocab_size = 0;       // llama.vocab_size, else token_embd's ne[1]
  int64_t context_length = 0;   // llama.context_length
  int64_t rope_dim = 0;         // llama.rope.dimension_count (defaults to head_dim)
  double rms_eps = 0.0;         // llama.attention.layer_norm_rms_epsilon
  double rope_theta = 10000.0;  // llama.rope.freq_base
  llama_rope_scaling rope_scaling;
  bool has_rope_freqs = false;   // a rope_freqs.weight tensor (Llama-3 frequency factors) exists
  bool tied_embeddings = false;  // output.weight absent: the output projection is token_embd

  int64_t group_size() const { return n_heads / n_kv_heads; }  // query heads per KV head
};

// Reads and validates the configuration. Throws sp::error "[read_llama_config] ..." for an
// architecture other than "llama", a missing or non-positive hyperparameter, indivisible head
// counts, or a missing / wrongly shaped tensor (naming it). Prints nothing.
llama_config read_llama_config(const gguf_file& file);

}  // namespace sp
