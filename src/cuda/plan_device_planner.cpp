// device_planner: the host side of the device planner. Validates once at the API boundary,
// carves the caller's workspace and state, and enqueues the planner steps on the caller's
// stream (plan_statistics.cu, plan_classify.cu, plan_tiles.cu, plan_publish.cu). The host
// knows only what the shape, the mode and the layer list say (a layer with every head dense
// skips the statistics); every data-dependent decision stays on the device.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "cuda_check.h"
#include "plan_chunk_carry.h"
#include "plan_layout.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/error.h"

namespace sp {

static_assert(static_cast<uint8_t>(head_kind::dense) == cuda::kind_dense &&
                  static_cast<uint8_t>(head_kind::pivot) == cuda::kind_pivot &&
                  static_cast<uint8_t>(head_kind::shared) == cuda::kind_shared &&
                  static_cast<uint8_t>(head_kind::query_aware) == cuda::kind_query_aware &&
                  static_cast<uint8_t>(head_kind::vertical_slash) == cuda::kind_vertical_slash,
              "device head kinds");
static_assert(static_cast<int32_t>(plan_mode::dense) == cuda::mode_dense &&
                  static_cast<int32_t>(plan_mode::vslash) == cuda::mode_vslash &&
                  static_cast<int32_t>(plan_mode::flexprefill) == cuda::mode_flexprefill &&
                  static_cast<int32_t>(plan_mode::shareprefill) == cuda::mode_shareprefill,
              "device plan modes");

struct device_planner::impl {
  planner_params params;
  int64_t layers = 0, heads = 0;
  int64_t clusters = 0, slots = 0;
  std::vector<int32_t> slot_of;         // [layers * heads]
  std::vector<int32_t> cluster_of_slot;  // [slots]
  std::vector<uint8_t> dense_layer;      // [layers]
  int64_t max_pivots = 0;
  int64_t target_ctas = 0;
  device_buffer slot_of_device, eligible_device, dense_head_device;  // [layers * heads] each
  device_buffer head_gamma_device;  // [layers * heads] double: gamma, or the head's own
  // Heads dense in every plan of their layer and never a pivot, which the kernel may walk
  // (layer_plan_view::walk_heads): walk_list_device [layers * heads] each layer's ascending
  // heads from its start, walk_count [layers].
  device_buffer walk_list_device;
  std::vector<int64_t> walk_count;
  // Eligible heads whose cluster has no member in a later layer (pivot_publishing::used: a
  // pivot among them never computes A): unpublished_device [layers * heads].
  device_buffer unpublished_device;
  // Per layer: distinct shared clusters with an eligible head (a bound on its pivots), and the
  // cluster slots whose deferred pivot (an eligible head of an earlier layer that publishes) a
  // head of the layer may need.
  std::vector<int64_t> eligible_slots;
  std::vector<std::vector<int32_t>> deferred_candidates;
};

namespace {

template <class T>
void copy_to_host(std::vector<T>& out, const void* src, int64_t count, const char* fn) {
  out.resize(static_cast<size_t>(count));
  if (count > 0)
    cuda::check_cuda(cudaMemcpy(out.data(), src, static_cast<size_t>(count) * sizeof(T),
                                cudaMemcpyDeviceToHost),
                     fn, "cudaMemcpy to the host");
}

void check_view(const char* fn, const char* name, const tensor_view& x, int64_t n, int64_t heads,
                int64_t dim) {
  check(x.on_device, fn, name, " must be a device view (on_device)");
  check(x.rank == 3, fn, name, " must be [N, heads, dim], got rank ", x.rank);
  check(x.type == dtype::bf16 || x.type == dtype::f16, fn, name, " must be bf16 or f16, got ",
        dtype_name(x.type));
  check(x.shape[0] == n && x.shape[1] == heads && x.shape[2] == dim, fn, name, " has shape [",
        x.shape[0], ", ", x.shape[1], ", ", x.shape[2], "], expected [", n, ", ", heads, ", ",
        dim, "]");
  check(x.stride[2] == 1 && x.stride[1] % 8 == 0 && x.stride[0] % 8 == 0 && x.stride[1] >= dim &&
            x.stride[0] >= heads * x.stride[1],
        fn, name, " strides [", x.stride[0], ", ", x.stride[1], ", ", x.stride[2],
        "]: the last dim must be contiguous and the others multiples of 8 elements");
  check(x.data != nullptr && reinterpret_cast<uintptr_t>(x.data) % 16 == 0, fn, name,
        " must be a non-null 16-byte aligned pointer");
}

}  // namespace

device_planner::device_planner(const planner_params& params, int64_t layers, int64_t heads,
                               const cluster_map* clusters)
    : impl_(std::make_unique<impl>()) {
  const char* fn = "device_planner::device_planner";
  impl& m = *impl_;
  params.validate();
  check(params.block_size == cuda::plan_block, fn, "block_size ", params.block_size,
        " (the device planner and kernel use ", cuda::plan_block, ")");
  check(!params.share_within_layer, fn,
        "share_within_layer is planned on the host only; use sp::planner");
  check(!params.pivot_prefers_dense, fn,
        "pivot_prefers_dense is planned on the host only; use sp::planner");
  check(params.estimation_blocks == 1, fn, "estimation_blocks ", params.estimation_blocks,
        ": the device planner estimates from the last query block only; use sp::planner");
  check(layers > 0 && heads > 0, fn, "model shape must be positive, got ", layers, " layers x ",
        heads, " heads");
  check(params.mode != plan_mode::shareprefill || clusters != nullptr, fn,
        "shareprefill mode needs a cluster map");
  m.params = params;
  m.layers = layers;
  m.heads = heads;
  m.dense_layer.assign(static_cast<size_t>(layers), 0);
  for (int64_t l : params.dense_layers) {
    check(l < layers, fn, "dense layer ", l, " is out of range: the model has ", layers,
          " layers (0-", layers - 1, ")");
    m.dense_layer[static_cast<size_t>(l)] = 1;
  }
  // Dense heads (a format-2 map's per-head choices): dense unless they become a pivot.
  std::vector<uint8_t> dense_head(static_cast<size_t>(layers * heads), 0);
  for (const auto& [l, h] : params.dense_heads) {
    check(l < layers && h < heads, fn, "dense head (", l, ", ", h,
          ") is out of range: the model has ", layers, " layers x ", heads, " heads");
    dense_head[static_cast<size_t>(l * heads + h)] = 1;
  }
  // Per-head gammas (issue 17): budgets and query-aware tiles; publish keeps params.gamma.
  std::vector<double> gamma_of(static_cast<size_t>(layers * heads), params.gamma);
  for (const head_gamma& g : params.head_gammas) {
    check(g.layer < layers && g.head < heads, fn, "head_gammas: head (", g.layer, ", ", g.head,
          ") is out of range: the model has ", layers, " layers x ", heads, " heads");
    gamma_of[static_cast<size_t>(g.layer * heads + g.head)] = g.gamma;
  }
  m.slot_of.assign(static_cast<size_t>(layers * heads), -1);
  m.eligible_slots.assign(static_cast<size_t>(layers), 0);  // no map: no cluster
  std::vector<uint8_t> eligible(static_cast<size_t>(layers * heads), 0);
  if (clusters != nullptr) {
    const std::vector<int32_t> cluster_of = clusters->head_table(layers, heads);
    m.clusters = static_cast<int64_t>(clusters->clusters.size());
    std::vector<int32_t> slot_of_cluster(clusters->clusters.size(), -1);
    for (size_t c = 0; c < clusters->clusters.size(); ++c) {
      const head_cluster& hc = clusters->clusters[c];
      if (!hc.shared) continue;
      check(!(params.pivot_is_medoid && !hc.medoid), fn, clusters->source,
            ": pivot_is_medoid needs a medoid for every shared cluster; cluster \"", hc.id,
            "\" has none");
      slot_of_cluster[c] = static_cast<int32_t>(m.slots++);
      m.cluster_of_slot.push_back(static_cast<int32_t>(c));
    }
    for (int64_t l = 0; l < layers; ++l) {
      std::set<int32_t> layer_slots;
      for (int64_t h = 0; h < heads; ++h) {
        const int32_t c = cluster_of[static_cast<size_t>(l * heads + h)];
        const int32_t slot = slot_of_cluster[static_cast<size_t>(c)];
        m.slot_of[static_cast<size_t>(l * heads + h)] = slot;
        const auto& medoid = clusters->clusters[static_cast<size_t>(c)].medoid;
        const bool ok = slot >= 0 && (!params.pivot_is_medoid ||
                                      (medoid && medoid->layer == l && medoid->head == h));
        eligible[static_cast<size_t>(l * heads + h)] = ok ? 1 : 0;
        if (ok) layer_slots.insert(slot);
      }
      m.eligible_slots[static_cast<size_t>(l)] = static_cast<int64_t>(layer_slots.size());
      if (params.mode == plan_mode::shareprefill)
        m.max_pivots = std::max<int64_t>(m.max_pivots, static_cast<int64_t>(layer_slots.size()));
    }
  }
  m.slot_of_device = device_buffer(m.slot_of.size() * sizeof(int32_t));
  m.slot_of_device.upload(m.slot_of.data(), m.slot_of_device.size());
  m.eligible_device = device_buffer(eligible.size());
  m.eligible_device.upload(eligible.data(), eligible.size());
  m.dense_head_device = device_buffer(dense_head.size());
  m.dense_head_device.upload(dense_head.data(), dense_head.size());
  m.head_gamma_device = device_buffer(gamma_of.size() * sizeof(double));
  m.head_gamma_device.upload(gamma_of.data(), m.head_gamma_device.size());
  // Dense heads (a dense head or any head of a dense layer in shareprefill mode; other modes
  // plan dense layers whole) that can never be a pivot: no cluster eligibility in this mode.
  std::vector<int32_t> walk_list(static_cast<size_t>(layers * heads), 0);
  m.walk_count.assign(static_cast<size_t>(layers), 0);
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t h = 0; h < heads; ++h) {
      const size_t at = static_cast<size_t>(l * heads + h);
      const bool dense = m.dense_layer[static_cast<size_t>(l)] != 0 || dense_head[at] != 0;
      const bool maybe_pivot = params.mode == plan_mode::shareprefill && eligible[at] != 0;
      if (params.mode == plan_mode::dense || !dense || maybe_pivot) continue;
      walk_list[static_cast<size_t>(l * heads + m.walk_count[static_cast<size_t>(l)]++)] =
          static_cast<int32_t>(h);
    }
  m.walk_list_device = device_buffer(walk_list.size() * sizeof(int32_t));
  m.walk_list_device.upload(walk_list.data(), m.walk_list_device.size());
  std::vector<int64_t> last_layer_of_slot(static_cast<size_t>(m.slots), -1);
  for (int64_t at = 0; at < layers * heads; ++at)
    if (m.slot_of[static_cast<size_t>(at)] >= 0)
      last_layer_of_slot[static_cast<size_t>(m.slot_of[static_cast<size_t>(at)])] = at / heads;
  std::vector<uint8_t> unpublished(static_cast<size_t>(layers * heads), 0);
  for (int64_t at = 0; at < layers * heads; ++at) {
    const int32_t slot = m.slot_of[static_cast<size_t>(at)];
    if (eligible[static_cast<size_t>(at)] == 0 ||
        at / heads < last_layer_of_slot[static_cast<size_t>(slot)])
      continue;
    unpublished[static_cast<size_t>(at)] = 1;
  }
  m.unpublished_device = device_buffer(unpublished.size());
  m.unpublished_device.upload(unpublished.data(), unpublished.size());
  m.deferred_candidates.resize(static_cast<size_t>(layers));
  std::vector<uint8_t> may_defer(static_cast<size_t>(m.slots), 0);  // in a layer before this one
  for (int64_t l = 0; l < layers; ++l) {
    std::set<int32_t> here;
    for (int64_t h = 0; h < heads; ++h) {
      const int32_t slot = m.slot_of[static_cast<size_t>(l * heads + h)];
      if (slot >= 0 && may_defer[static_cast<size_t>(slot)]) here.insert(slot);
    }
    m.deferred_candidates[static_cast<size_t>(l)].assign(here.begin(), here.end());
    for (int64_t h = 0; h < heads; ++h) {
      const size_t at = static_cast<size_t>(l * heads + h);
      if (eligible[at] != 0 && unpublished[at] == 0)
        may_defer[static_cast<size_t>(m.slot_of[at])] = 1;
    }
  }
  int device = 0, sms = 0;
  cuda::check_cuda(cudaGetDevice(&device), fn, "cudaGetDevice");
  cuda::check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), fn,
                   "cudaDeviceGetAttribute");
  m.target_ctas = 2 * static_cast<int64_t>(sms);
}

device_planner::~device_planner() = default;
device_planner::device_planner(device_planner&&) noexcept = default;
device_planner& device_planner::operator=(device_planner&&) noexcept = default;

const planner_params& device_planner::params() const { return impl_->params; }
int64_t device_planner::layers() const { return impl_->layers; }
int64_t device_planner::heads() const { return impl_->heads; }
int64_t device_planner::max_pivots() const { return impl_->max_pivots; }

namespace {

cuda::plan_sizes sizes_of(const device_planner::impl& m, const layer_shape& s, const char* fn) {
  check(s.n_tokens > 0, fn, "N must be positive, got ", s.n_tokens);
  check(s.heads == m.heads, fn, "the shape has ", s.heads, " heads, the planner ", m.heads);
  check(s.kv_heads > 0 && s.heads % s.kv_heads == 0, fn, "heads ", s.heads,
        " not divisible by kv heads ", s.kv_heads);
  check(s.dim == 64 || s.dim == 128, fn, "head dim ", s.dim, " (64 or 128 supported)");
  check(s.n_tokens < (int64_t{1} << 31), fn, "N=", s.n_tokens, " too large");
  return cuda::make_plan_sizes(s.n_tokens, s.heads, s.kv_heads, s.dim, m.max_pivots,
                               m.target_ctas);
}

// Before the layer's gates (pivot_publishing::deferred, the prompt in one piece): the deferred
// pivots a member of this layer may need get their A now when one does (plan_deferred.cu). The
// members mark their clusters (needed_pivots_kernel); the plan arrays, rebuilt by the layer's tiles
// later, hold the one-head causal plan of a pivot; per candidate cluster, serve_kernel decides
// on the device, the kernel runs the pivot's A from its kept q and k (output over its kept q,
// which is not needed again; the default kernel choice, as the layers' own launches) when it is
// needed, and publish fills the cluster's pattern.
void serve_deferred_pivots(const device_planner::impl& m, const cuda::plan_pointers& p,
                           const cuda::state_pointers& st, const cuda::plan_rules& r,
                           const cuda::qk_views& x, cuda::cub_plan& c, cudaStream_t stream) {
  const std::vector<int32_t>& slots = m.deferred_candidates[static_cast<size_t>(r.layer)];
  if (slots.empty()) return;
  cuda::launch_needed_pivots(p, st, r, stream);
  cuda::launch_pivot_plan(p, stream);
  const int64_t n = p.s.n, nb = p.s.nb, dim = p.s.dim;
  layer_plan_view plan = p.plan;
  plan.n_tokens = n;
  plan.n_blocks = nb;
  plan.heads = 1;
  plan.col_capacity = p.s.tri;
  plan.max_pivots = 1;
  plan.scratch_tiles = p.s.tri;
  plan.query_offset = 0;
  plan.full_causal = false;
  plan.walk_head_count = 0;
  plan.walk_heads = nullptr;
  plan.walk_count = nullptr;
  plan.run_if = p.run_if;
  tensor_view a = tensor_view::contiguous(p.block_attention, dtype::f32, {1, nb, nb});
  a.on_device = true;
  const dtype type = x.half ? dtype::f16 : dtype::bf16;
  cuda::plan_rules publish_rules = r;
  for (const int32_t slot : slots) {
    cuda::launch_serve_deferred_pivot(p, st, slot, p.run_if, stream);
    uint16_t* kept_q = st.kept + slot * 2 * n * dim;
    tensor_view q = tensor_view::contiguous(kept_q, type, {n, 1, dim});
    tensor_view k = tensor_view::contiguous(kept_q + n * dim, type, {n, 1, dim});
    q.on_device = k.on_device = true;
    cuda_attention_block_sparse(q, {}, a, q, k, k, plan, p.scratch, {}, stream);
    publish_rules.publish_cluster_slot = slot;
    cuda::launch_publish(p, st, publish_rules, c, stream);
  }
}

}  // namespace

int64_t device_planner::workspace_bytes(const layer_shape& shape) const {
  return cuda::make_workspace_layout(sizes_of(*impl_, shape, "device_planner::workspace_bytes"))
      .total;
}

int64_t device_planner::state_bytes(int64_t n_tokens, pivot_publishing publishing,
                                    int64_t dim) const {
  const char* fn = "device_planner::state_bytes";
  check(n_tokens > 0, fn, "N must be positive, got ", n_tokens);
  check(dim == 64 || dim == 128, fn, "head dim ", dim, " (64 or 128 supported)");
  const cuda::state_layout l = cuda::make_state_layout(impl_->slots, n_tokens);
  const bool defers = publishing == pivot_publishing::deferred &&
                      impl_->params.mode == plan_mode::shareprefill && impl_->slots > 0;
  return l.total + (defers ? l.kept_bytes(n_tokens, dim) : 0);
}

void device_planner::begin_prompt(device_plan_state& state, void* memory, int64_t bytes,
                                  int64_t n_tokens, void* stream,
                                  pivot_publishing publishing) const {
  const char* fn = "device_planner::begin_prompt";
  check(n_tokens > 0, fn, "N must be positive, got ", n_tokens);
  const int64_t need = cuda::make_state_layout(impl_->slots, n_tokens).total;  // cleared part
  check(memory != nullptr && reinterpret_cast<uintptr_t>(memory) % 256 == 0, fn,
        "state memory must be a non-null 256-byte aligned device pointer");
  check(bytes >= need, fn, "state memory of ", bytes, " bytes is too small: ", need,
        " needed for N=", n_tokens);
  state = device_plan_state{};
  state.memory = memory;
  state.bytes = bytes;
  state.n_tokens = n_tokens;
  state.publishing = publishing;
  cuda::check_cuda(cudaMemsetAsync(memory, 0, static_cast<size_t>(need),
                                   static_cast<cudaStream_t>(stream)),
                   fn, "clearing the state");
}

void device_planner::begin_chunk(device_plan_state& state, int64_t n_tokens, void* stream) const {
  const char* fn = "device_planner::begin_chunk";
  const impl& m = *impl_;
  const int64_t bs = cuda::plan_block, start = state.n_tokens;
  check(state.memory != nullptr, fn,
        "the state is not bound: begin_prompt() the first chunk (its memory sized by "
        "state_bytes() of the whole prompt)");
  check(n_tokens > start, fn, "the chunk's keys must end past the state's ", start,
        " tokens, got ", n_tokens);
  check(start % bs == 0, fn, "the chunk would start at token ", start,
        ", not a multiple of the block size ", bs);
  check(!state.awaiting_publish, fn, "publish() was not called after layer ", state.last_layer,
        " of the previous chunk");
  check(state.publishing == pivot_publishing::all, fn,
        "the state was begun with pivot_publishing::used or deferred, so some pivots published "
        "no pattern for the next chunk to take; begin_prompt() with pivot_publishing::all for a "
        "carried chunked prefill");
  check(state.last_layer == m.layers - 1, fn, "the previous chunk (tokens ", state.query_offset,
        "-", start, ") was planned up to layer ", state.last_layer, " of ", m.layers);
  const int64_t need = cuda::make_state_layout(m.slots, n_tokens).total;  // no kept q and k
  check(state.bytes >= need, fn, "state memory of ", state.bytes, " bytes is too small for a chunk "
        "ending at ", n_tokens, ": ", need, " needed; size it with state_bytes() of the whole "
        "prompt");
  cuda::carry_state(state.memory, m.slots, state.query_offset, start, n_tokens,
                    static_cast<cudaStream_t>(stream));
  state.n_tokens = n_tokens;
  state.query_offset = start;
  state.carried = true;
  state.last_layer = -1;
  state.awaiting_publish = false;
  state.published = false;
  state.layer_max_pivots = 0;
}

device_plan_output device_planner::plan(int64_t layer, const tensor_view& q, const tensor_view& k,
                                       device_plan_state& state, void* workspace,
                                       int64_t workspace_bytes, void* stream) const {
  return plan_chunk(layer, 0, q, k, state, workspace, workspace_bytes, stream);
}

device_plan_output device_planner::plan_chunk(int64_t layer, int64_t query_offset,
                                             const tensor_view& q, const tensor_view& k,
                                             device_plan_state& state, void* workspace,
                                             int64_t workspace_bytes, void* stream) const {
  const char* fn = query_offset == 0 ? "device_planner::plan" : "device_planner::plan_chunk";
  const impl& m = *impl_;
  check(layer >= 0 && layer < m.layers, fn, "layer ", layer, " not in [0, ", m.layers, ")");
  check(state.memory != nullptr, fn, "the state is not bound: call begin_prompt() first");
  check(q.rank == 3 && k.rank == 3, fn, "q and k must be [N, heads, dim], got ranks ", q.rank,
        " and ", k.rank);
  check(query_offset >= 0 && query_offset % cuda::plan_block == 0, fn, "chunk start ",
        query_offset, " must be a multiple of the block size ", cuda::plan_block);
  check(q.shape[0] > 0, fn, "q must hold at least one token");
  // The chunk [s, e) of the prompt: q holds its e - s queries, k the e keys.
  const layer_shape shape{query_offset + q.shape[0], q.shape[1], k.shape[1], q.shape[2]};
  const cuda::plan_sizes sizes = sizes_of(m, shape, fn);
  check(shape.n_tokens == state.n_tokens, fn, "the state belongs to a prompt (or chunk end) of ",
        state.n_tokens, " tokens, got ", shape.n_tokens, " (chunk start ", query_offset, " + ",
        q.shape[0], " queries); begin_prompt() a new one");
  check(!state.carried || query_offset == state.query_offset, fn,
        "the state was moved by begin_chunk() to the chunk starting at ", state.query_offset,
        ", got ", query_offset);
  check(state.last_layer < 0 || query_offset == state.query_offset, fn,
        "the state's layers were planned for the chunk starting at ", state.query_offset,
        ", got ", query_offset, "; begin_prompt() a new state for each chunk, or begin_chunk()");
  check_view(fn, "q", q, q.shape[0], shape.heads, shape.dim);
  check_view(fn, "k", k, shape.n_tokens, shape.kv_heads, shape.dim);
  check(q.type == k.type, fn, "q is ", dtype_name(q.type), " but k is ", dtype_name(k.type));
  check(layer > state.last_layer, fn, "layers must be planned in increasing order: layer ", layer,
        " after layer ", state.last_layer, "; begin_prompt() a new prompt");
  check(!state.awaiting_publish, fn, "publish() was not called after layer ", state.last_layer);
  const cuda::workspace_layout layout = cuda::make_workspace_layout(sizes);
  check(workspace != nullptr && reinterpret_cast<uintptr_t>(workspace) % 256 == 0, fn,
        "the workspace must be a non-null 256-byte aligned device pointer");
  check(workspace_bytes >= layout.total, fn, "workspace of ", workspace_bytes,
        " bytes is too small: ", layout.total, " needed for N=", shape.n_tokens, ", heads=",
        shape.heads, ", kv_heads=", shape.kv_heads, ", dim=", shape.dim);

  const planner_params& pp = m.params;
  const bool dense_layer = m.dense_layer[static_cast<size_t>(layer)] != 0;
  const bool all_dense = pp.mode == plan_mode::dense || shape.n_tokens <= pp.min_blocks() * pp.block_size ||
                         (dense_layer && pp.mode != plan_mode::shareprefill);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const cuda::plan_pointers p = cuda::bind_workspace(layout, workspace);
  cuda::plan_rules r;
  r.layer = static_cast<int32_t>(layer);
  r.mode = static_cast<int32_t>(pp.mode);
  r.min_blocks = static_cast<int32_t>(pp.min_blocks());
  r.max_blocks = static_cast<int32_t>(pp.max_blocks(sizes.nb));
  r.gamma = pp.gamma;
  r.head_gamma = static_cast<const double*>(m.head_gamma_device.data()) + layer * m.heads;
  r.tau_sim = pp.tau_sim;
  r.gate_bins = pp.gate_bins;
  r.gate_coverage = pp.gate_coverage;
  r.shared_keeps_budget = pp.shared_keeps_budget;
  r.exact_last_row = pp.exact_last_row;
  r.last_row_gamma = pp.last_row_gamma;
  r.tau_fb = pp.tau_fb;
  r.tau_qa = pp.tau_qa;
  r.dense_layer = dense_layer;
  r.slot_of = static_cast<const int32_t*>(m.slot_of_device.data());
  r.eligible = static_cast<const uint8_t*>(m.eligible_device.data());
  r.dense_head = static_cast<const uint8_t*>(m.dense_head_device.data());
  // The layer's walked heads (none in an all-dense plan: the kernel walks it whole): the dense
  // never-pivot heads, and with pivot_publishing::used its pivots without A (never needed; with
  // deferred, in a prompt in one piece, all its pivots); classify writes the plan's list and count,
  // of which walk_bound is the bound (one pivot per cluster with an eligible head).
  const int64_t listed = all_dense ? 0 : m.walk_count[static_cast<size_t>(layer)];
  r.walk_heads = listed > 0
                     ? static_cast<const int32_t*>(m.walk_list_device.data()) + layer * m.heads
                     : nullptr;
  r.walk_head_count = static_cast<int32_t>(listed);
  const bool used =
      !all_dense && pp.mode == plan_mode::shareprefill && state.publishing != pivot_publishing::all;
  if (used) r.unpublished = static_cast<const uint8_t*>(m.unpublished_device.data());
  r.defer_pivots = used && state.publishing == pivot_publishing::deferred && query_offset == 0;
  const int64_t walk_bound = listed + (used ? m.eligible_slots[static_cast<size_t>(layer)] : 0);
  const int64_t with_kept =
      r.defer_pivots ? state_bytes(shape.n_tokens, pivot_publishing::deferred, shape.dim) : 0;
  check(state.bytes >= with_kept, fn, "state memory of ", state.bytes,
        " bytes has no room for the q and k of deferred pivots: state_bytes(", shape.n_tokens,
        ", pivot_publishing::deferred, ", shape.dim, ") = ", with_kept, " needed");
  r.first_query_block = static_cast<int32_t>(query_offset / cuda::plan_block);
  cuda::qk_views x;
  x.q = q.data;
  x.k = k.data;
  x.q_token_stride = q.stride[0];
  x.q_head_stride = q.stride[1];
  x.k_token_stride = k.stride[0];
  x.k_head_stride = k.stride[1];
  x.half = q.type == dtype::f16;
  x.q_first = query_offset;
  cuda::cub_plan c{p.cub_temp, p.cub_temp_bytes};
  const cuda::state_pointers sp_state =
      cuda::bind_state(cuda::make_state_layout(m.slots, shape.n_tokens), state.memory);

  if (all_dense) {
    cuda::launch_all_dense_kinds(p, st);
  } else {
    cuda::launch_statistics(p, sp_state, x, r, c, st);
    cuda::launch_query_aware_test(p, x, r, st);
    if (r.defer_pivots) serve_deferred_pivots(m, p, sp_state, r, x, c, st);
    cuda::launch_classify(p, sp_state, r, st);
    // Only a layer with an eligible head can have a pivot whose q and k to keep.
    if (r.defer_pivots && m.eligible_slots[static_cast<size_t>(layer)] > 0)
      cuda::launch_keep_deferred_pivots(p, sp_state, r, x, st);
  }
  cuda::launch_tiles(p, sp_state, x, r, all_dense, c, st);
  cuda::check_cuda(cudaMemsetAsync(p.item_counter, 0, sizeof(unsigned long long), st), fn,
                   "clearing the work counter");

  // The kernel writes a pivot's A for the chunk's rows only: the rows before it are 0 for
  // publish, as on the host.
  if (query_offset > 0 && sizes.max_pivots > 0)
    cuda::check_cuda(cudaMemset2DAsync(p.block_attention, 4 * sizes.nb * sizes.nb, 0,
                                       4 * r.first_query_block * sizes.nb, sizes.max_pivots, st),
                     fn, "clearing the block attention before the chunk");
  state.last_layer = layer;
  state.query_offset = query_offset;
  state.published = false;
  state.awaiting_publish = !all_dense && pp.mode == plan_mode::shareprefill && m.max_pivots > 0;
  state.layer_max_pivots = m.max_pivots;

  device_plan_output out;
  out.layer = layer;
  out.kv_heads = shape.kv_heads;
  out.dim = shape.dim;
  out.workspace = workspace;
  out.plan = p.plan;
  out.plan.query_offset = query_offset;
  out.plan.full_causal = all_dense;  // all-dense plans have no pivot head
  out.plan.walk_head_count = walk_bound;
  if (walk_bound > 0) {
    out.plan.walk_heads = p.walk_list;
    out.plan.walk_count = p.walk_count;
  }
  out.scratch = p.scratch;
  if (sizes.max_pivots > 0) {
    out.block_attention = tensor_view::contiguous(p.block_attention, dtype::f32,
                                                  {sizes.max_pivots, sizes.nb, sizes.nb});
    out.block_attention.on_device = true;
  }
  out.all_dense = all_dense;
  if (!all_dense) {
    out.v_blk = p.blk;
    out.s_blk = p.blk + sizes.heads * sizes.nb;
    out.budgets = p.budgets;
    out.qa_distance = p.qa_dist;
    out.gate_distance = p.gate_dist;
  }
  return out;
}

void device_planner::publish(int64_t layer, const device_plan_output& out,
                             device_plan_state& state, void* stream) const {
  const char* fn = "device_planner::publish";
  const impl& m = *impl_;
  check(layer == state.last_layer && out.layer == layer, fn, "layer ", layer,
        " is not the last planned layer (", state.last_layer, ")");
  check(state.awaiting_publish || !state.published, fn, "layer ", layer, " was already published");
  state.published = true;
  if (!state.awaiting_publish) return;
  check(out.workspace != nullptr, fn, "the plan has no workspace");
  const layer_shape shape{out.plan.n_tokens, out.plan.heads, out.kv_heads, out.dim};
  const cuda::workspace_layout layout =
      cuda::make_workspace_layout(sizes_of(m, shape, fn));
  const cuda::plan_pointers p = cuda::bind_workspace(layout, out.workspace);
  const cuda::state_pointers sp_state =
      cuda::bind_state(cuda::make_state_layout(m.slots, out.plan.n_tokens), state.memory);
  cuda::plan_rules r;
  r.layer = static_cast<int32_t>(layer);
  r.mode = static_cast<int32_t>(m.params.mode);
  r.gamma = m.params.gamma;  // a pivot's pattern keeps the global gamma (no head_gamma here)
  r.slot_of = static_cast<const int32_t*>(m.slot_of_device.data());
  r.eligible = static_cast<const uint8_t*>(m.eligible_device.data());
  cuda::cub_plan c{p.cub_temp, p.cub_temp_bytes};
  cuda::launch_publish(p, sp_state, r, c, static_cast<cudaStream_t>(stream));
  state.awaiting_publish = false;
}

std::vector<device_cluster_slot> device_planner::download_state(
    const device_plan_state& state) const {
  const char* fn = "device_planner::download_state";
  const impl& m = *impl_;
  check(state.memory != nullptr, fn, "the state is not bound");
  cuda::check_cuda(cudaDeviceSynchronize(), fn, "cudaDeviceSynchronize");
  const cuda::state_layout l = cuda::make_state_layout(m.slots, state.n_tokens);
  std::vector<uint8_t> bytes;
  copy_to_host(bytes, state.memory, l.total, fn);
  auto at = [&](int64_t offset) { return bytes.data() + offset; };
  std::vector<device_cluster_slot> out(static_cast<size_t>(m.clusters));
  for (int64_t s = 0; s < m.slots; ++s) {
    device_cluster_slot& d = out[static_cast<size_t>(m.cluster_of_slot[static_cast<size_t>(s)])];
    auto i32 = [&](int64_t offset) {
      int32_t v;
      std::memcpy(&v, at(offset) + 4 * s, 4);
      return v;
    };
    d.has_pivot = i32(l.has_pivot) != 0;
    d.has_pattern = i32(l.has_pattern) != 0;
    d.pivot_layer = i32(l.pivot_layer);
    d.pivot_head = i32(l.pivot_head);
    std::memcpy(&d.pivot_vs_ratio, at(l.vs_ratio) + 8 * s, 8);
    if (!d.has_pivot) {
      d.pivot_layer = d.pivot_head = -1;
      continue;
    }
    const int64_t blocks = i32(l.profile_blocks);  // < nb: carried from an earlier chunk
    d.pivot_v_blk.resize(static_cast<size_t>(blocks));
    d.pivot_s_blk.resize(static_cast<size_t>(blocks));
    std::memcpy(d.pivot_v_blk.data(), at(l.pivot_v_blk) + 4 * s * l.nb, 4 * blocks);
    std::memcpy(d.pivot_s_blk.data(), at(l.pivot_s_blk) + 4 * s * l.nb, 4 * blocks);
    std::vector<uint32_t> bits(static_cast<size_t>(l.nb * l.words));
    std::memcpy(bits.data(), at(l.vs_bits) + 4 * s * l.nb * l.words, 4 * bits.size());
    d.pivot_vs_tiles = cuda::tiles_of_bits(bits.data(), l.nb, l.words);
    if (d.has_pattern) {
      std::memcpy(bits.data(), at(l.pattern_bits) + 4 * s * l.nb * l.words, 4 * bits.size());
      d.pivot_pattern = cuda::tiles_of_bits(bits.data(), l.nb, l.words);
    }
  }
  return out;
}

block_mask device_planner::download_mask(const layer_plan_view& plan) {
  const char* fn = "device_planner::download_mask";
  cuda::check_cuda(cudaDeviceSynchronize(), fn, "cudaDeviceSynchronize");
  std::vector<int64_t> row_ptr;
  copy_to_host(row_ptr, plan.row_ptr, plan.heads * (plan.n_blocks + 1), fn);
  std::vector<int32_t> col_idx;
  copy_to_host(col_idx, plan.col_idx, row_ptr.back(), fn);
  return block_mask::from_csr(plan.n_tokens, cuda::plan_block, plan.heads, std::move(row_ptr),
                              std::move(col_idx));
}

std::vector<head_kind> device_planner::download_kinds(const layer_plan_view& plan) {
  const char* fn = "device_planner::download_kinds";
  cuda::check_cuda(cudaDeviceSynchronize(), fn, "cudaDeviceSynchronize");
  std::vector<uint8_t> raw;
  copy_to_host(raw, plan.kinds, plan.heads, fn);
  std::vector<head_kind> out;
  for (uint8_t k : raw) out.push_back(static_cast<head_kind>(k));
  return out;
}

void device_plan_check(const device_plan_state& state, void* stream) {
  const char* fn = "device_plan_check";
  check(state.memory != nullptr, fn, "the state is not bound");
  cuda::check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), fn,
                   "waiting for the stream");
  int32_t error[4] = {0, 0, 0, 0};
  cuda::check_cuda(cudaMemcpy(error, state.memory, sizeof(error), cudaMemcpyDeviceToHost), fn,
                   "reading the error record");
  if (error[0] == 0) return;
  std::string what;
  if (error[0] & static_cast<int32_t>(cuda::plan_error_nonfinite_input))
    what += "non-finite values in q or k (the rows the planner reads: the last query block and "
            "all keys)";
  if (error[0] & static_cast<int32_t>(cuda::plan_error_bad_block_attention))
    what += std::string(what.empty() ? "" : "; ") +
            "a pivot's block attention has a non-finite or negative entry";
  fail(fn, "layer ", error[1], " head ", error[2], " (first error of the prompt): ", what);
}

}  // namespace sp
