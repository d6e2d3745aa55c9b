// Jensen-Shannon distance (DESIGN.md section 2): sqrt of the JS divergence with natural log,
// range [0, sqrt(ln 2)] for distributions, with 0 * ln 0 = 0 so zero entries are well defined
// (the reference computes p * log(p / m) and yields NaN for them, which silently fails gates).
#include <algorithm>
#include <cmath>

#include "shareprefill/planner.h"

namespace sp {

double js_distance(const float* p, const float* q, int64_t n) {
  double kl_p = 0.0, kl_q = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double a = p[i], b = q[i], m = 0.5 * (a + b);
    if (a > 0.0) kl_p += a * std::log(a / m);
    if (b > 0.0) kl_q += b * std::log(b / m);
  }
  return std::sqrt(std::max(0.0, 0.5 * kl_p + 0.5 * kl_q));
}

}  // namespace sp
