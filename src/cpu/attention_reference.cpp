// The attention oracle: plain loops, fp64 accumulation, no tiling, no threads. Every other
// attention path (CPU block-sparse, CUDA) is tested against this.
#include <cmath>
#include <limits>
#include <vector>

#include "attention_checks.h"
#include "shareprefill/attention.h"
#include "shareprefill/error.h"

namespace sp {

void attention_reference(const tensor_view& out, const tensor_view& lse, const tensor_view& q,
                         const tensor_view& k, const tensor_view& v, const uint8_t* token_mask) {
  const char* fn = "attention_reference";
  const attention_shape s = attention_shape_of(fn, q, k, v);
  check_attention_outputs(fn, s, out, lse);
  const int64_t n = s.n, d = s.dim, g = s.group();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> scores(static_cast<size_t>(n));
  std::vector<double> acc(static_cast<size_t>(d));
  float* o = out.as<float>();
  for (int64_t h = 0; h < s.heads; ++h) {
    const int64_t kh = h / g;
    for (int64_t i = 0; i < n; ++i) {
      double row_max = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j <= i; ++j) {
        const bool allowed = token_mask == nullptr || token_mask[(h * n + i) * n + j] != 0;
        if (!allowed) {
          scores[static_cast<size_t>(j)] = -std::numeric_limits<double>::infinity();
          continue;
        }
        double dot = 0.0;
        for (int64_t e = 0; e < d; ++e)
          dot += static_cast<double>(load_as_fp32(q, (i * s.heads + h) * d + e)) *
                 static_cast<double>(load_as_fp32(k, (j * s.kv_heads + kh) * d + e));
        scores[static_cast<size_t>(j)] = dot * scale;
        row_max = std::max(row_max, dot * scale);
      }
      float* o_row = o + (i * s.heads + h) * d;
      float* lse_out = lse.empty() ? nullptr : lse.as<float>() + h * n + i;
      if (std::isinf(row_max)) {  // no allowed key
        for (int64_t e = 0; e < d; ++e) o_row[e] = 0.0f;
        if (lse_out) *lse_out = -std::numeric_limits<float>::infinity();
        continue;
      }
      double sum = 0.0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j <= i; ++j) {
        const double p = std::exp(scores[static_cast<size_t>(j)] - row_max);
        if (p == 0.0) continue;
        sum += p;
        for (int64_t e = 0; e < d; ++e)
          acc[static_cast<size_t>(e)] +=
              p * static_cast<double>(load_as_fp32(v, (j * s.kv_heads + kh) * d + e));
      }
      for (int64_t e = 0; e < d; ++e) o_row[e] = static_cast<float>(acc[static_cast<size_t>(e)] / sum);
      if (lse_out) *lse_out = static_cast<float>(row_max + std::log(sum));
    }
  }
}

}  // namespace sp
