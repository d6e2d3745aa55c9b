// The arrays of one attention call from Python, checked and viewed for the CPU or the CUDA
// kernels (shared by the one-sequence and the varlen bindings). Shapes are left to the C++
// kernels' own checks.
#pragma once

#include <optional>

#include "arrays.h"
#include "shareprefill/tensor.h"

namespace sp_python {

struct cpu_problem {
  sp::tensor_view out, lse, q, k, v;  // lse empty when not asked for
};

// CPU arrays, C-contiguous; out (and lse) float32.
cpu_problem cpu_problem_of(const char* fn, const output_array& out,
                           const std::optional<output_array>& lse, const input_array& q,
                           const input_array& k, const input_array& v);

struct device_problem {
  sp::tensor_view out, lse, q, k, v;  // lse empty when not asked for
  int32_t device_id = 0;
};

// CUDA arrays of one device, bfloat16 or float16 with heads contiguous within a token; lse
// float32 contiguous.
device_problem device_problem_of(const char* fn, const output_array& out,
                                 const std::optional<output_array>& lse, const input_array& q,
                                 const input_array& k, const input_array& v);

}  // namespace sp_python
