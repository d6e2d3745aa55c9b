// Workspace and state layouts of the device planner: sizes from the shape, 256-byte aligned
// regions, and the CUB temporary storage as the largest need of any CUB call of a layer
// (queried on the host: CUB's size queries launch nothing).
#include <algorithm>

#include "plan_layout.h"
#include "shareprefill/error.h"

namespace sp::cuda {
namespace {

struct carver {
  int64_t offset = 0;
  int64_t take(int64_t bytes) {
    const int64_t at = offset;
    offset += (std::max<int64_t>(bytes, 1) + 255) / 256 * 256;
    return at;
  }
};

template <class T>
T* at(void* base, int64_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

}  // namespace

plan_sizes make_plan_sizes(int64_t n, int64_t heads, int64_t kv_heads, int64_t dim,
                           int64_t max_pivots, int64_t target_ctas) {
  plan_sizes s;
  s.n = n;
  s.nb = (n + plan_block - 1) / plan_block;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.dim = dim;
  s.group = heads / kv_heads;
  s.rows = std::min<int64_t>(stats_rows, n);
  s.words = (s.nb + 31) / 32;
  s.tri = s.nb * (s.nb + 1) / 2;
  // Key ranges: as many CTAs as the device holds at once (target_ctas) and no more, so the
  // statistics run in one wave (32 heads x 9 ranges = 288 CTAs on 264 slots took two waves,
  // twice the time of one); each range at least two chunks (>= 128 keys, so a range's slash
  // spill of < 128 entries lands in the next range only).
  const int64_t chunks = (n + stats_chunk - 1) / stats_chunk;
  const int64_t want = std::max<int64_t>(1, target_ctas / 2 * stats_blocks_per_sm / heads);
  int64_t per = std::max<int64_t>(2, (chunks + want - 1) / want);
  s.split_keys = per * stats_chunk;
  s.splits = (n + s.split_keys - 1) / s.split_keys;
  // Budget select: 2H rows split so the grid fills target_ctas (2 blocks per SM), each part at
  // least select_min_part entries (fewer rounds than that cost more in the row's merge).
  constexpr int64_t select_min_part = 4096;
  const int64_t by_ctas = std::max<int64_t>(1, target_ctas / (2 * heads));
  s.select_parts = std::min(by_ctas, std::max<int64_t>(1, n / select_min_part));
  s.max_pivots = max_pivots;
  // vs_ratio: each pivot's nb x nb block attention summed by parts of vs_part_entries (one block
  // per pivot took ~57 us at 32K, latency-bound with a few pivots on 132 SMs).
  constexpr int64_t vs_part_entries = 4096, vs_max_parts = 128;
  s.vs_parts = std::min(vs_max_parts, std::max<int64_t>(1, s.nb * s.nb / vs_part_entries));
  s.col_capacity = heads * s.tri;
  s.scratch_tiles = max_pivots * s.tri;
  s.big = std::max(heads * s.tri, max_pivots * s.nb * s.nb);
  return s;
}

workspace_layout make_workspace_layout(const plan_sizes& s) {
  const char* fn = "device_planner::workspace_bytes";
  check(s.big < (int64_t{1} << 31) && 2 * s.heads * s.n < (int64_t{1} << 31), fn,
        "the planner's sort sizes exceed 2^31 entries (N=", s.n, ", heads=", s.heads, ")");
  workspace_layout l;
  l.s = s;
  carver c;
  const int64_t h = s.heads, nb = s.nb, items = h * nb;
  l.capacity = layer_plan_capacity_worst_case(s.n, h, s.max_pivots, plan_block);
  l.plan_bytes = plan_workspace_bytes(l.capacity);
  l.plan = c.take(l.plan_bytes);
  l.scratch_bytes = attention_scratch_bytes(l.capacity);
  l.scratch = c.take(l.scratch_bytes);
  l.block_attention = c.take(4 * s.max_pivots * nb * nb);
  l.row_stats = c.take(4 * h * s.splits * stats_rows * 2);
  l.spill = c.take(4 * h * s.splits * stats_rows);
  l.tok = c.take(4 * 2 * h * s.n);
  l.select = c.take(cover_select_scratch_bytes(2 * h));
  l.blk = c.take(4 * 2 * items);
  l.blk_keys = c.take(4 * 2 * items);
  l.blk_keys_sorted = c.take(4 * 2 * items);
  l.blk_idx = c.take(4 * 2 * items);
  l.blk_idx_sorted = c.take(4 * 2 * items);
  l.blk_offsets = c.take(4 * (2 * h + 1));
  l.rank = c.take(4 * 2 * items);
  l.budgets = c.take(4 * 2 * h);
  l.k_pool = c.take(4 * nb * s.kv_heads * s.dim);
  l.q_mean = c.take(4 * h * s.dim);
  l.q_pool = c.take(4 * nb * h * s.dim);
  l.qa = c.take(h);
  l.qa_dist = c.take(4 * h);
  l.gate_ok = c.take(h);
  l.gate_dist = c.take(4 * 2 * h);
  l.pivot_count = c.take(4);
  l.slot_head = c.take(4 * std::max<int64_t>(1, s.max_pivots));
  l.walk_list = c.take(4 * h);
  l.walk_count = c.take(4);
  l.run_if = c.take(4);
  l.sel_col = c.take(4 * h * s.words);
  l.sel_chunk = c.take(4 * h * (2 * s.words + 2));
  l.bitmask = c.take(4 * h * nb * s.words);
  l.row_count = c.take(8 * h * (nb + 1));
  const int64_t publish_items = nb > publish_block_rows_max ? s.max_pivots * nb * nb : 0;
  l.big_keys = c.take(4 * h * s.tri);
  l.big_vals = c.take(4 * publish_items);
  l.big_keys_sorted = c.take(4 * publish_items);
  l.big_vals_sorted = c.take(4 * std::max(h * s.tri, publish_items));
  l.prefix = c.take(8 * std::max(h * nb, publish_items));
  const int64_t segs = publish_items / std::max<int64_t>(nb, 1);
  l.seg_begin = c.take(4 * segs);
  l.seg_end = c.take(4 * segs);
  l.qa_count = c.take(4 * h * qa_bins_max);
  l.qa_sum = c.take(8 * h * qa_bins_max);
  l.qa_cut = c.take(static_cast<int64_t>(sizeof(qa_cut_state)) * h);
  l.vs_partial = c.take(8 * 2 * s.max_pivots * s.vs_parts);
  l.sched_keys = c.take(4 * items);
  l.sched_keys_sorted = c.take(4 * items);
  l.sched_vals = c.take(4 * items);
  l.sched_vals_sorted = c.take(4 * items);

  // CUB's needs, with null data pointers (size queries only).
  plan_pointers none{};
  none.s = s;
  cub_plan q;
  cub_sort_blk(q, none, nullptr);
  cub_scan_query_aware_ties(q, none, nullptr);
  if (s.max_pivots > 0) {
    cub_sort_publish(q, none, nullptr, nullptr);
    cub_segment_prefix(q, nullptr, nullptr, s.max_pivots * nb * nb, nb, nullptr);
  }
  cub_row_ptr_scan(q, none, nullptr);
  cub_sort_schedule(q, none, nullptr);
  l.cub_temp_bytes = static_cast<int64_t>(q.bytes);
  l.cub_temp = c.take(l.cub_temp_bytes);
  l.total = c.offset;
  return l;
}

state_layout make_state_layout(int64_t slots, int64_t n) {
  state_layout l;
  l.slots = slots;
  l.nb = (n + plan_block - 1) / plan_block;
  l.words = (l.nb + 31) / 32;
  carver c;
  const int64_t sl = std::max<int64_t>(slots, 1);
  l.error = c.take(16);
  l.has_pivot = c.take(4 * sl);
  l.pivot_layer = c.take(4 * sl);
  l.pivot_head = c.take(4 * sl);
  l.has_pattern = c.take(4 * sl);
  l.vs_ratio = c.take(8 * sl);
  l.profile_blocks = c.take(4 * sl);
  l.pivot_v_blk = c.take(4 * sl * l.nb);
  l.pivot_s_blk = c.take(4 * sl * l.nb);
  l.vs_bits = c.take(4 * sl * l.nb * l.words);
  l.pattern_bits = c.take(4 * sl * l.nb * l.words);
  l.deferred = c.take(4 * sl);
  l.needed = c.take(4 * sl);
  l.total = c.offset;
  return l;
}

plan_pointers bind_workspace(const workspace_layout& l, void* b) {
  plan_pointers p;
  p.s = l.s;
  p.plan = layer_plan_carve(at<void>(b, l.plan), static_cast<size_t>(l.plan_bytes), l.capacity,
                            true);
  p.scratch = attention_scratch_carve(at<void>(b, l.scratch), static_cast<size_t>(l.scratch_bytes),
                                      l.capacity, true);
  p.kinds = p.plan.kinds;
  p.row_ptr = p.plan.row_ptr;
  p.col_idx = p.plan.col_idx;
  p.schedule = p.plan.schedule;
  p.pivot_slot = p.plan.pivot_slot;
  p.scratch_offset = p.plan.scratch_offset;
  p.tile_mass = p.scratch.tile_mass;
  p.item_counter = p.scratch.item_counter;
  p.block_attention = at<float>(b, l.block_attention);
  p.row_stats = at<float>(b, l.row_stats);
  p.spill = at<float>(b, l.spill);
  p.tok = at<float>(b, l.tok);
  p.select = at<void>(b, l.select);
  p.blk = at<float>(b, l.blk);
  p.blk_keys = at<float>(b, l.blk_keys);
  p.blk_keys_sorted = at<float>(b, l.blk_keys_sorted);
  p.blk_idx = at<int32_t>(b, l.blk_idx);
  p.blk_idx_sorted = at<int32_t>(b, l.blk_idx_sorted);
  p.blk_offsets = at<int32_t>(b, l.blk_offsets);
  p.rank = at<int32_t>(b, l.rank);
  p.budgets = at<int32_t>(b, l.budgets);
  p.k_pool = at<float>(b, l.k_pool);
  p.q_mean = at<float>(b, l.q_mean);
  p.q_pool = at<float>(b, l.q_pool);
  p.qa = at<uint8_t>(b, l.qa);
  p.qa_dist = at<float>(b, l.qa_dist);
  p.gate_ok = at<uint8_t>(b, l.gate_ok);
  p.gate_dist = at<float>(b, l.gate_dist);
  p.pivot_count = at<int32_t>(b, l.pivot_count);
  p.slot_head = at<int32_t>(b, l.slot_head);
  p.walk_list = at<int32_t>(b, l.walk_list);
  p.walk_count = at<int32_t>(b, l.walk_count);
  p.run_if = at<int32_t>(b, l.run_if);
  p.sel_col = at<uint32_t>(b, l.sel_col);
  p.sel_chunk = at<uint32_t>(b, l.sel_chunk);
  p.bitmask = at<uint32_t>(b, l.bitmask);
  p.row_count = at<int64_t>(b, l.row_count);
  p.big_keys = at<float>(b, l.big_keys);
  p.big_vals = at<int32_t>(b, l.big_vals);
  p.big_keys_sorted = at<float>(b, l.big_keys_sorted);
  p.big_vals_sorted = at<int32_t>(b, l.big_vals_sorted);
  p.prefix = at<double>(b, l.prefix);
  p.seg_begin = at<int32_t>(b, l.seg_begin);
  p.seg_end = at<int32_t>(b, l.seg_end);
  p.qa_count = at<uint32_t>(b, l.qa_count);
  p.qa_sum = at<unsigned long long>(b, l.qa_sum);
  p.qa_cut = at<qa_cut_state>(b, l.qa_cut);
  p.qa_equal_rank = p.big_vals_sorted;  // publish's, free while a layer plans
  p.vs_partial = at<double>(b, l.vs_partial);
  p.sched_keys = at<int32_t>(b, l.sched_keys);
  p.sched_keys_sorted = at<int32_t>(b, l.sched_keys_sorted);
  p.sched_vals = at<int32_t>(b, l.sched_vals);
  p.sched_vals_sorted = at<int32_t>(b, l.sched_vals_sorted);
  p.cub_temp = at<void>(b, l.cub_temp);
  p.cub_temp_bytes = static_cast<size_t>(l.cub_temp_bytes);
  return p;
}

state_pointers bind_state(const state_layout& l, void* b) {
  state_pointers s;
  s.slots = l.slots;
  s.nb = l.nb;
  s.words = l.words;
  s.error = at<int32_t>(b, l.error);
  s.has_pivot = at<int32_t>(b, l.has_pivot);
  s.pivot_layer = at<int32_t>(b, l.pivot_layer);
  s.pivot_head = at<int32_t>(b, l.pivot_head);
  s.has_pattern = at<int32_t>(b, l.has_pattern);
  s.vs_ratio = at<double>(b, l.vs_ratio);
  s.profile_blocks = at<int32_t>(b, l.profile_blocks);
  s.pivot_v_blk = at<float>(b, l.pivot_v_blk);
  s.pivot_s_blk = at<float>(b, l.pivot_s_blk);
  s.vs_bits = at<uint32_t>(b, l.vs_bits);
  s.pattern_bits = at<uint32_t>(b, l.pattern_bits);
  s.deferred = at<int32_t>(b, l.deferred);
  s.needed = at<int32_t>(b, l.needed);
  s.kept = at<uint16_t>(b, l.total);
  return s;
}

}  // namespace sp::cuda
