// Validation of merge_attention_states' views, shared by the CPU and CUDA merges.
#include "shareprefill/error.h"
#include "shareprefill/merge_attention.h"

namespace sp {
namespace {

void check_o(const char* fn, const char* name, const tensor_view& o, const merge_shape& s,
             bool on_device) {
  check(!o.empty(), fn, name, " is missing");
  check(o.rank == 3, fn, name, " must be [N, heads, dim], got rank ", o.rank);
  check(o.shape[0] == s.n && o.shape[1] == s.heads && o.shape[2] == s.dim, fn, name,
        " has shape [", o.shape[0], ", ", o.shape[1], ", ", o.shape[2], "], expected [", s.n,
        ", ", s.heads, ", ", s.dim, "]");
  check(o.stride[2] == 1, fn, name, " must have unit stride in its last dimension, got ",
        o.stride[2]);
  check(o.on_device == on_device, fn, name, " is in ", o.on_device ? "device" : "host",
        " memory, expected ", on_device ? "device" : "host", " memory");
}

void check_lse(const char* fn, const char* name, const tensor_view& lse, const merge_shape& s,
               bool on_device) {
  check(!lse.empty(), fn, name, " is missing");
  check(lse.type == dtype::f32, fn, name, " must be f32, got ", dtype_name(lse.type));
  check(lse.rank == 2 && lse.shape[0] == s.heads && lse.shape[1] == s.n, fn, name,
        " must be [heads, N] = [", s.heads, ", ", s.n, "]");
  check(lse.on_device == on_device, fn, name, " is in ", lse.on_device ? "device" : "host",
        " memory, expected ", on_device ? "device" : "host", " memory");
}

}  // namespace

merge_shape merge_shape_of(const char* fn, const tensor_view& o_out, const tensor_view& lse_out,
                           const tensor_view& o_a, const tensor_view& lse_a,
                           const tensor_view& o_b, const tensor_view& lse_b) {
  check(!o_a.empty() && o_a.rank == 3, fn, "o_a must be a [N, heads, dim] view");
  merge_shape s{o_a.shape[0], o_a.shape[1], o_a.shape[2]};
  check(s.n > 0 && s.heads > 0 && s.dim > 0, fn, "o_a has an empty shape [", s.n, ", ", s.heads,
        ", ", s.dim, "]");
  const bool on_device = o_a.on_device;
  check_o(fn, "o_a", o_a, s, on_device);
  check_o(fn, "o_b", o_b, s, on_device);
  check_o(fn, "o_out", o_out, s, on_device);
  check_lse(fn, "lse_a", lse_a, s, on_device);
  check_lse(fn, "lse_b", lse_b, s, on_device);
  check_lse(fn, "lse_out", lse_out, s, on_device);
  return s;
}

}  // namespace sp
