// Builds without CUDA (SP_CUDA=OFF): the model ops of cuda_model_ops.h exist so callers compile
// everywhere; each throws "[fn] built without CUDA".
#include "shareprefill/cuda_model_ops.h"
#include "shareprefill/error.h"

namespace sp {

bool cuda_dequantize_supported(ggml_type) { return false; }

void cuda_dequantize_to_bf16(uint16_t*, const void*, ggml_type, int64_t, void*) {
  fail("cuda_dequantize_to_bf16", "built without CUDA");
}

struct cuda_gemm::impl {};

cuda_gemm::cuda_gemm(size_t) { fail("cuda_gemm", "built without CUDA"); }
cuda_gemm::~cuda_gemm() = default;
void cuda_gemm::linear(void*, dtype, const uint16_t*, const uint16_t*, int64_t, int64_t, int64_t,
                       bool, void*) {
  fail("cuda_gemm::linear", "built without CUDA");
}
gemm_tuning cuda_gemm::tune(const void*, dtype, const uint16_t*, const uint16_t*, int64_t, int64_t,
                            int64_t, bool, int) {
  fail("cuda_gemm::tune", "built without CUDA");
}
void cuda_gemm::forget_tuning() { fail("cuda_gemm::forget_tuning", "built without CUDA"); }

void cuda_rms_norm(uint16_t*, const void*, dtype, const float*, const int64_t*, int64_t, int64_t,
                   double, void*, bool) {
  fail("cuda_rms_norm", "built without CUDA");
}

void cuda_embedding_gather(float*, const uint16_t*, const int32_t*, int64_t, int64_t, int64_t,
                           void*) {
  fail("cuda_embedding_gather", "built without CUDA");
}

void cuda_residual_add(float*, const void*, dtype, int64_t, void*) {
  fail("cuda_residual_add", "built without CUDA");
}

void cuda_swiglu(uint16_t*, int64_t, const uint16_t*, const uint16_t*, int64_t, int64_t, int64_t,
                 void*, bool) {
  fail("cuda_swiglu", "built without CUDA");
}

void cuda_rope_angles(float*, int64_t, int64_t, const float*, int64_t, float, void*) {
  fail("cuda_rope_angles", "built without CUDA");
}
void cuda_rope_apply(const cuda_rope_params&, void*) { fail("cuda_rope_apply", "built without CUDA"); }

void cuda_logits_of_rows(float*, uint16_t*, const float*, const int64_t*, int64_t, const float*,
                         const uint16_t*, int64_t, int64_t, double, cuda_gemm&, void*,
                         bool) {
  fail("cuda_logits_of_rows", "built without CUDA");
}

cuda_kv_cache::cuda_kv_cache(int64_t, int64_t, int64_t, int64_t) {
  fail("cuda_kv_cache", "built without CUDA");
}
cuda_kv_cache::~cuda_kv_cache() = default;
size_t cuda_kv_cache::bytes() const { return 0; }
uint16_t* cuda_kv_cache::k(int64_t) const { fail("cuda_kv_cache::k", "built without CUDA"); }
uint16_t* cuda_kv_cache::v(int64_t) const {
  fail("cuda_kv_cache::v", "built without CUDA");
}

size_t cuda_decode_workspace_bytes(int64_t, int64_t, int64_t, int64_t, int64_t) {
  fail("cuda_decode_workspace_bytes", "built without CUDA");
}
int64_t cuda_decode_chunk(int64_t, int64_t) { fail("cuda_decode_chunk", "built without CUDA"); }
void cuda_decode_attention(const cuda_decode_params&, void*) {
  fail("cuda_decode_attention", "built without CUDA");
}
void cuda_argmax(int32_t*, const float*, int64_t, void*) { fail("cuda_argmax", "built without CUDA"); }

}  // namespace sp
