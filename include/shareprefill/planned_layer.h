// One layer of planned sparse attention on the CPU: plan (DESIGN.md 2A-2E), block-sparse
// attention with the pivots' exact block attention (2F), publish (2G) and, with
// share_within_layer, a second pass for the heads that waited for a pivot of their own layer.
// The prefill strategy, the evaluation probe and `inspect` all run a layer through this.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/planner.h"

namespace sp {

struct planned_layer {
  layer_plan plan;      // the first pass
  layer_plan deferred;  // the second pass (share_within_layer only); empty mask otherwise
  bool has_deferred = false;
  double plan_ms = 0.0;       // planning and publishing
  double attention_ms = 0.0;  // the attention passes

  // The mask that computed `head`, and the head's final kind.
  const block_mask& mask_of(int32_t head) const;
  head_kind kind_of(int32_t head) const;
  const std::vector<head_kind>& kinds() const { return has_deferred ? deferred.kinds : plan.kinds; }
  int64_t tiles() const;  // visited tiles over both passes
};

// out: [N - s, H, D] f32; q: [N - s, H, D]; k, v: [N, Hkv, D], s = query_offset. Advances
// `state` by one layer. s = 0: the whole prompt. s > 0 (a multiple of the block size): a chunk's
// queries over the keys so far, planned on the queries with zeros before the chunk (bench
// chunk-plan's rule), the kernel from row s, the chunk's rows of the pivots' A published (the
// rows before it stay 0); share_within_layer is refused there (q must be contiguous).
planned_layer attend_planned_layer(const planner& pl, plan_state& state, int64_t layer,
                                   const tensor_view& out, const tensor_view& q,
                                   const tensor_view& k, const tensor_view& v, thread_pool& pool,
                                   int64_t query_offset = 0);

}  // namespace sp
