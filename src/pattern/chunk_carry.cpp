// Chunked prefill with a carried sharing state (issue 16, docs/PLANNER.md "Chunked prefill"):
// begin_chunk() moves a prompt's plan_state to its next chunk, extend_pivot_pattern() carries a
// pivot's pattern to the new chunk's rows, carried_sharing_gate() compares profiles of
// different lengths over their common range.
#include <algorithm>
#include <vector>

#include "shareprefill/error.h"
#include "shareprefill/planner.h"

namespace sp {
namespace {

// A pattern element recurs when it is in at least this fraction of the rows where it is causal.
constexpr double recur_fraction = 0.5;

bool recurs(int64_t hits, int64_t rows) {
  return rows > 0 && static_cast<double>(hits) >= recur_fraction * static_cast<double>(rows);
}

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
  return js_distance(pv.data(), cv.data(), common) < p.tau_sim &&
         js_distance(ps.data(), cs.data(), common) < p.tau_sim && slot.pivot_vs_ratio < p.tau_fb;
}

std::vector<tile> extend_pivot_pattern(const std::vector<tile>& pattern, int64_t row_begin,
                                       int64_t row_end, int64_t new_begin, int64_t new_end) {
  const char* fn = "extend_pivot_pattern";
  check(0 <= row_begin && row_begin < row_end, fn, "pattern rows [", row_begin, ", ", row_end,
        ") are empty");
  check(0 <= new_begin && new_begin < new_end, fn, "new rows [", new_begin, ", ", new_end,
        ") are empty");
  // Hits per offset o (r - c) and per column c over the pattern's rows.
  std::vector<int64_t> offset_hits(static_cast<size_t>(row_end), 0);
  for (const tile& t : pattern) {
    check(t.second <= t.first && t.second >= 0, fn, "tile (", t.first, ", ", t.second,
          ") is not causal");
    if (t.first >= row_begin && t.first < row_end) ++offset_hits[t.first - t.second];
  }
  // Offset o is causal in rows r >= o: max(0, row_end - max(row_begin, o)) rows.
  std::vector<uint8_t> offset_recurs(static_cast<size_t>(row_end), 0);
  for (int64_t o = 0; o < row_end; ++o)
    offset_recurs[o] = recurs(offset_hits[o], row_end - std::max(row_begin, o));
  std::vector<int64_t> column_hits(static_cast<size_t>(row_end), 0);
  for (const tile& t : pattern)
    if (t.first >= row_begin && t.first < row_end && !offset_recurs[t.first - t.second])
      ++column_hits[t.second];
  std::vector<int32_t> columns, offsets;
  for (int64_t c = 0; c < row_end; ++c) {
    if (recurs(column_hits[c], row_end - std::max(row_begin, c)))
      columns.push_back(static_cast<int32_t>(c));
    if (offset_recurs[c]) offsets.push_back(static_cast<int32_t>(c));
  }
  std::vector<tile> out;
  for (int64_t r = new_begin; r < new_end; ++r) {
    for (int32_t c : columns)
      if (c <= r) out.emplace_back(static_cast<int32_t>(r), c);
    for (int32_t o : offsets)
      if (o <= r) out.emplace_back(static_cast<int32_t>(r), static_cast<int32_t>(r - o));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
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
