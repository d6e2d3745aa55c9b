// TMA tensor maps for the Hopper attention path, encoded through the driver entry point
// cuTensorMapEncodeTiled (looked up via the runtime, so nothing links libcuda directly).
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "hopper_params.h"
#include "shareprefill/error.h"

namespace sp::cuda {

namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_function() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult status{};
    check_cuda(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                                cudaEnableDefault, &status),
               "make_tensor_map", "cudaGetDriverEntryPointByVersion");
    check(status == cudaDriverEntryPointSuccess && f != nullptr, "make_tensor_map",
          "cuTensorMapEncodeTiled not found in the driver");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

}  // namespace

CUtensorMap make_tensor_map(const void* base, int64_t n, int64_t heads, int64_t dim,
                            int64_t token_stride, int box_rows) {
  CUtensorMap map{};
  const cuuint64_t sizes[3] = {static_cast<cuuint64_t>(dim), static_cast<cuuint64_t>(heads),
                               static_cast<cuuint64_t>(n)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(dim * 2),
                                 static_cast<cuuint64_t>(token_stride * 2)};
  const cuuint32_t box[3] = {64, 1, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult r = encode_function()(
      &map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 3, const_cast<void*>(base), sizes, strides, box,
      element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  check(r == CUDA_SUCCESS, "make_tensor_map", "cuTensorMapEncodeTiled failed with code ",
        static_cast<int>(r), " (n=", n, ", heads=", heads, ", dim=", dim, ", token_stride=",
        token_stride, ")");
  return map;
}

bool hopper_path_compiled() {
#ifdef SP_CUDA_HOPPER
  return true;
#else
  return false;
#endif
}

}  // namespace sp::cuda
