// The calibration capture strategy: dense causal attention through the block-sparse kernel with
// every head's exact block attention A (DESIGN.md 2F) written into a calibration_input, plus each
// head's last-block statistics (2A) to measure how much of A its own adaptive vertical-slash tiles
// (2D) would cover. The prefill output is the exact dense attention, so later layers see the
// model's true activations.
#include "capture_layer.h"
#include "shareprefill/attention.h"
#include "shareprefill/calibrate.h"
#include "shareprefill/planner.h"

namespace sp {
namespace {

class capture_attention final : public prefill_attention {
 public:
  capture_attention(calibration_input* dst, int64_t layers, int64_t block_size, double gamma,
                    int64_t min_budget)
      : dst_(dst), layers_(layers), gamma_(gamma), min_budget_(min_budget) {
    capture::check_settings("make_capture_attention", dst, layers, block_size, gamma);
    dst_->block_size = block_size;
  }

  void begin_prompt(int64_t n_tokens) override {
    capture::begin_prompt("capture_attention", *dst_, layers_, n_tokens);
  }

  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override {
    const char* fn = "capture_attention";
    const attention_shape s = attention_shape_of(fn, q, k, v);
    const int64_t bs = dst_->block_size;
    float* a = capture::layer_attention(fn, *dst_, layer, s.n, s.heads);

    block_attention_output ba;
    for (int32_t h = 0; h < s.heads; ++h) ba.heads.push_back(h);
    ba.values = a;
    const block_mask mask = block_mask::dense_causal(s.n, bs, s.heads);
    attention_block_sparse(out, {}, &ba, q, k, v, mask, pool);
    capture::store_coverage(*dst_, layer,
                            capture::statistics(q, k, bs, gamma_, min_budget_, pool));

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
