// Checked views of an attention call's arrays for the CPU and the CUDA kernels (problems.h).
#include "problems.h"

#include <utility>

#include "shareprefill/error.h"

namespace sp_python {
namespace {

// A CUDA array in the kernel's row layout: heads contiguous within a token, unit dim stride.
sp::tensor_view device_rows(const char* fn, const char* name, const array_info& a) {
  sp::check(a.device == array_device::cuda, fn, name,
            " is a CPU array; the CUDA path needs every array on the same CUDA device");
  const sp::tensor_view& v = a.view;
  sp::check(v.stride[2] == 1 && (v.shape[1] == 1 || v.stride[1] == v.shape[2]), fn, name,
            " of shape ", shape_string(v), " has element strides (", v.stride[0], ", ", v.stride[1],
            ", ", v.stride[2], "); the CUDA kernels need heads contiguous within a ",
            "token (strides (*, ", v.shape[2], ", 1)): pass ", name, ".contiguous()");
  return v;
}

}  // namespace

// The checks the Python-facing messages need (device, dtype, strides); shapes are checked by the
// C++ kernels with their own messages.
cpu_problem cpu_problem_of(const char* fn, const output_array& out,
                           const std::optional<output_array>& lse, const input_array& q,
                           const input_array& k, const input_array& v) {
  const array_info qi = view_input(fn, "q", q, 3), ki = view_input(fn, "k", k, 3),
                   vi = view_input(fn, "v", v, 3), oi = view_output(fn, "out", out, 3);
  for (const auto& [name, a] : {std::pair<const char*, const array_info*>{"q", &qi},
                                {"k", &ki},
                                {"v", &vi},
                                {"out", &oi}}) {
    sp::check(a->device == array_device::cpu, fn, name,
              " is on a CUDA device; the CPU kernels need CPU arrays");
    require_contiguous(fn, name, *a);
  }
  require_f32(fn, "out", oi);
  cpu_problem p{oi.view, {}, qi.view, ki.view, vi.view};
  if (lse) {
    const array_info li = view_output(fn, "lse", *lse, 2);
    sp::check(li.device == array_device::cpu, fn, "lse is on a CUDA device");
    require_contiguous(fn, "lse", li);
    require_f32(fn, "lse", li);
    p.lse = li.view;
  }
  return p;
}

device_problem device_problem_of(const char* fn, const output_array& out,
                                 const std::optional<output_array>& lse, const input_array& q,
                                 const input_array& k, const input_array& v) {
  const array_info qi = view_input(fn, "q", q, 3), ki = view_input(fn, "k", k, 3),
                   vi = view_input(fn, "v", v, 3), oi = view_output(fn, "out", out, 3);
  device_problem p{device_rows(fn, "out", oi), {},
                   device_rows(fn, "q", qi),   device_rows(fn, "k", ki),
                   device_rows(fn, "v", vi),   qi.device_id};
  const char* dtypes[] = {"float32", "float16", "bfloat16"};  // indexed by sp::dtype
  for (const auto& [name, a] :
       {std::pair<const char*, const array_info*>{"q", &qi}, {"k", &ki}, {"v", &vi}, {"out", &oi}})
    sp::check(a->view.type != sp::dtype::f32, fn, name, " has dtype ",
              dtypes[static_cast<int>(a->view.type)],
              "; the CUDA kernels take bfloat16 or float16");
  require_same_device(fn, "q", qi, "k", ki);
  require_same_device(fn, "q", qi, "v", vi);
  require_same_device(fn, "q", qi, "out", oi);
  if (lse) {
    const array_info li = view_output(fn, "lse", *lse, 2);
    require_same_device(fn, "q", qi, "lse", li);
    require_contiguous(fn, "lse", li);
    require_f32(fn, "lse", li);
    p.lse = li.view;
  }
  return p;
}

}  // namespace sp_python
