// Llama forward on the CPU: batched prefill (embeddings, RMSNorm, RoPE, attention through a
// prefill_attention strategy, SwiGLU MLP, tied or separate output head) and one-token decode
// with dense attention over the KV cache.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/tile_math.h"
#include "prefill_checks.h"
#include "rope.h"
#include "shareprefill/error.h"
#include "shareprefill/llama_model.h"

namespace sp {
namespace {

using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

// y[n, out] = x[n, in] * w[out, in]^T, with all BLAS threads.
void linear(float* y, const float* x, const std::vector<float>& w, int64_t n, int64_t in,
            int64_t out) {
  tile_math::gemm_abt(y, out, x, in, w.data(), in, n, out, in, 1.0f);
}

// y[n, dim] = x[n, dim] / rms(x) * weight, per row.
void rms_norm(float* y, const float* x, const std::vector<float>& weight, int64_t n, int64_t dim,
              double eps, thread_pool& pool) {
  pool.parallel_for(n, [&](int64_t i, int) {
    const float* xr = x + i * dim;
    double ss = 0.0;
    for (int64_t e = 0; e < dim; ++e) ss += double(xr[e]) * xr[e];
    const float inv = float(1.0 / std::sqrt(ss / double(dim) + eps));
    float* yr = y + i * dim;
    for (int64_t e = 0; e < dim; ++e) yr[e] = xr[e] * inv * weight[static_cast<size_t>(e)];
  });
}

// gate[n, f] = silu(gate) * up, per row.
void swiglu(float* gate, const float* up, int64_t n, int64_t f, thread_pool& pool) {
  pool.parallel_for(n, [&](int64_t i, int) {
    float* g = gate + i * f;
    const float* u = up + i * f;
    for (int64_t e = 0; e < f; ++e) g[e] = g[e] / (1.0f + std::exp(-g[e])) * u[e];
  });
}

void add_inplace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace

int64_t llama_usable_context(const llama_config& c, const rope_scaling_options& rope) {
  if (rope.type == "none") return c.context_length;
  const double scaled = std::floor(rope.factor * static_cast<double>(c.context_length));
  return scaled >= 9.0e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(scaled);
}

llama_session::llama_session(const llama_weights& weights, thread_pool& pool, int64_t max_tokens)
    : w_(weights), pool_(pool), max_tokens_(max_tokens) {
  check(max_tokens > 0, "llama_session", "max_tokens must be positive, got ", max_tokens);
}

void llama_session::resize_cache(int64_t tokens, int64_t reserve_tokens) {
  const llama_config& c = w_.config;
  const int64_t token_values = c.n_kv_heads * c.head_dim;
  const size_t per_layer = static_cast<size_t>(tokens * token_values);
  const size_t reserve = static_cast<size_t>(std::max(tokens, reserve_tokens) * token_values);
  // Allocation failure is the "prompt longer than memory allows" case: report it clearly.
  try {
    k_cache_.resize(static_cast<size_t>(c.n_layers));
    v_cache_.resize(static_cast<size_t>(c.n_layers));
    for (int64_t l = 0; l < c.n_layers; ++l) {
      for (std::vector<float>* cache : {&k_cache_[static_cast<size_t>(l)],
                                        &v_cache_[static_cast<size_t>(l)]}) {
        if (reserve > per_layer) cache->reserve(reserve);
        cache->resize(per_layer);  // grows geometrically past the reserve
      }
    }
  } catch (const std::bad_alloc&) {
    fail("llama_session", "cannot allocate the KV cache for ", std::max(tokens, reserve_tokens),
         " tokens (", 2.0 * double(reserve) * 4 * double(c.n_layers) / 1e9, " GB)");
  }
}

prefill_result llama_session::prefill(const std::vector<int32_t>& tokens,
                                      const prefill_options& options) {
  const char* fn = "llama_session::prefill";
  const llama_config& c = w_.config;
  const int64_t n = static_cast<int64_t>(tokens.size());
  // Everything below is sized by n: it is checked against the context first (a 1 MB prompt
  // must not allocate a million-token cache before failing).
  auto [chunk, positions] = check_prefill(fn, c, tokens, options, length_, max_tokens_);
  check(options.chunk == 0 || !options.chunk_carried || options.attention != nullptr, fn,
        "chunk_carried needs a planned attention strategy");
  const rope_table rope = rope_make_table(c.rope_dim, c.rope_theta, options.rope.type,
                                          options.rope.factor, c.context_length);

  const auto t_start = clock_type::now();
  rope_ = options.rope;
  // Room for the continuation too, bounded by validated sizes (not by the capacity alone): the
  // cache grows past this only as decode actually runs.
  const int64_t room = std::min(llama_usable_context(c, options.rope), int64_t{1} << 40);
  resize_cache(n, std::min(max_tokens_, 2 * room));
  std::unique_ptr<prefill_attention> dense;
  prefill_attention* attention = options.attention;
  if (attention == nullptr) {
    dense = make_dense_attention();
    attention = dense.get();
  }
  const int64_t dim = c.dim, H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, F = c.ffn_dim;
  std::vector<float> x(static_cast<size_t>(n * dim));  // [n, dim] the residual stream
  // Per chunk of m <= chunk tokens (the whole prompt unless chunked).
  std::vector<float> h(static_cast<size_t>(chunk * dim)), tmp(h.size());
  std::vector<float> q(static_cast<size_t>(chunk * H * D)), attn(q.size());
  std::vector<float> gate(static_cast<size_t>(chunk * F)), up(gate.size());
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(&x[static_cast<size_t>(i * dim)],
                &w_.token_embd[static_cast<size_t>(tokens[static_cast<size_t>(i)]) * dim],
                sizeof(float) * static_cast<size_t>(dim));

  prefill_result result;
  const tile_math::blas_thread_scope all_blas_threads(pool_.size());
  for (int64_t s = 0; s < n; s += chunk) {
    // Tokens [s, e) attend to the keys [0, e): the cache so far and the chunk.
    const int64_t e = std::min(n, s + chunk), m = e - s;
    if (s == 0)
      attention->begin_prompt(e);
    else
      attention->begin_chunk(e, options.chunk_carried);
    float* xs = x.data() + s * dim;  // [m, dim]
    for (int64_t l = 0; l < c.n_layers; ++l) {
      if (options.on_hidden && chunk == n) options.on_hidden(l, x.data());
      const llama_layer_weights& L = w_.layers[static_cast<size_t>(l)];
      float* k = k_cache_[static_cast<size_t>(l)].data();  // [max_tokens, Hkv, D]
      float* v = v_cache_[static_cast<size_t>(l)].data();
      rms_norm(h.data(), xs, L.attn_norm, m, dim, c.rms_eps, pool_);
      linear(q.data(), h.data(), L.wq, m, dim, H * D);
      linear(k + s * Hkv * D, h.data(), L.wk, m, dim, Hkv * D);
      linear(v + s * Hkv * D, h.data(), L.wv, m, dim, Hkv * D);
      rope_apply(q.data(), m, H, D, s, rope);
      rope_apply(k + s * Hkv * D, m, Hkv, D, s, rope);
      const layer_attention_report rep = attention->attend(
          l, tensor_view::contiguous(attn.data(), dtype::f32, {m, H, D}),
          tensor_view::contiguous(q.data(), dtype::f32, {m, H, D}),
          tensor_view::contiguous(k, dtype::f32, {e, Hkv, D}),
          tensor_view::contiguous(v, dtype::f32, {e, Hkv, D}), pool_);
      result.attention_ms += rep.attention_ms + rep.plan_ms;
      result.plan_ms += rep.plan_ms;
      result.layers.push_back(rep);
      linear(tmp.data(), attn.data(), L.wo, m, H * D, dim);
      add_inplace(xs, tmp.data(), m * dim);
      rms_norm(h.data(), xs, L.ffn_norm, m, dim, c.rms_eps, pool_);
      linear(gate.data(), h.data(), L.w_gate, m, dim, F);
      linear(up.data(), h.data(), L.w_up, m, dim, F);
      swiglu(gate.data(), up.data(), m, F, pool_);
      linear(tmp.data(), gate.data(), L.w_down, m, F, dim);
      add_inplace(xs, tmp.data(), m * dim);
      if (options.on_layer) options.on_layer(l, c.n_layers);
    }
  }
  if (options.on_hidden) options.on_hidden(c.n_layers, x.data());
  length_ = n;

  const int64_t np = static_cast<int64_t>(positions.size());
  std::vector<float> last(static_cast<size_t>(np * dim));
  for (int64_t p = 0; p < np; ++p)
    std::memcpy(&last[static_cast<size_t>(p * dim)], &x[static_cast<size_t>(positions[p] * dim)],
                sizeof(float) * static_cast<size_t>(dim));
  rms_norm(last.data(), last.data(), w_.output_norm, np, dim, c.rms_eps, pool_);
  result.logits.resize(static_cast<size_t>(np * c.vocab_size));
  tile_math::gemm_abt(result.logits.data(), c.vocab_size, last.data(), dim, w_.output_matrix(),
                      dim, np, c.vocab_size, dim, 1.0f);
  result.positions = std::move(positions);
  result.total_ms = ms_since(t_start);
  return result;
}

std::vector<float> llama_session::decode(int32_t token) {
  const char* fn = "llama_session::decode";
  const llama_config& c = w_.config;
  check(length_ > 0, fn, "decode needs a prefill first");
  check(length_ < max_tokens_, fn, "the session is full (", max_tokens_, " tokens)");
  check(token >= 0 && token < c.vocab_size, fn, "token id ", token, " outside the vocabulary");
  resize_cache(length_ + 1, 0);
  const int64_t dim = c.dim, H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, F = c.ffn_dim;
  const int64_t pos = length_, g = c.group_size();
  const rope_table rope = rope_make_table(c.rope_dim, c.rope_theta, rope_.type, rope_.factor,
                                          c.context_length);
  std::vector<float> x(w_.token_embd.begin() + token * dim, w_.token_embd.begin() + (token + 1) * dim);
  std::vector<float> h(static_cast<size_t>(dim)), tmp(h.size()), q(static_cast<size_t>(H * D)),
      attn(q.size()), gate(static_cast<size_t>(F)), up(gate.size()), scores(static_cast<size_t>(pos + 1));
  const tile_math::blas_thread_scope all_blas_threads(pool_.size());
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const llama_layer_weights& L = w_.layers[static_cast<size_t>(l)];
    float* k = k_cache_[static_cast<size_t>(l)].data() + pos * Hkv * D;
    float* v = v_cache_[static_cast<size_t>(l)].data() + pos * Hkv * D;
    rms_norm(h.data(), x.data(), L.attn_norm, 1, dim, c.rms_eps, pool_);
    linear(q.data(), h.data(), L.wq, 1, dim, H * D);
    linear(k, h.data(), L.wk, 1, dim, Hkv * D);
    linear(v, h.data(), L.wv, 1, dim, Hkv * D);
    rope_apply(q.data(), 1, H, D, pos, rope);
    rope_apply(k, 1, Hkv, D, pos, rope);
    const float* K = k_cache_[static_cast<size_t>(l)].data();
    const float* V = v_cache_[static_cast<size_t>(l)].data();
    const float scale = 1.0f / std::sqrt(float(D));
    for (int64_t hd = 0; hd < H; ++hd) {
      const int64_t kh = hd / g;
      const float* qh = &q[static_cast<size_t>(hd * D)];
      float mx = -INFINITY;
      for (int64_t j = 0; j <= pos; ++j) {
        float dot = 0.0f;
        for (int64_t e = 0; e < D; ++e) dot += qh[e] * K[(j * Hkv + kh) * D + e];
        scores[static_cast<size_t>(j)] = dot * scale;
        mx = std::max(mx, dot * scale);
      }
      tile_math::exp_shifted_inplace(scores.data(), pos + 1, mx);
      float sum = 0.0f;
      for (int64_t j = 0; j <= pos; ++j) sum += scores[static_cast<size_t>(j)];
      float* out = &attn[static_cast<size_t>(hd * D)];
      std::fill(out, out + D, 0.0f);
      for (int64_t j = 0; j <= pos; ++j) {
        const float p = scores[static_cast<size_t>(j)] / sum;
        for (int64_t e = 0; e < D; ++e) out[e] += p * V[(j * Hkv + kh) * D + e];
      }
    }
    linear(tmp.data(), attn.data(), L.wo, 1, H * D, dim);
    add_inplace(x.data(), tmp.data(), dim);
    rms_norm(h.data(), x.data(), L.ffn_norm, 1, dim, c.rms_eps, pool_);
    linear(gate.data(), h.data(), L.w_gate, 1, dim, F);
    linear(up.data(), h.data(), L.w_up, 1, dim, F);
    swiglu(gate.data(), up.data(), 1, F, pool_);
    linear(tmp.data(), gate.data(), L.w_down, 1, F, dim);
    add_inplace(x.data(), tmp.data(), dim);
  }
  ++length_;
  rms_norm(h.data(), x.data(), w_.output_norm, 1, dim, c.rms_eps, pool_);
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  tile_math::gemm_abt(logits.data(), c.vocab_size, h.data(), dim, w_.output_matrix(), dim, 1,
                      c.vocab_size, dim, 1.0f);
  return logits;
}

}  // namespace sp
