// The attention probe on the GPU (eval.h, cuda_attention_probe): per layer, the dense reference
// and every head's block attention by our kernel (cuda_dense_attention.h), then each candidate's
// device planner and kernel (prefill_layer) on the same q, k, v into a scratch output; outputs,
// A, tiles and kinds downloaded and turned into probe_rows by the CPU probe's code (probe_rows.h).
#include <algorithm>

#include "probe_rows.h"
#include "shareprefill/cuda_dense_attention.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/prefill_layer.h"

namespace sp {

namespace {

bool same_shape(const layer_shape& a, const layer_shape& b) {
  return a.n_tokens == b.n_tokens && a.heads == b.heads && a.kv_heads == b.kv_heads &&
         a.dim == b.dim;
}

}  // namespace

struct cuda_attention_probe::state {
  cuda_dense_attention dense;
  layer_shape shape;                                 // the prompt shape the memory is for
  bool begun = false;                               // layer 0 of a prompt came
  std::vector<prefill_layer_params> params;         // [candidates]
  std::vector<prefill_layer_state> states;          // [candidates]
  std::vector<device_buffer> state_memory;          // [candidates] device_planner::state_bytes
  device_buffer workspace;                          // the largest candidate's, shared in turn
  device_buffer cand_out;                           // [N, H, D] bf16
  std::vector<float> ref, cand, a;                  // [N, H, D], [N, H, D], [H, nb, nb] host f32
  std::vector<uint16_t> staging;                    // bf16 downloads
};

cuda_attention_probe::cuda_attention_probe(std::vector<probe_candidate> candidates, int64_t layers)
    : candidates_(std::move(candidates)), layers_(layers), s_(std::make_unique<state>()) {
  const char* fn = "cuda_attention_probe";
  check(layers > 0, fn, "layers must be > 0, got ", layers);
  for (const probe_candidate& c : candidates_) {
    check(c.device != nullptr, fn, "candidate '", c.mode, "' has no device planner");
    check(c.device->params().block_size == cuda_dense_attention::block_size, fn, "candidate '",
          c.mode, "' uses block size ", c.device->params().block_size, "; the CUDA kernel needs ",
          cuda_dense_attention::block_size);
    check(c.device->layers() == layers, fn, "candidate '", c.mode, "' plans ",
          c.device->layers(), " layers, the model has ", layers);
    prefill_layer_params p;
    p.device = c.device;
    s_->params.push_back(p);
  }
}

cuda_attention_probe::~cuda_attention_probe() = default;

void cuda_attention_probe::probe_layer(int64_t l, const tensor_view& q, const tensor_view& k,
                                       const tensor_view& v) {
  const char* fn = "cuda_attention_probe";
  state& s = *s_;
  const layer_shape shape = check_prompt_views(fn, q, k, v);
  const int64_t n = shape.n_tokens, heads = shape.heads, kv_heads = shape.kv_heads,
                dim = shape.dim;
  check(l >= 0 && l < layers_, fn, "layer ", l, " outside [0, ", layers_, ")");
  if (l == 0) {
    if (!same_shape(shape, s.shape)) {
      int64_t workspace = 0;
      s.state_memory.clear();
      for (const prefill_layer_params& p : s.params) {
        workspace = std::max(workspace, prefill_layer_workspace_bytes(shape, p, true));
        s.state_memory.emplace_back(static_cast<size_t>(p.device->state_bytes(n)));
      }
      s.workspace = device_buffer(static_cast<size_t>(workspace));
      s.cand_out = device_buffer(static_cast<size_t>(n * heads * dim) * 2);
      s.shape = shape;
    }
    s.states.assign(s.params.size(), prefill_layer_state());
    for (size_t ci = 0; ci < s.params.size(); ++ci)
      prefill_layer_begin(s.states[ci], s.params[ci], n, true, s.state_memory[ci].data(),
                          static_cast<int64_t>(s.state_memory[ci].size()), nullptr);
    rows_.clear();
    s.begun = true;
  }
  check(s.begun, fn, "layer ", l, " came before layer 0 of a prompt");
  check(same_shape(shape, s.shape), fn, "layer ", l, " has q [", n, ", ", heads, ", ", dim,
        "] and ", kv_heads, " kv heads; layer 0 had [", s.shape.n_tokens, ", ", s.shape.heads,
        ", ", s.shape.dim, "] and ", s.shape.kv_heads);

  s.dense.run(q, k, v);
  const int64_t nb = s.dense.n_blocks();
  s.a.resize(static_cast<size_t>(heads * nb * nb));
  s.dense.download_block_attention(s.a.data());  // synchronises
  s.dense.download_out(s.ref);
  const tensor_view ref = tensor_view::contiguous(s.ref.data(), dtype::f32, {n, heads, dim});

  tensor_view out = tensor_view::contiguous(s.cand_out.data(), dtype::bf16, {n, heads, dim});
  out.on_device = true;
  for (size_t ci = 0; ci < candidates_.size(); ++ci) {
    prefill_layer_params& p = s.params[ci];
    p.layer = l;
    const prefill_layer_result r =
        prefill_layer(q, k, v, out, s.states[ci], p, s.workspace.data(),
                      static_cast<int64_t>(s.workspace.size()), nullptr);
    // The plan lives in the shared workspace: read it before the next candidate plans.
    const block_mask mask = device_planner::download_mask(r.device_plan.plan);
    const std::vector<head_kind> kinds = device_planner::download_kinds(r.device_plan.plan);
    check(static_cast<int64_t>(kinds.size()) == heads, fn, "candidate '", candidates_[ci].mode,
          "' planned ", kinds.size(), " head kinds for ", heads, " heads");
    download_bf16_as_fp32(s.cand, out, s.staging);
    append_probe_rows(
        rows_, ci, l, tensor_view::contiguous(s.cand.data(), dtype::f32, {n, heads, dim}), ref,
        s.a.data(), nb, [&](int64_t) -> const block_mask& { return mask; },
        [&](int64_t h) { return kinds[static_cast<size_t>(h)]; });
    if (l == layers_ - 1) device_plan_check(s.states[ci].device, nullptr);
  }
}

prefill_options::attention_inputs_hook cuda_attention_probe::hook() {
  return [this](int64_t l, const tensor_view& q, const tensor_view& k, const tensor_view& v) {
    probe_layer(l, q, k, v);
  };
}

}  // namespace sp
