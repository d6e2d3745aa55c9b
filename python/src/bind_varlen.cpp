// Variable-length batches from Python (issue 16): prompts packed along the token axis,
// q/out [total, H, D], k/v [total, Hkv, D], lse [H, total], sequence b the rows
// [cu_seqlens[b], cu_seqlens[b + 1]), one mask per sequence (varlen_plan.h). One thread-pool pass
// on the CPU, one kernel launch on CUDA. Plans that still have to publish pivots or that have
// deferred heads need their own run (block attention, a second pass); the Python layer
// (shareprefill.attention_varlen) runs those apart and hands this one an empty mask for them.
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "cpu_runtime.h"
#include "plan_objects.h"
#include "problems.h"
#include "shareprefill/attention.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/error.h"
#include "shareprefill/varlen_plan.h"

namespace sp_python {
namespace {

const char* const varlen_fn = "shareprefill.attention_varlen";

using plan_list = std::optional<std::vector<py_plan*>>;

// One mask per sequence: dense causal without plans, else each plan's mask. Plans from a
// Planner that are not yet published must have no pivots and no deferred heads (their publish
// is then only the bookkeeping publish_plain does).
std::vector<sp::block_mask> masks_of(const std::vector<int32_t>& cu_seqlens, int64_t heads,
                                     const plan_list& plans) {
  const size_t batch = cu_seqlens.size() - 1;
  std::vector<sp::block_mask> masks;
  masks.reserve(batch);
  if (plans)
    sp::check(plans->size() == batch, varlen_fn, plans->size(), " plans for ", batch,
              " sequences");
  for (size_t b = 0; b < batch; ++b) {
    const int64_t n = cu_seqlens[b + 1] - cu_seqlens[b];
    if (!plans) {
      masks.push_back(sp::block_mask::dense_causal(n, 128, heads));
      continue;
    }
    const py_plan* p = (*plans)[b];
    sp::check(p != nullptr, varlen_fn, "plan ", b, " is None");
    const sp::block_mask& m = p->plan.mask;
    sp::check(m.n_tokens == n && m.heads == heads, varlen_fn, "plan ", b, " is for ", m.n_tokens,
              " tokens x ", m.heads, " heads; sequence ", b, " has ", n, " tokens x ", heads,
              " heads");
    sp::check(!p->has_deferred && p->plan.deferred_heads.empty(), varlen_fn, "plan ", b,
              " has deferred heads (share_within_layer): it runs apart, through "
              "shareprefill.attention");
    const bool publish = p->session && !p->published;
    if (publish) {
      sp::check(p->plan.pivot_heads.empty(), varlen_fn, "plan ", b,
                " still has to publish the block attention of its pivot heads: it runs apart, "
                "through shareprefill.attention");
      sp::check(p->session->prompt == p->prompt, varlen_fn, "plan ", b, " (layer ", p->plan.layer,
                ") belongs to an earlier prompt: its planner was reset() after it was made");
    }
    masks.push_back(m);
  }
  return masks;
}

// After the run: plans from a Planner without pivots are published (no block attention to hand
// over; the planner only records that the layer ran).
void publish_plain(const plan_list& plans) {
  if (!plans) return;
  for (py_plan* p : *plans) {
    if (!p->session || p->published) continue;
    planner_session& s = *p->session;
    s.planner->publish(p->plan.layer, {}, nullptr, s.state);
    p->published = true;
  }
}

void check_cu_seqlens_of(const std::vector<int32_t>& cu_seqlens, int64_t total) {
  sp::check_cu_seqlens(varlen_fn, cu_seqlens, total);
}

void attention_varlen_cpu(const output_array& out, const std::optional<output_array>& lse,
                          const input_array& q, const input_array& k, const input_array& v,
                          const std::vector<int32_t>& cu_seqlens, const plan_list& plans) {
  const cpu_problem p = cpu_problem_of(varlen_fn, out, lse, q, k, v);
  sp::check_cu_seqlens(varlen_fn, cu_seqlens, p.q.shape[0]);
  const std::vector<sp::block_mask> masks = masks_of(cu_seqlens, p.q.shape[1], plans);
  {
    nb::gil_scoped_release release;
    cpu_pool_lease lease;
    sp::attention_block_sparse_varlen(p.out, p.lse, p.q, p.k, p.v, cu_seqlens, masks,
                                      lease.pool());
  }
  publish_plain(plans);
}

void attention_varlen_cuda(const output_array& out, const std::optional<output_array>& lse,
                           const input_array& q, const input_array& k, const input_array& v,
                           const std::vector<int32_t>& cu_seqlens, const plan_list& plans,
                           uintptr_t stream_handle) {
  const device_problem p = device_problem_of(varlen_fn, out, lse, q, k, v);
  sp::check_cu_seqlens(varlen_fn, cu_seqlens, p.q.shape[0]);
  const std::vector<sp::block_mask> masks = masks_of(cu_seqlens, p.q.shape[1], plans);
  void* stream = reinterpret_cast<void*>(stream_handle);
  {
    nb::gil_scoped_release release;
    // The plan's buffers are freed when this returns; cudaFree waits for the kernel.
    const sp::device_varlen_plan plan(cu_seqlens, masks, stream);
    sp::cuda_attention_varlen(p.out, p.lse, p.q, p.k, p.v, plan, {}, stream);
  }
  publish_plain(plans);
}

}  // namespace

void bind_varlen(nb::module_& m) {
  m.def("check_cu_seqlens", &check_cu_seqlens_of, nb::arg("cu_seqlens"), nb::arg("total"),
        "Raises shareprefill.Error unless cu_seqlens (B + 1 >= 2 ints) starts at 0, ascends "
        "strictly (no empty sequence) and ends at total.");
  m.def("attention_varlen_cpu", &attention_varlen_cpu, nb::arg("out"), nb::arg("lse").none(),
        nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("cu_seqlens"),
        nb::arg("plans").none(),
        "A varlen batch on the CPU in one pass: out [total, H, D] float32, lse [H, total] float32 "
        "or None, q [total, H, D], k and v [total, Hkv, D] (C-contiguous), cu_seqlens [B + 1]; "
        "plans None (dense) or one Plan per sequence (no unpublished pivots, no deferred heads).");
  m.def("attention_varlen_cuda", &attention_varlen_cuda, nb::arg("out"), nb::arg("lse").none(),
        nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("cu_seqlens"),
        nb::arg("plans").none(), nb::arg("stream"),
        "A varlen batch on the current CUDA device in one launch, asynchronous on `stream`: "
        "arguments as attention_varlen_cpu, out in q's dtype (bfloat16 or float16).");
}

}  // namespace sp_python
