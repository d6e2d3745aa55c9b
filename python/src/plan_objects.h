// The objects behind shareprefill.Planner and shareprefill.Plan.
//
// A planner_session owns what one prompt at a time needs: the planner parameters, the cluster
// map, the sp::planner (built at the first plan_layer, when the head count is known from q) and
// the per-prompt sp::plan_state. A py_plan is one layer's sp::layer_plan; when it came from a
// session, the first attention call that runs it publishes the pivots' exact block attention
// into that session (DESIGN.md 2F-2G) and, with share_within_layer, plans and runs the heads that
// waited for a pivot of their own layer. Later runs of the same plan reuse the final masks.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/planner.h"
#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"

namespace sp_python {

struct planner_session {
  sp::planner_params params;
  std::shared_ptr<const sp::cluster_map> map;  // null without a map
  int64_t layers = 0;
  std::unique_ptr<sp::planner> planner;  // built by planner_for
  sp::plan_state state;
  uint64_t prompt = 0;  // counts reset() calls: plans of an earlier prompt must not publish

  // The planner for a model with `heads` query heads (built at the first call; later calls must
  // give the same count).
  const sp::planner& planner_for(int64_t heads);
};

// Python's Planner: the session is shared with the plans it made, so they can publish into it.
struct planner_handle {
  std::shared_ptr<planner_session> session;
};

struct py_plan {
  sp::layer_plan plan;
  std::shared_ptr<planner_session> session;  // null for plans built from explicit tiles
  uint64_t prompt = 0;                       // session->prompt when planned
  bool published = false;                    // the session has this layer's results
  bool has_deferred = false;
  sp::layer_plan deferred;  // share_within_layer: the second pass, once published
};

// Runs `plan` on the CPU: out [N, H, D] f32 contiguous, lse [H, N] f32 (may be empty),
// q [N, H, D], k and v [N, Hkv, D] contiguous f32/f16/bf16. Publishes into the plan's session
// on its first run.
void run_plan_cpu(py_plan& plan, const sp::tensor_view& out, const sp::tensor_view& lse,
                  const sp::tensor_view& q, const sp::tensor_view& k, const sp::tensor_view& v,
                  sp::thread_pool& pool);

// Chunked queries: q holds the last Nq of the Nk tokens that k holds (FlashAttention's
// bottom-right causal alignment); returns Nk - Nq, the query offset (0 for a whole prompt).
// Throws naming fn when k has fewer tokens than q, or when `plan` (may be null) still has to
// publish pivots into its Planner or has deferred heads: those need every row of the prompt
// (Planner.prefill_layer plans and runs a chunk). The kernels check the rest (the offset a
// multiple of the block size, the plan's size equal to Nk).
int64_t chunk_query_offset(const char* fn, const sp::tensor_view& q, const sp::tensor_view& k,
                           const py_plan* plan);

}  // namespace sp_python
