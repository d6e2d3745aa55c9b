// Single-head ablation (issue 17): a prefill that is dense except for a chosen set of heads,
// which take a sparse planner's output on the same q, k, v.
#include <algorithm>
#include <cstring>

#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "shareprefill/eval_heads.h"
#include "shareprefill/planned_layer.h"

namespace sp {

head_subset_attention::head_subset_attention(const planner& pl, std::vector<head_ref> sparse_heads,
                                             dense_prefix_cache* cache)
    : pl_(pl), cache_(cache) {
  const char* fn = "head_subset_attention";
  sparse_.assign(static_cast<size_t>(pl.layers() * pl.heads()), 0);
  for (const head_ref& h : sparse_heads) {
    check(h.layer >= 0 && h.layer < pl.layers() && h.head >= 0 && h.head < pl.heads(), fn,
          "head ", h.layer, ":", h.head, " is outside the model's ", pl.layers(), " layers x ",
          pl.heads(), " heads");
    sparse_[static_cast<size_t>(h.layer * pl.heads() + h.head)] = 1;
    last_layer_ = std::max<int64_t>(last_layer_, h.layer);
    first_layer_ = first_layer_ < 0 ? h.layer : std::min<int64_t>(first_layer_, h.layer);
  }
}

void head_subset_attention::begin_prompt(int64_t) { state_.reset(); }

layer_attention_report head_subset_attention::attend(int64_t layer, const tensor_view& out,
                                                     const tensor_view& q, const tensor_view& k,
                                                     const tensor_view& v, thread_pool& pool) {
  const int64_t n = q.shape[0], heads = q.shape[1], d = q.shape[2];
  const block_mask dense = block_mask::dense_causal(n, pl_.params().block_size, heads);
  const bool cacheable = cache_ != nullptr && (first_layer_ < 0 || layer < first_layer_);
  float* o = out.as<float>();
  if (cacheable) {
    std::vector<float>& kept = cache_->outputs[{cache_->prompt_key, layer}];
    if (kept.size() != static_cast<size_t>(out.numel())) {
      attention_block_sparse(out, {}, nullptr, q, k, v, dense, pool);
      kept.assign(o, o + out.numel());
    } else {
      std::copy(kept.begin(), kept.end(), o);
    }
  } else {
    attention_block_sparse(out, {}, nullptr, q, k, v, dense, pool);
  }
  layer_attention_report r;
  r.layer = layer;
  r.causal_tiles = dense.total_tiles();
  r.tiles = dense.total_tiles();
  r.kind_counts[static_cast<size_t>(head_kind::dense)] = heads;
  const uint8_t* listed = &sparse_[static_cast<size_t>(layer * heads)];
  const bool any = std::any_of(listed, listed + heads, [](uint8_t x) { return x != 0; });
  const bool plan_here =
      any || (pl_.params().mode == plan_mode::shareprefill && layer <= last_layer_);
  if (!plan_here) return r;
  planned_out_.resize(static_cast<size_t>(out.numel()));
  const tensor_view cand = tensor_view::contiguous(planned_out_.data(), dtype::f32, {n, heads, d});
  const planned_layer p = attend_planned_layer(pl_, state_, layer, cand, q, k, v, pool);
  const int64_t per_head_tiles = causal_tile_count(dense.n_blocks);
  for (int64_t h = 0; h < heads; ++h) {
    if (!listed[h]) continue;
    for (int64_t t = 0; t < n; ++t)
      std::memcpy(o + (t * heads + h) * d, &planned_out_[static_cast<size_t>((t * heads + h) * d)],
                  sizeof(float) * static_cast<size_t>(d));
    const block_mask& m = p.mask_of(static_cast<int32_t>(h));
    r.tiles += m.head_tiles(h) - per_head_tiles;
    --r.kind_counts[static_cast<size_t>(head_kind::dense)];
    ++r.kind_counts[static_cast<size_t>(p.kind_of(static_cast<int32_t>(h)))];
  }
  return r;
}

}  // namespace sp
