// Context parallelism simulated on one GPU (issue 19, context_parallel.h for the scheme): the
// ranks run one after another on the same device, each with the unchanged CUDA kernel
// (cuda_attention_block_sparse) on its sub-plan and its own result buffers, so a rank's time is
// measurable alone; gather_rank copies the rank's rows into the caller's outputs.
//   Plan "broadcast": the constructor builds each rank's sub-plan from the one host copy of the
//   plan and uploads it into that rank's own device workspace (device_layer_plan); the bytes
//   uploaded are counted. A real rank receives the plan bytes (context_plan_bytes) and restricts
//   it on its device.
//   Results: rows of other ranks have no tiles, so the kernel writes 0 / -inf there; those writes
//   (N - N/R rows of out) are the simulation's overhead over a real rank's kernel.
//   all_gather: out, lse and the pivots' block attention equal one kernel call on the whole
//   plan bit for bit (a row's arithmetic does not depend on which other rows are planned).
//   ring: rank r runs its rows against key chunk c = r, r-1, ... and merges the partials
//   (cuda_merge_attention_states, fp32 accumulator, the last merge written in q's dtype); no
//   pivots.
// Usage:
//   sp::cuda_context_simulation sim(mask, pivot_slot, partition, exchange, dim, dtype::bf16);
//   for r in ranks: sim.run_rank(r, q, k, v, {}, stream); sim.gather_rank(r, out, lse, a, stream);
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/context_parallel.h"
#include "shareprefill/context_partition.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/tensor.h"

namespace sp {

class cuda_context_simulation {
 public:
  // mask: the layer's plan on the host (block size 128; device_planner::download_mask of a device
  // plan). pivot_slot: [H] the slot of each head's block attention in the caller's A, -1 for
  // heads that produce none (ring: all -1). dim: head dimension; type: q's dtype (bf16/f16).
  cuda_context_simulation(const block_mask& mask, const std::vector<int32_t>& pivot_slot,
                          const context_partition& partition, context_kv_exchange exchange,
                          int64_t dim, dtype type);
  ~cuda_context_simulation();
  cuda_context_simulation(cuda_context_simulation&&) noexcept;
  cuda_context_simulation& operator=(cuda_context_simulation&&) noexcept;

  int64_t ranks() const;
  // Bytes of the sub-plans uploaded to the ranks (each in the layout of context_plan_bytes).
  int64_t plan_bytes_uploaded() const;

  // Rank `rank`'s attention into the simulation's result buffers (shared by the ranks: gather a
  // rank before running the next). q [N, H, D], k, v [N, Hkv, D]: device views (the all-gathered
  // K/V). Asynchronous on `stream`.
  void run_rank(int64_t rank, const tensor_view& q, const tensor_view& k, const tensor_view& v,
                const cuda_attention_options& options, void* stream);
  // Copies the rank's rows: out [N, H, D] (q's dtype, contiguous), lse [H, N] f32 contiguous or
  // empty, block_attention [slots, nb, nb] f32 contiguous (slots > every pivot_slot) or empty.
  void gather_rank(int64_t rank, const tensor_view& out, const tensor_view& lse,
                   const tensor_view& block_attention, void* stream) const;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

// The plan's pivot slots [H] copied from a device plan (plan.pivot_slot; synchronous); all -1
// when the plan has no pivot slots.
std::vector<int32_t> download_pivot_slots(const layer_plan_view& plan);

}  // namespace sp
