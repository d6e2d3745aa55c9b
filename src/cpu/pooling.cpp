// Block mean pooling of Q and K and the pooled query-aware estimate (DESIGN.md sections 2B, 2E).
// Means are over the real tokens of each block (the last block may be partial), accumulated in
// fp64; the estimate's softmax is computed in fp64 and stored as fp32.
#include <algorithm>
#include <cmath>

#include "shareprefill/error.h"
#include "shareprefill/statistics.h"

namespace sp {

void block_mean_pool(float* out, const tensor_view& x, int64_t block_size) {
  const char* fn = "block_mean_pool";
  check(x.rank == 3 && x.is_contiguous(), fn, "x must be a contiguous [N, X, D] view, rank ",
        x.rank);
  check(block_size > 0, fn, "block_size must be positive, got ", block_size);
  const int64_t n = x.shape[0], heads = x.shape[1], dim = x.shape[2];
  const int64_t n_blocks = (n + block_size - 1) / block_size;
  std::vector<double> acc(static_cast<size_t>(heads * dim));
  for (int64_t b = 0; b < n_blocks; ++b) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const int64_t t0 = b * block_size, t1 = std::min(n, t0 + block_size);
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t i = 0; i < heads * dim; ++i) acc[i] += load_as_fp32(x, t * heads * dim + i);
    const double inv = 1.0 / static_cast<double>(t1 - t0);
    for (int64_t i = 0; i < heads * dim; ++i)
      out[b * heads * dim + i] = static_cast<float>(acc[i] * inv);
  }
}

void last_rows_mean(float* out, const tensor_view& q, int64_t block_size) {
  const char* fn = "last_rows_mean";
  check(q.rank == 3 && q.is_contiguous(), fn, "q must be a contiguous [N, H, D] view, rank ",
        q.rank);
  check(block_size > 0, fn, "block_size must be positive, got ", block_size);
  const int64_t n = q.shape[0], heads = q.shape[1], dim = q.shape[2];
  const int64_t rows = std::min(block_size, n);
  const double scale = 1.0 / (std::sqrt(static_cast<double>(dim)) * static_cast<double>(rows));
  std::vector<double> acc(static_cast<size_t>(heads * dim), 0.0);
  for (int64_t t = n - rows; t < n; ++t)
    for (int64_t i = 0; i < heads * dim; ++i) acc[i] += load_as_fp32(q, t * heads * dim + i);
  for (int64_t i = 0; i < heads * dim; ++i) out[i] = static_cast<float>(acc[i] * scale);
}

void pooled_block_estimate(float* out, const float* q_mean, const float* k_pool, int64_t n_blocks,
                           int64_t kv_heads, int64_t kv_head, int64_t dim) {
  std::vector<double> logits(static_cast<size_t>(n_blocks));
  double mx = -HUGE_VAL;
  for (int64_t c = 0; c < n_blocks; ++c) {
    const float* kc = k_pool + (c * kv_heads + kv_head) * dim;
    double s = 0.0;
    for (int64_t d = 0; d < dim; ++d) s += static_cast<double>(q_mean[d]) * kc[d];
    logits[c] = s;
    mx = std::max(mx, s);
  }
  double sum = 0.0;
  for (int64_t c = 0; c < n_blocks; ++c) sum += (logits[c] = std::exp(logits[c] - mx));
  for (int64_t c = 0; c < n_blocks; ++c) out[c] = static_cast<float>(logits[c] / sum);
}

}  // namespace sp
