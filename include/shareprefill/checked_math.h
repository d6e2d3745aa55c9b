// Overflow-checked size arithmetic for the file readers (GGUF, safetensors, calibration capture,
// cluster-map JSON): counts and offsets read from a file are untrusted, so every product or sum
// that sizes an allocation or locates bytes goes through these helpers, and a byte range is
// compared against the file size without adding first. The throwing forms fail with
// sp::error("[fn] <what...> overflows int64 (a x b)"); the message parts are formatted only then.
#pragma once

#include <cstdint>

#include "shareprefill/error.h"

namespace sp {

// True when [offset, offset + length) lies inside [0, size); never computes offset + length.
constexpr bool range_within(int64_t offset, int64_t length, int64_t size) {
  return offset >= 0 && length >= 0 && size >= 0 && offset <= size && length <= size - offset;
}

// a * b for a, b >= 0, or false when either is negative or the product exceeds int64.
inline bool mul_within_int64(int64_t a, int64_t b, int64_t& out) {
  return a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, &out);
}

// a + b for a, b >= 0, or false when either is negative or the sum exceeds int64.
inline bool add_within_int64(int64_t a, int64_t b, int64_t& out) {
  return a >= 0 && b >= 0 && !__builtin_add_overflow(a, b, &out);
}

// a * b (both >= 0), or throws naming fn and what.
template <class... What>
int64_t checked_mul(int64_t a, int64_t b, const char* fn, const What&... what) {
  int64_t out = 0;
  if (!mul_within_int64(a, b, out)) fail(fn, what..., " overflows int64 (", a, " x ", b, ")");
  return out;
}

// a + b (both >= 0), or throws naming fn and what.
template <class... What>
int64_t checked_add(int64_t a, int64_t b, const char* fn, const What&... what) {
  int64_t out = 0;
  if (!add_within_int64(a, b, out)) fail(fn, what..., " overflows int64 (", a, " + ", b, ")");
  return out;
}

// Product of `rank` extents (each >= 0) times `scale`, or throws naming fn and what. An extent of
// 0 makes the product 0 even when the others would overflow.
template <class... What>
int64_t checked_product(const int64_t* extents, int rank, int64_t scale, const char* fn,
                        const What&... what) {
  for (int d = 0; d < rank; ++d) {
    if (extents[d] < 0) fail(fn, what..., " has a negative extent ", extents[d]);
    if (extents[d] == 0) return 0;
  }
  int64_t out = scale;
  for (int d = 0; d < rank; ++d) out = checked_mul(out, extents[d], fn, what...);
  return out;
}

}  // namespace sp
