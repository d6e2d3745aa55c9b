// The online sparse-pattern planner (DESIGN.md section 2, steps A-G) and its baselines.
//
// Usage per prompt (layers in increasing order):
//   sp::planner pl(params, layers, heads, &clusters);   // clusters: needed by shareprefill mode
//   sp::plan_state state;                                // fresh state = new prompt (or reset())
//   for each layer L:
//     sp::layer_plan p = pl.plan(L, q, k, state, pool);
//     attention_block_sparse(out, lse, &{p.pivot_heads, A}, q, k, v, p.mask, pool);
//     pl.publish(L, p.pivot_heads, A, state);           // records the pivots' exact patterns
//     if (!p.deferred_heads.empty()) {                   // share_within_layer only
//       sp::layer_plan p2 = pl.plan_deferred(L, state);  // masks for the deferred heads only
//       ... run attention on p2.mask and take the deferred heads' outputs from it
//     }
// Modes: dense (all causal tiles), vslash (adaptive vertical-slash for every head, about
// MInference), flexprefill (query-aware test + pooled estimate, no sharing) and shareprefill
// (pivots, JS-gated sharing of the pivot's exact pattern with later layers, fallback).
// Layers listed in planner_params::dense_layers run every causal tile in any mode; in
// shareprefill mode their heads still take part in pivot selection, so a pivot there is computed
// (densely, as always) and publishes its exact pattern for later layers as it would without the
// list: the plans of the other layers are unchanged.
// The planner object is immutable; everything that changes during a prompt is in plan_state.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/pattern_extension.h"
#include "shareprefill/planner_params.h"
#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"

namespace sp {

// ---- The rules of section 2 as standalone functions (used by the planner, tested alone) ----

// Jensen-Shannon distance with natural log: sqrt(JS divergence), 0 ln 0 = 0; inputs are used as
// given (not renormalised). p, q: [n].
double js_distance(const float* p, const float* q, int64_t n);
// The sharing gates' distance: p and q pooled into `bins` contiguous bins first (bin b sums
// entries [b*n/bins, (b+1)*n/bins)), so that the distance of the same attention compares at
// every prompt length (planner_params::gate_bins); bins <= 0 or >= n: js_distance(p, q, n).
double pooled_js_distance(const float* p, const float* q, int64_t n, int64_t bins);

// Indices of the k largest x (ties: lower index first) with x[forced] treated as +inf, so the
// forced index is always first. x: [n]; 1 <= k <= n.
std::vector<int32_t> top_k_forced(const float* x, int64_t n, int64_t k, int64_t forced);

// Section 2D: key block 0 and the main diagonal forced, then the top-nV columns of v_blk and the
// top-nS chunks of s_blk (chunk t = block-diagonal offset nb-1-t); the forced ones count within
// nV and nS. Tile (r, c) is in the set if c is a chosen column and c <= r, or r - c is a chosen
// offset. v_blk, s_blk: [nb].
std::vector<tile> vertical_slash_tiles(const float* v_blk, const float* s_blk, int64_t n_blocks,
                                       int64_t n_vertical, int64_t n_slash);

// The last query block's cover of the head's own measured attention there
// (planner_params::exact_last_row): key blocks in the vertical order of section 2D (block 0
// first, then descending v_blk, ties to the lower block), as tiles (n_blocks - 1, c), until
// their mass (fp64, in that order) reaches gamma. v_blk: [n_blocks], sum 1.
std::vector<tile> last_row_tiles(const float* v_blk, int64_t n_blocks, double gamma);

// Section 2E for one head: block scores q_pool[r] . k_pool[c] / sqrt(D) for c <= r, fp32
// softmax per row, then the largest entries of the lower triangle while their running sum stays
// <= gamma * nb, plus tile (0, 0). q_pool: [nb, D] rows q_stride apart (block means, unscaled);
// k_pool: [nb, D] rows k_stride apart.
std::vector<tile> query_aware_tiles(const float* q_pool, int64_t q_stride, const float* k_pool,
                                    int64_t k_stride, int64_t n_blocks, int64_t dim, double gamma);

// Section 2G: per row r, the fewest key blocks (largest A[r, c] first, c <= r) whose mass
// reaches >= gamma (all positive entries if the row never reaches it), plus tile (0, 0).
// a: [nb, nb] row-major block attention.
std::vector<tile> pivot_pattern_tiles(const float* a, int64_t n_blocks, double gamma);

// Fraction of the block attention mass covered by a tile set, each valid tile counted once
// (section 2C's intended vs_ratio). a: [nb, nb].
double tile_coverage_ratio(const float* a, int64_t n_blocks, const std::vector<tile>& tiles);

std::vector<tile> causal_tiles(int64_t n_blocks);

// The share of a head's last-block attention that a pattern covers in the last query block: the
// sum of v_blk[c] over the pattern's tiles (n_blocks - 1, c) (planner_params::gate_coverage).
// v_blk: [n_blocks] the head's key-block masses of its last query block (sum 1).
double last_row_coverage(const std::vector<tile>& pattern, const float* v_blk, int64_t n_blocks);

// ---- Planner state and output ----

// Per shared cluster, for the current prompt.
struct cluster_slot {
  bool has_pivot = false;
  int32_t pivot_layer = -1, pivot_head = -1;
  std::vector<float> pivot_v_blk, pivot_s_blk;  // [nb] block profiles of the pivot
  std::vector<tile> pivot_vs_tiles;             // the pivot's own adaptive vertical-slash tiles
  bool has_pattern = false;                     // set by publish()
  std::vector<tile> pivot_pattern;              // section 2G pattern
  std::vector<float> pivot_blockattn;           // [nb, nb] exact block attention A
  double pivot_vs_ratio = 0.0;
};

// A head waiting for a pivot of its own layer (share_within_layer).
struct deferred_head {
  int32_t head = -1;
  int32_t cluster = -1;
  std::vector<float> v_blk, s_blk;
  int64_t vertical_blocks = 0, slash_blocks = 0;
};

// The three sharing gates of section 2C: JSd(pivot v_blk, v_blk) < tau_sim, JSd(pivot s_blk,
// s_blk) < tau_sim and the pivot's vs_ratio < tau_fb; with gate_coverage > 0 also
// last_row_coverage(pivot pattern, v_blk) >= gate_coverage. v_blk, s_blk: [nb] of the candidate.
bool sharing_gate(const planner_params& params, const cluster_slot& pivot, const float* v_blk,
                  const float* s_blk, int64_t n_blocks);
// The fourth gate alone: true when gate_coverage is 0 (off) or the pivot's pattern covers
// at least gate_coverage of v_blk in its row n_blocks - 1.
bool coverage_gate(const planner_params& params, const cluster_slot& pivot, const float* v_blk,
                   int64_t n_blocks);

// ---- Chunked prefill with a carried sharing state (issue 16; docs/PLANNER.md) ----

// The sharing gate across chunks: the pivot's profiles ([m] blocks, from an earlier chunk) and
// the candidate's ([n_blocks]) compared over their common range, min(m, n_blocks) blocks:
// vertical by key block (index c in both), slash by block-diagonal offset o (index m-1-o in the
// pivot's, n_blocks-1-o in the candidate's); each restricted profile is renormalised to sum 1
// (an all-zero one stays zero) before the JS distance; tau_sim and tau_fb as in sharing_gate.
// sharing_gate calls it when the lengths differ. v_blk, s_blk: [n_blocks].
bool carried_sharing_gate(const planner_params& params, const cluster_slot& pivot,
                          const float* v_blk, const float* s_blk, int64_t n_blocks);

// extend_pivot_pattern: shareprefill/pattern_extension.h (sp_core, shared with the device).

struct plan_state {
  int64_t n_tokens = 0;     // 0 until the first plan() of the prompt
  int64_t last_layer = -1;  // last planned layer
  bool awaiting_publish = false;
  std::vector<int32_t> layer_pivots;   // pivots planned in last_layer, awaiting publish
  std::vector<cluster_slot> clusters;  // one per cluster of the map
  std::vector<deferred_head> deferred;
  std::vector<head_kind> layer_kinds;  // kinds of the last planned layer
  int64_t chunk_start = 0;             // first query token of the current chunk (begin_chunk)
  void reset() { *this = plan_state(); }
};

struct layer_plan {
  int64_t layer = 0;
  block_mask mask;                      // all heads
  std::vector<head_kind> kinds;         // [heads]
  std::vector<int32_t> pivot_heads;     // heads whose exact block attention publish() needs
  std::vector<int32_t> deferred_heads;  // heads with empty masks here, planned by plan_deferred
  int64_t kind_count(head_kind k) const;
};

class planner {
 public:
  // clusters may be null except in shareprefill mode; it is validated against layers x heads.
  planner(const planner_params& params, int64_t layers, int64_t heads, const cluster_map* clusters);

  // q: [N, H, D], k: [N, Hkv, D] of this layer (f32/f16/bf16, contiguous).
  layer_plan plan(int64_t layer, const tensor_view& q, const tensor_view& k, plan_state& state,
                  thread_pool& pool) const;

  // After the layer's attention: heads lists the query heads of `values` ([heads.size(), nb, nb],
  // each row summing to 1); it must contain every pivot of the layer's plan.
  void publish(int64_t layer, const std::vector<int32_t>& heads, const float* values,
               plan_state& state) const;

  // share_within_layer: after publish(), the plan for the heads deferred by plan() (all other
  // heads get empty masks).
  layer_plan plan_deferred(int64_t layer, plan_state& state) const;

  // Chunked prefill: the next chunk of the same prompt, whose keys now end at n_tokens (its
  // queries are [previous n_tokens, n_tokens)); its layers are planned from 0 again. Each
  // cluster keeps its pivot (layer, head): at its layer the pivot is the pivot again (dense over
  // the chunk's rows; publish() replaces its pattern and profiles), and until then the members
  // share its pattern extended to the chunk's rows (extend_pivot_pattern) through
  // carried_sharing_gate. A fresh state may start with it (chunk start 0). Throws unless
  // n_tokens exceeds the state's, the chunk start is a multiple of the block size, and the
  // previous chunk is complete (every layer planned, published, plan_deferred done).
  void begin_chunk(plan_state& state, int64_t n_tokens) const;

  const planner_params& params() const { return params_; }
  int64_t layers() const { return layers_; }
  int64_t heads() const { return heads_; }
  // The cluster of head (layer, head) in the map the planner was built with (an index into
  // plan_state::clusters); -1 without a map.
  int32_t cluster_of(int64_t layer, int64_t head) const {
    return cluster_of_.empty() ? -1 : cluster_of_[static_cast<size_t>(layer * heads_ + head)];
  }

 private:
  planner_params params_;
  int64_t layers_, heads_;
  std::vector<int32_t> cluster_of_;  // [layers * heads], -1 without a map
  std::vector<uint8_t> shared_;      // [clusters]
  std::vector<head_ref> medoid_;     // [clusters] (pivot_is_medoid)
  // [clusters] layer * heads + head of the pivot chosen by pivot_prefers_dense; -1 = none.
  std::vector<int64_t> dense_pivot_;
  std::vector<uint8_t> dense_layer_;  // [layers] 1 = listed in params.dense_layers
  std::vector<uint8_t> dense_head_;   // [layers * heads] 1 = listed in params.dense_heads
  std::vector<double> head_gamma_;    // [layers * heads] params.gamma unless head_gammas names it
};

}  // namespace sp
