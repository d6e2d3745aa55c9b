// CPU attention from Python: the tiled block-sparse kernel (dense causal or a plan) and the C++
// oracle. Outputs are caller-allocated (the Python layer allocates them with the inputs' array
// library), so no array is copied or converted on the way in or out.
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <optional>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "cpu_runtime.h"
#include "plan_objects.h"
#include "problems.h"
#include "shareprefill/attention.h"
#include "shareprefill/error.h"

namespace sp_python {
namespace {

void attention_cpu(const output_array& out, const std::optional<output_array>& lse,
                   const input_array& q, const input_array& k, const input_array& v,
                   py_plan* plan) {
  const char* fn = "shareprefill.attention";
  const cpu_problem p = cpu_problem_of(fn, out, lse, q, k, v);
  const int64_t offset = chunk_query_offset(fn, p.q, p.k, plan);
  nb::gil_scoped_release release;
  cpu_pool_lease lease;
  if (plan && offset == 0) {
    run_plan_cpu(*plan, p.out, p.lse, p.q, p.k, p.v, lease.pool());
    return;
  }
  const sp::block_mask dense =
      plan ? sp::block_mask{} : sp::block_mask::dense_causal(p.k.shape[0], 128, p.q.shape[1]);
  sp::attention_block_sparse(p.out, p.lse, nullptr, p.q, p.k, p.v, plan ? plan->plan.mask : dense,
                             lease.pool(), offset);
}

void attention_reference(const output_array& out, const std::optional<output_array>& lse,
                         const input_array& q, const input_array& k, const input_array& v,
                         const py_plan* plan) {
  const char* fn = "shareprefill.attention_reference";
  const cpu_problem p = cpu_problem_of(fn, out, lse, q, k, v);
  nb::gil_scoped_release release;
  if (!plan) {
    sp::attention_reference(p.out, p.lse, p.q, p.k, p.v);
    return;
  }
  sp::check(!plan->has_deferred, fn, "plans with deferred heads are not supported here");
  const sp::block_mask& m = plan->plan.mask;
  sp::check(m.heads == p.q.shape[1] && m.n_tokens == p.q.shape[0], fn, "the plan is for ",
            m.n_tokens, " tokens x ", m.heads, " heads, q has ", p.q.shape[0], " x ", p.q.shape[1]);
  std::vector<uint8_t> token_mask;  // [H, N, N]
  for (int64_t h = 0; h < m.heads; ++h) {
    const std::vector<uint8_t> head = m.expand_to_token_mask(h);
    token_mask.insert(token_mask.end(), head.begin(), head.end());
  }
  sp::attention_reference(p.out, p.lse, p.q, p.k, p.v, token_mask.data());
}

}  // namespace

void bind_attention(nb::module_& m) {
  m.def("attention_cpu", &attention_cpu, nb::arg("out"), nb::arg("lse").none(), nb::arg("q"),
        nb::arg("k"), nb::arg("v"), nb::arg("plan").none(),
        "Causal attention on the CPU into out [N, H, D] float32 (lse [H, N] float32 or None) "
        "over q [N, H, D], k and v [N, Hkv, D] (float32, float16 or bfloat16, C-contiguous); "
        "plan None means every causal tile. Multi-threaded, fp32 accumulation.");
  m.def("attention_reference", &attention_reference, nb::arg("out"), nb::arg("lse").none(),
        nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("plan").none() = nb::none(),
        "The C++ oracle (plain loops, fp64 accumulation) with the same arguments as "
        "attention_cpu; O(N^2) memory with a plan.");
}

}  // namespace sp_python
