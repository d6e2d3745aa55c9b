// `shareprefill bench layer --ranks R --simulate`: one layer's plan split over R context-parallel
// ranks (issue 19), the ranks run one after another on this device, checked against the one-call
// result of the same plan. Reports, per mode and layer: imbalance (max/mean tiles) and per-rank
// work of the zigzag and balanced splits, blocks the balanced split moves, plan bytes (whole and
// per rank), the modelled bytes each rank receives per layer (context_comm_bytes) for both
// splits, and on the GPU each simulated rank's kernel time (median over repeats) with its
// imbalance in time.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/planner_params.h"
#include "shareprefill/tensor.h"

namespace sp::cli {

struct cp_bench_options {
  int64_t ranks = 1;
  bool simulate = false;
  std::string exchange = "all_gather";  // or "ring"
  double target_imbalance = 1.01;       // context_partition_balanced's stop
};

// One planned layer, after its one-call attention.
struct cp_layer_input {
  const block_mask* mask = nullptr;  // the layer's plan on the host
  std::vector<int32_t> pivot_slot;   // [H] slot of each head's block attention, -1 = none
  tensor_view q, k, v;               // the layer's inputs (device or host views)
  tensor_view out;                   // the one call's output (same device)
  tensor_view block_attention;       // device: the one call's A [slots, nb, nb]; host: empty
  int64_t kv_heads = 0, dim = 0;
  int repeats = 1;  // timed runs of each rank (device)
  int threads = 0;  // host: worker threads
};

// Runs the simulation; returns the JSON fields of the layer's "layer_cp" row.
nlohmann::json cp_simulate_layer(const cp_bench_options& o, const cp_layer_input& in);

// --ranks R without --simulate (builds with SP_NCCL only): R processes, one per GPU, forked
// after the inputs were made (no CUDA in the parent). Per layer: each rank holds the K/V rows of
// its zigzag tokens and all-gathers K and V (nccl_comm::gather_segments); the rank owning the
// last block plans (device planner) and broadcasts the plan's arrays; each rank runs its
// balanced sub-plan; the pivots' A rows are gathered to the planning rank, which publishes,
// and the output rows to every rank; the planning rank checks them against one kernel call on
// the whole plan. Every rank prints one JSON line per layer ("bench": "layer_nccl") with its
// phase times. Returns the number of rank processes that failed. Not yet run: no multi-GPU
// machine was lent while it was written.
struct cp_nccl_inputs {
  int64_t n = 0, heads = 0, kv_heads = 0, dim = 0;
  std::vector<const std::vector<uint16_t>*> q, k, v;  // per layer, bf16 bits [N, heads, dim]
  const cluster_map* map = nullptr;                   // shareprefill mode
  plan_mode mode = plan_mode::shareprefill;
};
int cp_run_nccl(const cp_bench_options& o, const cp_nccl_inputs& in);

}  // namespace sp::cli
