// One SharePrefill layer, plan + attention + publish (DESIGN.md sections 2 and 8), on the CPU or
// the GPU behind one call. The device is the one of the tensors (tensor_view::on_device):
//   CPU  (on_device = false): the host planner (planner.h, the oracle), the CPU block-sparse
//        attention with the pivots' block attention, publish; out is f32.
//   CUDA (on_device = true):  the device planner (device_planner.h), the CUDA block-sparse kernel
//        reading the plan from the workspace, publish; out has the dtype of q (bf16/f16).
//        Everything is enqueued on `stream`; nothing waits for the device (device_plan_check
//        reports the errors the device recorded).
//
// Usage per prompt:
//   sp::prefill_layer_params p;  p.host = &host_planner;  p.device = &device_planner;
//   sp::prefill_layer_state state;
//   std::vector<...> or device_buffer ws(sp::prefill_layer_workspace_bytes(shape, p, on_device));
//   sp::prefill_layer_begin(state, p, n_tokens, on_device, state_memory, bytes, stream);
//   for each layer L: p.layer = L; sp::prefill_layer(q, k, v, out, state, p, ws, bytes, stream);
//
// Chunked prefill (issue 16, docs/PLANNER.md "Chunked prefill"): per chunk [s, e) of a prompt,
// prefill_layer_begin(state, p, e, ...) (a fresh sharing state per chunk), p.query_offset = s,
// then every layer with q = the chunk's tokens [e - s, H, D], k/v = the tokens [0, e) and out
// [e - s, H, D]. CPU: the host planner on the keys [0, e) with zeros before the chunk's queries
// (bench chunk-plan's way), the CPU kernel with the query offset, publish of the chunk's rows of
// A. CUDA: device_planner::plan_chunk, the kernel on the chunk plan, publish.
// With a carried sharing state instead: prefill_layer_begin(state, p, e0, ..., memory for the
// whole prompt) and the first chunk at query_offset 0, then per next chunk
// prefill_layer_begin_chunk(state, p, e, stream) and query_offset = the previous chunk's end
// (planner::begin_chunk / device_planner::begin_chunk: pivots kept, patterns extended).
#pragma once

#include <cstdint>

#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_events.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/planned_layer.h"
#include "shareprefill/planner.h"
#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"

namespace sp {

struct prefill_layer_params {
  int64_t layer = 0;
  const planner* host = nullptr;           // CPU tensors: the host planner
  thread_pool* pool = nullptr;             // CPU tensors: worker threads
  const device_planner* device = nullptr;  // device tensors: the device planner
  int64_t query_offset = 0;                // chunked prefill: the chunk's first token s
  cuda_attention_options attention;        // device tensors: kernel choice
  cuda_event* planned = nullptr;           // device tensors: recorded on the stream between
                                           // planning and attention (timing), when not null
  // Device tensors: which pivots publish (device_planner.h; prefill_layer_begin). `used` saves
  // the A of pivots nobody can take a pattern from, but forbids prefill_layer_begin_chunk.
  pivot_publishing publishing = pivot_publishing::all;
};

// Per-prompt state of either device.
struct prefill_layer_state {
  bool on_device = false;
  int64_t n_tokens = 0;       // of the prompt, or the chunk end e (prefill_layer_begin)
  int64_t query_offset = -1;  // the chunk start of the layers run so far (-1: none yet), or
                              // of the chunk prefill_layer_begin_chunk moved the state to
  bool carried = false;       // moved by prefill_layer_begin_chunk
  plan_state host;            // CPU
  device_plan_state device;   // CUDA (memory: device_planner::state_bytes)
};

// What one layer did. CPU: the plan(s) and the wall-clock times (a chunk: its plan, no times).
// CUDA: views into the workspace (kinds, CSR) valid until the next layer planned on the same
// workspace (no times: the work is asynchronous; time it with events on the stream).
struct prefill_layer_result {
  planned_layer host;              // CPU
  device_plan_output device_plan;  // CUDA
};

// Workspace bytes for one layer of `shape`: the device planner's workspace (plan, kernel
// scratch, A, temporaries) on the device; 0 on the CPU (the host planner allocates its own).
int64_t prefill_layer_workspace_bytes(const layer_shape& shape, const prefill_layer_params& params,
                                      bool on_device);

// Starts a prompt of n_tokens tokens. Device: binds `state_memory` (device memory of at least
// params.device->state_bytes(n_tokens) bytes) and clears it on `stream`. CPU: resets the state
// (state_memory unused).
void prefill_layer_begin(prefill_layer_state& state, const prefill_layer_params& params,
                         int64_t n_tokens, bool on_device, void* state_memory, int64_t bytes,
                         void* stream);

// Chunked prefill with a carried sharing state: moves the state from its chunk [s, e) (every
// layer run) to the next one [e, n_tokens), whose layers run with params.query_offset = e.
// CPU: planner::begin_chunk; CUDA: device_planner::begin_chunk (waits for `stream` once; the
// state memory must hold state_bytes(n_tokens), so bind memory for the whole prompt in
// prefill_layer_begin). Their errors for a bad chunk end or an unfinished chunk.
void prefill_layer_begin_chunk(prefill_layer_state& state, const prefill_layer_params& params,
                               int64_t n_tokens, void* stream);

// q: [N - s, H, D]; k, v: [N, Hkv, D]; out: [N - s, H, D] (CPU: f32; CUDA: the dtype of q);
// N = the state's n_tokens, s = params.query_offset (0: the whole prompt; a chunk's start, a
// multiple of 128, the same for every layer of the state). All views on the same device.
// Advances `state` by one layer (params.layer, increasing within a prompt or chunk).
prefill_layer_result prefill_layer(const tensor_view& q, const tensor_view& k,
                                   const tensor_view& v, const tensor_view& out,
                                   prefill_layer_state& state, const prefill_layer_params& params,
                                   void* workspace, int64_t workspace_bytes, void* stream);

}  // namespace sp
