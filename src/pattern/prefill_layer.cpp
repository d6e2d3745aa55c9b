// prefill_layer: one planned attention layer on the device of its tensors. The CPU path is
// attend_planned_layer (host planner, CPU kernel, publish; a chunk through its query offset);
// the CUDA path chains the device planner, the CUDA kernel on the plan in the workspace, and the
// device publish on one stream.
#include "shareprefill/prefill_layer.h"

#include "shareprefill/error.h"
#include "shareprefill/planned_layer.h"

namespace sp {
namespace {

void check_same_device(const char* fn, const tensor_view& q, const tensor_view& k,
                       const tensor_view& v, const tensor_view& out, bool on_device) {
  const tensor_view* views[] = {&q, &k, &v, &out};
  const char* names[] = {"q", "k", "v", "out"};
  for (int i = 0; i < 4; ++i)
    check(views[i]->on_device == on_device, fn, names[i], " is a ",
          views[i]->on_device ? "device" : "host", " view but the prompt runs on the ",
          on_device ? "device" : "host");
}

}  // namespace

int64_t prefill_layer_workspace_bytes(const layer_shape& shape, const prefill_layer_params& params,
                                      bool on_device) {
  if (!on_device) return 0;
  check(params.device != nullptr, "prefill_layer_workspace_bytes",
        "device tensors need params.device (a device_planner)");
  return params.device->workspace_bytes(shape);
}

void prefill_layer_begin(prefill_layer_state& state, const prefill_layer_params& params,
                         int64_t n_tokens, bool on_device, void* state_memory, int64_t bytes,
                         void* stream) {
  const char* fn = "prefill_layer_begin";
  check(n_tokens > 0, fn, "N must be positive, got ", n_tokens);
  state.on_device = on_device;
  state.n_tokens = n_tokens;
  state.query_offset = -1;
  state.carried = false;
  state.host.reset();
  state.device = device_plan_state{};
  if (!on_device) return;
  check(params.device != nullptr, fn, "device tensors need params.device (a device_planner)");
  params.device->begin_prompt(state.device, state_memory, bytes, n_tokens, stream,
                              params.publishing);
}

void prefill_layer_begin_chunk(prefill_layer_state& state, const prefill_layer_params& params,
                               int64_t n_tokens, void* stream) {
  const char* fn = "prefill_layer_begin_chunk";
  check(state.n_tokens > 0, fn, "the state is not begun: prefill_layer_begin() the first chunk");
  if (state.on_device) {
    check(params.device != nullptr, fn, "device tensors need params.device (a device_planner)");
    params.device->begin_chunk(state.device, n_tokens, stream);
  } else {
    check(params.host != nullptr, fn, "host tensors need params.host (a planner)");
    params.host->begin_chunk(state.host, n_tokens);
  }
  state.query_offset = state.n_tokens;
  state.n_tokens = n_tokens;
  state.carried = true;
}

prefill_layer_result prefill_layer(const tensor_view& q, const tensor_view& k,
                                   const tensor_view& v, const tensor_view& out,
                                   prefill_layer_state& state, const prefill_layer_params& params,
                                   void* workspace, int64_t workspace_bytes, void* stream) {
  const char* fn = "prefill_layer";
  check_same_device(fn, q, k, v, out, state.on_device);
  const int64_t s = params.query_offset;
  check(state.n_tokens > 0, fn, "the state is not begun: call prefill_layer_begin() first");
  check(s >= 0 && s % 128 == 0 && s < state.n_tokens, fn, "chunk start ", s,
        " must be a multiple of the block size 128 below the ", state.n_tokens, " tokens");
  check(q.rank == 3 && k.rank == 3, fn, "q and k must be [tokens, heads, dim], got ranks ",
        q.rank, " and ", k.rank);
  check(k.shape[0] == state.n_tokens, fn, "k has ", k.shape[0],
        " tokens, the state was begun for ", state.n_tokens, " (the prompt, or the chunk end)");
  check(q.shape[0] == state.n_tokens - s, fn, "q has ", q.shape[0], " tokens, the chunk [", s,
        ", ", state.n_tokens, ") has ", state.n_tokens - s);
  check(state.query_offset < 0 || state.query_offset == s, fn,
        state.carried ? "the state was moved to the chunk starting at "
                      : "the state ran the chunk starting at ",
        state.query_offset, ", got ", s,
        state.carried ? "" : "; prefill_layer_begin() a new state for each chunk");
  prefill_layer_result r;
  if (!state.on_device) {
    check(params.host != nullptr && params.pool != nullptr, fn,
          "host tensors need params.host (a planner) and params.pool");
    r.host = attend_planned_layer(*params.host, state.host, params.layer, out, q, k, v,
                                  *params.pool, s);
    state.query_offset = s;
    return r;
  }
  check(params.device != nullptr, fn, "device tensors need params.device (a device_planner)");
  const device_planner& dp = *params.device;
  r.device_plan =
      dp.plan_chunk(params.layer, s, q, k, state.device, workspace, workspace_bytes, stream);
  state.query_offset = s;
  if (params.planned != nullptr) params.planned->record(stream);
  cuda_attention_block_sparse(out, {}, r.device_plan.block_attention, q, k, v,
                              r.device_plan.plan, r.device_plan.scratch, params.attention, stream);
  dp.publish(params.layer, r.device_plan, state.device, stream);
  return r;
}

}  // namespace sp
