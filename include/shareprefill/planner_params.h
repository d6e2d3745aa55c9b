// The planner's plain types (DESIGN.md section 2): the planning modes, the kinds a head can take
// and the planner parameters with their validation, derived block budgets and JSON record. They
// live in the core layer so every planner (the host one in src/pattern/, a device one in
// src/cuda/), the calibration and the reports share them without depending on each other.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace sp {

// A head's own pattern threshold (issue 17, the cluster map's "head_gammas", format 3).
struct head_gamma {
  int64_t layer = 0;
  int64_t head = 0;
  double gamma = 0.95;  // in (0, 1]
};

enum class plan_mode : uint8_t { dense, vslash, flexprefill, shareprefill };
// deferred: share_within_layer only, a head whose plan waits for a pivot of its own layer; its
// mask is empty in plan() and plan_deferred() replaces the kind with shared or vertical_slash.
enum class head_kind : uint8_t { dense, pivot, shared, query_aware, vertical_slash, deferred };
constexpr int head_kind_count = 6;

const char* plan_mode_name(plan_mode m);
plan_mode plan_mode_from_name(const std::string& name);  // throws on unknown names
const char* head_kind_name(head_kind k);

struct planner_params {
  static constexpr int64_t max_block_size = 4096;
  int64_t block_size = 128;   // bs, a power of two in [16, max_block_size]
  double gamma = 0.95;        // pattern threshold
  double tau_sim = 0.5;       // JS-distance gate for sharing
  double tau_fb = 0.95;       // fallback gate on the pivot's vs_ratio
  double tau_qa = 0.1;        // query-aware JS-distance threshold
  int64_t min_budget = 1024;  // tokens; minB = ceil(min_budget / bs)
  int64_t max_budget = 0;     // tokens; 0 = none (maxB = nb)
  plan_mode mode = plan_mode::shareprefill;
  // Beyond the reference (off by default): let heads share the pattern of a pivot of their own
  // layer (pivot heads run first, the others after publish), and make the cluster's offline
  // medoid the only head that can become its pivot.
  bool share_within_layer = false;
  bool pivot_is_medoid = false;
  // Issue 17 (off by default; host planner only): in a shared cluster with a member that runs
  // dense anyway (dense_heads or dense_layers), the first such member (ascending layer, head) is
  // the only head that can become the pivot, query-aware or not, so the pivot costs no density;
  // members before it plan as if the cluster were not shared. Other clusters keep the default
  // rule. Excludes pivot_is_medoid.
  bool pivot_prefers_dense = false;
  // Issue 17 (1 = the reference; host planner only): the vertical and slash profiles average the
  // last estimation_blocks query blocks instead of the last one (budgets, vertical-slash tiles,
  // the query-aware test's v_blk and the sharing gates all read them).
  int64_t estimation_blocks = 1;
  // Beyond the reference (0 = off, the reference): the sharing gates compare the block profiles
  // pooled into gate_bins contiguous bins (pooled_js_distance), one resolution at every prompt
  // length (64 = the block profiles of 8K tokens, unchanged up to 8K). Measured on SmolLM2, it
  // takes only 0.02-0.1 off the distances at 32K and 128K: they grow with the prompt mostly
  // because the profiles drift apart (docs/RESULTS.md, "A sharing gate on pooled profiles").
  // Both planners.
  int64_t gate_bins = 0;
  // Beyond the reference (0 = off): a fourth sharing gate, on what sharing is for. The pivot's
  // published pattern must cover at least gate_coverage of the candidate's own attention in the
  // last query block, the one block where the planner knows that attention exactly (its key-block
  // masses v_blk): last_row_coverage. Set tau_sim to 1 to gate on coverage alone. Both planners.
  double gate_coverage = 0.0;
  // Beyond the reference (off = the reference): a shared head keeps its own adaptive
  // vertical-slash budgets (nV, nS of step A) instead of the minimum budget, so the pivot's
  // pattern adds tiles to the head's own estimate rather than replacing most of it. Both planners.
  bool shared_keeps_budget = false;
  // Beyond the reference (off = the reference; both planners): every sparse head's last query
  // block also runs the key blocks that cover its gamma of that block's attention, which the
  // statistics measured exactly (v_blk; last_row_tiles). Query-aware and shared heads plan that
  // row from estimates (pooled scores, another head's pattern); the prompt's last position, whose
  // logits give the first generated token, reads it in every layer.
  bool exact_last_row = false;
  // The attention mass exact_last_row covers in the last query block: in (0, 1], or 0 for the
  // head's own gamma (1 runs the whole causal last row). Both planners.
  double last_row_gamma = 0.0;
  // Layers computed densely (all causal tiles) whatever the mode; sorted, no duplicates, each
  // < the planner's layer count (checked when the planner is built).
  std::vector<int64_t> dense_layers;
  // Heads computed densely whatever the mode (chosen per head by calibration, issue 17; the
  // cluster map's "dense_heads"): (layer, head) pairs, sorted, no duplicates, in range of the
  // planner's shape (checked when the planner is built). In shareprefill mode they may still
  // become pivots, as heads of dense layers do.
  std::vector<std::pair<int64_t, int64_t>> dense_heads;
  // Heads that plan with their own gamma instead of `gamma` (chosen per head by calibration,
  // issue 17): their vertical and slash budgets and their query-aware tiles. A pivot's published
  // pattern, which its cluster's members share, keeps `gamma`. Sorted by (layer, head), no
  // duplicates, in range of the planner's shape; both the host and the device planner.
  std::vector<head_gamma> head_gammas;

  void validate() const;  // thresholds, block size, budgets, dense_layers sorted; throws sp::error
  nlohmann::json to_json() const;
  int64_t min_blocks() const;                  // minB
  int64_t max_blocks(int64_t n_blocks) const;  // maxB (<= nb)
};

}  // namespace sp
