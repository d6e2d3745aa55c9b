// Turns CUDA runtime errors into sp::error, named after the library function that hit them.
#pragma once

#include <cuda_runtime.h>

#include "shareprefill/error.h"

namespace sp::cuda {

inline void check_cuda(cudaError_t status, const char* fn, const char* what) {
  if (status != cudaSuccess) fail(fn, what, ": ", cudaGetErrorString(status));
}

}  // namespace sp::cuda
