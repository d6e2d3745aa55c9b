// Budget rules of section 2A: the <= gamma cover count over a profile, the token -> block
// conversion (count // bs + 1) with clamping to [minB, maxB], and block sums of profiles.
#include <algorithm>
#include <functional>
#include <vector>

#include "shareprefill/statistics.h"

namespace sp {

int64_t cover_count(const float* x, int64_t n, double gamma) {
  std::vector<float> sorted(x, x + n);
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  double running = 0.0;
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    running += sorted[i];
    if (running > gamma) break;
    ++kept;
  }
  return kept + 1;
}

int64_t budget_blocks(int64_t count, const budget_rule& rule, int64_t n_blocks) {
  const int64_t max_blocks = rule.max_blocks > 0 ? std::min(rule.max_blocks, n_blocks) : n_blocks;
  int64_t blocks = count / rule.block_size + 1;
  blocks = std::max(blocks, rule.min_blocks);
  blocks = std::min(blocks, max_blocks);
  return blocks;
}

void block_sum(float* out, const float* x, int64_t n, int64_t block_size) {
  const int64_t n_blocks = (n + block_size - 1) / block_size;
  for (int64_t b = 0; b < n_blocks; ++b) {
    double s = 0.0;
    for (int64_t i = b * block_size; i < std::min(n, (b + 1) * block_size); ++i) s += x[i];
    out[b] = static_cast<float>(s);
  }
}

}  // namespace sp
