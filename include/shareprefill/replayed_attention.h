// A prefill attention strategy that plans nothing: each layer visits tiles given up front. It
// runs on the CPU a plan another planner chose (the device planner's, captured from the CUDA
// forward with prefill_options::on_plan), so that two forwards on the same tiles differ only in
// arithmetic and their logits can be compared within a rounding bound.
#pragma once

#include <memory>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/prefill_attention.h"

namespace sp {

// masks[l]: the tiles of every query head of layer l, for one prompt length (validated here).
// attend() runs the CPU block-sparse kernel on masks[layer] (no pivots' block attention, no
// publish). Throws sp::error on an empty list, masks of different prompt lengths, a prompt of
// another length in begin_prompt, a layer without a mask, or a mask whose heads differ from q's.
// The reports count visited tiles; a replay knows no head kinds (kind_counts stay zero).
std::unique_ptr<prefill_attention> make_replayed_attention(std::vector<block_mask> masks);

}  // namespace sp
