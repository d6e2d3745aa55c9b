// The dense prefill attention strategy: every causal tile through the block-sparse kernel;
// attend_mask, the one-mask layer that it and the replayed strategy run; and the default
// prefill_attention::begin_chunk (strategies that cannot run chunks refuse).
#include <chrono>

#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "shareprefill/prefill_attention.h"

namespace sp {
namespace {

class dense_attention final : public prefill_attention {
 public:
  explicit dense_attention(int64_t block_size) : block_size_(block_size) {}
  void begin_prompt(int64_t) override {}
  void begin_chunk(int64_t, bool) override {}
  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override {
    const block_mask mask = block_mask::dense_causal(k.shape[0], block_size_, q.shape[1]);
    layer_attention_report r = attend_mask(layer, mask, out, q, k, v, pool);
    r.kind_counts[0] = mask.heads;  // head_kind::dense
    return r;
  }
  const char* name() const override { return "dense"; }

 private:
  int64_t block_size_;
};

}  // namespace

void prefill_attention::begin_chunk(int64_t, bool) {
  fail("prefill_attention::begin_chunk", "the ", name(),
       " attention strategy cannot run a prompt in chunks");
}

layer_attention_report attend_mask(int64_t layer, const block_mask& mask, const tensor_view& out,
                                   const tensor_view& q, const tensor_view& k,
                                   const tensor_view& v, thread_pool& pool) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t query_offset = k.shape[0] - q.shape[0];
  attention_block_sparse(out, {}, nullptr, q, k, v, mask, pool, query_offset);
  const int64_t first_row = query_offset / mask.block_size;
  layer_attention_report r;
  r.layer = layer;
  r.tiles = mask.tiles_from_row(first_row);
  r.causal_tiles =
      mask.heads * (causal_tile_count(mask.n_blocks) - causal_tile_count(first_row));
  r.attention_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

std::unique_ptr<prefill_attention> make_dense_attention(int64_t block_size) {
  return std::make_unique<dense_attention>(block_size);
}

}  // namespace sp
