// The planned prefill attention strategy: the SharePrefill planner (or one of its baselines)
// chooses each head's tiles, the CPU block-sparse kernel computes them, and the pivots' exact
// block attention is published back into the per-prompt state.
#include <algorithm>
#include <chrono>

#include "shareprefill/attention.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"

namespace sp {
namespace {

using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

class planned_attention final : public prefill_attention {
 public:
  explicit planned_attention(const planner& pl) : planner_(pl) {}

  void begin_prompt(int64_t) override { state_.reset(); }

  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override {
    layer_attention_report r;
    r.layer = layer;
    auto t0 = clock_type::now();
    const layer_plan plan = planner_.plan(layer, q, k, state_, pool);
    r.plan_ms += ms_since(t0);
    const int64_t nb = plan.mask.n_blocks, n = q.shape[0], heads = q.shape[1], d = q.shape[2];
    block_attn_.assign(plan.pivot_heads.size() * static_cast<size_t>(nb * nb), 0.0f);
    const block_attention_output ba{plan.pivot_heads, block_attn_.data()};

    t0 = clock_type::now();
    attention_block_sparse(out, {}, plan.pivot_heads.empty() ? nullptr : &ba, q, k, v, plan.mask,
                           pool);
    r.attention_ms += ms_since(t0);

    t0 = clock_type::now();
    planner_.publish(layer, plan.pivot_heads, block_attn_.data(), state_);
    std::vector<head_kind> kinds = plan.kinds;
    r.tiles = plan.mask.total_tiles();
    if (!plan.deferred_heads.empty()) {
      const layer_plan rest = planner_.plan_deferred(layer, state_);
      r.plan_ms += ms_since(t0);
      t0 = clock_type::now();
      deferred_out_.resize(static_cast<size_t>(out.numel()));
      attention_block_sparse(
          tensor_view::contiguous(deferred_out_.data(), dtype::f32, {n, heads, d}), {}, nullptr,
          q, k, v, rest.mask, pool);
      float* o = out.as<float>();
      for (int32_t h : rest.deferred_heads)
        for (int64_t t = 0; t < n; ++t)
          std::copy_n(deferred_out_.data() + (t * heads + h) * d, d, o + (t * heads + h) * d);
      r.attention_ms += ms_since(t0);
      kinds = rest.kinds;
      r.tiles += rest.mask.total_tiles();
    } else {
      r.plan_ms += ms_since(t0);
    }
    r.causal_tiles = heads * causal_tile_count(nb);
    for (head_kind kind : kinds) ++r.kind_counts[static_cast<size_t>(kind)];
    return r;
  }

  const char* name() const override { return plan_mode_name(planner_.params().mode); }

 private:
  const planner& planner_;
  plan_state state_;
  std::vector<float> block_attn_;    // [pivots, nb, nb]
  std::vector<float> deferred_out_;  // [N, H, D]
};

}  // namespace

std::unique_ptr<prefill_attention> make_planned_attention(const planner& pl) {
  return std::make_unique<planned_attention>(pl);
}

}  // namespace sp
