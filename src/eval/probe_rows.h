// The probe_rows of one candidate in one layer, shared by the CPU probe (attention_probe) and the
// GPU probe (cuda_attention_probe, attn_probe_cuda.cpp). Internal to src/eval.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/eval.h"
#include "shareprefill/tensor.h"

namespace sp {

// Appends one row per head h: the relative error of cand against ref (whole window and tokens
// [N/2, N)), the recall of the dense block attention a + h * nb * nb by the head's tiles
// mask_of(h), their density, and kind_of(h).
// cand, ref: [N, H, D] f32 contiguous; a: [H, nb, nb] exact block attention of every head.
void append_probe_rows(std::vector<probe_row>& rows, size_t candidate, int64_t layer,
                       const tensor_view& cand, const tensor_view& ref, const float* a,
                       int64_t nb, const std::function<const block_mask&(int64_t)>& mask_of,
                       const std::function<head_kind(int64_t)>& kind_of);

}  // namespace sp
