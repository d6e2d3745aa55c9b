// The replayed prefill strategy (replayed_attention.h): given masks, the CPU block-sparse kernel.
#include "shareprefill/replayed_attention.h"

#include <utility>

#include "shareprefill/error.h"

namespace sp {
namespace {

class replayed_attention final : public prefill_attention {
 public:
  explicit replayed_attention(std::vector<block_mask> masks) : masks_(std::move(masks)) {
    const char* fn = "make_replayed_attention";
    check(!masks_.empty(), fn, "no masks to replay");
    for (size_t l = 0; l < masks_.size(); ++l) {
      masks_[l].validate();
      check(masks_[l].n_tokens == masks_[0].n_tokens, fn, "the mask of layer ", l, " is for ",
            masks_[l].n_tokens, " tokens, the mask of layer 0 for ", masks_[0].n_tokens);
    }
  }

  void begin_prompt(int64_t n_tokens) override {
    check(n_tokens == masks_[0].n_tokens, "replayed_attention::begin_prompt", "a prompt of ",
          n_tokens, " tokens; the replayed masks are for ", masks_[0].n_tokens);
  }

  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override {
    const char* fn = "replayed_attention::attend";
    check(layer >= 0 && layer < static_cast<int64_t>(masks_.size()), fn, "no mask for layer ",
          layer, ": ", masks_.size(), " layers were given");
    const block_mask& mask = masks_[static_cast<size_t>(layer)];
    check(q.rank == 3 && q.shape[0] == mask.n_tokens && q.shape[1] == mask.heads, fn,
          "layer ", layer, "'s mask is for ", mask.n_tokens, " tokens x ", mask.heads,
          " heads; q does not have that shape");
    return attend_mask(layer, mask, out, q, k, v, pool);
  }

  const char* name() const override { return "replay"; }

 private:
  std::vector<block_mask> masks_;
};

}  // namespace

std::unique_ptr<prefill_attention> make_replayed_attention(std::vector<block_mask> masks) {
  return std::make_unique<replayed_attention>(std::move(masks));
}

}  // namespace sp
