// Chunked prefill with a carried sharing state (issue 16, docs/PLANNER.md "Chunked prefill"):
// begin_chunk() moves a prompt's plan_state to its next chunk (extend_pivot_pattern(), in
// src/core/pattern_extension.cpp, carries a pivot's pattern to the new chunk's rows),
// carried_sharing_gate() compares profiles of different lengths over their common range.
#include <algorithm>
#include <vector>

#include "shareprefill/error.h"
#include "shareprefill/planner.h"

namespace sp {
namespace {

// x[i0 .. i0+len) renormalised to sum 1 (all zero if it sums to 0). x: [>= i0 + len].
std::vector<float> renormalised(const float* x, int64_t i0, int64_t len) {
  std::vector<float> out(x + i0, x + i0 + len);
  double sum = 0.0;
  for (float v : out) sum += v;
  if (sum > 0.0)
    for (float& v : out) v = static_cast<float>(v / sum);
  return out;
}

}  // namespace

bool carried_sharing_gate(const planner_params& p, const cluster_slot& slot, const float* v_blk,
                          const float* s_blk, int64_t n_blocks) {
  const int64_t m = static_cast<int64_t>(slot.pivot_v_blk.size());
  check(m > 0 && static_cast<int64_t>(slot.pivot_s_blk.size()) == m, "carried_sharing_gate",
        "the pivot has no profiles (", m, " vertical, ", slot.pivot_s_blk.size(), " slash blocks)");
  const int64_t common = std::min(m, n_blocks);
  // Vertical: key blocks [0, common). Slash: offsets [0, common) = the last `common` chunks.
  const std::vector<float> pv = renormalised(slot.pivot_v_blk.data(), 0, common);
  const std::vector<float> cv = renormalised(v_blk, 0, common);
  const std::vector<float> ps = renormalised(slot.pivot_s_blk.data(), m - common, common);
  const std::vector<float> cs = renormalised(s_blk, n_blocks - common, common);
  return pooled_js_distance(pv.data(), cv.data(), common, p.gate_bins) < p.tau_sim &&
         pooled_js_distance(ps.data(), cs.data(), common, p.gate_bins) < p.tau_sim &&
         slot.pivot_vs_ratio < p.tau_fb && coverage_gate(p, slot, v_blk, n_blocks);
}

void planner::begin_chunk(plan_state& state, int64_t n_tokens) const {
  const char* fn = "planner::begin_chunk";
  const int64_t bs = params_.block_size, start = state.n_tokens;
  check(n_tokens > start, fn, "the chunk's keys must end past the state's ", start, " tokens, got ",
        n_tokens);
  check(start % bs == 0, fn, "the chunk would start at token ", start,
        ", not a multiple of the block size ", bs);
  check(!state.awaiting_publish, fn, "publish() was not called after layer ", state.last_layer,
        " of the previous chunk");
  check(state.deferred.empty(), fn, "plan_deferred() was not called after layer ", state.last_layer,
        " of the previous chunk");
  if (start == 0) {  // a fresh state: the first chunk
    state.reset();
    state.clusters.assign(shared_.size(), cluster_slot{});
  } else {
    check(state.last_layer == layers_ - 1, fn, "the previous chunk (tokens ", state.chunk_start,
          "-", start, ") was planned up to layer ", state.last_layer, " of ", layers_);
    const int64_t old_r0 = state.chunk_start / bs, old_r1 = (start + bs - 1) / bs;
    const int64_t new_r0 = start / bs, new_r1 = (n_tokens + bs - 1) / bs;
    for (cluster_slot& slot : state.clusters)
      if (slot.has_pattern)
        slot.pivot_pattern =
            extend_pivot_pattern(slot.pivot_pattern, old_r0, old_r1, new_r0, new_r1);
  }
  state.n_tokens = n_tokens;
  state.chunk_start = start;
  state.last_layer = -1;
  state.layer_pivots.clear();
  state.layer_kinds.clear();
}

}  // namespace sp
