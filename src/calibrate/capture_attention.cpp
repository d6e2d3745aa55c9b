// The calibration capture strategy: dense causal attention through the block-sparse kernel with
// every head's exact block attention A (DESIGN.md 2F) written into a calibration_input, plus each
// head's last-block statistics (2A) to measure how much of A its own adaptive vertical-slash tiles
// (2D) would cover. The prefill output is the exact dense attention, so later layers see the
// model's true activations.
#include "shareprefill/attention.h"
#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"
#include "shareprefill/planner.h"
#include "shareprefill/statistics.h"

namespace sp {
namespace {

class capture_attention final : public prefill_attention {
 public:
  capture_attention(calibration_input* dst, int64_t layers, int64_t block_size, double gamma,
                    int64_t min_budget)
      : dst_(dst), layers_(layers), gamma_(gamma), min_budget_(min_budget) {
    check(dst != nullptr, "make_capture_attention", "destination is null");
    check(layers > 0, "make_capture_attention", "layers must be positive, got ", layers);
    check(block_size >= 16 && (block_size & (block_size - 1)) == 0, "make_capture_attention",
          "block size must be a power of two >= 16, got ", block_size);
    check(gamma > 0.0 && gamma <= 1.0, "make_capture_attention", "gamma must be in (0, 1], got ",
          gamma);
    dst_->block_size = block_size;
  }

  void begin_prompt(int64_t n_tokens) override {
    const int64_t bs = dst_->block_size;
    check(n_tokens >= bs, "capture_attention", "a calibration input needs at least one block (",
          bs, " tokens), got ", n_tokens);
    dst_->n_tokens = n_tokens;
    dst_->n_blocks = (n_tokens + bs - 1) / bs;
    dst_->layers = layers_;
    dst_->heads = 0;
  }

  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override {
    const char* fn = "capture_attention";
    const attention_shape s = attention_shape_of(fn, q, k, v);
    const int64_t nb = dst_->n_blocks, bs = dst_->block_size;
    check(s.n == dst_->n_tokens, fn, "layer ", layer, " has ", s.n, " tokens, begin_prompt said ",
          dst_->n_tokens);
    check(layer >= 0 && layer < layers_, fn, "layer ", layer, " out of range [0, ", layers_, ")");
    if (dst_->heads == 0) {
      dst_->heads = s.heads;
      dst_->block_attention.assign(static_cast<size_t>(layers_ * s.heads * nb * nb), 0.0f);
      dst_->vs_coverage.assign(static_cast<size_t>(layers_ * s.heads), 0.0f);
    }
    check(dst_->heads == s.heads, fn, "layer ", layer, " has ", s.heads, " heads, layer 0 had ",
          dst_->heads);

    block_attention_output ba;
    for (int32_t h = 0; h < s.heads; ++h) ba.heads.push_back(h);
    float* a = dst_->block_attention.data() + layer * s.heads * nb * nb;
    ba.values = a;
    const block_mask mask = block_mask::dense_causal(s.n, bs, s.heads);
    attention_block_sparse(out, {}, &ba, q, k, v, mask, pool);

    budget_rule rule;
    rule.block_size = bs;
    rule.gamma = gamma_;
    rule.min_blocks = (min_budget_ + bs - 1) / bs;
    const std::vector<head_statistics> stats = last_block_statistics(q, k, rule, pool);
    for (int64_t h = 0; h < s.heads; ++h) {
      const head_statistics& st = stats[static_cast<size_t>(h)];
      dst_->vs_coverage[static_cast<size_t>(layer * s.heads + h)] = static_cast<float>(
          vs_coverage(a + h * nb * nb, st.v_blk.data(), st.s_blk.data(), nb, st.vertical_blocks,
                      st.slash_blocks));
    }

    layer_attention_report r;
    r.layer = layer;
    r.tiles = mask.total_tiles();
    r.causal_tiles = r.tiles;
    r.kind_counts[static_cast<size_t>(head_kind::dense)] = s.heads;
    return r;
  }

  const char* name() const override { return "calibration capture (dense)"; }

 private:
  calibration_input* dst_;
  int64_t layers_;
  double gamma_;
  int64_t min_budget_;
};

}  // namespace

std::unique_ptr<prefill_attention> make_capture_attention(calibration_input* dst, int64_t layers,
                                                          int64_t block_size, double gamma,
                                                          int64_t min_budget) {
  return std::make_unique<capture_attention>(dst, layers, block_size, gamma, min_budget);
}

}  // namespace sp
