// shareprefill.version() and shareprefill.build_info(): what this extension was built with.
#include "bindings.h"
#include "shareprefill/cuda_attention.h"

namespace sp_python {

void bind_build_info(nb::module_& m) {
  m.def(
      "version", [] { return SP_VERSION; }, "The shareprefill version (CMake project version).");
  m.def(
      "build_info",
      [] {
        nb::dict d;
        d["version"] = SP_VERSION;
        d["compiler"] = SP_COMPILER;
#ifdef SP_PYTHON_CUDA
        d["cuda"] = true;
        d["cuda_architectures"] = SP_CUDA_ARCHITECTURES;
#else
        d["cuda"] = false;
        d["cuda_architectures"] = "";
#endif
#ifdef SP_PYTHON_OPENBLAS
        d["openblas"] = true;
#else
        d["openblas"] = false;
#endif
        d["cuda_device_available"] = sp::cuda_device_available();
        return d;
      },
      "A dict: version, compiler, cuda (built with CUDA), cuda_architectures, openblas, "
      "cuda_device_available (a device of compute capability >= 8.0 is usable now).");
}

}  // namespace sp_python
