// CUDA from Python: the block-sparse kernel over a dense causal mask or a Plan
// (_core.attention_cuda) and the device planner's prefill layer (_core.DevicePlanner: plan,
// attention and publish on the device, nothing waiting for it between layers). Streams arrive as
// integers (torch.cuda.current_stream().cuda_stream); memory the device planner needs comes from
// the caller as uint8 CUDA arrays (PyTorch's allocator), so nothing here calls cudaMalloc per
// layer. Builds without CUDA bind the same functions; the library's stubs then raise
// "[fn] built without CUDA".
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "arrays.h"
#include "bindings.h"
#include "plan_objects.h"
#include "problems.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/error.h"
#include "shareprefill/pivot_publishing.h"
#include "shareprefill/prefill_layer.h"

namespace sp_python {
namespace {

void* stream_of(uintptr_t stream) {
  return reinterpret_cast<void*>(stream);
}

// The last dense plan uploaded, reused while calls keep the same shape, query offset, device and
// stream (the upload is ordered on its stream only).
struct dense_plan_cache {
  int64_t n = 0, heads = 0, query_offset = 0;
  int32_t device_id = -1;
  void* stream = nullptr;
  std::unique_ptr<sp::device_layer_plan> plan;
};

std::mutex& dense_plan_mutex() {
  static std::mutex m;
  return m;
}

// Every causal tile of n keys (the queries: the last n - query_offset of them). Call with
// dense_plan_mutex() held.
const sp::device_layer_plan& dense_plan(int64_t n, int64_t heads, int64_t query_offset,
                                        int32_t device_id, void* stream) {
  static dense_plan_cache cache;
  if (!cache.plan || cache.n != n || cache.heads != heads || cache.query_offset != query_offset ||
      cache.device_id != device_id || cache.stream != stream) {
    cache.plan.reset();
    cache.plan = std::make_unique<sp::device_layer_plan>(
        sp::block_mask::dense_causal(n, 128, heads), std::vector<int32_t>{}, stream, query_offset);
    cache.n = n;
    cache.heads = heads;
    cache.query_offset = query_offset;
    cache.device_id = device_id;
    cache.stream = stream;
  }
  return *cache.plan;
}

void attention_cuda(const output_array& out, const std::optional<output_array>& lse,
                    const input_array& q, const input_array& k, const input_array& v, py_plan* plan,
                    uintptr_t stream_handle) {
  const char* fn = "shareprefill.attention";
  const device_problem p = device_problem_of(fn, out, lse, q, k, v);
  const int64_t offset = chunk_query_offset(fn, p.q, p.k, plan);
  void* stream = stream_of(stream_handle);
  nb::gil_scoped_release release;
  if (!plan) {
    const std::lock_guard<std::mutex> lock(dense_plan_mutex());
    const sp::device_layer_plan& d =
        dense_plan(p.k.shape[0], p.q.shape[1], offset, p.device_id, stream);
    sp::cuda_attention_block_sparse(p.out, p.lse, {}, p.q, p.k, p.v, d.plan(), d.scratch(), {},
                                    stream);
    return;
  }
  sp::check(!plan->has_deferred && plan->plan.deferred_heads.empty(), fn,
            "plans with deferred heads (share_within_layer) run on the CPU only");
  const bool publish = plan->session && !plan->published;
  if (publish)
    sp::check(plan->session->prompt == plan->prompt, fn, "the plan of layer ", plan->plan.layer,
              " belongs to an earlier prompt: the planner was reset() after it was made");
  const std::vector<int32_t>& pivots = publish ? plan->plan.pivot_heads : std::vector<int32_t>{};
  const sp::device_layer_plan d(plan->plan.mask, pivots, stream, offset);
  const int64_t nb = plan->plan.mask.n_blocks;
  sp::device_buffer block_attention;
  sp::tensor_view a;
  if (!pivots.empty()) {
    block_attention =
        sp::device_buffer(pivots.size() * static_cast<size_t>(nb * nb) * sizeof(float));
    a = sp::tensor_view::contiguous(block_attention.data(), sp::dtype::f32,
                                    {static_cast<int64_t>(pivots.size()), nb, nb});
    a.on_device = true;
  }
  sp::cuda_attention_block_sparse(p.out, p.lse, a, p.q, p.k, p.v, d.plan(), d.scratch(), {},
                                  stream);
  if (!publish) {
    // The upload's buffers are freed when this returns; cudaFree waits for the kernel.
    return;
  }
  // Host planner on device tensors: the pivots' block attention comes back to the host (one
  // synchronisation per layer with pivots) and is published into the planner's state.
  std::vector<float> host_a(pivots.size() * static_cast<size_t>(nb * nb));  // [pivots, nb, nb]
  if (!pivots.empty()) {
    sp::cuda_synchronize();
    block_attention.download(host_a.data(), host_a.size() * sizeof(float));
  }
  planner_session& s = *plan->session;
  s.planner->publish(plan->plan.layer, pivots, host_a.data(), s.state);
  plan->published = true;
}

// shareprefill._core.DevicePlanner: sp::device_planner with the per-prompt state of
// sp::prefill_layer, for one Planner's mode, thresholds and cluster map.
class device_prefill {
 public:
  device_prefill(const planner_handle& planner, int64_t heads)
      : session_(planner.session),
        planner_(session_->params, session_->layers, heads, session_->map.get()) {
    params_.device = &planner_;
  }

  int64_t workspace_bytes(int64_t n, int64_t heads, int64_t kv_heads, int64_t dim) const {
    return sp::prefill_layer_workspace_bytes(sp::layer_shape{n, heads, kv_heads, dim}, params_,
                                             true);
  }

  int64_t state_bytes(int64_t n, const std::string& pivots, int64_t dim) const {
    return planner_.state_bytes(n, sp::parse_pivot_publishing(pivots), dim);
  }

  void begin_prompt(const output_array& memory, int64_t n_tokens, uintptr_t stream,
                    const std::string& pivots) {
    const char* fn = "shareprefill.DevicePlanner.begin_prompt";
    const array_info m = bytes_of(fn, "state", memory);
    params_.publishing = sp::parse_pivot_publishing(pivots);
    sp::prefill_layer_begin(state_, params_, n_tokens, true, m.view.data, m.view.shape[0],
                            stream_of(stream));
    has_result_ = false;
  }

  // Chunked prefill with a carried sharing state: moves the state from its finished chunk to the
  // one whose keys end at n_tokens (sp::prefill_layer_begin_chunk; waits for `stream`). memory
  // holds the state: the bound memory, or a larger array the caller copied it into (the state
  // of the longer prompt needs state_bytes(n_tokens)), which is bound from now on.
  void begin_chunk(const output_array& memory, int64_t n_tokens, uintptr_t stream) {
    const char* fn = "shareprefill.DevicePlanner.begin_chunk";
    const array_info m = bytes_of(fn, "state", memory);
    sp::check(state_.on_device && state_.device.memory != nullptr, fn,
              "no prompt was begun: begin_prompt() the first chunk");
    sp::check(reinterpret_cast<uintptr_t>(m.view.data) % 256 == 0, fn,
              "state memory must be 256-byte aligned");
    nb::gil_scoped_release release;
    state_.device.memory = m.view.data;
    state_.device.bytes = m.view.shape[0];
    sp::prefill_layer_begin_chunk(state_, params_, n_tokens, stream_of(stream));
    has_result_ = false;
  }

  void prefill_layer(int64_t layer, const output_array& out, const input_array& q,
                     const input_array& k, const input_array& v, const output_array& workspace,
                     uintptr_t stream) {
    const char* fn = "shareprefill.DevicePlanner.prefill_layer";
    const device_problem p = device_problem_of(fn, out, std::nullopt, q, k, v);
    const array_info ws = bytes_of(fn, "workspace", workspace);
    require_same_device(fn, "q", view_input(fn, "q", q, 3), "workspace", ws);
    nb::gil_scoped_release release;
    params_.layer = layer;
    params_.query_offset = p.k.shape[0] - p.q.shape[0];  // a chunk: q is the last rows of k's
    result_ = sp::prefill_layer(p.q, p.k, p.v, p.out, state_, params_, ws.view.data,
                                ws.view.shape[0], stream_of(stream));
    has_result_ = true;
  }

  void check(uintptr_t stream) const {
    nb::gil_scoped_release release;
    sp::device_plan_check(state_.device, stream_of(stream));
  }

  int64_t last_layer() const { return state_.device.last_layer; }

  // The last layer's head kinds and tiles, copied to the host (synchronous).
  std::vector<std::string> last_kinds() const {
    std::vector<std::string> names;
    for (sp::head_kind kind : sp::device_planner::download_kinds(last().plan))
      names.push_back(sp::head_kind_name(kind));
    return names;
  }
  // The last layer's tiles and head kinds as a host plan (synchronous copies).
  py_plan last_plan() const {
    py_plan p;
    p.plan.layer = state_.device.last_layer;
    p.plan.mask = sp::device_planner::download_mask(last().plan);
    p.plan.kinds = sp::device_planner::download_kinds(last().plan);
    return p;
  }

 private:
  static array_info bytes_of(const char* fn, const char* name, const output_array& a) {
    sp::check(a.is_valid() && a.ndim() == 1, fn, name, " must be a 1-D uint8 CUDA array");
    sp::check(a.dtype() == nb::dtype<uint8_t>() && a.stride(0) == 1, fn, name,
              " must be a contiguous uint8 array, got dtype ", dtype_name(a.dtype()));
    sp::check(a.device_type() == nb::device::cuda::value, fn, name, " must be on a CUDA device");
    array_info info;
    info.device = array_device::cuda;
    info.device_id = a.device_id();
    info.view.data = a.data();
    info.view.type = sp::dtype::f32;  // unused: a byte range
    info.view.rank = 1;
    info.view.shape[0] = static_cast<int64_t>(a.shape(0));
    info.view.stride[0] = 1;
    info.view.on_device = true;
    return info;
  }

  const sp::device_plan_output& last() const {
    sp::check(has_result_, "shareprefill.DevicePlanner", "no layer was planned in this prompt");
    return result_.device_plan;
  }

  std::shared_ptr<planner_session> session_;  // keeps the params and the map alive
  sp::device_planner planner_;
  sp::prefill_layer_params params_;
  sp::prefill_layer_state state_;
  sp::prefill_layer_result result_;
  bool has_result_ = false;
};

}  // namespace

void bind_cuda(nb::module_& m) {
  m.def("cuda_device_available", &sp::cuda_device_available,
        "True when this build has CUDA and a device of compute capability >= 8.0 is usable.");
  m.def("attention_cuda", &attention_cuda, nb::arg("out"), nb::arg("lse").none(), nb::arg("q"),
        nb::arg("k"), nb::arg("v"), nb::arg("plan").none(), nb::arg("stream"),
        "Causal attention on the current CUDA device, asynchronous on `stream` (a cudaStream_t "
        "as an integer): out [N, H, D] in q's dtype (bfloat16 or float16), lse [H, N] float32 "
        "or None, q [N, H, D], k and v [N, Hkv, D] with heads contiguous within a token. plan "
        "None: every causal tile. A plan from a Planner is published into it (with one "
        "synchronisation when the layer has pivots).");
  // When pivots compute their block attention by default (CudaPrefill, as the C++ forward).
  m.attr("DEFER_PIVOTS_FROM") = sp::cuda_defer_pivots_from;
  m.def(
      "default_pivot_publishing",
      [](int64_t n_tokens, bool chunks_carry, bool from_first_token) {
        return std::string(sp::pivot_publishing_name(
            sp::default_pivot_publishing(n_tokens, chunks_carry, from_first_token)));
      },
      nb::arg("n_tokens"), nb::arg("chunks_carry"), nb::arg("from_first_token"),
      "'all' when chunks carry the state on, 'deferred' for layers planned from the prompt's "
      "first token with n_tokens >= DEFER_PIVOTS_FROM, else 'used' (sp::default_pivot_publishing)");
  nb::class_<device_prefill>(m, "DevicePlanner",
                             "The SharePrefill planner on the GPU for a Planner's settings: per "
                             "layer, plan, attention and publish on one stream.")
      .def(nb::init<const planner_handle&, int64_t>(), nb::arg("planner"), nb::arg("heads"))
      .def("workspace_bytes", &device_prefill::workspace_bytes, nb::arg("n_tokens"),
           nb::arg("heads"), nb::arg("kv_heads"), nb::arg("dim"))
      .def("state_bytes", &device_prefill::state_bytes, nb::arg("n_tokens"),
           nb::arg("pivots") = "all", nb::arg("dim") = 0,
           "Bytes of per-prompt state for n_tokens begun with `pivots` (dim: the head dimension, "
           "which 'deferred' keeps the pivots' q and k of).")
      .def("begin_prompt", &device_prefill::begin_prompt, nb::arg("state"), nb::arg("n_tokens"),
           nb::arg("stream"), nb::arg("pivots") = "all",
           "Starts a prompt, or a chunk with a fresh sharing state (n_tokens: the chunk's keys "
           "end); state: uint8 CUDA array of state_bytes(n_tokens, pivots, dim). pivots: when "
           "pivots compute their block attention (sp::pivot_publishing; the same outputs): 'all' "
           "(a begin_chunk may carry the state), 'used' (not those whose cluster has no member in "
           "a later layer), 'deferred' (a whole prompt, q of every layer all its rows: also the "
           "others only when a later member needs it).")
      .def("begin_chunk", &device_prefill::begin_chunk, nb::arg("state"), nb::arg("n_tokens"),
           nb::arg("stream"),
           "Carried sharing state: moves the state from its finished chunk to the chunk whose "
           "keys end at n_tokens (pivots kept, patterns extended; waits for `stream`). state: "
           "uint8 CUDA array of state_bytes(n_tokens) holding the state (the bound one, or a "
           "larger copy of it, bound from then on).")
      .def("prefill_layer", &device_prefill::prefill_layer, nb::arg("layer"), nb::arg("out"),
           nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("workspace"), nb::arg("stream"),
           "One layer: out [n, H, D] (q's dtype) from q [n, H, D], k and v [N, Hkv, D] with N "
           "the state's tokens (begin_prompt or begin_chunk); n < N: a chunk, the queries "
           "N - n .. N - 1 (N - n a multiple of 128). workspace: uint8 CUDA array of "
           "workspace_bytes(N, ...). Asynchronous on `stream`.")
      .def("check", &device_prefill::check, nb::arg("stream"),
           "Waits for `stream`; raises the first error the device planner recorded.")
      .def_prop_ro("last_layer", &device_prefill::last_layer)
      .def("last_kinds", &device_prefill::last_kinds,
           "Head kinds of the last planned layer (synchronous copy).")
      .def("last_plan", &device_prefill::last_plan,
           "The last layer's tiles and head kinds as a Plan (synchronous copies; for inspection, "
           "reports and tests).");
}

}  // namespace sp_python
