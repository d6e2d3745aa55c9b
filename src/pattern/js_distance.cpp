// Jensen-Shannon distance (DESIGN.md section 2): sqrt of the JS divergence with natural log,
// range [0, sqrt(ln 2)] for distributions, with 0 * ln 0 = 0 so zero entries are well defined
// (the reference computes p * log(p / m) and yields NaN for them, which silently fails gates).
#include <algorithm>
#include <cmath>
#include <vector>

#include "shareprefill/planner.h"

namespace sp {
namespace {

// The distance of two sequences of n non-negative values. T: float or double.
template <typename T>
double js_of(const T* p, const T* q, int64_t n) {
  double kl_p = 0.0, kl_q = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = p[i], b = q[i], m = 0.5 * (a + b);
    if (a > 0.0) kl_p += a * std::log(a / m);
    if (b > 0.0) kl_q += b * std::log(b / m);
  }
  return std::sqrt(std::max(0.0, 0.5 * kl_p + 0.5 * kl_q));
}

// x [n] summed into `bins` contiguous bins: bin b holds x[b*n/bins .. (b+1)*n/bins).
std::vector<double> pooled(const float* x, int64_t n, int64_t bins) {
  std::vector<double> out(static_cast<size_t>(bins), 0.0);
  for (int64_t b = 0; b < bins; ++b)
    for (int64_t i = b * n / bins; i < (b + 1) * n / bins; ++i) out[static_cast<size_t>(b)] += x[i];
  return out;
}

}  // namespace

double js_distance(const float* p, const float* q, int64_t n) { return js_of(p, q, n); }

double pooled_js_distance(const float* p, const float* q, int64_t n, int64_t bins) {
  if (bins <= 0 || bins >= n) return js_of(p, q, n);
  const std::vector<double> pp = pooled(p, n, bins), pq = pooled(q, n, bins);
  return js_of(pp.data(), pq.data(), bins);
}

}  // namespace sp
