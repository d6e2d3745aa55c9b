// Llama forward on the GPU: one layer body for prefill (n prompt tokens at position 0) and
// decode (one token at the end of the cache); only the attention step differs (prefill_layer:
// the device planner's plan and our block-sparse kernel, or split-K decode attention over the
// cache). Intermediates,
// named as in the body, live in buffers of max_tokens rows allocated with the session:
//   x         residual stream           [n, dim] f32
//   normed    attn_norm / ffn_norm out  [n, dim] bf16
//   qkv       q | k | v projections     [n, (H + 2 Hkv) D] bf16 (q and k rotated in place)
//   attn      attention output          [n, H D] bf16
//   gate_up   gate | up projections     [n, 2 F] bf16
//   act       silu(gate) * up           [n, F] bf16
// and the logits of the selected rows ([rows, vocab] f32, grown on demand).
// The output projection and the down projection accumulate into x inside their GEMMs (fp32
// output, beta = 1), which is the residual add. Prefill works on the default stream. A decode
// step works on the session's own stream (cuda_stream: ordered with the default stream) and reads
// what changes per token (token id, cache length, the logits row) from one small device struct
// that one asynchronous copy fills; so the step's ~240 launches are captured once per length
// bucket (a power of two, or the capacity) into a CUDA graph and replayed per token. Its
// attention launch also does the new token's RoPE and KV append (cuda_decode_new_token).
// Before the first step, each GEMM shape's cuBLASLt algorithm is chosen by timing
// (set_decode_gemm_tuning); set_decode_programmatic_launch launches the step's own kernels
// (norms, SwiGLU, attention) with Programmatic Dependent Launch. With set_decode_fused_gemv a
// decode step runs its products as the GEMVs of cuda_model_ops.h instead, each with the norm or
// SwiGLU before it fused in: per layer norm+qkv, attention, wo+residual, norm+gate|up,
// SwiGLU+down+residual (5 launches instead of 8), and the output head as norm+GEMV (nothing is
// tuned then). The bucket fixes the split-K grid of the decode attention (sized for the bucket's
// largest length, blocks past the run-time length exit at once). The graphs hold the RoPE table as
// kernel parameters: a prefill with another RoPE scaling drops them. The prefill's
// planner workspace and state (device_planner::workspace_bytes, state_bytes: the plan, the
// pivots' block attention A, the per-prompt cluster state) are allocated by the first prefill
// that needs them and reused; nothing of O(N^2) exists besides A.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>

#include "prefill_checks.h"
#include "rope.h"
#include "shareprefill/cuda_events.h"
#include "shareprefill/cuda_graph.h"
#include "shareprefill/cuda_llama.h"
#include "shareprefill/cuda_model_ops.h"
#include "shareprefill/cuda_token_logprob.h"
#include "shareprefill/error.h"
#include "shareprefill/prefill_layer.h"

namespace sp {

namespace {

// What a decode step reads from device memory (filled by one copy per token).
struct decode_step_args {
  int64_t len = 0;  // cache length the attention reads: the new token's position + 1
  int64_t row = 0;  // the residual row whose logits are taken (always 0)
  int32_t token = 0;
  int32_t greedy = 0;  // written back by decode_greedy's argmax
};

constexpr int64_t min_decode_bucket = 256;

}  // namespace

struct cuda_llama_session::impl {
  const cuda_llama_weights& w;
  int64_t max_tokens = 0, length = 0;
  rope_table rope;
  cuda_gemm gemm;
  cuda_kv_cache cache;
  device_buffer x, normed, qkv, attn, gate_up, act, tokens, rows, decode_workspace, logits;
  device_buffer plan_workspace, plan_state, logprobs;  // grown on demand, then reused
  // rope_angles: [capacity, pairs, 2] f32, the prefill positions' scaled cos and sin
  // (cuda_rope_angles), computed at the start of each prefill for all its layers.
  device_buffer rope_angles;
  std::unique_ptr<device_planner> dense_planner;       // built by the first dense prefill
  bool final_hidden = false;  // x holds the last prefill's final residual stream (no decode yet)
  // Decode: its stream, the per-step arguments (pinned host copy and device copy), its logits
  // [vocab] f32 (device and pinned host), and the captured step per length bucket.
  cuda_stream decode_stream;
  pinned_buffer step_host, logits_host;
  device_buffer step_device, decode_logits;
  std::map<int64_t, cuda_graph> graphs;
  bool use_graphs = true;
  bool tune_gemms = true;                  // decode's GEMM algorithms chosen by timing
  bool programmatic = true;                // decode's own kernels by Programmatic Dependent Launch
  bool fused_gemv = true;                  // decode's products as fused GEMVs (set_decode_fused_gemv)
  std::vector<gemm_tuning> gemm_tunings;   // filled by the first tuned decode step

  impl(const cuda_llama_weights& weights, int64_t capacity)
      : w(weights),
        max_tokens(capacity),
        cache(weights.config.n_layers, capacity, weights.config.n_kv_heads,
              weights.config.head_dim) {
    const llama_config& c = w.config;
    const auto rows_of = [&](int64_t width, size_t bytes) {
      return device_buffer(static_cast<size_t>(capacity * width) * bytes);
    };
    x = rows_of(c.dim, sizeof(float));
    normed = rows_of(c.dim, 2);
    qkv = rows_of(qkv_width(), 2);
    attn = rows_of(c.n_heads * c.head_dim, 2);
    gate_up = rows_of(2 * c.ffn_dim, 2);
    act = rows_of(c.ffn_dim, 2);
    tokens = rows_of(1, sizeof(int32_t));
    rows = rows_of(1, sizeof(int64_t));
    rope_angles = rows_of(c.rope_dim / 2, 2 * sizeof(float));
    decode_workspace = device_buffer(
        cuda_decode_workspace_bytes(capacity, c.n_heads, c.n_kv_heads, c.head_dim));
    decode_workspace.fill_bytes(0);  // the decode attention's counters start at zero
    step_host = pinned_buffer(sizeof(decode_step_args));
    step_device = device_buffer(sizeof(decode_step_args));
    logits_host = pinned_buffer(static_cast<size_t>(c.vocab_size) * sizeof(float));
    decode_logits = device_buffer(static_cast<size_t>(c.vocab_size) * sizeof(float));
  }

  // The decode step runs the fused GEMVs: asked for, and the model's shapes are ones they take
  // (every k a multiple of cuda_gemv_k_multiple, the FFN within cuda_gemv_max_swiglu_k).
  bool decode_gemvs() const {
    const llama_config& c = w.config;
    return fused_gemv && c.dim % cuda_gemv_k_multiple == 0 &&
           (c.n_heads * c.head_dim) % cuda_gemv_k_multiple == 0 &&
           c.ffn_dim % cuda_gemv_k_multiple == 0 && c.ffn_dim <= cuda_gemv_max_swiglu_k;
  }

  int64_t qkv_width() const {
    return (w.config.n_heads + 2 * w.config.n_kv_heads) * w.config.head_dim;
  }
  uint16_t* bf16(const device_buffer& b, int64_t offset = 0) const {
    return static_cast<uint16_t*>(b.data()) + offset;
  }
  float* f32(const device_buffer& b) const { return static_cast<float*>(b.data()); }
  static void ensure(device_buffer& b, size_t bytes) {
    if (b.size() < bytes) b = device_buffer(bytes);
  }

  // Attention of the n query rows in qkv at positions [pos, pos + n) over cache rows
  // [0, pos + n) of layer l, into attn.
  using attention_step = std::function<void(int64_t l, int64_t pos, int64_t n)>;

  // One transformer block for n tokens at positions [pos, pos + n) on `stream`: residual rows
  // [pos, pos + n) of x (a prefill chunk's; decode passes pos 0, its row), the other
  // intermediates from row 0. In a decode step (decode_step: one token, its position read from
  // device memory) the attention step also rotates q and k and appends k and v to the cache
  // (cuda_decode_new_token: one launch).
  void layer_body(int64_t l, int64_t pos, bool decode_step, int64_t n, void* stream,
                  const attention_step& attention) {
    const llama_config& c = w.config;
    const cuda_llama_layer& L = w.layers[static_cast<size_t>(l)];
    const int64_t dim = c.dim, H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, F = c.ffn_dim;
    const bool overlap = decode_step && programmatic;  // prefill launches as before
    if (decode_step && decode_gemvs()) {
      fused_decode_layer(l, attention, stream, overlap);
      return;
    }
    float* xs = f32(x) + pos * dim;  // [n, dim] this step's residual rows
    // attn_norm
    cuda_rms_norm(bf16(normed), xs, dtype::f32, f32(L.attn_norm), nullptr, n, dim,
                  c.rms_eps, stream, overlap);
    // qkv
    gemm.linear(qkv.data(), dtype::bf16, bf16(normed), bf16(L.wqkv), n, qkv_width(), dim, false,
                stream);
    if (!decode_step) {
      // q_rope, k_rope, kv_cache: q rotated in place, the rotated k and the v into the cache
      cuda_rope_params r;
      r.n = n;
      r.head_dim = D;
      r.q = bf16(qkv);
      r.q_token_stride = qkv_width();
      r.heads = H;
      r.k = bf16(qkv, H * D);
      r.k_token_stride = qkv_width();
      r.kv_heads = Hkv;
      r.pairs = static_cast<int64_t>(rope.inv_freq.size());
      r.cos_sin = f32(rope_angles) + pos * 2 * r.pairs;
      r.v = bf16(qkv, (H + Hkv) * D);
      r.v_token_stride = qkv_width();
      r.k_out = cache.k(l) + pos * cache.token_stride();
      r.v_out = cache.v(l) + pos * cache.token_stride();
      r.kv_out_token_stride = cache.token_stride();  // rows [pos, pos + n) fit: check_prefill
      cuda_rope_apply(r, stream);
    }
    // attn_out
    attention(l, pos, n);
    // attn_residual: x += attn @ wo^T
    gemm.linear(xs, dtype::f32, bf16(attn), bf16(L.wo), n, dim, H * D, true, stream);
    // ffn_norm
    cuda_rms_norm(bf16(normed), xs, dtype::f32, f32(L.ffn_norm), nullptr, n, dim, c.rms_eps,
                  stream, overlap);
    // ffn_gate_up
    gemm.linear(gate_up.data(), dtype::bf16, bf16(normed), bf16(L.w_gate_up), n, 2 * F, dim, false,
                stream);
    // ffn_act
    cuda_swiglu(bf16(act), F, bf16(gate_up), bf16(gate_up, F), 2 * F, n, F, stream, overlap);
    // ffn_residual: x += act @ w_down^T
    gemm.linear(xs, dtype::f32, bf16(act), bf16(L.w_down), n, dim, F, true, stream);
  }

  // layer_body of a decode step (one token, row 0) with the fused GEMVs: 5 launches.
  void fused_decode_layer(int64_t l, const attention_step& attention, void* stream, bool overlap) {
    const llama_config& c = w.config;
    const cuda_llama_layer& L = w.layers[static_cast<size_t>(l)];
    const int64_t dim = c.dim, F = c.ffn_dim;
    // attn_norm, qkv
    cuda_rms_norm_gemv(qkv.data(), dtype::bf16, f32(x), f32(L.attn_norm), bf16(L.wqkv),
                       qkv_width(), dim, c.rms_eps, stream, overlap);
    // attn_out (q_rope, k_rope, kv_cache inside)
    attention(l, 0, 1);
    // attn_residual: x += attn @ wo^T
    cuda_gemv_residual(f32(x), bf16(attn), bf16(L.wo), dim, c.n_heads * c.head_dim, stream,
                       overlap);
    // ffn_norm, ffn_gate_up
    cuda_rms_norm_gemv(gate_up.data(), dtype::bf16, f32(x), f32(L.ffn_norm), bf16(L.w_gate_up),
                       2 * F, dim, c.rms_eps, stream, overlap);
    // ffn_act, ffn_residual: x += swiglu(gate, up) @ w_down^T
    cuda_swiglu_gemv_residual(f32(x), bf16(gate_up), bf16(gate_up, F), bf16(L.w_down), dim, F,
                              stream, overlap);
  }

  // Logits of the given residual rows, [rows, vocab] on the host.
  std::vector<float> logits_of(const std::vector<int64_t>& positions) {
    const llama_config& c = w.config;
    const int64_t count = static_cast<int64_t>(positions.size());
    rows.upload(positions.data(), positions.size() * sizeof(int64_t));
    ensure(logits, static_cast<size_t>(count * c.vocab_size) * sizeof(float));
    cuda_logits_of_rows(f32(logits), bf16(normed), f32(x), static_cast<const int64_t*>(rows.data()),
                        count, f32(w.output_norm), w.output_matrix(), c.vocab_size, c.dim,
                        c.rms_eps, gemm, nullptr);
    std::vector<float> out(static_cast<size_t>(count * c.vocab_size));
    logits.download(out.data(), out.size() * sizeof(float));
    return out;
  }

  // A device view [n, heads, D] of bf16 rows at token_stride elements.
  tensor_view view(void* data, int64_t n, int64_t heads, int64_t token_stride) const {
    tensor_view v;
    v.data = data;
    v.type = dtype::bf16;
    v.rank = 3;
    v.shape[0] = n;
    v.shape[1] = heads;
    v.shape[2] = w.config.head_dim;
    v.stride[0] = token_stride;
    v.stride[1] = w.config.head_dim;
    v.stride[2] = 1;
    v.on_device = true;
    return v;
  }
};

cuda_llama_session::cuda_llama_session(const cuda_llama_weights& weights, int64_t max_tokens) {
  check(max_tokens > 0, "cuda_llama_session", "max_tokens must be positive, got ", max_tokens);
  impl_ = std::make_unique<impl>(weights, max_tokens);
}

cuda_llama_session::~cuda_llama_session() = default;

int64_t cuda_llama_session::length() const { return impl_->length; }
void cuda_llama_session::reset() {
  impl_->length = 0;
  impl_->final_hidden = false;
}
void cuda_llama_session::truncate(int64_t length) {
  check(length > 0 && length <= impl_->length, "cuda_llama_session::truncate", "length ", length,
        " outside (0, ", impl_->length, "], the tokens the session holds");
  impl_->length = length;
  impl_->final_hidden = false;
}
int64_t cuda_llama_session::capacity() const { return impl_->max_tokens; }

namespace {

// What the host reads back about each planned layer (one slot per layer, and per chunk of a
// chunked prefill): the kinds [H], the row offsets [H * (nb + 1)] of its CSR and, where the layer
// ran the sharing gates, their distances [H, 2], copied asynchronously into one pinned region per
// slot (nb of the longest plan; a chunk's plan covers its end's blocks, of which it computes the
// rows from its first query block on).
struct plan_readback {
  int64_t heads = 0, max_nb = 0;
  std::vector<int64_t> nb, first_row;  // per slot: the plan's blocks and first computed row
  std::vector<uint8_t> has_gates;      // per slot: gate distances were copied
  pinned_buffer memory;
  size_t row_ptr_bytes() const { return static_cast<size_t>(heads * (max_nb + 1)) * 8; }
  size_t slot_bytes() const {  // rounded up to 8 so that every slot's row_ptr is aligned
    return (row_ptr_bytes() + static_cast<size_t>(heads) * 9 + 7) / 8 * 8;
  }
  plan_readback(int64_t slots, int64_t h, int64_t n_blocks)
      : heads(h), max_nb(n_blocks), nb(static_cast<size_t>(slots)),
        first_row(static_cast<size_t>(slots)), has_gates(static_cast<size_t>(slots)),
        memory(static_cast<size_t>(slots) * slot_bytes()) {}
  char* slot(int64_t i) const { return static_cast<char*>(memory.data()) + i * slot_bytes(); }
  char* gates_of(int64_t i) const { return slot(i) + row_ptr_bytes(); }
  char* kinds_of(int64_t i) const { return gates_of(i) + heads * 8; }
  void enqueue(int64_t i, const device_plan_output& out) {
    const layer_plan_view& plan = out.plan;
    nb[static_cast<size_t>(i)] = plan.n_blocks;
    first_row[static_cast<size_t>(i)] = plan.query_offset / plan.block_size;
    cuda_copy_to_host_async(slot(i), plan.row_ptr,
                            static_cast<size_t>(heads * (plan.n_blocks + 1)) * 8, nullptr);
    cuda_copy_to_host_async(kinds_of(i), plan.kinds, static_cast<size_t>(heads), nullptr);
    has_gates[static_cast<size_t>(i)] = out.gate_distance != nullptr;
    if (out.gate_distance != nullptr)
      cuda_copy_to_host_async(gates_of(i), out.gate_distance, static_cast<size_t>(heads) * 8,
                              nullptr);
  }
  // After the stream passed the copies: causal and visited tiles of the rows slot i computed,
  // its kind counts and gate distances, into rep.
  void fill(int64_t i, layer_attention_report& rep) const {
    const int64_t n_blocks = nb[static_cast<size_t>(i)], r0 = first_row[static_cast<size_t>(i)];
    std::vector<int64_t> row_ptr(static_cast<size_t>(heads * (n_blocks + 1)));
    std::memcpy(row_ptr.data(), slot(i), row_ptr.size() * 8);
    const auto* kinds = reinterpret_cast<const uint8_t*>(kinds_of(i));
    rep.causal_tiles = heads * (n_blocks * (n_blocks + 1) - r0 * (r0 + 1)) / 2;
    rep.tiles = 0;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t* row = row_ptr.data() + h * (n_blocks + 1);
      rep.tiles += row[n_blocks] - row[r0];
      if (kinds[h] < head_kind_count) ++rep.kind_counts[kinds[h]];
    }
    if (has_gates[static_cast<size_t>(i)]) {
      rep.gate_distance.resize(static_cast<size_t>(2 * heads));
      std::memcpy(rep.gate_distance.data(), gates_of(i), rep.gate_distance.size() * 4);
    }
  }
};

}  // namespace

prefill_result cuda_llama_session::prefill(const std::vector<int32_t>& tokens,
                                           const prefill_options& options,
                                           const device_planner* planner) {
  const char* fn = "cuda_llama_session::prefill";
  impl& s = *impl_;
  const llama_config& c = s.w.config;
  const int64_t n = static_cast<int64_t>(tokens.size());
  check(options.attention == nullptr, fn, "the CUDA forward plans attention with a device_planner; "
        "got the CPU strategy '", options.attention != nullptr ? options.attention->name() : "",
        "' in options.attention");
  auto [chunk, positions] = check_prefill(fn, c, tokens, options, s.length, s.max_tokens);
  check(!options.on_attention_inputs || options.chunk == 0, fn, "options.on_attention_inputs "
        "takes the whole prompt's q, k and v and is not defined for a chunked prefill (chunk ",
        options.chunk, "); prefill in one piece");
  const int64_t H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim;
  const bool carried = options.chunk_carried && planner != nullptr;  // dense plans share nothing
  if (planner == nullptr) {
    if (!s.dense_planner) {
      planner_params dense;
      dense.mode = plan_mode::dense;
      s.dense_planner = std::make_unique<device_planner>(dense, c.n_layers, H, nullptr);
    }
    planner = s.dense_planner.get();
  }
  check(planner->layers() == c.n_layers && planner->heads() == H, fn, "the device planner is for ",
        planner->layers(), " layers x ", planner->heads(), " heads; the model has ", c.n_layers,
        " x ", H);
  check(planner->params().block_size == 128, fn, "the CUDA kernel needs block size 128, the "
        "planner has ", planner->params().block_size);

  // Planner memory (grow-only), before the clock starts: the most any chunk's plan needs (a
  // chunk's plan covers the keys up to its end), and the state of the whole prompt.
  prefill_layer_params lp;
  lp.device = planner;
  // No chunk takes a pivot's pattern from a chunk before it unless the state is carried.
  lp.publishing = options.pivots ? *options.pivots : default_pivot_publishing(n, carried, true);
  check(!carried || lp.publishing == pivot_publishing::all, fn,
        "a carried chunked prefill needs every pivot's pattern: options.pivots must be all, got ",
        pivot_publishing_name(lp.publishing));
  int64_t workspace = 0;
  for (int64_t end = std::min(n, chunk);; end = std::min(n, end + chunk)) {
    workspace = std::max(workspace, prefill_layer_workspace_bytes({end, H, Hkv, D}, lp, true));
    if (end == n) break;
  }
  s.ensure(s.plan_workspace, static_cast<size_t>(workspace));
  s.ensure(s.plan_state, static_cast<size_t>(planner->state_bytes(n, lp.publishing, D)));
  const int64_t nb = (n + 127) / 128, chunks = (n + chunk - 1) / chunk;
  const int64_t slots = chunks * c.n_layers;  // slot (chunk index) * layers + layer
  plan_readback readback(slots, H, nb);
  std::vector<cuda_event> started(static_cast<size_t>(slots)), planned(static_cast<size_t>(slots)),
      attended(static_cast<size_t>(slots));

  const auto t_start = std::chrono::steady_clock::now();
  s.final_hidden = false;
  rope_table rope = rope_make_table(c.rope_dim, c.rope_theta, options.rope.type,
                                    options.rope.factor, c.context_length);
  if (rope.inv_freq != s.rope.inv_freq || rope.attention_factor != s.rope.attention_factor)
    s.graphs.clear();  // they hold the old table in their attention launches
  s.rope = std::move(rope);
  cuda_rope_angles(s.f32(s.rope_angles), 0, n, s.rope.inv_freq.data(),
                   static_cast<int64_t>(s.rope.inv_freq.size()), s.rope.attention_factor, nullptr);
  s.tokens.upload(tokens.data(), tokens.size() * sizeof(int32_t));
  cuda_embedding_gather(s.f32(s.x), s.bf16(s.w.token_embd), static_cast<const int32_t*>(s.tokens.data()),
                        n, c.dim, c.vocab_size, nullptr);
  prefill_layer_state state;
  int64_t slot = 0;
  // Chunk [pos, pos + rows) of layer l: its queries over the cache rows [0, pos + rows).
  const impl::attention_step planned_attention = [&](int64_t l, int64_t pos, int64_t rows) {
    const size_t i = static_cast<size_t>(slot);
    lp.layer = l;
    lp.query_offset = pos;
    lp.planned = &planned[i];
    const tensor_view q = s.view(s.qkv.data(), rows, H, s.qkv_width());
    const tensor_view k = s.view(s.cache.k(l), pos + rows, Hkv, s.cache.token_stride());
    const tensor_view v = s.view(s.cache.v(l), pos + rows, Hkv, s.cache.token_stride());
    if (options.on_attention_inputs) options.on_attention_inputs(l, q, k, v);  // not chunked
    started[i].record(nullptr);
    const prefill_layer_result r = prefill_layer(
        q, k, v, s.view(s.attn.data(), rows, H, H * D), state, lp, s.plan_workspace.data(),
        static_cast<int64_t>(s.plan_workspace.size()), nullptr);
    attended[i].record(nullptr);
    readback.enqueue(slot, r.device_plan);
    if (options.on_plan) options.on_plan(l, device_planner::download_mask(r.device_plan.plan));
  };
  std::vector<float> host_x;
  const auto report_hidden = [&](int64_t l) {
    if (!options.on_hidden) return;
    host_x.resize(static_cast<size_t>(n * c.dim));
    s.x.download(host_x.data(), host_x.size() * sizeof(float));
    options.on_hidden(l, host_x.data());
  };
  for (int64_t pos = 0; pos < n; pos += chunk) {
    const int64_t end = std::min(n, pos + chunk);
    if (pos > 0 && carried) {
      prefill_layer_begin_chunk(state, lp, end, nullptr);
    } else {
      // A fresh state clears the state memory: the previous chunk's device errors first.
      if (pos > 0) device_plan_check(state.device, nullptr);
      prefill_layer_begin(state, lp, end, true, s.plan_state.data(),
                          static_cast<int64_t>(s.plan_state.size()), nullptr);
    }
    for (int64_t l = 0; l < c.n_layers; ++l, ++slot) {
      if (chunk == n) report_hidden(l);
      s.layer_body(l, pos, false, end - pos, nullptr, planned_attention);
      if (options.on_layer) options.on_layer(l, c.n_layers);
    }
  }
  report_hidden(c.n_layers);
  prefill_result result;
  result.logits = s.logits_of(positions);  // synchronises
  device_plan_check(state.device, nullptr);
  s.length = n;
  s.final_hidden = true;
  result.positions = std::move(positions);
  result.total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();
  for (int64_t i = 0; i < slots; ++i) {
    layer_attention_report rep;
    rep.layer = i % c.n_layers;
    readback.fill(i, rep);
    const size_t k = static_cast<size_t>(i);
    rep.plan_ms = planned[k].elapsed_ms_since(started[k]);
    rep.attention_ms = attended[k].elapsed_ms_since(planned[k]);
    result.attention_ms += rep.plan_ms + rep.attention_ms;
    result.plan_ms += rep.plan_ms;
    result.layers.push_back(rep);
  }
  return result;
}

std::vector<float> cuda_llama_session::token_logprobs(int64_t first,
                                                      const std::vector<int32_t>& targets) {
  const char* fn = "cuda_llama_session::token_logprobs";
  impl& s = *impl_;
  const llama_config& c = s.w.config;
  const int64_t count = static_cast<int64_t>(targets.size());
  check(s.final_hidden, fn, "needs a prefill and no decode since (the final residual stream)");
  check(first >= 0 && count >= 0 && first + count <= s.length, fn, "positions [", first, ", ",
        first + count, ") are not inside the prompt of ", s.length, " tokens");
  for (int64_t i = 0; i < count; ++i)
    check(targets[static_cast<size_t>(i)] >= 0 && targets[static_cast<size_t>(i)] < c.vocab_size,
          fn, "target token id ", targets[static_cast<size_t>(i)], " outside the vocabulary");
  constexpr int64_t chunk = 1024;  // [chunk, vocab] f32 logits at a time (200 MB for SmolLM2)
  std::vector<float> out(static_cast<size_t>(count));
  if (count == 0) return out;
  std::vector<int64_t> rows(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) rows[static_cast<size_t>(i)] = first + i;
  s.ensure(s.logits, static_cast<size_t>(std::min(count, chunk) * c.vocab_size) * sizeof(float));
  s.ensure(s.logprobs, static_cast<size_t>(count) * sizeof(float));
  device_buffer device_rows(rows.size() * sizeof(int64_t)), device_targets(targets.size() * sizeof(int32_t));
  device_rows.upload(rows.data(), device_rows.size());
  device_targets.upload(targets.data(), device_targets.size());
  for (int64_t p0 = 0; p0 < count; p0 += chunk) {
    const int64_t m = std::min(chunk, count - p0);
    cuda_logits_of_rows(s.f32(s.logits), s.bf16(s.normed), s.f32(s.x),
                        static_cast<const int64_t*>(device_rows.data()) + p0, m, s.f32(s.w.output_norm),
                        s.w.output_matrix(), c.vocab_size, c.dim, c.rms_eps, s.gemm, nullptr);
    cuda_token_logprob(s.f32(s.logprobs) + p0, s.f32(s.logits),
                       static_cast<const int32_t*>(device_targets.data()) + p0, m, c.vocab_size,
                       nullptr);
  }
  s.logprobs.download(out.data(), out.size() * sizeof(float));
  return out;
}

int64_t cuda_llama_session::device_bytes() const {
  const impl& s = *impl_;
  size_t total = s.cache.bytes() + s.plan_workspace.size() + s.plan_state.size() + s.logprobs.size();
  for (const device_buffer* b : {&s.x, &s.normed, &s.qkv, &s.attn, &s.gate_up, &s.act, &s.tokens,
                                 &s.rows, &s.rope_angles, &s.decode_workspace, &s.logits, &s.step_device,
                                 &s.decode_logits})
    total += b->size();
  return static_cast<int64_t>(total);
}

namespace {

// The launches of one decode step on the session's stream, reading step_device; the decode
// attention's grid is sized for caches of up to `bucket` tokens.
void enqueue_decode_step(cuda_llama_session::impl& s, int64_t bucket) {
  const llama_config& c = s.w.config;
  void* const st = s.decode_stream.get();
  const auto* args = static_cast<const decode_step_args*>(s.step_device.data());
  cuda_embedding_gather(s.f32(s.x), s.bf16(s.w.token_embd), &args->token, 1, c.dim, c.vocab_size, st);
  const cuda_llama_session::impl::attention_step decode_attention = [&](int64_t l, int64_t, int64_t) {
    cuda_decode_params p;
    p.len = bucket;
    p.len_device = &args->len;
    p.heads = c.n_heads;
    p.kv_heads = c.n_kv_heads;
    p.head_dim = c.head_dim;
    p.q = s.bf16(s.qkv);
    p.k = s.cache.k(l);
    p.v = s.cache.v(l);
    p.kv_token_stride = s.cache.token_stride();
    p.out = s.bf16(s.attn);
    p.workspace = s.decode_workspace.data();
    p.workspace_bytes = s.decode_workspace.size();
    // q_rope, k_rope, kv_cache of the new token, inside the attention launch
    p.new_token.k = s.bf16(s.qkv, c.n_heads * c.head_dim);
    p.new_token.v = s.bf16(s.qkv, (c.n_heads + c.n_kv_heads) * c.head_dim);
    p.new_token.cache_k = s.cache.k(l);
    p.new_token.cache_v = s.cache.v(l);
    p.new_token.inv_freq = s.rope.inv_freq.data();
    p.new_token.pairs = static_cast<int64_t>(s.rope.inv_freq.size());
    p.new_token.attention_factor = s.rope.attention_factor;
    p.programmatic_launch = s.programmatic;
    cuda_decode_attention(p, st);
  };
  for (int64_t l = 0; l < c.n_layers; ++l) s.layer_body(l, 0, true, 1, st, decode_attention);
  if (s.decode_gemvs()) {  // output_norm and the head in one launch; the step's row is 0
    cuda_rms_norm_gemv(s.decode_logits.data(), dtype::f32, s.f32(s.x), s.f32(s.w.output_norm),
                       s.w.output_matrix(), c.vocab_size, c.dim, c.rms_eps, st, s.programmatic);
    return;
  }
  cuda_logits_of_rows(s.f32(s.decode_logits), s.bf16(s.normed), s.f32(s.x), &args->row, 1,
                      s.f32(s.w.output_norm), s.w.output_matrix(), c.vocab_size, c.dim, c.rms_eps,
                      s.gemm, st, s.programmatic);
}

// Times cuBLASLt's candidate algorithms for each GEMM of a decode step (the pointers fix the
// alignment part of the shape; every layer's are offered, each distinct shape is timed once) and
// keeps the reports of the distinct shapes.
void tune_decode_gemms(cuda_llama_session::impl& s) {
  const llama_config& c = s.w.config;
  const int64_t hd = c.n_heads * c.head_dim;
  std::vector<gemm_tuning> all;
  for (const cuda_llama_layer& L : s.w.layers) {
    all.push_back(s.gemm.tune(s.qkv.data(), dtype::bf16, s.bf16(s.normed), s.bf16(L.wqkv), 1,
                              s.qkv_width(), c.dim, false));
    all.push_back(s.gemm.tune(s.x.data(), dtype::f32, s.bf16(s.attn), s.bf16(L.wo), 1, c.dim, hd,
                              true));
    all.push_back(s.gemm.tune(s.gate_up.data(), dtype::bf16, s.bf16(s.normed), s.bf16(L.w_gate_up),
                              1, 2 * c.ffn_dim, c.dim, false));
    all.push_back(s.gemm.tune(s.x.data(), dtype::f32, s.bf16(s.act), s.bf16(L.w_down), 1, c.dim,
                              c.ffn_dim, true));
  }
  all.push_back(s.gemm.tune(s.decode_logits.data(), dtype::f32, s.bf16(s.normed),
                            s.w.output_matrix(), 1, c.vocab_size, c.dim, false));
  s.gemm_tunings.clear();
  for (const gemm_tuning& t : all) {
    const bool seen = std::any_of(s.gemm_tunings.begin(), s.gemm_tunings.end(), [&](const gemm_tuning& u) {
      return u.n == t.n && u.k == t.k && u.accumulate == t.accumulate &&
             u.heuristic_us == t.heuristic_us && u.chosen_us == t.chosen_us;
    });
    if (!seen) s.gemm_tunings.push_back(t);
  }
}

// Checks the token, uploads the step's arguments and enqueues the step (the bucket's graph, or
// the launches themselves when graphs are off); the logits land in decode_logits.
void run_decode_step(cuda_llama_session::impl& s, int32_t token, const char* fn) {
  const llama_config& c = s.w.config;
  check(s.length > 0, fn, "decode needs a prefill first");
  check(s.length < s.max_tokens, fn, "the session is full (", s.max_tokens, " tokens)");
  check(token >= 0 && token < c.vocab_size, fn, "token id ", token, " outside the vocabulary");
  s.final_hidden = false;
  if (s.tune_gemms && s.gemm_tunings.empty() && !s.decode_gemvs()) {
    tune_decode_gemms(s);
    s.graphs.clear();  // captured with the heuristic's algorithms
  }
  auto* args = static_cast<decode_step_args*>(s.step_host.data());
  *args = decode_step_args{};
  args->len = s.length + 1;
  args->token = token;
  void* const st = s.decode_stream.get();
  cuda_copy_to_device_async(s.step_device.data(), args, sizeof(decode_step_args), st);
  int64_t bucket = min_decode_bucket;
  while (bucket < args->len) bucket *= 2;
  bucket = std::min(bucket, s.max_tokens);
  if (!s.use_graphs) {
    enqueue_decode_step(s, bucket);
    return;
  }
  cuda_graph& g = s.graphs[bucket];
  if (g.empty()) g = cuda_graph::capture(st, [&] { enqueue_decode_step(s, bucket); });
  g.launch(st);
}

}  // namespace

void cuda_llama_session::set_decode_graphs(bool on) { impl_->use_graphs = on; }

void cuda_llama_session::set_decode_gemm_tuning(bool on) {
  impl& s = *impl_;
  if (on == s.tune_gemms) return;
  s.tune_gemms = on;
  s.gemm.forget_tuning();
  s.gemm_tunings.clear();
  s.graphs.clear();
}

void cuda_llama_session::set_decode_programmatic_launch(bool on) {
  if (on == impl_->programmatic) return;
  impl_->programmatic = on;
  impl_->graphs.clear();
}

void cuda_llama_session::set_decode_fused_gemv(bool on) {
  if (on == impl_->fused_gemv) return;
  impl_->fused_gemv = on;
  impl_->graphs.clear();
}

bool cuda_llama_session::decode_fused_gemv() const { return impl_->decode_gemvs(); }

bool cuda_llama_session::decode_programmatic_launch() const { return impl_->programmatic; }

std::vector<gemm_tuning> cuda_llama_session::decode_gemm_tuning() const {
  return impl_->gemm_tunings;
}

std::vector<float> cuda_llama_session::decode(int32_t token) {
  impl& s = *impl_;
  const size_t vocab = static_cast<size_t>(s.w.config.vocab_size);
  run_decode_step(s, token, "cuda_llama_session::decode");
  cuda_copy_to_host_async(s.logits_host.data(), s.decode_logits.data(), vocab * sizeof(float),
                          s.decode_stream.get());
  s.decode_stream.synchronize();
  ++s.length;
  const float* logits = static_cast<const float*>(s.logits_host.data());
  return std::vector<float>(logits, logits + vocab);
}

int32_t cuda_llama_session::decode_greedy(int32_t token) {
  impl& s = *impl_;
  run_decode_step(s, token, "cuda_llama_session::decode_greedy");
  auto* device_args = static_cast<decode_step_args*>(s.step_device.data());
  auto* host_args = static_cast<decode_step_args*>(s.step_host.data());
  cuda_argmax(&device_args->greedy, s.f32(s.decode_logits), s.w.config.vocab_size, s.decode_stream.get());
  cuda_copy_to_host_async(&host_args->greedy, &device_args->greedy, sizeof(int32_t), s.decode_stream.get());
  s.decode_stream.synchronize();
  ++s.length;
  return host_args->greedy;
}

}  // namespace sp
