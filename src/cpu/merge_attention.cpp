// CPU merge of two partial attention results by their log-sum-exp (merge_attention.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "shareprefill/error.h"
#include "shareprefill/merge_attention.h"
#include "shareprefill/thread_pool.h"

namespace sp {
namespace {

float load(const tensor_view& t, int64_t offset) {
  switch (t.type) {
    case dtype::f32: return t.as<const float>()[offset];
    case dtype::f16: return fp16_to_fp32(t.as<const uint16_t>()[offset]);
    case dtype::bf16: return bf16_to_fp32(t.as<const uint16_t>()[offset]);
  }
  return 0.0f;
}

void store(const tensor_view& t, int64_t offset, float value) {
  switch (t.type) {
    case dtype::f32: t.as<float>()[offset] = value; return;
    case dtype::f16: t.as<uint16_t>()[offset] = fp32_to_fp16(value); return;
    case dtype::bf16: t.as<uint16_t>()[offset] = fp32_to_bf16(value); return;
  }
}

int64_t o_offset(const tensor_view& o, int64_t i, int64_t h) {
  return i * o.stride[0] + h * o.stride[1];
}

int64_t lse_offset(const tensor_view& lse, int64_t h, int64_t i) {
  return h * lse.stride[0] + i * lse.stride[1];
}

// A row's LSE is finite, or -inf for a row without keys; NaN and +inf are corrupt.
bool valid_lse(float x) { return !std::isnan(x) && x != std::numeric_limits<float>::infinity(); }

}  // namespace

void merge_attention_states(const tensor_view& o_out, const tensor_view& lse_out,
                            const tensor_view& o_a, const tensor_view& lse_a,
                            const tensor_view& o_b, const tensor_view& lse_b, thread_pool* pool) {
  const char* fn = "merge_attention_states";
  const merge_shape s = merge_shape_of(fn, o_out, lse_out, o_a, lse_a, o_b, lse_b);
  check(!o_a.on_device, fn, "the views are in device memory; use cuda_merge_attention_states");
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // Rows [i0, i1) of every head; row: one head's merged output before it is stored (o_out may
  // alias o_a or o_b).
  auto merge_rows = [&](int64_t i0, int64_t i1, std::vector<float>& row) {
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t h = 0; h < s.heads; ++h) {
        const float la = lse_a.as<const float>()[lse_offset(lse_a, h, i)];
        const float lb = lse_b.as<const float>()[lse_offset(lse_b, h, i)];
        check(valid_lse(la) && valid_lse(lb), fn, "lse of head ", h, " row ", i, " is ", la,
              " / ", lb, " (finite or -inf expected)");
        const float m = std::fmax(la, lb);
        float lse = neg_inf;
        if (m == neg_inf) {
          std::fill(row.begin(), row.end(), 0.0f);
        } else {
          const float wa = std::exp(la - m), wb = std::exp(lb - m), sum = wa + wb;
          const float ca = wa / sum, cb = wb / sum;
          const int64_t pa = o_offset(o_a, i, h), pb = o_offset(o_b, i, h);
          for (int64_t d = 0; d < s.dim; ++d)
            row[static_cast<size_t>(d)] = ca * load(o_a, pa + d) + cb * load(o_b, pb + d);
          lse = m + std::log(sum);
        }
        const int64_t po = o_offset(o_out, i, h);
        for (int64_t d = 0; d < s.dim; ++d) store(o_out, po + d, row[static_cast<size_t>(d)]);
        lse_out.as<float>()[lse_offset(lse_out, h, i)] = lse;
      }
    }
  };
  constexpr int64_t rows_per_item = 64;
  const int64_t items = (s.n + rows_per_item - 1) / rows_per_item;
  std::vector<std::vector<float>> rows(static_cast<size_t>(pool ? pool->size() : 1),
                                       std::vector<float>(static_cast<size_t>(s.dim)));
  if (rows.size() == 1 || items == 1) {
    merge_rows(0, s.n, rows[0]);
    return;
  }
  pool->parallel_for(items, [&](int64_t item, int worker) {
    merge_rows(item * rows_per_item, std::min(s.n, (item + 1) * rows_per_item),
               rows[static_cast<size_t>(worker)]);
  });
}

}  // namespace sp
