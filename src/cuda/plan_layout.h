// Private: where the device planner keeps things. The workspace of one layer (plan, kernel
// scratch, planning temporaries, CUB temporary storage) and the per-prompt state are carved out
// of caller memory at byte offsets computed on the host from the shape alone, so sizing and
// planning agree and nothing is allocated per layer. Also the kernel launchers of the planner
// steps (plan_*.cu), each asynchronous on the given stream.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "shareprefill/layer_plan_view.h"

namespace sp::cuda {

constexpr int plan_block = 128;        // bs of the device planner = the kernel's mask block
constexpr int stats_chunk = 64;        // keys per tensor-core tile of the statistics kernel
constexpr int stats_rows = 128;        // query rows of the statistics (padded)

// sp::head_kind and sp::plan_mode values as the kernels store them (static_asserts in
// plan_device_planner.cpp keep them equal).
constexpr uint8_t kind_dense = 0, kind_pivot = 1, kind_shared = 2, kind_query_aware = 3,
                  kind_vertical_slash = 4;
constexpr int32_t mode_dense = 0, mode_vslash = 1, mode_flexprefill = 2, mode_shareprefill = 3;

// Error codes recorded in the state (state_pointers::error[0], or-ed).
constexpr uint32_t plan_error_nonfinite_input = 1u;
constexpr uint32_t plan_error_bad_block_attention = 2u;

// Step E's radix select (plan_qa_select.cu): per query-aware head, the cut being narrowed.
constexpr int qa_bins_max = 2048;                 // bins of the widest digit
constexpr int qa_histogram_threads = 512;
constexpr int64_t qa_entries_per_part = 16384;    // entries of one histogram thread block
constexpr int64_t qa_histogram_parts_max = 64;
constexpr int32_t qa_cut_unused = 0, qa_cut_searching = 1, qa_cut_found = 2, qa_cut_keep_all = 3;
struct qa_cut_state {
  uint32_t prefix;                // the boundary value's bits fixed so far (all after the last pass)
  int32_t state;                  // qa_cut_*: not a query-aware head, narrowing, found, keep all
  unsigned long long remaining;   // budget left after the entries above the prefix (2^-44 units)
  int64_t take_equal;             // entries equal to the boundary value kept, in index order
};

// Publish ranks a pivot's row in one thread block up to this many blocks (plan_publish.cu); past
// it, a CUB segmented sort and scan over the big temporaries.
constexpr int64_t publish_block_rows_max = 4096;

struct plan_sizes {
  int64_t n = 0, nb = 0, heads = 0, kv_heads = 0, dim = 0, group = 1;
  int64_t rows = 0;       // min(128, N)
  int64_t words = 0;      // 32-bit words of one bitmask row: ceil(nb / 32)
  int64_t tri = 0;        // nb(nb+1)/2: causal tiles of one head
  int64_t splits = 1;     // key ranges of the statistics kernel per head
  int64_t split_keys = 0; // keys per range (multiple of stats_chunk, >= 128)
  int64_t select_parts = 1; // thread blocks per profile row of the budget select
  int64_t max_pivots = 0;
  int64_t vs_parts = 1;     // thread blocks per pivot of the vs_ratio sums
  int64_t col_capacity = 0, scratch_tiles = 0;
  int64_t big = 0;        // max(H*tri, P*nb*nb): step E's and publish's largest temporaries
};

// Byte offsets into the workspace (all 256-byte aligned): the plan (layer_plan_carve), the
// kernel's scratch (attention_scratch_carve), the pivots' A, then the planner's temporaries.
struct workspace_layout {
  plan_sizes s;
  layer_plan_capacity capacity;  // worst case: every head dense, max_pivots pivots
  int64_t plan, plan_bytes, scratch, scratch_bytes, block_attention;
  int64_t row_stats, spill, tok, select;
  int64_t blk, blk_keys, blk_keys_sorted, blk_idx, blk_idx_sorted, blk_offsets, rank, budgets;
  int64_t k_pool, q_mean, q_pool, qa, qa_dist, gate_ok, gate_dist, pivot_count, slot_head;
  int64_t walk_list, walk_count, run_if;
  int64_t sel_col, sel_chunk, bitmask, row_count;
  int64_t big_keys, big_vals, big_keys_sorted, big_vals_sorted, prefix, seg_begin, seg_end;
  int64_t qa_count, qa_sum, qa_cut;
  int64_t vs_partial;
  int64_t sched_keys, sched_keys_sorted, sched_vals, sched_vals_sorted;
  int64_t cub_temp, cub_temp_bytes;
  int64_t total;
};

struct state_layout {
  int64_t slots = 0, nb = 0, words = 0;
  int64_t error, has_pivot, pivot_layer, pivot_head, has_pattern, vs_ratio, profile_blocks;
  int64_t pivot_v_blk, pivot_s_blk, vs_bits, pattern_bits, deferred, needed;
  int64_t total;  // what begin_prompt clears; the kept q and k of deferred pivots follow
  // Bytes of the kept q and k at head dim `dim` (state_pointers::kept).
  int64_t kept_bytes(int64_t n, int64_t dim) const {
    return std::max<int64_t>(slots, 1) * 2 * n * dim * 2;
  }
};

// Statistics blocks that fit on one SM (plan_statistics.cu: ~45 KB of shared memory at D = 64,
// ~74 KB at D = 128; at most 168 registers a thread, which __launch_bounds__ asks for).
constexpr int stats_blocks_per_sm = 3;

// target_ctas: two blocks per SM (the budget select's grid); the statistics' key ranges fill
// target_ctas / 2 * stats_blocks_per_sm blocks.
plan_sizes make_plan_sizes(int64_t n, int64_t heads, int64_t kv_heads, int64_t dim,
                           int64_t max_pivots, int64_t target_ctas);
workspace_layout make_workspace_layout(const plan_sizes& s);
state_layout make_state_layout(int64_t slots, int64_t n);

// Device pointers of one layer's workspace.
struct plan_pointers {
  plan_sizes s;
  layer_plan_view plan;
  attention_scratch_view scratch;
  uint8_t* kinds;           // [H]
  int64_t* row_ptr;         // [H*(nb+1)]
  int32_t* col_idx;         // [col_capacity]
  int32_t* schedule;        // [H*nb, 2]
  int32_t* pivot_slot;      // [H]
  int64_t* scratch_offset;  // [H]
  float* tile_mass;         // [scratch_tiles, 128]
  unsigned long long* item_counter;
  float* block_attention;   // [max_pivots, nb, nb]
  float* row_stats;         // [H, splits, 128, 2] (max, sum) of each row over a key range
  float* spill;             // [H, splits, 128] slash sums past the end of a key range
  float* tok;               // [2H, N]: v_tok rows then s_tok rows
  void* select;             // [2H] rows of the budget select (cover_select_scratch_bytes)
  float* blk;               // [2H, nb]: v_blk rows then s_blk rows
  float* blk_keys;          // [2H, nb] blk with the forced index at +inf
  float* blk_keys_sorted;
  int32_t* blk_idx;         // [2H, nb] index within the row
  int32_t* blk_idx_sorted;
  int32_t* blk_offsets;     // [2H+1]
  int32_t* rank;            // [2H, nb] position of each index in the descending order
  int32_t* budgets;         // [H, 2] nV, nS in blocks
  float* k_pool;            // [nb, Hkv, D] block means of K
  float* q_mean;            // [H, D] mean of the last rows, scaled by 1/sqrt(D)
  float* q_pool;            // [nb, H, D] block means of Q (query-aware heads only)
  uint8_t* qa;              // [H] 1 = query-aware
  float* qa_dist;           // [H]
  uint8_t* gate_ok;         // [H] sharing gates passed
  float* gate_dist;         // [H, 2]
  int32_t* pivot_count;     // [1]
  int32_t* slot_head;       // [max_pivots] head of each pivot slot
  // The plan's walked heads (layer_plan_view::walk_heads, walk_count), chosen by classify: the
  // layer's dense never-pivot heads and its pivots that publish nothing, ascending.
  int32_t* walk_list;       // [H]
  int32_t* walk_count;      // [1]
  int32_t* run_if;          // [1] a deferred pivot's A runs (layer_plan_view::run_if)
  uint32_t* sel_col;        // [H, words] chosen key blocks
  uint32_t* sel_chunk;      // [H, 2*words + 2] chosen slash chunks (zero padded)
  uint32_t* bitmask;        // [H, nb, words] tiles of each head, row-major bits
  int64_t* row_count;       // [H*(nb+1)] tiles per row, 0 at each head's end
  float* big_keys;          // [H*tri] query-aware block probabilities (step E)
  // Publish's sort past publish_block_rows_max blocks ([P*nb*nb], else unused):
  int32_t* big_vals;        // column indices (the sort's values)
  float* big_keys_sorted;   // sorted block attention rows
  double* prefix;           // their segmented inclusive prefix sums; step B's logits [H, nb]
  int32_t* big_vals_sorted; // [max(H*tri, those)] publish's sorted columns; step E's tie ranks
  int32_t* seg_begin;       // [P*nb] publish's sort segments (past publish_block_rows_max)
  int32_t* seg_end;
  uint32_t* qa_count;       // [H, qa_bins_max] step E's histogram: entries per bin
  unsigned long long* qa_sum;  // [H, qa_bins_max] and their fixed-point sum
  qa_cut_state* qa_cut;     // [H]
  int32_t* qa_equal_rank;   // [H*tri] exclusive count of entries equal to the cut (= big_vals_sorted)
  double* vs_partial;       // [max_pivots, vs_parts, 2] (covered, total) of each part of A
  int32_t* sched_keys;      // [H*nb] tiles of each work item
  int32_t* sched_keys_sorted;
  int32_t* sched_vals;      // [H*nb] work item index h*nb + r
  int32_t* sched_vals_sorted;
  void* cub_temp;
  size_t cub_temp_bytes;
};

struct state_pointers {
  int64_t slots = 0, nb = 0, words = 0;
  int32_t* error;           // [4]: flags, layer, head, 0
  int32_t* has_pivot;       // [slots]
  int32_t* pivot_layer;
  int32_t* pivot_head;
  int32_t* has_pattern;
  double* vs_ratio;
  // [slots] blocks of the pivot's profiles (its chunk's nb; < nb when carried from an earlier
  // chunk by device_planner::begin_chunk, then the gates compare over the common range).
  int32_t* profile_blocks;
  float* pivot_v_blk;       // [slots, nb] (the first profile_blocks[slot] entries are valid)
  float* pivot_s_blk;
  uint32_t* vs_bits;        // [slots, nb, words] the pivot's own vertical-slash tiles
  uint32_t* pattern_bits;   // [slots, nb, words] the published pattern
  // pivot_publishing::deferred: a pivot whose A may be needed later computes it only when a
  // member's similarity gates pass (deferred: [slots] 1 until then; needed: [slots] set by a
  // passing member, cleared when served), from its q and k kept here: kept: [slots, 2, N, D] (q,
  // then k; bf16 or f16 as q), after the part begin_prompt clears.
  int32_t* deferred;
  int32_t* needed;
  uint16_t* kept;
};

plan_pointers bind_workspace(const workspace_layout& l, void* base);
state_pointers bind_state(const state_layout& l, void* base);

// ---- CUB calls (plan_cub.cu). With temp == nullptr they only add their need to *bytes. ----
struct cub_plan {
  void* temp = nullptr;
  size_t bytes = 0;
};
void cub_sort_blk(cub_plan& c, const plan_pointers& p, cudaStream_t stream);
// qa_equal_rank [H*tri] = exclusive count of the entries of big_keys equal to their head's cut.
void cub_scan_query_aware_ties(cub_plan& c, const plan_pointers& p, cudaStream_t stream);
void cub_sort_publish(cub_plan& c, const plan_pointers& p, const float* block_attention,
                      cudaStream_t stream);
// Inclusive fp64 prefix sums of `keys` within consecutive segments of seg_len entries.
void cub_segment_prefix(cub_plan& c, double* out, const float* keys, int64_t items,
                        int64_t seg_len, cudaStream_t stream);
void cub_row_ptr_scan(cub_plan& c, const plan_pointers& p, cudaStream_t stream);
void cub_sort_schedule(cub_plan& c, const plan_pointers& p, cudaStream_t stream);

// rank[s, i] = position of entry i of row s of keys [segs, nb] in the row's descending order,
// ties to the lower index (plan_rank.cu: one thread block per row). Launches nothing and
// returns false when nb > rank_block_max (then use cub_sort_blk and a scatter).
constexpr int64_t rank_block_max = 4096;
bool launch_rank_rows(const float* keys, int32_t* rank, int64_t segs, int64_t nb,
                      cudaStream_t stream);

// schedule [H*nb, 2] = (h, row) of the work items h*nb + row in descending order of keys
// [H*nb] (rows_kernel's: tile counts, plus nb for heads that are not walked, <= 2 nb), ties in
// item order (plan_schedule.cu: one thread block). Launches nothing and returns false when H*nb >
// schedule_block_max (then use cub_sort_schedule and the scatter).
constexpr int64_t schedule_block_max = 8192;
// Radix bits that hold every schedule key: 2^bits > 2 nb.
inline int schedule_key_bits(int64_t nb) {
  int bits = 1;
  while ((int64_t{1} << bits) <= 2 * nb) ++bits;
  return bits;
}
bool launch_schedule_sort(const int32_t* keys, int32_t* schedule, int64_t heads, int64_t nb,
                          cudaStream_t stream);

// ---- Launchers ----
struct plan_rules {
  int32_t layer = 0, mode = 0;  // plan_mode
  int32_t min_blocks = 1, max_blocks = 1;
  double gamma = 0.95, tau_sim = 0.5, tau_fb = 0.95, tau_qa = 0.1;
  int64_t gate_bins = 0;       // planner_params::gate_bins
  double gate_coverage = 0.0;  // planner_params::gate_coverage
  bool shared_keeps_budget = false;  // planner_params::shared_keeps_budget
  bool exact_last_row = false;       // planner_params::exact_last_row
  double last_row_gamma = 0.0;       // planner_params::last_row_gamma (0: the head's gamma)
  // head_gamma: [H] the planned layer's gamma per head (device; the global gamma where a head
  // has none): budgets (A) and query-aware tiles (E). Null: `gamma` for every head. Publish (G)
  // uses `gamma` only (a pivot's pattern keeps the global gamma, as on the host).
  const double* head_gamma = nullptr;
  bool dense_layer = false;
  const int32_t* slot_of = nullptr;     // [layers * H] shared cluster slot or -1 (device)
  const uint8_t* eligible = nullptr;    // [layers * H] may become its cluster's pivot (device)
  const uint8_t* dense_head = nullptr;  // [layers * H] planned dense unless a pivot (device)
  // walk_heads: [walk_head_count] the planned layer's heads that are dense and never a pivot,
  // ascending (device): classify adds the pivots that publish nothing and writes the plan's list
  // (plan_pointers::walk_list), whose work items sort after the others'.
  const int32_t* walk_heads = nullptr;
  int32_t walk_head_count = 0;
  // pivot_publishing::used or deferred (null: all, every pivot computes A at its layer):
  // unpublished: [layers * H] an eligible head whose cluster has no member in a later layer
  // (device). A pivot marked here runs dense without A (pivot_slot -1, no slot_head entry) and is
  // walked; with defer_pivots (deferred, query offset 0) every other pivot too, deferred in the
  // state (its q and k kept, its A computed when a member's profiles pass the gate:
  // needed_pivots_kernel, serve_kernel).
  const uint8_t* unpublished = nullptr;
  bool defer_pivots = false;
  // Publish of a deferred pivot (launch_publish): the cluster slot of A's slot 0, else -1 (the
  // cluster slots of the layer's own pivots, through slot_of).
  int32_t publish_cluster_slot = -1;
  // Chunked prefill: query blocks before this one are not the chunk's (no work items).
  int32_t first_query_block = 0;
};

struct qk_views {
  const void* q = nullptr;  // q: [N - q_first, H, D]
  const void* k = nullptr;  // k: [N, Hkv, D]
  int64_t q_token_stride = 0, q_head_stride = 0, k_token_stride = 0, k_head_stride = 0;
  bool half = false;  // f16 (else bf16)
  // Chunked prefill: q holds the tokens [q_first, N) only (q row 0 is token q_first); the
  // planner reads the tokens before q_first as zero queries (the host planner's padding).
  int64_t q_first = 0;
};

// A, first part: the token profiles tok [2H, N] (vertical rows 0..H-1, slash rows H..2H-1) of
// the last min(128, N) query rows, through row_stats [H, splits, 128, 2] and spill
// [H, splits, 128]; a non-finite score ors plan_error_nonfinite_input into error[0].
void launch_token_profiles(const plan_sizes& s, const qk_views& x, float* row_stats, float* tok,
                           float* spill, int32_t* error, int32_t layer, cudaStream_t stream);
// A: statistics, block sums and budgets.
void launch_statistics(const plan_pointers& p, const state_pointers& st, const qk_views& x,
                       const plan_rules& r, cub_plan& c, cudaStream_t stream);
// A's budgets from the token profiles tok [2H, N] without sorting (plan_budgets.cu): budgets
// [H, 2] (nV, nS in blocks) by the cover count at the row's head's gamma (r.head_gamma[h], or
// r.gamma where null), clamped to r.min/max_blocks; counts [2H] (optional, for the tests)
// receives the cover counts. Each row is split over `parts` thread blocks (1..65535; same
// results for any parts); scratch: cover_select_scratch_bytes(2H) bytes, cleared on the stream
// first.
int64_t cover_select_scratch_bytes(int64_t rows);
void launch_cover_budgets(const float* tok, int64_t heads, int64_t n, int64_t parts,
                          const plan_rules& r, void* scratch, int32_t* budgets, int32_t* counts,
                          cudaStream_t stream);
// B: pooled estimate and the query-aware test (flexprefill, shareprefill); clears qa otherwise.
void launch_query_aware_test(const plan_pointers& p, const qk_views& x, const plan_rules& r,
                             cudaStream_t stream);
// C: sharing gates, classification, pivot slots and profiles.
// pivot_publishing::deferred, before launch_classify: state.needed of deferred pivots whose
// members' profiles pass the similarity gate (plan_classify.cu).
void launch_needed_pivots(const plan_pointers& p, const state_pointers& st, const plan_rules& r,
                          cudaStream_t stream);
// Deferred pivots (plan_deferred.cu): keep_deferred_pivots after launch_classify copies the q and
// k of the layer's deferred pivots into the state; before it, per cluster slot whose deferred
// pivot a member may need, serve_deferred_pivot decides on the device whether the slot is
// needed (then its A runs: the plan arrays hold a one-head full causal plan with a pivot,
// pivot_plan, and `run_if` enables the launch) and sets pivot_count (1 or 0) and slot_head for
// the publish that follows.
void launch_keep_deferred_pivots(const plan_pointers& p, const state_pointers& st,
                                 const plan_rules& r, const qk_views& x, cudaStream_t stream);
void launch_pivot_plan(const plan_pointers& p, cudaStream_t stream);
void launch_serve_deferred_pivot(const plan_pointers& p, const state_pointers& st, int32_t slot,
                                 int32_t* run_if, cudaStream_t stream);
void launch_classify(const plan_pointers& p, const state_pointers& st, const plan_rules& r,
                     cudaStream_t stream);
// Block means of Q for the query-aware heads (after classify; input of step E).
void launch_query_block_means(const plan_pointers& p, const qk_views& x, cudaStream_t stream);
// Every head dense (mode dense, short prompts, dense layers outside shareprefill).
void launch_all_dense_kinds(const plan_pointers& p, cudaStream_t stream);
// E's budget: the kept entries of big_keys [H, tri] (the query-aware heads' block scores) into
// the bitmask, by a radix select instead of a sort (plan_qa_select.cu).
void launch_query_aware_select(const plan_pointers& p, const plan_rules& r, cub_plan& c,
                               cudaStream_t stream);
// D, E, shared and dense tiles into bitmasks, then CSR, schedule and pivot scratch offsets.
void launch_tiles(const plan_pointers& p, const state_pointers& st, const qk_views& x,
                  const plan_rules& r, bool all_dense, cub_plan& c, cudaStream_t stream);
// G: pivot patterns and vs_ratio from block_attention into the state.
void launch_publish(const plan_pointers& p, const state_pointers& st, const plan_rules& r,
                    cub_plan& c, cudaStream_t stream);

}  // namespace sp::cuda
