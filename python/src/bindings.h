// The parts of the extension module shareprefill._core, one function per concern.
#pragma once

#include <nanobind/nanobind.h>

#include <string>

namespace sp_python {

namespace nb = nanobind;

void bind_build_info(nb::module_& m);
void bind_cluster_map(nb::module_& m);
void bind_planner(nb::module_& m);
void bind_attention(nb::module_& m);
void bind_varlen(nb::module_& m);
void bind_merge(nb::module_& m);
void bind_synthetic(nb::module_& m);
void bind_cuda(nb::module_& m);
void bind_model(nb::module_& m);

// A JSON text as the Python object json.loads makes of it.
nb::object python_from_json_text(const std::string& text);

}  // namespace sp_python
