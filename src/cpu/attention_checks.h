// Private: output validation shared by the CPU attention kernels (inputs: attention_shape_of).
#pragma once

#include "shareprefill/attention.h"

namespace sp {

void check_attention_outputs(const char* fn, const attention_shape& s, const tensor_view& out,
                             const tensor_view& lse);

}  // namespace sp
