// cuda_gemm: bf16 GEMMs y = x @ w^T through cuBLASLt with fp32 accumulation. Row-major
// y[m, n] = x[m, k] @ w[n, k]^T is the column-major product y^T = op_T(w) @ x, so w is the
// transposed A operand (k x n, ld k), x the plain B operand (k x m, ld k) and y the n x m result
// (ld n). The matmul descriptor, layouts and the algorithm cuBLASLt's heuristic picks are made
// once per (shape, output type, accumulate, pointer alignment) and cached; the workspace is
// allocated in the constructor. Calls are asynchronous on the caller's stream.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <tuple>

#include "cuda_check.h"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace {

void check_lt(cublasStatus_t status, const char* fn, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail(fn, what, ": ", cublasLtGetStatusString(status), " (cublasStatus ",
         static_cast<int>(status), ")");
}

// Largest power of two (up to 256) dividing the address: cuBLASLt picks algorithms by it.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align >>= 1;
  return align;
}

}  // namespace

struct cuda_gemm::impl {
  // (m, n, k, y is f32, accumulate, alignments of x, w, y)
  using key = std::tuple<int64_t, int64_t, int64_t, bool, bool, uint32_t, uint32_t, uint32_t>;
  struct plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };

  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::map<key, plan> plans;

  static void destroy(plan& p) {
    if (p.a != nullptr) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b != nullptr) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c != nullptr) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc != nullptr) cublasLtMatmulDescDestroy(p.desc);
  }

  ~impl() {
    for (auto& kv : plans) destroy(kv.second);
    if (workspace != nullptr) cudaFree(workspace);
    if (handle != nullptr) cublasLtDestroy(handle);
  }

  const plan& plan_for(const key& k) {
    const auto found = plans.find(k);
    if (found != plans.end()) return found->second;
    plan slot;
    try {
      make_plan(slot, k);
    } catch (...) {
      destroy(slot);
      throw;
    }
    return plans.emplace(k, slot).first->second;
  }

  void make_plan(plan& slot, const key& k) {
    const char* fn = "cuda_gemm::linear";
    const auto [m, n, kk, y_f32, accumulate, align_x, align_w, align_y] = k;
    check_lt(cublasLtMatmulDescCreate(&slot.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), fn,
             "cublasLtMatmulDescCreate");
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(slot.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                            sizeof(trans_a)),
             fn, "TRANSA");
    check_lt(cublasLtMatmulDescSetAttribute(slot.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                            sizeof(trans_b)),
             fn, "TRANSB");
    const cudaDataType_t y_type = y_f32 ? CUDA_R_32F : CUDA_R_16BF;
    check_lt(cublasLtMatrixLayoutCreate(&slot.a, CUDA_R_16BF, static_cast<uint64_t>(kk),
                                        static_cast<uint64_t>(n), kk),
             fn, "layout of w");
    check_lt(cublasLtMatrixLayoutCreate(&slot.b, CUDA_R_16BF, static_cast<uint64_t>(kk),
                                        static_cast<uint64_t>(m), kk),
             fn, "layout of x");
    check_lt(cublasLtMatrixLayoutCreate(&slot.c, y_type, static_cast<uint64_t>(n),
                                        static_cast<uint64_t>(m), n),
             fn, "layout of y");
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), fn, "cublasLtMatmulPreferenceCreate");
    const uint64_t ws = workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                         &align_w, sizeof(align_w));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                         &align_x, sizeof(align_x));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                         &align_y, sizeof(align_y));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                         &align_y, sizeof(align_y));
    cublasLtMatmulHeuristicResult_t result{};
    int found_count = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
        handle, slot.desc, slot.a, slot.b, slot.c, slot.c, pref, 1, &result, &found_count);
    cublasLtMatmulPreferenceDestroy(pref);
    check_lt(status, fn, "cublasLtMatmulAlgoGetHeuristic");
    check(found_count > 0, fn, "cuBLASLt has no algorithm for m=", m, " n=", n, " k=", kk,
          " (", y_f32 ? "f32" : "bf16", " output", accumulate ? ", accumulate" : "", ")");
    slot.algo = result.algo;
  }
};

cuda_gemm::cuda_gemm(size_t workspace_bytes) : impl_(std::make_unique<impl>()) {
  const char* fn = "cuda_gemm";
  check_lt(cublasLtCreate(&impl_->handle), fn, "cublasLtCreate");
  impl_->workspace_bytes = workspace_bytes;
  if (workspace_bytes > 0)
    cuda::check_cuda(cudaMalloc(&impl_->workspace, workspace_bytes), fn,
                     str("cudaMalloc of the ", workspace_bytes, "-byte workspace").c_str());
}

cuda_gemm::~cuda_gemm() = default;

void cuda_gemm::linear(void* y, dtype y_type, const uint16_t* x, const uint16_t* w, int64_t m,
                       int64_t n, int64_t k, bool accumulate, void* stream) {
  const char* fn = "cuda_gemm::linear";
  check(y_type == dtype::bf16 || y_type == dtype::f32, fn, "output dtype ", dtype_name(y_type),
        " (bf16 or f32 expected)");
  check(!accumulate || y_type == dtype::f32, fn, "accumulate needs an f32 output");
  check(m > 0 && n > 0 && k > 0, fn, "empty or negative shape m=", m, " n=", n, " k=", k);
  check(y != nullptr && x != nullptr && w != nullptr, fn, "null pointer");
  const uint32_t ax = alignment_of(x), aw = alignment_of(w), ay = alignment_of(y);
  check(ax >= 16 && aw >= 16 && ay >= 16, fn, "pointers must be 16-byte aligned (x: ", ax,
        ", w: ", aw, ", y: ", ay, ")");
  const impl::plan& p =
      impl_->plan_for({m, n, k, y_type == dtype::f32, accumulate, ax, aw, ay});
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  check_lt(cublasLtMatmul(impl_->handle, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c,
                          &p.algo, impl_->workspace, impl_->workspace_bytes,
                          static_cast<cudaStream_t>(stream)),
           fn, "cublasLtMatmul");
}

}  // namespace sp
