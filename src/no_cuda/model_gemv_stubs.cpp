// Builds without CUDA (SP_CUDA=OFF): the decode GEMVs of cuda_model_ops.h exist so callers
// compile everywhere; each throws "[fn] built without CUDA".
#include "shareprefill/cuda_model_ops.h"
#include "shareprefill/error.h"

namespace sp {

void cuda_rms_norm_gemv(void*, dtype, const float*, const float*, const uint16_t*, int64_t, int64_t,
                        double, void*, bool) {
  fail("cuda_rms_norm_gemv", "built without CUDA");
}

void cuda_swiglu_gemv_residual(float*, const uint16_t*, const uint16_t*, const uint16_t*, int64_t,
                               int64_t, void*, bool) {
  fail("cuda_swiglu_gemv_residual", "built without CUDA");
}

void cuda_gemv_residual(float*, const uint16_t*, const uint16_t*, int64_t, int64_t, void*, bool) {
  fail("cuda_gemv_residual", "built without CUDA");
}

}  // namespace sp
