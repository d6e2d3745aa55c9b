// The SharePrefill planner on the GPU (DESIGN.md sections 2 and 8, issue 13): steps A-E and G
// of section 2 as CUDA kernels whose output, the layer's plan, is device data that the
// block-sparse kernel reads directly. No CUDA types appear here (streams are void*), so plain
// C++ code includes it; builds without CUDA get stubs that throw "[fn] built without CUDA".
//
// Usage per prompt (layers in increasing order; every call asynchronous on `stream`):
//   sp::device_planner dp(params, layers, heads, &clusters);   // uploads the cluster table once
//   sp::device_buffer ws(dp.workspace_bytes(shape)), st(dp.state_bytes(shape.n_tokens));
//   sp::device_plan_state state;
//   dp.begin_prompt(state, st.data(), st.size(), shape.n_tokens, stream,
//                   sp::pivot_publishing::used);          // no chunk follows
//   for each layer L:
//     sp::device_plan_output p = dp.plan(L, q, k, state, ws.data(), ws.size(), stream);
//     sp::cuda_attention_block_sparse(out, {}, p.block_attention, q, k, v, p.plan, p.scratch,
//                                    {}, stream);
//     dp.publish(L, p, state, stream);                     // pivot patterns into the state
//   device_plan_check(state, stream);                       // the one host sync: device errors
//
// The plan (kinds, CSR, schedule, pivot slots), the kernel's scratch (tile masses, work
// counter, A) and the planning temporaries live in the caller's workspace; the per-prompt
// state (per shared cluster: pivot, profiles, vertical-slash tiles, pattern, vs_ratio) in the
// caller's state memory. Nothing is allocated and nothing waits for the device per layer, so a
// layer's launches can be captured in a CUDA graph. Errors the device finds (non-finite q/k in
// the rows planning reads, invalid block attention at publish) are recorded in the state and
// thrown by device_plan_check.
//
// Differences from the host planner (planner.h), each checked in the constructor:
// share_within_layer, pivot_prefers_dense and estimation_blocks != 1 are host-only (rejected
// here); per-head gammas (head_gammas) are planned as on the host. Ties and
// float rounding: statistics use fp32 tensor-core products (bf16/f16 inputs exact) and fp32
// softmax; running sums and the JS distances are fp64 as on the host, so decisions agree except
// where a value sits within rounding of a threshold or two scores tie to rounding (the tests bound
// the mass that moves).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/layer_plan_view.h"
#include "shareprefill/pivot_publishing.h"
#include "shareprefill/planner_params.h"
#include "shareprefill/tensor.h"

namespace sp {

// Shape of one attention layer: q [N, H, D], k and v [N, Hkv, D].
struct layer_shape {
  int64_t n_tokens = 0, heads = 0, kv_heads = 0, dim = 0;
};

// One layer planned on the device: views into the caller's workspace, valid until the next
// plan() on the same workspace. `plan` and `scratch` go to cuda_attention_block_sparse as they
// are; the pivots write `block_attention`, which publish() reads.
struct device_plan_output {
  int64_t layer = 0;
  int64_t kv_heads = 0, dim = 0;
  void* workspace = nullptr;       // the caller's workspace everything below lives in
  layer_plan_view plan;            // on_device; worst-case capacities (every head dense)
  attention_scratch_view scratch;  // on_device
  tensor_view block_attention;     // [max_pivots, nb, nb] f32 on the device (empty: no pivots)
  bool all_dense = false;  // planned dense without statistics (mode, short prompt, dense layer)

  // Planning intermediates, for tests and reports (null when all_dense).
  const float* v_blk = nullptr;          // v_blk: [H, nb] vertical block profiles
  const float* s_blk = nullptr;          // s_blk: [H, nb] slash block profiles
  const int32_t* budgets = nullptr;      // budgets: [H, 2] nV, nS in blocks
  const float* qa_distance = nullptr;    // qa_distance: [H] JSd(est, v_blk) (NaN: not tested)
  const float* gate_distance = nullptr;  // gate_distance: [H, 2] JSd of v_blk and s_blk to the
                                         // cluster's pivot; -1 where no gate applied
};

// Per-prompt state memory and the host's bookkeeping of the layer order.
struct device_plan_state {
  void* memory = nullptr;  // caller's device memory, device_planner::state_bytes(n_tokens)
  int64_t bytes = 0;
  int64_t n_tokens = 0;
  int64_t last_layer = -1;
  bool awaiting_publish = false;  // the last layer may have pivots: publish() before plan()
  bool published = false;         // publish() ran for the last layer
  int64_t layer_max_pivots = 0;   // of the last planned layer
  int64_t query_offset = 0;       // chunk start of the layers planned with this state
  bool carried = false;           // moved to its chunk by begin_chunk (query_offset fixed)
  pivot_publishing publishing = pivot_publishing::all;  // begin_prompt's choice
};

// The state of one shared cluster, copied to the host (for tests and inspection).
struct device_cluster_slot {
  bool has_pivot = false, has_pattern = false;
  int32_t pivot_layer = -1, pivot_head = -1;
  std::vector<float> pivot_v_blk, pivot_s_blk;  // [m]: the nb of the chunk that planned the pivot
  std::vector<tile> pivot_vs_tiles, pivot_pattern;
  double pivot_vs_ratio = 0.0;
};

class device_planner {
 public:
  // Same rules as sp::planner; clusters may be null except in shareprefill mode. Copies the
  // (layer, head) -> shared cluster table to the current device (synchronous, once).
  device_planner(const planner_params& params, int64_t layers, int64_t heads,
                 const cluster_map* clusters);
  ~device_planner();
  device_planner(device_planner&&) noexcept;
  device_planner& operator=(device_planner&&) noexcept;

  // Bytes of workspace for one layer of `shape` (plan, kernel scratch, temporaries). Throws on
  // shapes the device planner cannot take (dim not 64/128, heads not divisible, sizes).
  int64_t workspace_bytes(const layer_shape& shape) const;
  // Bytes of per-prompt state for prompts of n_tokens tokens begun with `publishing`; with
  // pivot_publishing::deferred (shareprefill mode, shared clusters) they include the kept q and
  // k of deferred pivots for heads of `dim` dims (64 or 128; 128 is enough for both).
  int64_t state_bytes(int64_t n_tokens, pivot_publishing publishing = pivot_publishing::all,
                      int64_t dim = 128) const;
  // Upper bound on the pivots of any layer (distinct eligible shared clusters of a layer).
  int64_t max_pivots() const;

  // Binds `memory` to `state` for a prompt of n_tokens tokens and clears it on `stream`.
  // publishing: `used` for a prompt (or a chunk with a fresh state) that no begin_chunk follows.
  void begin_prompt(device_plan_state& state, void* memory, int64_t bytes, int64_t n_tokens,
                    void* stream, pivot_publishing publishing = pivot_publishing::all) const;

  // Plans `layer`: q [N, H, D], k [N, Hkv, D] device views (on_device, bf16 or f16, last dim
  // contiguous, token and head strides multiples of 8 elements, 16-byte aligned).
  device_plan_output plan(int64_t layer, const tensor_view& q, const tensor_view& k,
                          device_plan_state& state, void* workspace, int64_t workspace_bytes,
                          void* stream) const;

  // Chunked prefill (issue 16; docs/PLANNER.md "Chunked prefill"): plans `layer` for the
  // queries [s, e) of a prompt over the keys [0, e), s = query_offset (a multiple of 128 below
  // e): q [e - s, H, D] holds the chunk's queries only, k [e, Hkv, D] the keys so far. Same rules
  // as the host planner given the keys [0, e) and the chunk's queries with zeros before them
  // (bench chunk-plan): statistics from the chunk's own last block (queries e-128 .. e-1; tokens
  // before s count as zero queries), budgets, the query-aware test and the query-aware tiles on
  // the chunk's block means, pivots dense with their A for the chunk's rows (the rows before it
  // are cleared to 0 here, as on the host). The plan's query_offset is s; its schedule holds the
  // chunk's query blocks only (the CSR rows before the chunk are never read by the kernel). The
  // state is begun for e tokens (begin_prompt(state, ..., e, ...): a fresh sharing state per
  // chunk) or moved to the chunk by begin_chunk(state, e, ...) (a carried sharing state, then s
  // must be the previous chunk's end); every layer planned with it must use the same s.
  device_plan_output plan_chunk(int64_t layer, int64_t query_offset, const tensor_view& q,
                                const tensor_view& k, device_plan_state& state, void* workspace,
                                int64_t workspace_bytes, void* stream) const;

  // Chunked prefill with a carried sharing state (docs/PLANNER.md "Chunked prefill", the host's
  // planner::begin_chunk): moves `state` from its chunk [s, e) to the next one [e, n_tokens),
  // whose layers are then planned from 0 with plan_chunk(layer, e, ...). Each cluster keeps its
  // pivot (layer, head): at its layer the pivot is the pivot again (dense over the chunk's rows,
  // query-aware or not; its profiles replaced when planned, its pattern and vs_ratio when
  // published); before that the members share its pattern extended to the chunk's rows
  // (extend_pivot_pattern, on the host) through the carried gate (profiles of different lengths
  // compared over their common range). Start a prompt with begin_prompt(state, memory, bytes,
  // first chunk end, ...) where bytes >= state_bytes(prompt length), plan the first chunk at
  // s = 0, then begin_chunk for each next one. Throws unless n_tokens exceeds the state's, the
  // chunk start (the state's tokens) is a multiple of 128, publish() followed the last layer,
  // every layer of the previous chunk was planned, and the memory holds state_bytes(n_tokens).
  // Synchronous: waits for `stream` (the previous chunk's work), re-lays the state out for the
  // new length on the host and uploads it (one host round trip per chunk; none per layer).
  // The state must have been begun with pivot_publishing::all.
  void begin_chunk(device_plan_state& state, int64_t n_tokens, void* stream) const;

  // After the layer's attention filled plan.block_attention: each pivot's section-2G pattern,
  // its vs_ratio, has_pattern, into the state.
  void publish(int64_t layer, const device_plan_output& plan, device_plan_state& state,
               void* stream) const;

  const planner_params& params() const;
  int64_t layers() const;
  int64_t heads() const;

  // Test and inspection helpers (synchronous copies).
  std::vector<device_cluster_slot> download_state(const device_plan_state& state) const;
  static block_mask download_mask(const layer_plan_view& plan);
  static std::vector<head_kind> download_kinds(const layer_plan_view& plan);

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

// Waits for `stream` and throws sp::error naming the first error the device planner recorded in
// the state (layer, head, what), if any.
void device_plan_check(const device_plan_state& state, void* stream);

}  // namespace sp
