// Token-level mask predicates of the block-sparse causal kernel, as pure __host__ __device__
// functions so tests and host code can evaluate exactly what the kernel applies. Inside every
// visited tile, key j is allowed for query i iff j <= i (causal) and j < N (ragged end).
#pragma once

#include <cstdint>

#ifndef __CUDACC__
#define SP_HOST_DEVICE
#else
#define SP_HOST_DEVICE __host__ __device__ __forceinline__
#endif

namespace sp::cuda {

// Also valid on positions relative to any common origin (the kernel uses the sub-tile's first
// key, so the per-element test runs in 32-bit registers).
template <class I>
SP_HOST_DEVICE bool key_allowed(I query, I key, I n) {
  return key <= query && key < n;
}

// Keys [key_begin, key_begin + keys) against queries [query_begin, query_begin + queries):
// true when some pair may be disallowed, so the kernel must apply key_allowed per element.
SP_HOST_DEVICE bool span_needs_mask(int64_t query_begin, int64_t key_begin, int64_t keys,
                                    int64_t n) {
  return key_begin + keys - 1 > query_begin || key_begin + keys > n;
}

// True when no query of [.., query_last] may see any key of [key_begin, ..): the span is skipped.
SP_HOST_DEVICE bool span_fully_masked(int64_t query_last, int64_t key_begin) {
  return key_begin > query_last;
}

}  // namespace sp::cuda
