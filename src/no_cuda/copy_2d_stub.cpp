// Builds without CUDA (SP_CUDA=OFF): cuda_copy_2d exists so callers compile everywhere.
#include "shareprefill/cuda_copy.h"
#include "shareprefill/error.h"

namespace sp {

void cuda_copy_2d(void*, int64_t, const void*, int64_t, int64_t, int64_t, void*) {
  fail("cuda_copy_2d", "built without CUDA");
}

}  // namespace sp
