// planner_session and the CPU run of a py_plan (plan_objects.h).
#include "plan_objects.h"

#include <algorithm>

#include "shareprefill/attention.h"
#include "shareprefill/error.h"

namespace sp_python {

const sp::planner& planner_session::planner_for(int64_t heads) {
  if (!planner) {
    planner = std::make_unique<sp::planner>(params, layers, heads, map.get());
    return *planner;
  }
  sp::check(planner->heads() == heads, "shareprefill.Planner.plan_layer", "q has ", heads,
            " heads but this planner was first used with ", planner->heads());
  return *planner;
}

namespace {

// Second pass over the deferred heads' mask; only their rows of out and lse are replaced.
void run_deferred(const py_plan& p, const sp::tensor_view& out, const sp::tensor_view& lse,
                  const sp::tensor_view& q, const sp::tensor_view& k, const sp::tensor_view& v,
                  sp::thread_pool& pool) {
  const int64_t n = q.shape[0], heads = q.shape[1], d = q.shape[2];
  std::vector<float> out2(static_cast<size_t>(n * heads * d));                // [N, H, D]
  std::vector<float> lse2(lse.empty() ? 0 : static_cast<size_t>(heads * n));  // [H, N]
  const sp::tensor_view lse2_view =
      lse.empty() ? sp::tensor_view{}
                  : sp::tensor_view::contiguous(lse2.data(), sp::dtype::f32, {heads, n});
  sp::attention_block_sparse(
      sp::tensor_view::contiguous(out2.data(), sp::dtype::f32, {n, heads, d}), lse2_view, nullptr,
      q, k, v, p.deferred.mask, pool);
  float* o = out.as<float>();
  for (int32_t h : p.deferred.deferred_heads) {
    for (int64_t t = 0; t < n; ++t)
      std::copy_n(out2.data() + (t * heads + h) * d, d, o + (t * heads + h) * d);
    if (!lse.empty()) std::copy_n(lse2.data() + h * n, n, lse.as<float>() + h * n);
  }
}

}  // namespace

void run_plan_cpu(py_plan& p, const sp::tensor_view& out, const sp::tensor_view& lse,
                  const sp::tensor_view& q, const sp::tensor_view& k, const sp::tensor_view& v,
                  sp::thread_pool& pool) {
  if (!p.session || p.published) {
    sp::attention_block_sparse(out, lse, nullptr, q, k, v, p.plan.mask, pool);
    if (p.has_deferred) run_deferred(p, out, lse, q, k, v, pool);
    return;
  }
  sp::check(p.session->prompt == p.prompt, "shareprefill.attention", "the plan of layer ",
            p.plan.layer,
            " belongs to an earlier prompt: the planner was reset() after it was made");
  const int64_t nb = p.plan.mask.n_blocks;
  std::vector<float> block_attn(p.plan.pivot_heads.size() *
                                static_cast<size_t>(nb * nb));  // [pivots, nb, nb]
  const sp::block_attention_output ba{p.plan.pivot_heads, block_attn.data()};
  sp::attention_block_sparse(out, lse, p.plan.pivot_heads.empty() ? nullptr : &ba, q, k, v,
                             p.plan.mask, pool);
  planner_session& s = *p.session;
  s.planner->publish(p.plan.layer, p.plan.pivot_heads, block_attn.data(), s.state);
  p.published = true;
  if (p.plan.deferred_heads.empty()) return;
  p.deferred = s.planner->plan_deferred(p.plan.layer, s.state);
  p.has_deferred = true;
  run_deferred(p, out, lse, q, k, v, pool);
}

int64_t chunk_query_offset(const char* fn, const sp::tensor_view& q, const sp::tensor_view& k,
                           const py_plan* plan) {
  const int64_t offset = k.shape[0] - q.shape[0];
  sp::check(offset >= 0, fn, "k has ", k.shape[0], " tokens and q ", q.shape[0],
            "; q holds the last tokens of the keys' prompt (a chunk), never more than k");
  if (offset == 0 || plan == nullptr) return offset;
  const char* why = plan->session && !plan->published ? " still has to publish its pivots"
                    : !plan->plan.deferred_heads.empty() ? " has heads deferred to a second pass"
                                                         : nullptr;
  sp::check(why == nullptr, fn, "the plan of layer ", plan->plan.layer, why,
            ", which needs every row of the prompt; q has ", q.shape[0], " of ", k.shape[0],
            " tokens (Planner.prefill_layer plans and runs a chunk)");
  return offset;
}

}  // namespace sp_python
