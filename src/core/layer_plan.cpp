// Layer plans as plain data (layer_plan_view.h): capacities, workspace sizes, carving views out
// of caller memory, and the host builder from a block mask.
#include <algorithm>
#include <numeric>

#include "shareprefill/error.h"
#include "shareprefill/layer_plan_view.h"

namespace sp {

namespace {

constexpr int64_t array_alignment = 256;  // bytes; cudaMalloc returns 256-byte aligned memory

int64_t aligned(int64_t bytes) {
  return (bytes + array_alignment - 1) / array_alignment * array_alignment;
}

int64_t blocks_of(const layer_plan_capacity& c) {
  return (c.n_tokens + c.block_size - 1) / c.block_size;
}

void check_capacity(const char* fn, const layer_plan_capacity& c) {
  check(c.n_tokens > 0 && c.heads > 0, fn, "n_tokens=", c.n_tokens, " heads=", c.heads,
        " (both must be positive)");
  check(c.block_size >= 16 && (c.block_size & (c.block_size - 1)) == 0, fn,
        "block_size=", c.block_size, " (a power of two >= 16)");
  check(blocks_of(c) < (int64_t{1} << 24) && c.heads < (int64_t{1} << 24), fn,
        "n_blocks=", blocks_of(c), " heads=", c.heads,
        " (each < 2^24: the schedule holds int32 pairs)");
  check(c.col_capacity >= 0 && c.col_capacity < (int64_t{1} << 40), fn,
        "col_capacity=", c.col_capacity);
  check(c.max_pivots >= 0 && c.max_pivots <= c.heads, fn, "max_pivots=", c.max_pivots,
        " (0 .. heads=", c.heads, ")");
  check(c.scratch_tiles >= 0 && c.scratch_tiles < (int64_t{1} << 40), fn,
        "scratch_tiles=", c.scratch_tiles);
  check(c.query_offset >= 0 && c.query_offset < c.n_tokens && c.query_offset % c.block_size == 0,
        fn, "query_offset=", c.query_offset,
        " (the chunk's first query: a multiple of block_size=", c.block_size,
        " below n_tokens=", c.n_tokens, ")");
}

// Byte offsets of the plan's arrays in the workspace, in order; the last entry is the total.
struct plan_layout {
  int64_t row_ptr, scratch_offset, col_idx, schedule, pivot_slot, kinds, total;
};

plan_layout layout_of(const layer_plan_capacity& c) {
  const int64_t nb = blocks_of(c), h = c.heads;
  plan_layout l{};
  l.row_ptr = 0;
  l.scratch_offset = l.row_ptr + aligned(h * (nb + 1) * 8);
  l.col_idx = l.scratch_offset + aligned(h * 8);
  l.schedule = l.col_idx + aligned(std::max<int64_t>(c.col_capacity, 1) * 4);
  l.pivot_slot = l.schedule + aligned(h * nb * 2 * 4);
  l.kinds = l.pivot_slot + aligned(h * 4);
  l.total = l.kinds + aligned(h);
  return l;
}

void check_region(const char* fn, const void* base, size_t bytes, int64_t needed) {
  check(base != nullptr && reinterpret_cast<uintptr_t>(base) % array_alignment == 0, fn,
        "the region must be non-null and ", array_alignment, "-byte aligned");
  check(static_cast<int64_t>(bytes) >= needed, fn, "region of ", bytes, " bytes, ", needed,
        " needed");
}

}  // namespace

layer_plan_capacity layer_plan_capacity_worst_case(int64_t n_tokens, int64_t heads,
                                                   int64_t max_pivots, int64_t block_size) {
  layer_plan_capacity c;
  c.n_tokens = n_tokens;
  c.block_size = block_size;
  c.heads = heads;
  c.max_pivots = max_pivots;
  check_capacity("layer_plan_capacity_worst_case", c);  // before the products below
  const int64_t causal = causal_tile_count(blocks_of(c));
  c.col_capacity = heads * causal;
  c.scratch_tiles = max_pivots * causal;
  return c;
}

layer_plan_capacity layer_plan_capacity_of(const block_mask& mask,
                                           const std::vector<int32_t>& pivot_heads,
                                           int64_t query_offset) {
  const char* fn = "layer_plan_capacity_of";
  layer_plan_capacity c;
  c.query_offset = query_offset;
  c.n_tokens = mask.n_tokens;
  c.block_size = mask.block_size;
  c.heads = mask.heads;
  c.col_capacity = mask.total_tiles();
  c.max_pivots = static_cast<int64_t>(pivot_heads.size());
  check_capacity(fn, c);
  check(static_cast<int64_t>(mask.row_ptr.size()) == mask.heads * (mask.n_blocks + 1), fn,
        "row_ptr has ", mask.row_ptr.size(), " entries, expected ",
        mask.heads * (mask.n_blocks + 1));
  for (int32_t h : pivot_heads) {
    check(h >= 0 && h < mask.heads, fn, "pivot head ", h, " out of range [0, ", mask.heads, ")");
    c.scratch_tiles += mask.head_tiles(h);
  }
  return c;
}

int64_t plan_workspace_bytes(const layer_plan_capacity& capacity) {
  check_capacity("plan_workspace_bytes", capacity);
  return layout_of(capacity).total;
}

int64_t attention_scratch_bytes(const layer_plan_capacity& capacity) {
  check_capacity("attention_scratch_bytes", capacity);
  return aligned(std::max<int64_t>(capacity.scratch_tiles, 1) * 128 * 4) + array_alignment;
}

layer_plan_view layer_plan_carve(void* workspace, size_t bytes, const layer_plan_capacity& capacity,
                                 bool on_device) {
  const char* fn = "layer_plan_carve";
  check_capacity(fn, capacity);
  const plan_layout l = layout_of(capacity);
  check_region(fn, workspace, bytes, l.total);
  char* base = static_cast<char*>(workspace);
  layer_plan_view v;
  v.n_tokens = capacity.n_tokens;
  v.block_size = capacity.block_size;
  v.n_blocks = blocks_of(capacity);
  v.heads = capacity.heads;
  v.col_capacity = capacity.col_capacity;
  v.max_pivots = capacity.max_pivots;
  v.scratch_tiles = capacity.scratch_tiles;
  v.query_offset = capacity.query_offset;
  v.on_device = on_device;
  v.row_ptr = reinterpret_cast<int64_t*>(base + l.row_ptr);
  v.scratch_offset = reinterpret_cast<int64_t*>(base + l.scratch_offset);
  v.col_idx = reinterpret_cast<int32_t*>(base + l.col_idx);
  v.schedule = reinterpret_cast<int32_t*>(base + l.schedule);
  v.pivot_slot = reinterpret_cast<int32_t*>(base + l.pivot_slot);
  v.kinds = reinterpret_cast<uint8_t*>(base + l.kinds);
  return v;
}

attention_scratch_view attention_scratch_carve(void* scratch, size_t bytes,
                                               const layer_plan_capacity& capacity,
                                               bool on_device) {
  const char* fn = "attention_scratch_carve";
  check_region(fn, scratch, bytes, attention_scratch_bytes(capacity));
  attention_scratch_view v;
  v.tile_capacity = capacity.scratch_tiles;
  v.on_device = on_device;
  v.tile_mass = static_cast<float*>(scratch);
  v.item_counter = reinterpret_cast<unsigned long long*>(
      static_cast<char*>(scratch) +
      aligned(std::max<int64_t>(capacity.scratch_tiles, 1) * 128 * 4));
  return v;
}

void layer_plan_fill(const layer_plan_view& plan, const block_mask& mask,
                     const std::vector<int32_t>& pivot_heads, const std::vector<uint8_t>& kinds) {
  const char* fn = "layer_plan_fill";
  check(!plan.on_device, fn, "the plan is in device memory (build a host plan and upload it)");
  mask.validate();
  check(mask.n_tokens == plan.n_tokens && mask.heads == plan.heads &&
            mask.block_size == plan.block_size,
        fn, "mask is n_tokens=", mask.n_tokens, " heads=", mask.heads,
        " block_size=", mask.block_size, ", the plan n_tokens=", plan.n_tokens,
        " heads=", plan.heads, " block_size=", plan.block_size);
  check(mask.total_tiles() <= plan.col_capacity, fn, "mask has ", mask.total_tiles(),
        " tiles, col_capacity=", plan.col_capacity);
  check(static_cast<int64_t>(pivot_heads.size()) <= plan.max_pivots, fn, pivot_heads.size(),
        " pivot heads, max_pivots=", plan.max_pivots);
  check(kinds.empty() || static_cast<int64_t>(kinds.size()) == plan.heads, fn, "kinds has ",
        kinds.size(), " entries for ", plan.heads, " heads");
  for (size_t i = 0; i < pivot_heads.size(); ++i) {
    check(pivot_heads[i] >= 0 && pivot_heads[i] < mask.heads, fn, "pivot head ", pivot_heads[i],
          " out of range [0, ", mask.heads, ")");
    check(i == 0 || pivot_heads[i] > pivot_heads[i - 1], fn,
          "pivot heads must be ascending and unique, got ", pivot_heads[i], " after ",
          pivot_heads[i == 0 ? 0 : i - 1]);
  }
  const int64_t nb = mask.n_blocks, heads = mask.heads;
  std::copy(mask.row_ptr.begin(), mask.row_ptr.end(), plan.row_ptr);
  std::copy(mask.col_idx.begin(), mask.col_idx.end(), plan.col_idx);
  for (int64_t h = 0; h < heads; ++h)
    plan.kinds[h] = kinds.empty() ? head_kind_unrecorded : kinds[static_cast<size_t>(h)];

  // Longest rows first: a dense pivot row must not start last and form the tail. A chunk plan
  // schedules the query blocks [r0, nb) of every head.
  const int64_t r0 = plan.query_offset / plan.block_size, rows = nb - r0;
  std::vector<int64_t> order(static_cast<size_t>(heads * rows));
  std::iota(order.begin(), order.end(), int64_t{0});
  auto tiles_of = [&](int64_t item) {
    const int64_t h = item / rows, r = r0 + item % rows;
    return mask.row_end(h, r) - mask.row_begin(h, r);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return tiles_of(a) > tiles_of(b); });
  for (size_t i = 0; i < order.size(); ++i) {
    plan.schedule[2 * i] = static_cast<int32_t>(order[i] / rows);
    plan.schedule[2 * i + 1] = static_cast<int32_t>(r0 + order[i] % rows);
  }

  std::fill(plan.pivot_slot, plan.pivot_slot + heads, -1);
  std::fill(plan.scratch_offset, plan.scratch_offset + heads, int64_t{0});
  int64_t scratch_tiles = 0;
  for (size_t i = 0; i < pivot_heads.size(); ++i) {
    const int32_t h = pivot_heads[i];
    plan.pivot_slot[h] = static_cast<int32_t>(i);
    // Tile p of head h (absolute index into col_idx) maps to scratch row offset[h] + p.
    plan.scratch_offset[h] = scratch_tiles - mask.row_begin(h, 0);
    scratch_tiles += mask.head_tiles(h);
  }
  check(scratch_tiles <= plan.scratch_tiles, fn, "pivot heads have ", scratch_tiles,
        " tiles, the plan's scratch_tiles=", plan.scratch_tiles);
}

int64_t layer_plan_used_tiles(const layer_plan_view& plan) {
  check(!plan.on_device, "layer_plan_used_tiles", "the plan is in device memory");
  return plan.row_ptr[plan.heads * (plan.n_blocks + 1) - 1];
}

int64_t layer_plan_work_items(const layer_plan_view& plan) {
  return plan.heads * (plan.n_blocks - plan.query_offset / plan.block_size);
}

}  // namespace sp
