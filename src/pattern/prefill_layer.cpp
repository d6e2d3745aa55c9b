// prefill_layer: one planned attention layer on the device of its tensors. The CPU path is
// attend_planned_layer (host planner, CPU kernel, publish); the CUDA path chains the device
// planner, the CUDA kernel on the plan in the workspace, and the device publish on one stream.
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
  state.on_device = on_device;
  state.host.reset();
  state.device = device_plan_state{};
  if (!on_device) return;
  check(params.device != nullptr, fn, "device tensors need params.device (a device_planner)");
  params.device->begin_prompt(state.device, state_memory, bytes, n_tokens, stream);
}

prefill_layer_result prefill_layer(const tensor_view& q, const tensor_view& k,
                                   const tensor_view& v, const tensor_view& out,
                                   prefill_layer_state& state, const prefill_layer_params& params,
                                   void* workspace, int64_t workspace_bytes, void* stream) {
  const char* fn = "prefill_layer";
  check_same_device(fn, q, k, v, out, state.on_device);
  prefill_layer_result r;
  if (!state.on_device) {
    check(params.host != nullptr && params.pool != nullptr, fn,
          "host tensors need params.host (a planner) and params.pool");
    r.host = attend_planned_layer(*params.host, state.host, params.layer, out, q, k, v,
                                  *params.pool);
    return r;
  }
  check(params.device != nullptr, fn, "device tensors need params.device (a device_planner)");
  const device_planner& dp = *params.device;
  r.device_plan = dp.plan(params.layer, q, k, state.device, workspace, workspace_bytes, stream);
  if (params.planned != nullptr) params.planned->record(stream);
  cuda_attention_block_sparse(out, {}, r.device_plan.block_attention, q, k, v,
                              r.device_plan.plan, r.device_plan.scratch, params.attention, stream);
  dp.publish(params.layer, r.device_plan, state.device, stream);
  return r;
}

}  // namespace sp
