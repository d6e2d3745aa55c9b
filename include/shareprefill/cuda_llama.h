// A Llama-family model on the GPU (issue 14): bf16 weights on the device (dequantised from the
// GGUF at load, or uploaded from the CPU model's fp32 weights), and a session with a device KV
// cache whose prefill and decode run one layer body (src/model/llama_forward_cuda.cpp) built
// from the ops of cuda_model_ops.h. Prefill attention is prefill_layer (prefill_layer.h) with a
// device planner: the caller's (vslash, flexprefill, shareprefill: the CPU runner's
// planner_params and cluster map) or, when none is given, the session's dense one (our kernel
// on every causal tile). Decode attention is the split-K decode kernel over the cache, and a
// decode step is replayed from a captured CUDA graph (llama_forward_cuda.cpp says how). The
// residual stream stays fp32; every other activation is bf16. Builds without CUDA throw from
// every entry point.
//
//   sp::cuda_llama_weights w = sp::cuda_llama_weights_load(path);
//   sp::cuda_llama_session s(w, 8192);
//   sp::device_planner dp(params, w.config.n_layers, w.config.n_heads, &clusters);  // or none
//   sp::prefill_result r = s.prefill(tokens, {}, &dp);
//   std::vector<float> next = s.decode(token);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_model_ops.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/llama_config.h"
#include "shareprefill/llama_model.h"

namespace sp {

struct cuda_llama_layer {
  device_buffer attn_norm;  // [dim] f32
  device_buffer wqkv;       // [(H + 2 Hkv) D, dim] bf16: the rows of wq, then wk, then wv
  device_buffer wo;         // [dim, H D] bf16
  device_buffer ffn_norm;   // [dim] f32
  device_buffer w_gate_up;  // [2 F, dim] bf16: the rows of w_gate, then w_up
  device_buffer w_down;     // [dim, F] bf16
};

struct cuda_llama_weights {
  llama_config config;
  device_buffer token_embd;   // [vocab, dim] bf16
  device_buffer output_norm;  // [dim] f32
  device_buffer output;       // [vocab, dim] bf16; empty when tied to token_embd
  std::vector<cuda_llama_layer> layers;
  const uint16_t* output_matrix() const {
    return static_cast<const uint16_t*>(output.size() > 0 ? output.data() : token_embd.data());
  }
  size_t bytes() const;  // device memory held
};

// Reads the GGUF and dequantises every tensor the forward needs to bf16 on the device (the types
// cuda_dequantize_supported lists; any other type is dequantised on the CPU and uploaded).
// Throws sp::error naming the file or tensor.
cuda_llama_weights cuda_llama_weights_load(const std::string& gguf_path);

// The CPU model's fp32 weights rounded to bf16 (nearest even) and uploaded.
cuda_llama_weights cuda_llama_weights_upload(const llama_weights& host);

// A running sequence on the GPU: the device KV cache of one prompt and its continuation, and the
// activations of max_tokens rows, allocated once.
class cuda_llama_session {
 public:
  cuda_llama_session(const cuda_llama_weights& weights, int64_t max_tokens);
  ~cuda_llama_session();
  cuda_llama_session(const cuda_llama_session&) = delete;
  cuda_llama_session& operator=(const cuda_llama_session&) = delete;

  // As llama_session::prefill, with attention planned by `planner` (built for this model's
  // layers and heads; null = dense) through prefill_layer; options.attention must be null (the
  // strategies of prefill_attention.h are CPU code). The reports are filled from the device plan
  // (kinds, visited tiles) by asynchronous copies; plan_ms (planning) and attention_ms (the
  // kernel and the publish step) per layer come from CUDA events on the stream, read after the
  // one synchronisation of the logits download, so timing adds no host wait. options.on_hidden
  // receives the residual stream downloaded to the host and options.on_plan each layer's device
  // plan as a block_mask (a synchronisation per layer each: tests). options.on_attention_inputs
  // gets each layer's device q, k and v before its attention (the GPU calibration capture);
  // refused with options.chunk > 0.
  // options.chunk prefills in chunks (chunk_carried without a planner: fresh, dense plans share
  // nothing): the reports are per chunk and layer, each counting the rows its chunk computed,
  // and options.on_plan gets each chunk's plan (the kernel runs its rows from the chunk's first
  // block on only); options.on_hidden is called once, after the last layer.
  // Errors the device planner recorded are thrown after the last layer (or chunk).
  prefill_result prefill(const std::vector<int32_t>& tokens, const prefill_options& options,
                         const device_planner* planner = nullptr);
  // After a prefill of n tokens and before any decode: the log-probability of targets[i] given
  // the prompt up to position first + i (the logits of that position), computed on the device in
  // chunks (the [count, vocab] logits never exist at once). first + targets.size() <= n.
  std::vector<float> token_logprobs(int64_t first, const std::vector<int32_t>& targets);
  // Appends one token and returns its next-token logits [vocab]. The step runs as a CUDA graph
  // captured once per cache-length bucket (powers of two from 256, and the capacity) and
  // replayed; its one synchronisation is the logits download.
  std::vector<float> decode(int32_t token);
  // As decode, but takes the argmax of the logits on the device and downloads only that id
  // (greedy generation; the first index on ties, as sp::argmax).
  int32_t decode_greedy(int32_t token);
  // Graphs on (the default) or off: off, each decode step launches its kernels one by one (the
  // same kernels with the same grids, so the logits are bit for bit those of the graph).
  void set_decode_graphs(bool on);
  // The decode step's m = 1 GEMMs (QKV, O, gate|up, down, output head): on (the default), each
  // shape's cuBLASLt algorithm is chosen by timing (cuda_gemm::tune, ~0.1-1 s once per session)
  // before the next decode step is captured or launched; off, cuBLASLt's heuristic choice.
  // Switching drops the captured graphs (they hold the algorithms).
  void set_decode_gemm_tuning(bool on);
  // What the tuning measured, one entry per distinct GEMM shape and alignment (empty before the
  // first tuned decode step, after tuning is switched off, and while the steps run the fused
  // GEMVs of set_decode_fused_gemv, which use no GEMM).
  std::vector<gemm_tuning> decode_gemm_tuning() const;
  // On (the default) or off: the decode step's own kernels (the fused GEMVs, or RMSNorms and
  // SwiGLU; the attention) launched with Programmatic Dependent Launch, so each one's launch and
  // first loads overlap the tail of the kernel before it (cuda_model_ops.h, programmatic_launch);
  // the same results. Measured on the H200 after a 32K prompt (docs/PERF.md): with the fused
  // GEMVs 1107 tok/s against 974 without; with the cuBLASLt path 750 against 780 (slower: a
  // model whose shapes the GEMVs do not take may want it off). Switching drops the graphs.
  void set_decode_programmatic_launch(bool on);
  bool decode_programmatic_launch() const;
  // On (the default) or off: the decode step's products as the fused GEMVs of cuda_model_ops.h
  // (cuda_rms_norm_gemv, cuda_gemv_residual, cuda_swiglu_gemv_residual) instead of RMSNorm /
  // SwiGLU launches and cuBLASLt GEMMs: per layer 5 launches instead of 8, and the output head's
  // norm and product in one (H200, 32K: 974 tok/s against 770). The same arithmetic up to the
  // order of the fp32 sums. A model whose shapes the GEMVs do not take (cuda_gemv_k_multiple,
  // cuda_gemv_max_swiglu_k) keeps the cuBLASLt path. Switching drops the graphs; prefill is
  // unchanged.
  void set_decode_fused_gemv(bool on);
  // Whether decode steps run the fused GEMVs now (asked for, and the model's shapes fit).
  bool decode_fused_gemv() const;

  // Forgets the sequence (the next prefill starts a new one); keeps every allocation.
  void reset();
  // Forgets every token after the first `length` (0 < length <= length()), so the next decode
  // continues from there: a branch (teacher forcing an answer, say) and back, without copying
  // the session. The cache rows past `length` are overwritten by later steps; token_logprobs
  // needs a new prefill.
  void truncate(int64_t length);

  int64_t length() const;
  int64_t capacity() const;
  // Device memory this session holds now: activations, KV cache, logits and the prefill's planner
  // workspace and state (the weights are counted by cuda_llama_weights::bytes).
  int64_t device_bytes() const;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace sp
