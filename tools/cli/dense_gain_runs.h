// The measurements behind `eval dense-gain` (issue 17): one configuration (planner parameters and
// cluster map) scored over fixed windows on either device, the gain of each head made dense alone
// on top of a configuration, and what unsharing each shared cluster loses and saves.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "json_output.h"
#include "model_loading.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/cuda_llama.h"
#include "shareprefill/planner_params.h"
#include "shareprefill/thread_pool.h"

namespace sp::cli {

// Log-probability sums per window of one configuration, and its mean density.
struct scored_run {
  std::vector<double> logprob_sum;  // [windows]
  std::vector<int64_t> scored;      // [windows] scored tokens
  double density = 0.0;

  double ppl(size_t begin, size_t end) const;  // perplexity over windows [begin, end)
};

// Scores configurations over the same windows (the second half of each window, as eval ppl),
// on the GPU when `gpu_weights` is given, else on the CPU; the first score() without parameters
// is the dense reference that change() compares with.
class window_scorer {
 public:
  window_scorer(const loaded_model& m, thread_pool& pool, const cuda_llama_weights* gpu_weights,
                std::vector<std::vector<int32_t>> windows, const rope_scaling_options& rope,
                int64_t block_size);
  ~window_scorer();

  // params null: dense attention (remembered as the reference); map: the cluster map the
  // planner shares by (null outside shareprefill mode).
  scored_run score(const planner_params* params, const cluster_map* map);
  // Perplexity change vs the dense reference in %, over windows [begin, end).
  double change(const scored_run& r, size_t begin, size_t end) const;
  size_t windows() const { return windows_.size(); }

 private:
  const loaded_model& m_;
  thread_pool& pool_;
  std::unique_ptr<cuda_llama_session> gpu_;
  std::vector<std::vector<int32_t>> windows_;
  rope_scaling_options rope_;
  int64_t block_size_;
  scored_run dense_;
};

// A change measured against a base configuration on the same windows: the points of perplexity
// change vs dense it removes (gain; negative = it costs), on all windows and on each half, and
// the overall density it adds (cost; negative = it saves).
struct measured_change {
  double gain = 0.0, gain_first_half = 0.0, gain_second_half = 0.0, cost = 0.0;
};
measured_change compare_runs(const window_scorer& s, const scored_run& base,
                             const scored_run& changed);

// `params` with head (layer, head) dense: listed in dense_heads, dropped from head_gammas.
planner_params with_dense_head(const planner_params& params, int64_t layer, int64_t head);

struct head_gain {
  head_ref head;
  measured_change change;
};

// Every head of `layers` that `base` does not run dense, made dense alone on top of `base`
// (planned with `map`): one JSON row each ("dense_gain") and a progress line on stderr; in
// candidate order.
std::vector<head_gain> measure_head_gains(window_scorer& s, const planner_params& base,
                                          const cluster_map* map, const scored_run& base_run,
                                          const std::vector<int64_t>& layers, int64_t heads,
                                          json_lines& out);

struct cluster_unsharing {
  std::string id;          // the shared cluster's id in the map
  measured_change change;  // gain < 0: unsharing costs perplexity; cost < 0: it saves density
};

// Each shared cluster of `map` unshared alone (its members plan their own patterns, its pivot is
// no longer chosen), against `base_run`: one JSON row each ("dense_gain_unshare").
std::vector<cluster_unsharing> measure_unsharing(window_scorer& s, const planner_params& params,
                                                 const cluster_map& map, const scored_run& base_run,
                                                 json_lines& out);

// `map` with the clusters named in `ids` no longer shared.
cluster_map without_sharing(cluster_map map, const std::vector<std::string>& ids);

}  // namespace sp::cli
