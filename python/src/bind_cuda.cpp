// CUDA attention from Python (bound once the CUDA attention API takes tensor views).
#include "bindings.h"

namespace sp_python {

void bind_cuda(nb::module_& m) {}

}  // namespace sp_python
