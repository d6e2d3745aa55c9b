// shareprefill.ClusterMap: the offline cluster map (DESIGN.md section 3), loaded and validated
// by the C++ library (sp::cluster_map_load), read-only from Python.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.h"
#include "cluster_map_handle.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/error.h"

namespace sp_python {

nb::object python_from_json_text(const std::string& text) {
  return nb::module_::import_("json").attr("loads")(nb::str(text.c_str(), text.size()));
}

namespace {

// One "thresholds" entry as {from_tokens, and the settings it makes} (keys named as Planner's).
nb::dict thresholds_dict(const sp::length_thresholds& t) {
  nb::dict d;
  d["from_tokens"] = t.from_tokens;
  if (t.tau_sim) d["tau_sim"] = *t.tau_sim;
  if (t.tau_qa) d["tau_qa"] = *t.tau_qa;
  if (t.min_budget) d["min_budget"] = *t.min_budget;
  if (t.pivot_is_medoid) d["pivot_is_medoid"] = *t.pivot_is_medoid;
  if (!t.dense_heads.empty()) d["dense_heads"] = t.dense_heads;  // [(layer, head), ...]
  if (t.exact_last_row) d["exact_last_row"] = *t.exact_last_row;
  if (t.last_row_gamma) d["last_row_gamma"] = *t.last_row_gamma;
  return d;
}

}  // namespace

void bind_cluster_map(nb::module_& m) {
  nb::class_<cluster_map_handle>(
      m, "ClusterMap", "A cluster map: clusters of (layer, head) pairs and the shared ones.")
      .def_static(
          "load",
          [](const std::string& path) {
            cluster_map_handle h;
            nb::gil_scoped_release release;
            h.map = std::make_shared<const sp::cluster_map>(sp::cluster_map_load(path));
            return h;
          },
          nb::arg("path"), "Loads a cluster map JSON file (ours or the reference's format).")
      .def_static(
          "from_json",
          [](const std::string& text, const std::string& source) {
            nlohmann::json j;
            try {
              j = nlohmann::json::parse(text);
            } catch (const nlohmann::json::exception& e) {
              sp::fail("shareprefill.ClusterMap.from_json", source, ": ", e.what());
            }
            cluster_map_handle h;
            h.map = std::make_shared<const sp::cluster_map>(sp::cluster_map_from_json(j, source));
            return h;
          },
          nb::arg("text"), nb::arg("source") = "<string>", "Parses a cluster map from JSON text.")
      .def_prop_ro("source", [](const cluster_map_handle& h) { return h.map->source; })
      .def_prop_ro("model",
                   [](const cluster_map_handle& h) -> nb::object {
                     if (!h.map->model) return nb::none();
                     const sp::cluster_model_info& i = *h.map->model;
                     nb::dict d;
                     d["name"] = i.name;
                     d["layers"] = i.layers;
                     d["heads"] = i.heads;
                     d["kv_heads"] = i.kv_heads;
                     d["head_dim"] = i.head_dim;
                     return d;
                   })
      .def_prop_ro(
          "clusters",
          [](const cluster_map_handle& h) {
            nb::dict d;
            for (const sp::head_cluster& c : h.map->clusters) {
              nb::list members;
              for (const sp::head_ref& r : c.members)
                members.append(nb::make_tuple(r.layer, r.head));
              d[c.id.c_str()] = members;
            }
            return d;
          },
          "{cluster id: [(layer, head), ...]} in file order")
      .def_prop_ro("shared_clusters",
                   [](const cluster_map_handle& h) {
                     std::vector<std::string> ids;
                     for (const sp::head_cluster& c : h.map->clusters)
                       if (c.shared) ids.push_back(c.id);
                     return ids;
                   })
      .def_prop_ro("dense_layers", [](const cluster_map_handle& h) { return h.map->dense_layers; })
      .def_prop_ro(
          "dense_heads",
          [](const cluster_map_handle& h) {
            std::vector<std::pair<int32_t, int32_t>> heads;
            for (const sp::head_ref& r : h.map->dense_heads) heads.emplace_back(r.layer, r.head);
            return heads;
          },
          "[(layer, head), ...] the sparse modes run dense (format-2 maps; else empty)")
      .def_prop_ro(
          "thresholds",
          [](const cluster_map_handle& h) {
            nb::list entries;
            for (const sp::length_thresholds& t : h.map->thresholds)
              entries.append(thresholds_dict(t));
            return entries;
          },
          "[{from_tokens, tau_sim?, tau_qa?, min_budget?, pivot_is_medoid?, dense_heads?, "
          "exact_last_row?, last_row_gamma?}, ...] planner settings by prompt length, ascending "
          "(format 4-7 maps; else empty); dense_heads: more heads to run dense at those lengths "
          "(format 6); exact_last_row, last_row_gamma: the last query block planned from its "
          "measured attention, and the mass it covers (format 7)")
      .def(
          "thresholds_for",
          [](const cluster_map_handle& h, int64_t tokens) -> nb::object {
            const sp::length_thresholds* t = sp::thresholds_for_length(h.map->thresholds, tokens);
            return t == nullptr ? nb::none() : nb::object(thresholds_dict(*t));
          },
          nb::arg("tokens"),
          "The thresholds entry for a prompt of `tokens` tokens (the last with from_tokens <= "
          "tokens), or None when the map has none.")
      .def_prop_ro(
          "layers", [](const cluster_map_handle& h) { return h.layers(); },
          "Layers the map covers (its model block, else the largest layer index + 1).")
      .def(
          "validate",
          [](const cluster_map_handle& h, int64_t layers, int64_t heads) {
            h.map->validate(layers, heads);
          },
          nb::arg("layers"), nb::arg("heads"),
          "Raises shareprefill.Error unless the map covers layers x heads exactly.")
      .def("to_json",
           [](const cluster_map_handle& h) {
             return python_from_json_text(sp::cluster_map_to_json(*h.map).dump());
           })
      .def("__len__", [](const cluster_map_handle& h) { return h.map->clusters.size(); })
      .def("__repr__", [](const cluster_map_handle& h) {
        return "ClusterMap('" + h.map->source + "', " + std::to_string(h.map->clusters.size()) +
               " clusters, " + std::to_string(h.layers()) + " layers)";
      });
}

}  // namespace sp_python
