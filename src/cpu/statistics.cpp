// Last-block statistics of section 2A on the CPU. Per query head (heads in parallel): the last
// rows = min(bs, N) queries (min(estimation_blocks * bs, N) with that option), scaled by 1/sqrt(D),
// are scored against all keys in chunks; pass 1 keeps the running row max and sum (online softmax),
// pass 2 recomputes the scores (sgemm through tile_math, as the attention kernel) and accumulates
// the normalised probabilities into the vertical and slash profiles. Only one head's chunk of
// scores per worker exists at a time, so memory is O(H * N) for the profiles.
#include "shareprefill/statistics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "shareprefill/error.h"
#include "tile_math.h"

namespace sp {
namespace {

constexpr int64_t key_chunk = 256;
constexpr float neg_inf = -std::numeric_limits<float>::infinity();

// Scores of the query rows (absolute positions q0 + i) against keys [j0, j0 + cols); entries
// above the causal diagonal are -inf. s: [rows, key_chunk]; qr: [rows, dim] scaled queries;
// key j is at keys + j * key_stride, [dim].
void score_chunk(float* s, const float* qr, int64_t rows, int64_t q0, const float* keys,
                 int64_t key_stride, int64_t j0, int64_t cols, int64_t dim) {
  tile_math::gemm_abt(s, key_chunk, qr, dim, keys + j0 * key_stride, key_stride, rows, cols, dim,
                      1.0f);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t jj = std::max<int64_t>(0, q0 + i - j0 + 1); jj < cols; ++jj)
      s[i * key_chunk + jj] = neg_inf;
}

// Fills st.v_tok and st.s_tok of one head. qr: [rows padded, dim] scaled queries.
void head_profiles(head_statistics& st, const float* qr, int64_t rows, int64_t n, const float* keys,
                   int64_t key_stride, int64_t dim) {
  const int64_t q0 = n - rows;
  std::vector<float> s(static_cast<size_t>(rows * key_chunk));
  std::vector<float> row_max(static_cast<size_t>(rows), neg_inf);
  std::vector<double> row_sum(static_cast<size_t>(rows), 0.0);
  for (int64_t j0 = 0; j0 < n; j0 += key_chunk) {
    const int64_t cols = std::min(key_chunk, n - j0);
    score_chunk(s.data(), qr, rows, q0, keys, key_stride, j0, cols, dim);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t valid = std::min(cols, q0 + i - j0 + 1);
      if (valid <= 0) continue;
      const float* si = s.data() + i * key_chunk;
      float m = row_max[i];
      for (int64_t jj = 0; jj < valid; ++jj) m = std::max(m, si[jj]);
      const double rescale =
          row_max[i] == neg_inf ? 0.0 : std::exp(static_cast<double>(row_max[i]) - m);
      float* ei = s.data() + i * key_chunk;
      tile_math::exp_shifted_inplace(ei, valid, m);
      float part = 0.0f;
      for (int64_t jj = 0; jj < valid; ++jj) part += ei[jj];
      row_sum[i] = row_sum[i] * rescale + part;
      row_max[i] = m;
    }
  }
  std::vector<double> v(static_cast<size_t>(n), 0.0), sl(static_cast<size_t>(n), 0.0);
  std::vector<float> inv(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) inv[i] = static_cast<float>(1.0 / row_sum[i]);
  for (int64_t j0 = 0; j0 < n; j0 += key_chunk) {
    const int64_t cols = std::min(key_chunk, n - j0);
    score_chunk(s.data(), qr, rows, q0, keys, key_stride, j0, cols, dim);
    for (int64_t i = 0; i < rows; ++i) {
      float* si = s.data() + i * key_chunk;
      // Query q0+i and key j are at distance q0+i-j, stored at t = n-1-(q0+i-j).
      const int64_t t_shift = n - 1 - q0 - i;
      const int64_t valid = std::min(cols, q0 + i - j0 + 1);
      if (valid <= 0) continue;
      tile_math::exp_shifted_inplace(si, valid, row_max[i]);
      for (int64_t jj = 0; jj < valid; ++jj) {
        const float p = si[jj] * inv[i];
        v[j0 + jj] += p;
        sl[j0 + jj + t_shift] += p;
      }
    }
  }
  st.v_tok.resize(static_cast<size_t>(n));
  st.s_tok.resize(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    st.v_tok[j] = static_cast<float>(v[j] / static_cast<double>(rows));
    st.s_tok[j] = static_cast<float>(sl[j] / static_cast<double>(rows));
  }
}

}  // namespace

std::vector<head_statistics> last_block_statistics(const tensor_view& q, const tensor_view& k,
                                                   const budget_rule& rule, thread_pool& pool) {
  const char* fn = "last_block_statistics";
  check(q.rank == 3 && k.rank == 3, fn, "q and k must have rank 3 ([N, H, D]), got ", q.rank,
        " and ", k.rank);
  check(q.is_contiguous() && k.is_contiguous(), fn, "q and k must be contiguous");
  const int64_t n = q.shape[0], heads = q.shape[1], dim = q.shape[2];
  const int64_t kv_heads = k.shape[1];
  check(n > 0, fn, "N must be positive, got ", n);
  check(k.shape[0] == n, fn, "k has ", k.shape[0], " tokens, q has ", n);
  check(k.shape[2] == dim, fn, "k head dim ", k.shape[2], " != q head dim ", dim);
  check(kv_heads > 0 && heads % kv_heads == 0, fn, "query heads ", heads,
        " not divisible by kv heads ", kv_heads);
  check(rule.block_size >= 16 && (rule.block_size & (rule.block_size - 1)) == 0, fn,
        "block_size must be a power of two >= 16, got ", rule.block_size);
  check(rule.gamma > 0.0 && rule.gamma <= 1.0, fn, "gamma must be in (0, 1], got ", rule.gamma);
  check(rule.min_blocks >= 1, fn, "min_blocks must be >= 1, got ", rule.min_blocks);
  check(rule.estimation_blocks >= 1 && rule.estimation_blocks <= 4096, fn,
        "estimation_blocks must be in [1, 4096], got ", rule.estimation_blocks);

  const int64_t group = heads / kv_heads;
  const int64_t rows = std::min(rule.estimation_blocks * rule.block_size, n);
  const int64_t n_blocks = (n + rule.block_size - 1) / rule.block_size;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim)));

  // K as fp32 rows: used in place when it already is fp32, converted once otherwise.
  std::vector<float> k_fp32;
  const float* k_data = nullptr;
  if (k.type == dtype::f32) {
    k_data = k.as<const float>();
  } else {
    k_fp32.resize(static_cast<size_t>(k.numel()));
    convert_to_fp32(k_fp32.data(), k);
    k_data = k_fp32.data();
  }

  std::vector<head_statistics> out(static_cast<size_t>(heads));
  const tile_math::blas_thread_scope one_blas_thread(1);  // the pool parallelises over heads
  pool.parallel_for(heads, [&](int64_t h, int) {
    head_statistics& st = out[static_cast<size_t>(h)];
    st.rows = rows;
    std::vector<float> qr(static_cast<size_t>(rows * dim));
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t d = 0; d < dim; ++d)
        qr[i * dim + d] = load_as_fp32(q, ((n - rows + i) * heads + h) * dim + d) * scale;
    const float* keys = k_data + (h / group) * dim;
    head_profiles(st, qr.data(), rows, n, keys, kv_heads * dim, dim);
    st.v_blk.resize(static_cast<size_t>(n_blocks));
    st.s_blk.resize(static_cast<size_t>(n_blocks));
    block_sum(st.v_blk.data(), st.v_tok.data(), n, rule.block_size);
    block_sum(st.s_blk.data(), st.s_tok.data(), n, rule.block_size);
    st.vertical_blocks = budget_blocks(cover_count(st.v_tok.data(), n, rule.gamma), rule, n_blocks);
    st.slash_blocks = budget_blocks(cover_count(st.s_tok.data(), n, rule.gamma), rule, n_blocks);
  });
  return out;
}

}  // namespace sp
