// Merging partial attention from Python (merge_attention.h): two results of the same query rows
// over disjoint key ranges, each with its log-sum-exp, combined into the result over the union.
// The outputs are caller-allocated (shareprefill.merge_attention_states allocates them with the
// inputs' array library); CPU arrays run the CPU merge, CUDA arrays the CUDA merge on the given
// stream (an integer handle, as everywhere in this extension).
#include <nanobind/ndarray.h>

#include <cstdint>
#include <utility>

#include "arrays.h"
#include "bindings.h"
#include "cpu_runtime.h"
#include "shareprefill/error.h"
#include "shareprefill/merge_attention.h"

namespace sp_python {
namespace {

void merge_states(const output_array& o_out, const output_array& lse_out, const input_array& o_a,
                  const input_array& lse_a, const input_array& o_b, const input_array& lse_b,
                  uintptr_t stream) {
  const char* fn = "shareprefill.merge_attention_states";
  const array_info out = view_output(fn, "o_out", o_out, 3);
  const array_info lse = view_output(fn, "lse_out", lse_out, 2);
  const array_info a = view_input(fn, "o_a", o_a, 3);
  const array_info la = view_input(fn, "lse_a", lse_a, 2);
  const array_info b = view_input(fn, "o_b", o_b, 3);
  const array_info lb = view_input(fn, "lse_b", lse_b, 2);
  for (const auto& [name, x] : {std::pair<const char*, const array_info*>{"lse_a", &la},
                                {"o_b", &b},
                                {"lse_b", &lb},
                                {"o_out", &out},
                                {"lse_out", &lse}})
    require_same_device(fn, "o_a", a, name, *x);
  nb::gil_scoped_release release;
  if (a.device == array_device::cuda) {
    sp::cuda_merge_attention_states(out.view, lse.view, a.view, la.view, b.view, lb.view,
                                    reinterpret_cast<void*>(stream));
    return;
  }
  cpu_pool_lease lease;
  sp::merge_attention_states(out.view, lse.view, a.view, la.view, b.view, lb.view, &lease.pool());
}

}  // namespace

void bind_merge(nb::module_& m) {
  m.def("merge_attention_states", &merge_states, nb::arg("o_out"), nb::arg("lse_out"),
        nb::arg("o_a"), nb::arg("lse_a"), nb::arg("o_b"), nb::arg("lse_b"),
        nb::arg("stream") = 0,
        "Writes into o_out [N, H, D] and lse_out [H, N] float32 the attention over the union "
        "of two disjoint key ranges from the results over each (o [N, H, D] float32, float16 "
        "or bfloat16 with the dimension contiguous; lse [H, N] float32, natural log, -inf for "
        "a row without keys). All arrays on one device; CUDA runs on `stream`.");
}

}  // namespace sp_python
