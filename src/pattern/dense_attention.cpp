// The dense prefill attention strategy: every causal tile through the block-sparse kernel; and
// attend_mask, the one-mask layer that it and the replayed strategy run.
#include <chrono>

#include "shareprefill/attention.h"
#include "shareprefill/prefill_attention.h"

namespace sp {
namespace {

class dense_attention final : public prefill_attention {
 public:
  explicit dense_attention(int64_t block_size) : block_size_(block_size) {}
  void begin_prompt(int64_t) override {}
  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override {
    const block_mask mask = block_mask::dense_causal(q.shape[0], block_size_, q.shape[1]);
    layer_attention_report r = attend_mask(layer, mask, out, q, k, v, pool);
    r.kind_counts[0] = mask.heads;  // head_kind::dense
    return r;
  }
  const char* name() const override { return "dense"; }

 private:
  int64_t block_size_;
};

}  // namespace

layer_attention_report attend_mask(int64_t layer, const block_mask& mask, const tensor_view& out,
                                   const tensor_view& q, const tensor_view& k,
                                   const tensor_view& v, thread_pool& pool) {
  const auto t0 = std::chrono::steady_clock::now();
  attention_block_sparse(out, {}, nullptr, q, k, v, mask, pool);
  layer_attention_report r;
  r.layer = layer;
  r.tiles = mask.total_tiles();
  r.causal_tiles = mask.heads * causal_tile_count(mask.n_blocks);
  r.attention_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::unique_ptr<prefill_attention> make_dense_attention(int64_t block_size) {
  return std::make_unique<dense_attention>(block_size);
}

}  // namespace sp
