// Tensor view helpers and half-precision conversions.
#include "shareprefill/tensor.h"

#include <cmath>
#include <limits>

#include "shareprefill/checked_math.h"
#include "shareprefill/error.h"

namespace sp {

size_t dtype_size(dtype t) { return t == dtype::f32 ? 4 : 2; }

const char* dtype_name(dtype t) {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::f16: return "f16";
    case dtype::bf16: return "bf16";
  }
  return "?";
}

uint16_t fp32_to_fp16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  // >= 65536 is inf; [65520, 65536) rounds up to inf in the normal path below.
  if (abs >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // rounds to zero
    // value = mant * 2^(e - 150); in units of the half subnormal step 2^-24 that is
    // mant >> (126 - e), with 14 <= 126 - e <= 24 here.
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int drop = 126 - static_cast<int>(abs >> 23);
    uint32_t q = mant >> drop;
    const uint32_t rem = mant & ((1u << drop) - 1u);
    const uint32_t halfway = 1u << (drop - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into inf: correct
  return static_cast<uint16_t>(sign | h);
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    const float f = std::ldexp(static_cast<float>(mant), -24);
    std::memcpy(&u, &f, 4);
    u |= sign;
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

namespace {

// a * b for extents (>= 0), saturating at INT64_MAX: products of extents fit for any tensor whose
// data exists, but an empty view may declare other extents of any size (found by
// fuzz_safetensors: shape [2^62, 4, 0] overflowed in numel()).
int64_t saturating_mul(int64_t a, int64_t b) {
  int64_t out = 0;
  return mul_within_int64(a, b, out) ? out : std::numeric_limits<int64_t>::max();
}

}  // namespace

tensor_view tensor_view::contiguous(void* data, dtype type, std::initializer_list<int64_t> shape) {
  check(shape.size() >= 1 && shape.size() <= static_cast<size_t>(max_rank),
        "tensor_view::contiguous", "rank ", shape.size(), " not in [1, ", max_rank, "]");
  tensor_view t;
  t.data = data;
  t.type = type;
  t.rank = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) {
    check(s >= 0, "tensor_view::contiguous", "negative extent ", s, " in dimension ", i);
    t.shape[i++] = s;
  }
  int64_t st = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.stride[d] = st;
    st = saturating_mul(st, t.shape[d]);
  }
  return t;
}

int64_t tensor_view::numel() const {
  for (int d = 0; d < rank; ++d)
    if (shape[d] == 0) return 0;
  int64_t n = rank > 0 ? 1 : 0;
  for (int d = 0; d < rank; ++d) n = saturating_mul(n, shape[d]);
  return n;
}

bool tensor_view::is_contiguous() const {
  int64_t st = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (shape[d] != 1 && stride[d] != st) return false;
    st = saturating_mul(st, shape[d]);
  }
  return true;
}

float load_as_fp32(const tensor_view& t, int64_t i) {
  switch (t.type) {
    case dtype::f32: return static_cast<const float*>(t.data)[i];
    case dtype::f16: return fp16_to_fp32(static_cast<const uint16_t*>(t.data)[i]);
    case dtype::bf16: return bf16_to_fp32(static_cast<const uint16_t*>(t.data)[i]);
  }
  return 0.0f;
}

void convert_to_fp32(float* dst, const tensor_view& src) {
  check(src.is_contiguous(), "convert_to_fp32", "source view is not contiguous");
  const int64_t n = src.numel();
  if (n == 0) return;  // an empty view may come with null pointers, which memcpy must not see
  if (src.type == dtype::f32) {
    std::memcpy(dst, src.data, static_cast<size_t>(n) * 4);
    return;
  }
  const uint16_t* p = static_cast<const uint16_t*>(src.data);
  if (src.type == dtype::bf16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(p[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(p[i]);
  }
}

int64_t find_non_finite(const tensor_view& t) {
  const int64_t n = t.numel();
  if (t.type == dtype::f32) {
    const float* p = static_cast<const float*>(t.data);
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return i;
    return -1;
  }
  // Half formats: exponent all ones means Inf or NaN.
  const uint16_t* p = static_cast<const uint16_t*>(t.data);
  const uint16_t exp_mask = t.type == dtype::bf16 ? 0x7f80u : 0x7c00u;
  for (int64_t i = 0; i < n; ++i)
    if ((p[i] & exp_mask) == exp_mask) return i;
  return -1;
}

fp32_tensor::fp32_tensor(std::initializer_list<int64_t> shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  values.assign(static_cast<size_t>(n), 0.0f);
  view = tensor_view::contiguous(values.data(), dtype::f32, shape);
}

}  // namespace sp
