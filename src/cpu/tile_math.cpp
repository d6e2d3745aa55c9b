// Tile-sized matrix products and exp for the CPU attention kernels.
#include "tile_math.h"

#include <cmath>
#include <cstring>
#include <limits>

#ifdef SP_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace sp::tile_math {

#ifdef SP_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);

bool have_blas() { return true; }

blas_thread_scope::blas_thread_scope(int threads) : previous_(openblas_get_num_threads()) {
  openblas_set_num_threads(threads);
}

blas_thread_scope::~blas_thread_scope() { openblas_set_num_threads(previous_); }

void gemm_abt(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb,
              int64_t m, int64_t n, int64_t k, float alpha) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), 0.0f,
              c, static_cast<int>(ldc));
}

void gemm_ab_accumulate(float* c, int64_t ldc, const float* a, int64_t lda, const float* b,
                        int64_t ldb, int64_t m, int64_t n, int64_t k) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb), 1.0f,
              c, static_cast<int>(ldc));
}
#else
bool have_blas() { return false; }

blas_thread_scope::blas_thread_scope(int) {}
blas_thread_scope::~blas_thread_scope() = default;

void gemm_abt(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb,
              int64_t m, int64_t n, int64_t k, float alpha) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float dot = 0.0f;
      for (int64_t e = 0; e < k; ++e) dot += a[i * lda + e] * b[j * ldb + e];
      c[i * ldc + j] = alpha * dot;
    }
}

void gemm_ab_accumulate(float* c, int64_t ldc, const float* a, int64_t lda, const float* b,
                        int64_t ldb, int64_t m, int64_t n, int64_t k) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t e = 0; e < k; ++e) {
      const float s = a[i * lda + e];
      if (s == 0.0f) continue;
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] += s * b[e * ldb + j];
    }
}
#endif

void exp_shifted_inplace(float* x, int64_t n, float shift) {
  // exp(t) = 2^i * exp(r), i = round(t / ln2), r = t - i*ln2 in [-ln2/2, ln2/2]; exp(r) by a
  // degree-6 Taylor polynomial (truncation error < 2e-8 relative). Written branch-free so the
  // compiler vectorises it. The polynomial and the exponent bits see t clamped to [-87, 88], so
  // i stays in [-126, 127] for every input (NaN, +-Inf and huge values included: no undefined
  // float-to-int conversion or shift); the selects at the end give 0 below -87, +Inf above 88
  // and NaN for NaN.
  constexpr float log2e = 1.44269504088896341f;
  constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860682030941723212e-6f;
  constexpr float lowest = -87.0f, highest = 88.0f;
  constexpr float inf = std::numeric_limits<float>::infinity();
  for (int64_t idx = 0; idx < n; ++idx) {
    const float t = x[idx] - shift;
    float tc = t > lowest ? t : lowest;  // NaN -> lowest
    tc = tc < highest ? tc : highest;
    const float fi = std::nearbyint(tc * log2e);
    const float r = (tc - fi * ln2_hi) - fi * ln2_lo;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(fi) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    float y = t < lowest ? 0.0f : p * scale;
    y = t > highest ? inf : y;
    x[idx] = t != t ? t : y;
  }
}

}  // namespace sp::tile_math
