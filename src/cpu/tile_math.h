// Internal header of the CPU layer (src/cpu/, not installed): small row-major fp32 matrix
// products on one tile (OpenBLAS sgemm when the build found it, plain vectorisable loops
// otherwise) and a vectorisable exp. The CPU attention kernels and statistics use it on tiles;
// the CPU model (src/model/), the perplexity evaluation (src/eval/) and the attention bench
// (tools/cli/) use gemm_abt for whole matrices. All pointers are fp32, row-major with the given
// leading dimensions.
//
// BLAS threads: OpenBLAS keeps one process-wide thread count. Code that parallelises over tiles
// with sp::thread_pool wants single-threaded BLAS calls, code that multiplies whole matrices
// from one thread wants all threads; each states its need with a blas_thread_scope, which
// restores the previous count when it ends, so the callee's choice never leaks to the caller.
// Scopes nest; they are not meant to be opened concurrently from several threads.
#pragma once

#include <cstdint>

namespace sp::tile_math {

bool have_blas();

// Sets the BLAS thread count to `threads` (>= 1) for the lifetime of the object and restores
// the previous count in its destructor. Without BLAS it does nothing.
class blas_thread_scope {
 public:
  explicit blas_thread_scope(int threads);
  ~blas_thread_scope();
  blas_thread_scope(const blas_thread_scope&) = delete;
  blas_thread_scope& operator=(const blas_thread_scope&) = delete;

 private:
  int previous_ = 1;
};

// c[m, n] = alpha * a[m, k] * b[n, k]^T      (a: lda, b: ldb, c: ldc)
void gemm_abt(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb,
              int64_t m, int64_t n, int64_t k, float alpha);
// c[m, n] += a[m, k] * b[k, n]                (a: lda, b: ldb, c: ldc)
void gemm_ab_accumulate(float* c, int64_t ldc, const float* a, int64_t lda, const float* b,
                        int64_t ldb, int64_t m, int64_t n, int64_t k);

// x[i] = exp(x[i] - shift) for i < n; |relative error| < 2e-7 for arguments in [-87, 0],
// exactly 0 below -87 (including -inf), +inf above 88, NaN for NaN (inf - inf
// included).
void exp_shifted_inplace(float* x, int64_t n, float shift);

}  // namespace sp::tile_math
