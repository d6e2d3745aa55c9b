// Work claiming of the Hopper attention forward: which work items (head, query block) of the
// longest-first schedule a CTA runs. CTA b takes item b, then claims the next from a global
// counter, so the items in flight stay a contiguous window of the schedule (as with the hardware
// block scheduler) and CTAs reading the same K/V share L2. The producer thread claims one item
// ahead, so the atomic's latency hides under the current item's loads.
#pragma once

#include <cstdint>

namespace sp::cuda {

// The producer's source of items: CTA `cta` takes item `cta` first, then (counter set: a grid
// smaller than the work items) claims item ctas + atomicAdd(counter, 1) until past the end.
struct item_source {
  int64_t items, ctas, cta;
  unsigned long long* counter;
  bool first = true;
  __device__ __forceinline__ item_source(int64_t items_, int64_t ctas_, int64_t cta_,
                                         unsigned long long* counter_)
      : items(items_), ctas(ctas_), cta(cta_), counter(counter_) {}
  // The next item index, or -1 when the CTA is done.
  __device__ __forceinline__ int64_t next() {
    int64_t item = cta;
    if (!first) {
      if (counter == nullptr) return -1;
      item = ctas + static_cast<int64_t>(atomicAdd(counter, 1ull));
    }
    first = false;
    return item < items ? item : -1;
  }
};

}  // namespace sp::cuda
