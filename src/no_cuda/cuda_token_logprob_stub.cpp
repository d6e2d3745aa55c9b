// Builds without CUDA (SP_CUDA=OFF): cuda_token_logprob exists so callers compile everywhere.
#include "shareprefill/cuda_token_logprob.h"
#include "shareprefill/error.h"

namespace sp {

void cuda_token_logprob(float*, const float*, const int32_t*, int64_t, int64_t, void*) {
  fail("cuda_token_logprob", "built without CUDA");
}

}  // namespace sp
