// Private building blocks of the CPU block-sparse attention: small row-major matrix products on
// one tile (OpenBLAS sgemm when available, plain vectorisable loops otherwise) and a
// vectorisable exp. All pointers are fp32, row-major with the given leading dimensions.
#pragma once

#include <cstdint>

namespace sp::tile_math {

// Restricts BLAS to one thread: our thread pool already parallelises over tiles.
void use_single_threaded_blas();
// Lets BLAS use `threads` threads (for the sgemm rate measurement of the benchmark).
void set_blas_threads(int threads);
bool have_blas();

// c[m, n] = alpha * a[m, k] * b[n, k]^T      (a: lda, b: ldb, c: ldc)
void gemm_abt(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb,
              int64_t m, int64_t n, int64_t k, float alpha);
// c[m, n] += a[m, k] * b[k, n]                (a: lda, b: ldb, c: ldc)
void gemm_ab_accumulate(float* c, int64_t ldc, const float* a, int64_t lda, const float* b,
                        int64_t ldb, int64_t m, int64_t n, int64_t k);

// x[i] = exp(x[i] - shift) for i < n; |relative error| < 2e-7 for arguments in [-87, 0],
// exactly 0 below -87 (including -inf).
void exp_shifted_inplace(float* x, int64_t n, float shift);

}  // namespace sp::tile_math
