// Planned attention for one layer (attend_planned_layer) and the planned prefill strategy built
// on it: the SharePrefill planner (or one of its baselines) chooses each head's tiles, the CPU
// block-sparse kernel computes them, and the pivots' exact block attention is published back
// into the per-prompt state. The strategy runs each layer through prefill_layer (the host path:
// attend_planned_layer for a whole prompt, the chunk rule for a later chunk), so a prompt can
// also be prefilled in chunks with a fresh or a carried sharing state.
#include <algorithm>
#include <chrono>

#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "shareprefill/planned_layer.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/prefill_layer.h"

namespace sp {
namespace {

using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

bool is_deferred(const planned_layer& p, int32_t head) {
  const auto& d = p.deferred.deferred_heads;
  return p.has_deferred && std::find(d.begin(), d.end(), head) != d.end();
}

}  // namespace

const block_mask& planned_layer::mask_of(int32_t head) const {
  return is_deferred(*this, head) ? deferred.mask : plan.mask;
}

head_kind planned_layer::kind_of(int32_t head) const {
  return kinds()[static_cast<size_t>(head)];
}

int64_t planned_layer::tiles() const {
  return plan.mask.total_tiles() + (has_deferred ? deferred.mask.total_tiles() : 0);
}

planned_layer attend_planned_layer(const planner& pl, plan_state& state, int64_t layer,
                                   const tensor_view& out, const tensor_view& q,
                                   const tensor_view& k, const tensor_view& v, thread_pool& pool,
                                   int64_t query_offset) {
  const char* fn = "attend_planned_layer";
  planned_layer r;
  const int64_t n = q.shape[0], heads = q.shape[1], d = q.shape[2];
  auto t0 = clock_type::now();
  if (query_offset == 0) {
    r.plan = pl.plan(layer, q, k, state, pool);
  } else {
    check(q.is_contiguous(), fn, "a chunk's q must be contiguous on the CPU");
    const int64_t keys = k.shape[0];
    std::vector<float> padded(static_cast<size_t>(keys * heads * d), 0.0f);  // [keys, H, D]
    convert_to_fp32(padded.data() + query_offset * heads * d, q);
    r.plan = pl.plan(layer, tensor_view::contiguous(padded.data(), dtype::f32, {keys, heads, d}),
                     k, state, pool);
    check(r.plan.deferred_heads.empty(), fn, "share_within_layer is not supported for chunks");
  }
  r.plan_ms += ms_since(t0);
  const int64_t nb = r.plan.mask.n_blocks;
  std::vector<float> block_attn(r.plan.pivot_heads.size() * static_cast<size_t>(nb * nb));  // [pivots, nb, nb]
  const block_attention_output ba{r.plan.pivot_heads, block_attn.data()};

  t0 = clock_type::now();
  attention_block_sparse(out, {}, r.plan.pivot_heads.empty() ? nullptr : &ba, q, k, v,
                         r.plan.mask, pool, query_offset);
  r.attention_ms += ms_since(t0);

  t0 = clock_type::now();
  pl.publish(layer, r.plan.pivot_heads, block_attn.data(), state);
  if (r.plan.deferred_heads.empty()) {
    r.plan_ms += ms_since(t0);
    return r;
  }
  r.deferred = pl.plan_deferred(layer, state);
  r.has_deferred = true;
  r.plan_ms += ms_since(t0);
  t0 = clock_type::now();
  std::vector<float> second(static_cast<size_t>(out.numel()));  // [N, H, D]
  attention_block_sparse(tensor_view::contiguous(second.data(), dtype::f32, {n, heads, d}), {},
                         nullptr, q, k, v, r.deferred.mask, pool);
  float* o = out.as<float>();
  for (int32_t h : r.deferred.deferred_heads)
    for (int64_t t = 0; t < n; ++t)
      std::copy_n(second.data() + (t * heads + h) * d, d, o + (t * heads + h) * d);
  r.attention_ms += ms_since(t0);
  return r;
}

namespace {

class planned_attention final : public prefill_attention {
 public:
  explicit planned_attention(const planner& pl) : planner_(pl) {}

  void begin_prompt(int64_t n_tokens) override {
    prefill_layer_begin(state_, params(0, 0, nullptr), n_tokens, false, nullptr, 0, nullptr);
  }

  void begin_chunk(int64_t n_tokens, bool carried) override {
    if (carried)
      prefill_layer_begin_chunk(state_, params(0, 0, nullptr), n_tokens, nullptr);
    else  // a fresh sharing state for the chunk ending at n_tokens
      prefill_layer_begin(state_, params(0, 0, nullptr), n_tokens, false, nullptr, 0, nullptr);
  }

  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override {
    const int64_t s = k.shape[0] - q.shape[0];
    const planned_layer p =
        prefill_layer(q, k, v, out, state_, params(layer, s, &pool), nullptr, 0, nullptr).host;
    const int64_t first_row = s / p.plan.mask.block_size;
    layer_attention_report r;
    r.layer = layer;
    r.plan_ms = p.plan_ms;
    r.attention_ms = p.attention_ms;
    r.tiles = s == 0 ? p.tiles() : p.plan.mask.tiles_from_row(first_row);
    r.causal_tiles =
        q.shape[1] * (causal_tile_count(p.plan.mask.n_blocks) - causal_tile_count(first_row));
    for (head_kind kind : p.kinds()) ++r.kind_counts[static_cast<size_t>(kind)];
    return r;
  }

  const char* name() const override { return plan_mode_name(planner_.params().mode); }

 private:
  prefill_layer_params params(int64_t layer, int64_t query_offset, thread_pool* pool) const {
    prefill_layer_params p;
    p.layer = layer;
    p.host = &planner_;
    p.pool = pool;
    p.query_offset = query_offset;
    return p;
  }

  const planner& planner_;
  prefill_layer_state state_;
};

}  // namespace

std::unique_ptr<prefill_attention> make_planned_attention(const planner& pl) {
  return std::make_unique<planned_attention>(pl);
}

}  // namespace sp
