// The extension module shareprefill._core: C++ errors (sp::error) become shareprefill.Error
// with the C++ message; the rest is bound by the bind_* functions of bindings.h.
#include <nanobind/nanobind.h>

#include "bindings.h"
#include "shareprefill/error.h"

NB_MODULE(_core, m) {
  namespace nb = nanobind;
  m.doc() = "shareprefill C++ core: planner, CPU and CUDA attention (see the shareprefill package)";
  nb::exception<sp::error>(m, "Error", PyExc_RuntimeError);
  sp_python::bind_build_info(m);
  sp_python::bind_cluster_map(m);
  sp_python::bind_planner(m);
  sp_python::bind_attention(m);
  sp_python::bind_varlen(m);
  sp_python::bind_merge(m);
  sp_python::bind_synthetic(m);
  sp_python::bind_cuda(m);
  sp_python::bind_model(m);
}
