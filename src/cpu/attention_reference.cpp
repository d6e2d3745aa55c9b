// The attention oracle: plain loops, fp64 accumulation, no tiling, no threads. Every other
// attention path (CPU block-sparse, CUDA) is tested against this.
#include <cmath>
#include <limits>
#include <vector>

#include "attention_checks.h"
#include "shareprefill/attention.h"
#include "shareprefill/error.h"

namespace sp {

namespace {

// One query row i of head h in fp64: softmax over the keys j <= i with allowed(j), times V.
// o_row: [D]; returns the log-sum-exp (-inf when no key is allowed, with o_row = 0).
template <class Allowed>
double attend_row(float* o_row, const attention_shape& s, const tensor_view& q,
                  const tensor_view& k, const tensor_view& v, int64_t h, int64_t i,
                  Allowed&& allowed, std::vector<double>& scores, std::vector<double>& acc) {
  const int64_t d = s.dim, kh = h / s.group();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  double row_max = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= i; ++j) {
    if (!allowed(j)) {
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
  if (std::isinf(row_max)) {
    for (int64_t e = 0; e < d; ++e) o_row[e] = 0.0f;
    return -std::numeric_limits<double>::infinity();
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
  return row_max + std::log(sum);
}

}  // namespace

void attention_reference(const tensor_view& out, const tensor_view& lse, const tensor_view& q,
                         const tensor_view& k, const tensor_view& v, const uint8_t* token_mask) {
  const char* fn = "attention_reference";
  const attention_shape s = attention_shape_of(fn, q, k, v);
  check_attention_outputs(fn, s, out, lse);
  const int64_t n = s.n;
  std::vector<double> scores(static_cast<size_t>(n)), acc(static_cast<size_t>(s.dim));
  for (int64_t h = 0; h < s.heads; ++h) {
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* mask_row = token_mask ? token_mask + (h * n + i) * n : nullptr;
      auto allowed = [&](int64_t j) { return mask_row == nullptr || mask_row[j] != 0; };
      const double row_lse = attend_row(out.as<float>() + (i * s.heads + h) * s.dim, s, q, k, v,
                                        h, i, allowed, scores, acc);
      if (!lse.empty()) lse.as<float>()[h * n + i] = static_cast<float>(row_lse);
    }
  }
}

void attention_reference_row(float* out_row, float* lse_row, const tensor_view& q,
                             const tensor_view& k, const tensor_view& v, int64_t i,
                             const block_mask* mask) {
  const char* fn = "attention_reference_row";
  const attention_shape s = attention_shape_of(fn, q, k, v);
  check(out_row != nullptr, fn, "out_row is null");
  check(i >= 0 && i < s.n, fn, "row ", i, " out of range [0, ", s.n, ")");
  if (mask) {
    check(mask->heads == s.heads && mask->n_tokens == s.n, fn, "mask is for ", mask->heads,
          " heads and ", mask->n_tokens, " tokens, inputs have ", s.heads, " and ", s.n);
  }
  std::vector<double> scores(static_cast<size_t>(s.n)), acc(static_cast<size_t>(s.dim));
  const int32_t r = mask ? static_cast<int32_t>(i / mask->block_size) : 0;
  for (int64_t h = 0; h < s.heads; ++h) {
    auto allowed = [&](int64_t j) {
      return mask == nullptr || mask->contains(h, r, static_cast<int32_t>(j / mask->block_size));
    };
    const double row_lse = attend_row(out_row + h * s.dim, s, q, k, v, h, i, allowed, scores, acc);
    if (lse_row) lse_row[h] = static_cast<float>(row_lse);
  }
}

}  // namespace sp
