// shareprefill._core.synthetic_layer / synthetic_cluster_map: the seeded structured inputs of
// synthetic.h (local window, sink, vertical columns, head groups), for tests and examples.
#include <nanobind/ndarray.h>
#include <nanobind/stl/tuple.h>

#include <utility>
#include <vector>

#include "bindings.h"
#include "cluster_map_handle.h"
#include "shareprefill/synthetic.h"

namespace sp_python {
namespace {

using numpy_f32 = nb::ndarray<nb::numpy, float>;

// Moves `values` into a NumPy array of `shape` that owns them.
numpy_f32 to_numpy(std::vector<float>&& values, std::initializer_list<size_t> shape) {
  auto* owned = new std::vector<float>(std::move(values));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
  return numpy_f32(owned->data(), shape, owner);
}

sp::synthetic_params params_of(int64_t n_tokens, int64_t layers, int64_t heads, int64_t kv_heads,
                               int64_t dim, int64_t groups, uint64_t seed) {
  sp::synthetic_params p;
  p.n_tokens = n_tokens;
  p.layers = layers;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.dim = dim;
  p.groups = groups;
  p.seed = seed;
  p.validate();
  return p;
}

}  // namespace

void bind_synthetic(nb::module_& m) {
  m.def(
      "synthetic_layer",
      [](int64_t layer, int64_t n_tokens, int64_t layers, int64_t heads, int64_t kv_heads,
         int64_t dim, int64_t groups, uint64_t seed) {
        const sp::synthetic_params p =
            params_of(n_tokens, layers, heads, kv_heads, dim, groups, seed);
        sp::synthetic_layer l;
        {
          nb::gil_scoped_release release;
          l = sp::synthetic_generate_layer(p, layer);
        }
        const auto n = static_cast<size_t>(n_tokens), h = static_cast<size_t>(heads),
                   hkv = static_cast<size_t>(kv_heads), d = static_cast<size_t>(dim);
        return std::make_tuple(to_numpy(std::move(l.q), {n, h, d}),
                               to_numpy(std::move(l.k), {n, hkv, d}),
                               to_numpy(std::move(l.v), {n, hkv, d}));
      },
      nb::arg("layer"), nb::arg("n_tokens"), nb::arg("layers"), nb::arg("heads"),
      nb::arg("kv_heads"), nb::arg("dim"), nb::arg("groups") = 0, nb::arg("seed") = 1,
      "(q [N, H, D], k [N, Hkv, D], v [N, Hkv, D]) float32 of one synthetic layer.");
  m.def(
      "synthetic_cluster_map",
      [](int64_t n_tokens, int64_t layers, int64_t heads, int64_t kv_heads, int64_t dim,
         int64_t groups, uint64_t seed) {
        return cluster_map_handle{std::make_shared<const sp::cluster_map>(sp::synthetic_cluster_map(
            params_of(n_tokens, layers, heads, kv_heads, dim, groups, seed)))};
      },
      nb::arg("n_tokens"), nb::arg("layers"), nb::arg("heads"), nb::arg("kv_heads"), nb::arg("dim"),
      nb::arg("groups") = 0, nb::arg("seed") = 1,
      "The synthetic head groups as a ClusterMap (every group shared).");
}

}  // namespace sp_python
