// shareprefill.Planner and shareprefill.Plan: the online planner (DESIGN.md section 2) with its
// per-prompt state, and one layer's plan (CSR block masks over all heads, head kinds, pivots).
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <optional>

#include "arrays.h"
#include "bindings.h"
#include "cluster_map_handle.h"
#include "cpu_runtime.h"
#include "plan_objects.h"
#include "problems.h"
#include "shareprefill/error.h"
#include "shareprefill/length_thresholds.h"
#include "shareprefill/planned_layer.h"

namespace sp_python {
namespace {

// Layers a planner without a map (or an explicit count) accepts: the planner keeps one byte per
// layer for the dense-layer table, nothing else.
constexpr int64_t layers_without_map = 65536;

const char* const plan_fn = "shareprefill.Planner.plan_layer";

std::shared_ptr<planner_session> make_session(
    std::optional<cluster_map_handle> map, const std::string& mode, std::optional<int64_t> layers,
    int64_t block_size, double gamma, double tau_sim, double tau_fb, double tau_qa,
    int64_t min_budget, int64_t max_budget, bool share_within_layer, bool pivot_is_medoid,
    int64_t gate_bins, bool exact_last_row, double last_row_gamma,
    std::optional<std::vector<int64_t>> dense_layers,
    std::vector<std::pair<int64_t, int64_t>> dense_heads) {
  auto s = std::make_shared<planner_session>();
  sp::planner_params& p = s->params;
  p.mode = sp::plan_mode_from_name(mode);
  p.block_size = block_size;
  p.gamma = gamma;
  p.tau_sim = tau_sim;
  p.tau_fb = tau_fb;
  p.tau_qa = tau_qa;
  p.min_budget = min_budget;
  p.max_budget = max_budget;
  p.share_within_layer = share_within_layer;
  p.pivot_is_medoid = pivot_is_medoid;
  p.gate_bins = gate_bins;
  p.exact_last_row = exact_last_row;
  p.last_row_gamma = last_row_gamma;
  if (map) s->map = map->map;
  sp::check(p.mode != sp::plan_mode::shareprefill || s->map, "shareprefill.Planner",
            "shareprefill mode needs a cluster map (Planner(ClusterMap.load(path)), or choose "
            "mode dense, vslash or flexprefill)");
  // The map's dense layers, dense heads (format 2) and per-head gammas (format 3) are the
  // default, as in the CLI; an explicit list of dense layers (even []) replaces them all.
  p.dense_layers =
      dense_layers ? *dense_layers : (s->map ? s->map->dense_layers : std::vector<int64_t>{});
  if (!dense_layers && s->map)
    for (const sp::head_ref& r : s->map->dense_heads) p.dense_heads.emplace_back(r.layer, r.head);
  if (!dense_layers && s->map)
    for (const sp::head_threshold& g : s->map->head_gammas)
      p.head_gammas.push_back(sp::head_gamma{g.head.layer, g.head.head, g.gamma});
  // More dense heads (a thresholds entry's, format 6): on top of the map's, as the CLI adds them.
  sp::length_thresholds more;  // with_thresholds takes them in any order, repeats included
  more.dense_heads = dense_heads;
  p = sp::with_thresholds(p, more);
  p.validate();
  s->layers = layers ? *layers : (map ? map->layers() : layers_without_map);
  sp::check(s->layers > 0, "shareprefill.Planner", "layers must be positive, got ", s->layers);
  for (const auto& [layer, head] : dense_heads)
    sp::check(layer >= 0 && layer < s->layers && head >= 0, "shareprefill.Planner",
              "dense_heads: (", layer, ", ", head, ") is outside the model's ", s->layers,
              " layers");
  return s;
}

nb::ndarray<nb::numpy, uint8_t> plan_block_mask(const py_plan& p) {
  const sp::block_mask& m = p.plan.mask;
  const int64_t nb_ = m.n_blocks, heads = m.heads;
  auto* dense = new uint8_t[static_cast<size_t>(heads * nb_ * nb_)]();  // [H, nb, nb]
  for (int64_t h = 0; h < heads; ++h) {
    const sp::block_mask& mh =
        p.has_deferred &&
                std::find(p.deferred.deferred_heads.begin(), p.deferred.deferred_heads.end(),
                          static_cast<int32_t>(h)) != p.deferred.deferred_heads.end()
            ? p.deferred.mask
            : m;
    for (int64_t r = 0; r < nb_; ++r)
      for (int64_t i = mh.row_begin(h, r); i < mh.row_end(h, r); ++i)
        dense[(h * nb_ + r) * nb_ + mh.col_idx[static_cast<size_t>(i)]] = 1;
  }
  nb::capsule owner(dense, [](void* d) noexcept { delete[] static_cast<uint8_t*>(d); });
  return nb::ndarray<nb::numpy, uint8_t>(
      dense, {static_cast<size_t>(heads), static_cast<size_t>(nb_), static_cast<size_t>(nb_)},
      owner);
}

template <class T>
nb::ndarray<nb::numpy, T> copy_to_numpy(const std::vector<T>& values) {
  auto* owned = new std::vector<T>(values);
  nb::capsule owner(owned, [](void* v) noexcept { delete static_cast<std::vector<T>*>(v); });
  return nb::ndarray<nb::numpy, T>(owned->data(), {owned->size()}, owner);
}

std::vector<std::string> plan_kinds(const py_plan& p) {
  const std::vector<sp::head_kind>& kinds = p.has_deferred ? p.deferred.kinds : p.plan.kinds;
  std::vector<std::string> names;
  for (sp::head_kind k : kinds) names.push_back(sp::head_kind_name(k));
  return names;
}

// Planner.prefill_layer: plan, attention and publish of one layer on the CPU, the queries being
// the prompt's tokens or a chunk's (the last q rows of the k rows so far).
py_plan prefill_layer_cpu(planner_handle& h, int64_t layer, const output_array& out,
                          const input_array& q, const input_array& k, const input_array& v) {
  const char* fn = "shareprefill.Planner.prefill_layer";
  const cpu_problem p = cpu_problem_of(fn, out, std::nullopt, q, k, v);
  planner_session& s = *h.session;
  const int64_t start = p.k.shape[0] - p.q.shape[0], bs = s.params.block_size;
  sp::check(start >= 0 && start % bs == 0, fn, "q has ", p.q.shape[0], " tokens and k ",
            p.k.shape[0], ": the chunk would start at token ", start,
            ", not a non-negative multiple of the block size ", bs);
  // A carried state (begin_chunk(n, carried=True)) knows its chunk; a fresh one (chunk_start 0)
  // takes any start.
  sp::check(s.state.chunk_start == 0 || s.state.chunk_start == start, fn,
            "the state was moved to the chunk starting at token ", s.state.chunk_start,
            ", q starts at ", start);
  py_plan r;
  {
    nb::gil_scoped_release release;
    cpu_pool_lease lease;
    const sp::planner& pl = s.planner_for(p.q.shape[1]);
    sp::planned_layer done =
        sp::attend_planned_layer(pl, s.state, layer, p.out, p.q, p.k, p.v, lease.pool(), start);
    r.plan = std::move(done.plan);
    r.has_deferred = done.has_deferred;
    r.deferred = std::move(done.deferred);
  }
  r.published = true;
  return r;
}

// Planner.begin_chunk: the state for a chunk whose keys end at n_tokens (a fresh state takes its
// length from the chunk's first layer, as sp::prefill_layer_begin does on the host).
void begin_chunk_cpu(planner_handle& h, int64_t n_tokens, bool carried) {
  const char* fn = "shareprefill.Planner.begin_chunk";
  planner_session& s = *h.session;
  if (!carried) {
    s.state.reset();  // a fresh sharing state; the prompt goes on (prompt counter unchanged)
    return;
  }
  sp::check(s.planner != nullptr, fn,
            "a carried state needs a finished first chunk: no layer was planned yet");
  s.planner->begin_chunk(s.state, n_tokens);
}

int64_t plan_tiles(const py_plan& p) {
  return p.plan.mask.total_tiles() + (p.has_deferred ? p.deferred.mask.total_tiles() : 0);
}

}  // namespace

void bind_planner(nb::module_& m) {
  nb::class_<py_plan>(m, "Plan",
                      "One layer's block-sparse plan: per-head CSR tile lists over 128-token "
                      "blocks and the head kinds. Pass it to shareprefill.attention.")
      .def_static(
          "from_tiles",
          [](int64_t n_tokens, const std::vector<std::vector<std::pair<int32_t, int32_t>>>& tiles,
             int64_t block_size) {
            py_plan p;
            p.plan.mask = sp::block_mask::from_tiles(n_tokens, block_size, tiles);
            p.plan.kinds.assign(tiles.size(), sp::head_kind::dense);
            return p;
          },
          nb::arg("n_tokens"), nb::arg("tiles"), nb::arg("block_size") = 128,
          "A plan from explicit per-head (query block, key block) tile lists.")
      .def_static(
          "from_csr",
          [](int64_t n_tokens, int64_t heads,
             const nb::ndarray<nb::ro, const int64_t, nb::ndim<1>>& row_ptr,
             const nb::ndarray<nb::ro, const int32_t, nb::ndim<1>>& col_idx, int64_t block_size) {
            const auto* r = row_ptr.data();
            const auto* c = col_idx.data();
            // A length-0 or -1 array may export any stride (NumPy gives 0 for an empty one).
            sp::check((row_ptr.shape(0) <= 1 || row_ptr.stride(0) == 1) &&
                          (col_idx.shape(0) <= 1 || col_idx.stride(0) == 1),
                      "shareprefill.Plan.from_csr", "row_ptr and col_idx must be contiguous");
            py_plan p;
            p.plan.mask = sp::block_mask::from_csr(n_tokens, block_size, heads,
                                                   std::vector<int64_t>(r, r + row_ptr.shape(0)),
                                                   std::vector<int32_t>(c, c + col_idx.shape(0)));
            p.plan.kinds.assign(static_cast<size_t>(heads), sp::head_kind::dense);
            return p;
          },
          nb::arg("n_tokens"), nb::arg("heads"), nb::arg("row_ptr"), nb::arg("col_idx"),
          nb::arg("block_size") = 128,
          "A plan from a CSR block mask (block_mask.h): row_ptr [heads * (nb + 1)] int64 "
          "absolute offsets, col_idx [tiles] int32 ascending within a row (validated).")
      .def_static(
          "dense",
          [](int64_t n_tokens, int64_t heads, int64_t block_size) {
            py_plan p;
            p.plan.mask = sp::block_mask::dense_causal(n_tokens, block_size, heads);
            p.plan.kinds.assign(static_cast<size_t>(heads), sp::head_kind::dense);
            return p;
          },
          nb::arg("n_tokens"), nb::arg("heads"), nb::arg("block_size") = 128,
          "Every causal tile of every head.")
      .def_prop_ro("layer", [](const py_plan& p) { return p.plan.layer; })
      .def_prop_ro("n_tokens", [](const py_plan& p) { return p.plan.mask.n_tokens; })
      .def_prop_ro("heads", [](const py_plan& p) { return p.plan.mask.heads; })
      .def_prop_ro("block_size", [](const py_plan& p) { return p.plan.mask.block_size; })
      .def_prop_ro("n_blocks", [](const py_plan& p) { return p.plan.mask.n_blocks; })
      .def_prop_ro("kinds", &plan_kinds,
                   "Per head: dense, pivot, shared, query_aware, vertical_slash or deferred (a "
                   "head waiting for a pivot of its own layer until the plan has run).")
      .def_prop_ro("pivot_heads", [](const py_plan& p) { return p.plan.pivot_heads; })
      .def_prop_ro("deferred_heads", [](const py_plan& p) { return p.plan.deferred_heads; })
      .def_prop_ro(
          "published", [](const py_plan& p) { return p.published; },
          "True once an attention call has published this layer into its planner.")
      .def_prop_ro("tiles", &plan_tiles, "Visited tiles over all heads.")
      .def_prop_ro(
          "density",
          [](const py_plan& p) {
            const int64_t causal = p.plan.mask.heads * sp::causal_tile_count(p.plan.mask.n_blocks);
            return causal ? double(plan_tiles(p)) / double(causal) : 0.0;
          },
          "Visited tiles / causal tiles.")
      .def(
          "csr",
          [](const py_plan& p) {
            sp::check(!p.has_deferred, "shareprefill.Plan.csr",
                      "a plan with deferred heads has two masks; run it through attention");
            const sp::block_mask& mask = p.plan.mask;
            return std::make_pair(copy_to_numpy(mask.row_ptr), copy_to_numpy(mask.col_idx));
          },
          "(row_ptr int64 [heads * (n_blocks + 1)], col_idx int32 [tiles]): the CSR block mask "
          "as NumPy copies, e.g. for torch.ops.shareprefill.attention_block_sparse.")
      .def("block_mask", &plan_block_mask,
           "The visited tiles as a uint8 NumPy array [heads, n_blocks, n_blocks] (a copy).")
      .def("__repr__", [](const py_plan& p) {
        return sp::str("Plan(layer=", p.plan.layer, ", n_tokens=", p.plan.mask.n_tokens,
                       ", heads=", p.plan.mask.heads, ", tiles=", plan_tiles(p), ")");
      });

  nb::class_<planner_handle>(m, "Planner", nb::dynamic_attr(),
                             "The SharePrefill planner with its per-prompt state. Call reset() "
                             "at each new prompt, then plan_layer() for layers in increasing "
                             "order, running each plan through shareprefill.attention before "
                             "planning the next layer.")
      .def(
          "__init__",
          [](planner_handle* self, std::optional<cluster_map_handle> map, const std::string& mode,
             std::optional<int64_t> layers, int64_t block_size, double gamma, double tau_sim,
             double tau_fb, double tau_qa, int64_t min_budget, int64_t max_budget,
             bool share_within_layer, bool pivot_is_medoid, int64_t gate_bins, bool exact_last_row,
             double last_row_gamma, std::optional<std::vector<int64_t>> dense_layers,
             std::vector<std::pair<int64_t, int64_t>> dense_heads) {
            new (self) planner_handle{make_session(
                std::move(map), mode, layers, block_size, gamma, tau_sim, tau_fb, tau_qa,
                min_budget, max_budget, share_within_layer, pivot_is_medoid, gate_bins,
                exact_last_row, last_row_gamma, std::move(dense_layers), std::move(dense_heads))};
          },
          nb::arg("cluster_map") = nb::none(), nb::arg("mode") = "shareprefill", nb::kw_only(),
          nb::arg("layers") = nb::none(), nb::arg("block_size") = 128, nb::arg("gamma") = 0.95,
          nb::arg("tau_sim") = 0.5, nb::arg("tau_fb") = 0.95, nb::arg("tau_qa") = 0.1,
          nb::arg("min_budget") = 1024, nb::arg("max_budget") = 0,
          nb::arg("share_within_layer") = false, nb::arg("pivot_is_medoid") = false,
          nb::arg("gate_bins") = 0, nb::arg("exact_last_row") = false,
          nb::arg("last_row_gamma") = 0.0, nb::arg("dense_layers") = nb::none(),
          nb::arg("dense_heads") = std::vector<std::pair<int64_t, int64_t>>{})
      .def(
          "reset",
          [](planner_handle& h) {
            h.session->state.reset();
            ++h.session->prompt;
          },
          "Forgets the current prompt (pivots, patterns): call before each new prompt.")
      .def_prop_ro(
          "mode",
          [](const planner_handle& h) { return sp::plan_mode_name(h.session->params.mode); })
      .def_prop_ro("layers", [](const planner_handle& h) { return h.session->layers; })
      .def_prop_ro(
          "prompt", [](const planner_handle& h) { return h.session->prompt; },
          "Counts reset() calls (a new prompt each).")
      .def_prop_ro("params",
                   [](const planner_handle& h) {
                     return python_from_json_text(h.session->params.to_json().dump());
                   })
      .def_prop_ro("cluster_map",
                   [](const planner_handle& h) -> std::optional<cluster_map_handle> {
                     if (!h.session->map) return std::nullopt;
                     return cluster_map_handle{h.session->map};
                   })
      .def(
          "plan_layer",
          [](planner_handle& h, int64_t layer, const input_array& q, const input_array& k) {
            planner_session& s = *h.session;
            const array_info qi = view_input(plan_fn, "q", q, 3);
            const array_info ki = view_input(plan_fn, "k", k, 3);
            require_same_device(plan_fn, "q", qi, "k", ki);
            sp::check(qi.device == array_device::cpu, plan_fn,
                      "q and k are on a CUDA device; Planner.plan_layer plans on the CPU (pass "
                      "q.cpu(), k.cpu()); the GPU plans with shareprefill.torch_ops.CudaPrefill");
            require_contiguous(plan_fn, "q", qi);
            require_contiguous(plan_fn, "k", ki);
            py_plan p;
            {
              nb::gil_scoped_release release;
              cpu_pool_lease lease;
              const sp::planner& pl = s.planner_for(qi.view.shape[1]);
              p.plan = pl.plan(layer, qi.view, ki.view, s.state, lease.pool());
            }
            p.session = h.session;
            p.prompt = s.prompt;
            return p;
          },
          nb::arg("layer"), nb::arg("q"), nb::arg("k"),
          "Plans one layer. q: [N, H, D], k: [N, Hkv, D] (float32, float16 or bfloat16, "
          "C-contiguous).")
      .def("prefill_layer", &prefill_layer_cpu, nb::arg("layer"), nb::arg("out"), nb::arg("q"),
           nb::arg("k"), nb::arg("v"),
           "Plans, attends and publishes one layer on the CPU (sp::attend_planned_layer): out "
           "[n, H, D] float32 from q [n, H, D] over k and v [N, Hkv, D], all C-contiguous CPU "
           "arrays. n < N: a chunk of a prompt, the queries N - n .. N - 1 (a multiple of the "
           "block size) over the keys so far. Returns the layer's Plan (already published).")
      .def("begin_chunk", &begin_chunk_cpu, nb::arg("n_tokens"), nb::arg("carried"),
           "Prepares the state for the chunk whose keys end at n_tokens: carried=False clears it "
           "(a fresh sharing state per chunk, sized by its first layer; the prompt counter "
           "unchanged), carried=True moves "
           "it on from the finished previous chunk (sp::planner::begin_chunk: pivots kept, their "
           "patterns extended; its errors for an unfinished chunk or a bad end).");
}

}  // namespace sp_python
