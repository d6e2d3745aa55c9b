// The view checks shared by the per-head error measures (head_relative_errors in attn_probe.cpp,
// head_output_errors in head_errors.cpp). Internal to src/eval.
#pragma once

#include <cstdint>

#include "shareprefill/tensor.h"

namespace sp {

// out and ref: f32 [N, H, D] of the same shape, contiguous; first_token inside [0, N). Throws
// sp::error naming fn.
void check_head_error_views(const char* fn, const tensor_view& out, const tensor_view& ref,
                            int64_t first_token);

}  // namespace sp
