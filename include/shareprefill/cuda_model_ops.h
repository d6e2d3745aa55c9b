// The device operations of a Llama-family forward on the GPU (issue 14): dequantisation of GGUF
// weights to bf16, bf16 GEMMs through cuBLASLt, RMSNorm, RoPE, SwiGLU, residual add, embedding
// gather, final norm + logits of selected rows, a bf16 KV cache and split-K decode attention.
// Each has a plain CPU counterpart that its randomised test (tests/cuda/test_model_ops.cpp) uses
// as the oracle. No CUDA types appear here: pointers are device pointers, `stream` is a
// cudaStream_t (null = the default stream). Every launch is asynchronous on the caller's stream
// and allocates nothing (workspaces belong to the caller or to a handle object made once), so a
// sequence of them can be captured in a CUDA graph. Inputs are validated at the call; a bad value
// throws sp::error naming the function and the value. bf16 values are stored as uint16_t bits.
// Builds without CUDA (SP_CUDA=OFF) throw "[fn] built without CUDA" from every function.
// programmatic_launch (the kernels of a decode step): launched with Programmatic Dependent Launch,
// the kernel may start while the stream's previous kernel finishes (its launch overlaps that
// kernel's tail; it waits for it on the device before reading its outputs). Same results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "shareprefill/gguf.h"
#include "shareprefill/tensor.h"

namespace sp {

// ---- Weights -----------------------------------------------------------------------------------

// True for the ggml types the device dequantiser reads: F32, F16, BF16, Q4_0, Q4_1, Q8_0 (the
// types of SmolLM2's Q4_1 GGUF and of most legacy-quant files). Other types are dequantised on
// the CPU (dequantize.h) and uploaded as bf16.
bool cuda_dequantize_supported(ggml_type type);

// dst: [n] bf16; src: ggml_row_bytes(type, n) bytes of `type` data on the device; both 2-byte
// aligned.
// Each value is computed in fp32 exactly as dequantize_row does on the CPU, then rounded to
// bf16 (nearest even). n must be a multiple of the type's block size.
void cuda_dequantize_to_bf16(uint16_t* dst, const void* src, ggml_type type, int64_t n,
                             void* stream);

// ---- Matrix products ---------------------------------------------------------------------------

// What cuda_gemm::tune measured for one shape: the time of one call (us, in a CUDA graph of
// back-to-back calls, each reading its own copy of w from memory) under cuBLASLt's heuristic
// choice and under the fastest candidate, which later calls of the shape use.
struct gemm_tuning {
  int64_t m = 0, n = 0, k = 0;
  bool y_f32 = false, accumulate = false;
  int candidates = 0;     // algorithms timed (both orientations; the heuristic's first included)
  int chosen = 0;         // index of the fastest among them (0: the heuristic's own)
  bool swapped = false;   // chosen in the m = 1 orientation y = x @ w with x the A operand
  int algo_id = 0;        // cuBLASLt's CUBLASLT_ALGO_CONFIG_ID of the chosen algorithm
  int split_k = 0;        // its CUBLASLT_ALGO_CONFIG_SPLITK_NUM (0 or 1: no split)
  double heuristic_us = 0.0, chosen_us = 0.0;
};

// A cuBLASLt handle, its workspace (allocated once) and a cache of the algorithm chosen for each
// shape, so repeated calls make no heuristic query and no allocation. One object per stream at a
// time (the workspace is shared by its calls).
class cuda_gemm {
 public:
  explicit cuda_gemm(size_t workspace_bytes = size_t(32) << 20);
  ~cuda_gemm();
  cuda_gemm(const cuda_gemm&) = delete;
  cuda_gemm& operator=(const cuda_gemm&) = delete;

  // y = x @ w^T (accumulate: y += x @ w^T), fp32 accumulation. y_type bf16 or f32 (accumulate
  // only with f32). All row-major and contiguous, 16-byte aligned:
  // y: [m, n]; x: [m, k] bf16; w: [n, k] bf16 (a weight matrix, row = output feature).
  void linear(void* y, dtype y_type, const uint16_t* x, const uint16_t* w, int64_t m, int64_t n,
              int64_t k, bool accumulate, void* stream);

  // Chooses the algorithm of linear()'s shape (m, n, k, y_type, accumulate, and the alignments
  // of y, x and w: only the pointers' alignment is used, nothing is read or written there) by
  // timing: cuBLASLt's heuristic offers up to `candidates` algorithms (for m = 1 also in the
  // swapped orientation), each is timed in a CUDA graph of back-to-back calls on buffers of this
  // object (copies of w over twice the L2 cache), and later linear() calls of the shape use the
  // fastest. Synchronises the device; not during a stream capture. Once per shape and process:
  // later calls, of this object or another (another session), take the first one's choice and
  // report, so that every object computes the same bits. Different algorithms may sum the k products in another order
  // (split-K), so results may differ from the heuristic's by fp32 rounding (and one bf16 rounding).
  gemm_tuning tune(const void* y, dtype y_type, const uint16_t* x, const uint16_t* w, int64_t m,
                   int64_t n, int64_t k, bool accumulate, int candidates = 16);
  // Back to the heuristic's algorithm for every tuned shape.
  void forget_tuning();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

// ---- Decode GEMVs (m = 1) ----------------------------------------------------------------------

// A decode step's matrix-vector products with the operation before them fused in, one launch
// where the cuBLASLt path needs two (src/cuda/model_gemv.cu): one warp per output row reads the
// row in 16-byte loads, fp32 accumulation, warp-shuffle sum. w: [n, k] bf16 row-major (a weight
// matrix as cuda_gemm::linear reads it: row = output feature). Any n >= 1; k must be a multiple
// of cuda_gemv_k_multiple (a row is whole 16-byte vectors); w and the input vectors 16-byte
// aligned. The results differ from rms_norm / swiglu + linear only by the order of the fp32 sums
// (and where a reordered sum moves a value across a bf16 rounding boundary).
constexpr int64_t cuda_gemv_k_multiple = 8;
constexpr int64_t cuda_gemv_max_swiglu_k = 24576;  // the activation in 48 KiB of shared memory

// y[r] = w[r, :] . a with a = bf16(x / sqrt(mean(x^2) + eps) * norm_weight) rounded as
// cuda_rms_norm rounds it (every block recomputes the norm of x: no separate norm launch).
// y: [n] y_type (bf16 or f32), must not overlap x; x: [k] f32; norm_weight: [k] f32.
void cuda_rms_norm_gemv(void* y, dtype y_type, const float* x, const float* norm_weight,
                        const uint16_t* w, int64_t n, int64_t k, double eps, void* stream,
                        bool programmatic_launch = false);

// x[r] += w[r, :] . a with a = bf16(silu(gate) * up) rounded as cuda_swiglu rounds it (every
// block recomputes a). x: [n] f32; gate, up: [k] bf16; k <= cuda_gemv_max_swiglu_k.
void cuda_swiglu_gemv_residual(float* x, const uint16_t* gate, const uint16_t* up,
                               const uint16_t* w, int64_t n, int64_t k, void* stream,
                               bool programmatic_launch = false);

// x[r] += w[r, :] . a. x: [n] f32; a: [k] bf16.
void cuda_gemv_residual(float* x, const uint16_t* a, const uint16_t* w, int64_t n, int64_t k,
                        void* stream, bool programmatic_launch = false);

// ---- Per-token operations ------------------------------------------------------------------------

// y[i] = x[r_i] / sqrt(mean(x[r_i]^2) + eps) * weight, fp32 math, r_i = rows[i] (rows: [count]
// int64 on the device, each < the rows of x) or r_i = i when rows is null.
// y: [count, dim] bf16; x: [*, dim] x_type (f32 or bf16); weight: [dim] f32.
// dim <= cuda_rms_norm_max_dim.
constexpr int64_t cuda_rms_norm_max_dim = 16384;
void cuda_rms_norm(uint16_t* y, const void* x, dtype x_type, const float* weight,
                   const int64_t* rows, int64_t count, int64_t dim, double eps, void* stream,
                   bool programmatic_launch = false);

// x[i] = table[tokens[i]] in fp32. Token ids must lie in [0, vocab) (the caller validates them
// on the host); a row of an id outside is written as zeros rather than read out of bounds.
// x: [n, dim] f32; table: [vocab, dim] bf16; tokens: [n] int32.
void cuda_embedding_gather(float* x, const uint16_t* table, const int32_t* tokens, int64_t n,
                           int64_t dim, int64_t vocab, void* stream);

// x[i] += y[i] for i < count. x: [count] f32; y: [count] y_type (f32 or bf16).
void cuda_residual_add(float* x, const void* y, dtype y_type, int64_t count, void* stream);

// out[i, f] = silu(gate[i, f]) * up[i, f] = gate / (1 + exp(-gate)) * up in fp32, rounded to bf16.
// out: [n, ffn] at row stride out_stride; gate, up: [n, ffn] at row stride in_stride (e.g. the
// two halves of one fused [n, 2 * ffn] GEMM output). All bf16.
void cuda_swiglu(uint16_t* out, int64_t out_stride, const uint16_t* gate, const uint16_t* up,
                 int64_t in_stride, int64_t n, int64_t ffn, void* stream,
                 bool programmatic_launch = false);

// Rotary embedding in place, adjacent pairs (x[2p], x[2p+1]) rotated by angle pos * inv_freq[p]
// for p < pairs (the first 2 * pairs entries of each head vector), cos and sin multiplied by
// attention_factor: the arithmetic of src/model/rope.cpp (angle and cos/sin in fp64, rounded to
// fp32), applied to the bf16 values in fp32 and rounded back. Two steps: cuda_rope_angles
// computes the scaled cos and sin of n positions once (fp64 sines of 128K-radian angles are the
// costly part), then every layer's cuda_rope_apply rotates with them.
//
// cos_sin: [n, pairs, 2] fp32 (device) = (cos, sin) * attention_factor of (first_pos + i) *
// inv_freq[p]; inv_freq: [pairs] fp32, HOST memory (rope_table::inv_freq), pairs at most
// cuda_rope_max_pairs.
constexpr int64_t cuda_rope_max_pairs = 128;
void cuda_rope_angles(float* cos_sin, int64_t first_pos, int64_t n, const float* inv_freq,
                      int64_t pairs, float attention_factor, void* stream);

// Token i of q and k rotated by row i of cos_sin. Pairs move as 32-bit words (two pairs at once
// where every stride and pointer allows 8 bytes): head_dim and the token strides even, the
// pointers 4-byte aligned.
//
// With kv_out set (a prefill's KV append in the same launch): q is rotated in place, k is read
// and its rotated rows (the dims past 2 * pairs copied as they are) are written to k_out, and v's
// rows are copied to v_out; k and v are left as they were. k_out, v_out: [n, kv_heads, head_dim]
// bf16 with token stride kv_out_token_stride (a cuda_kv_cache layer at the tokens' positions).
struct cuda_rope_params {
  int64_t n = 0, head_dim = 0;
  uint16_t* q = nullptr;  // q: [n, heads, head_dim] bf16, token stride q_token_stride
  int64_t q_token_stride = 0, heads = 0;
  uint16_t* k = nullptr;  // k: [n, kv_heads, head_dim] bf16, token stride k_token_stride; may be null
  int64_t k_token_stride = 0, kv_heads = 0;
  const float* cos_sin = nullptr;  // cos_sin: [n, pairs, 2] fp32 (device, cuda_rope_angles)
  int64_t pairs = 0;               // at most cuda_rope_max_pairs
  // The KV append (all three set, with k, or none): v: [n, kv_heads, head_dim], token stride
  // v_token_stride; k_out, v_out as above.
  const uint16_t* v = nullptr;
  int64_t v_token_stride = 0;
  uint16_t* k_out = nullptr;
  uint16_t* v_out = nullptr;
  int64_t kv_out_token_stride = 0;
};
void cuda_rope_apply(const cuda_rope_params& params, void* stream);

// ---- Output head -----------------------------------------------------------------------------

// logits[i] = rms_norm(x[rows[i]], norm_weight) @ output^T for the `count` selected rows.
// logits: [count, vocab] f32; x: [*, dim] f32 (the residual stream); rows: [count] int64 on the
// device; norm_weight: [dim] f32; output: [vocab, dim] bf16; normed: [count, dim] bf16 scratch.
void cuda_logits_of_rows(float* logits, uint16_t* normed, const float* x, const int64_t* rows,
                         int64_t count, const float* norm_weight, const uint16_t* output,
                         int64_t vocab, int64_t dim, double eps, cuda_gemm& gemm, void* stream,
                         bool programmatic_launch = false);

// ---- KV cache and decode attention -------------------------------------------------------------

// K and V of every layer in bf16 on the device: [layers, capacity, kv_heads, head_dim] each,
// allocated once. Layer l's K (V) for token t, head h starts at k(l) + (t * kv_heads + h) * D.
// A prefill writes its tokens' rows through cuda_rope_apply's KV append, a decode step through
// its attention launch (cuda_decode_params::new_token).
class cuda_kv_cache {
 public:
  cuda_kv_cache(int64_t layers, int64_t capacity, int64_t kv_heads, int64_t head_dim);
  ~cuda_kv_cache();
  cuda_kv_cache(const cuda_kv_cache&) = delete;
  cuda_kv_cache& operator=(const cuda_kv_cache&) = delete;

  int64_t layers() const { return layers_; }
  int64_t capacity() const { return capacity_; }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  int64_t token_stride() const { return kv_heads_ * head_dim_; }
  size_t bytes() const;               // device memory held, K and V
  uint16_t* k(int64_t layer) const;   // [capacity, kv_heads, head_dim]
  uint16_t* v(int64_t layer) const;

 private:
  int64_t layers_ = 0, capacity_ = 0, kv_heads_ = 0, head_dim_ = 0;
  uint16_t* k_ = nullptr;
  uint16_t* v_ = nullptr;
};

// One query row per head over `len` cached tokens (the newest token included), scores scaled by
// 1/sqrt(D), GQA native (query head h reads KV head h / (heads / kv_heads)). The keys are split
// into chunks of cuda_decode_chunk(len, kv_heads) keys, one block per (KV head, chunk) serving
// all query heads of the group; the chunks' partial outputs merge by their log-sum-exp in fp32,
// in the same launch (the last chunk of a KV head to finish merges them).
// With len_device set, the length is read from device memory when the kernels run (a captured
// decode step replayed at growing lengths): `len` is then the largest length the launch serves
// (it sizes the grid and the chunk; blocks past the run-time length exit at once), and the
// device value is clamped to [1, len].
// The workspace starts with cuda_decode_counter_bytes of counters (one per KV head, so at most
// 64 KV heads) that must be zero before its first launch (zero the buffer once when it is
// allocated); every launch leaves them zero again. One launch at a time per workspace.
// A decode step's new token fused into the attention (one launch for RoPE, KV append and
// attention): q is then its query before RoPE, and the launch rotates q and new_k by position
// len - 1 as cuda_rope_apply does (the same bits), attends over k, v rows [0, len - 1) and the new
// token, and writes the rotated key and new_v to row len - 1 of cache_k, cache_v (which are the
// k, v of the launch, writable: row len - 1 of them is not read).
struct cuda_decode_new_token {
  const uint16_t* k = nullptr;  // k: [kv_heads, head_dim] bf16, before RoPE; null: not fused
  const uint16_t* v = nullptr;  // v: [kv_heads, head_dim] bf16
  uint16_t* cache_k = nullptr;  // cache_k, cache_v: the same memory as cuda_decode_params::k, v
  uint16_t* cache_v = nullptr;
  const float* inv_freq = nullptr;  // inv_freq: [pairs] fp32, HOST memory (rope_table::inv_freq)
  int64_t pairs = 0;                // 1 .. head_dim / 2
  float attention_factor = 1.0f;
};

struct cuda_decode_params {
  int64_t len = 0, heads = 0, kv_heads = 0, head_dim = 0;  // head_dim 64 or 128
  const int64_t* len_device = nullptr;  // len_device: [1] int64 on the device, or null
  const uint16_t* q = nullptr;  // q: [heads, head_dim] bf16
  const uint16_t* k = nullptr;  // k: [len, kv_heads, head_dim] bf16, token stride kv_token_stride
  const uint16_t* v = nullptr;  // v: like k
  int64_t kv_token_stride = 0;
  uint16_t* out = nullptr;  // out: [heads, head_dim] bf16
  float* lse = nullptr;     // lse: [heads] natural-log LSE of the scaled scores, or null
  void* workspace = nullptr;  // device scratch of cuda_decode_workspace_bytes(len, ...) bytes
  size_t workspace_bytes = 0;
  cuda_decode_new_token new_token;  // a decode step's RoPE and KV append fused in, or k null
  // Keys per block: 0 (the default) = cuda_decode_chunk(len, kv_heads); else 1 ..
  // cuda_decode_max_chunk (benchmarks compare chunk sizes; the workspace must be sized for it).
  int64_t chunk = 0;
  // Programmatic Dependent Launch (see the top of this file); before its wait the kernel reads
  // only len_device and the cache rows other than len - 1, which no kernel of the step writes.
  bool programmatic_launch = false;
};
constexpr size_t cuda_decode_counter_bytes = 256;  // the zeroed head of the decode workspace
constexpr int64_t cuda_decode_max_chunk = int64_t{1} << 20;
// Scratch the decode of any length <= max_len needs (also with len_device and len <= max_len),
// with the automatic chunk and, when chunk > 0, with cuda_decode_params::chunk = chunk too.
size_t cuda_decode_workspace_bytes(int64_t max_len, int64_t heads, int64_t kv_heads,
                                   int64_t head_dim, int64_t chunk = 0);
// Keys per chunk for a decode over len tokens (exposed for tests and benchmarks).
int64_t cuda_decode_chunk(int64_t len, int64_t kv_heads);
void cuda_decode_attention(const cuda_decode_params& params, void* stream);

// out[0] = the index of the largest of x[0..n) (the first one on ties; NaNs are skipped), for a
// greedy decode that downloads one int instead of the logits. out: [1] int32 on the device;
// x: [n] f32 on the device.
void cuda_argmax(int32_t* out, const float* x, int64_t n, void* stream);

}  // namespace sp
