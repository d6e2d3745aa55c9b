// Builds without CUDA (SP_CUDA=OFF): the CUDA merge exists so callers compile everywhere.
#include "shareprefill/error.h"
#include "shareprefill/merge_attention.h"

namespace sp {

void cuda_merge_attention_states(const tensor_view&, const tensor_view&, const tensor_view&,
                                 const tensor_view&, const tensor_view&, const tensor_view&,
                                 void*) {
  fail("cuda_merge_attention_states", "built without CUDA");
}

}  // namespace sp
