// Synthetic structured attention inputs (issue 3): seeded per-layer Q/K/V with the patterns the
// planner looks for, for tests and benchmarks (not a model). Q and K are RoPE-rotated (base
// 500000, interleaved pairs). Each head gets a local window (aligned high-frequency components,
// strength per head), an attention sink at token 0 and a few heavy vertical key columns (carried
// by the lowest-frequency pairs, which RoPE barely rotates); V is random. Heads fall into groups
// whose members (in any layer) have similar parameters, so the groups serve as a cluster map.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/cluster_map.h"

namespace sp {

struct synthetic_params {
  int64_t n_tokens = 4096;
  int64_t layers = 4;
  int64_t heads = 8;
  int64_t kv_heads = 2;
  int64_t dim = 128;   // even, >= 16
  int64_t groups = 0;  // head groups; 0 = max(1, heads / 2)
  uint64_t seed = 1;
  void validate() const;  // throws sp::error
  int64_t group_count() const;
};

struct synthetic_layer {
  std::vector<float> q;  // [N, heads, dim]
  std::vector<float> k;  // [N, kv_heads, dim]
  std::vector<float> v;  // [N, kv_heads, dim]
};

// Group of every (layer, head): [layers * heads], values in [0, group_count()).
std::vector<int32_t> synthetic_groups(const synthetic_params& p);

// Q/K/V of one layer; deterministic in (seed, layer).
synthetic_layer synthetic_generate_layer(const synthetic_params& p, int64_t layer);

// The groups as a cluster map (every non-empty group a shared cluster, ids "0", "1", ...).
cluster_map synthetic_cluster_map(const synthetic_params& p);

}  // namespace sp
