// The work schedule of a layer's plan in one thread block: the H*nb work items (head h, query
// block row) in descending order of their keys (tile counts, the walked heads' after the rest:
// plan_layout.h), ties in item order (h*nb + row), written
// as schedule [H*nb, 2] = (h, row). A CUB block radix sort (stable: the order a stable
// device-wide radix sort gives) over the keys' low `bits` bits; replaces the device-wide sort
// (histogram, scan and one single-block onesweep launch per 8 bits) plus the scatter kernel for
// plans of up to schedule_block_max items (N = 32K at 32 heads).
#include <cub/block/block_radix_sort.cuh>

#include "cuda_check.h"
#include "plan_layout.h"

namespace sp::cuda {
namespace {

constexpr int schedule_threads = 512;

// keys: [items] (< 2^bits); schedule: [items, 2]. One block, items <= 512 * per.
template <int per>
__global__ void __launch_bounds__(schedule_threads) schedule_sort_kernel(const int32_t* keys,
                                                                         int32_t* schedule,
                                                                         int64_t items, int64_t nb,
                                                                         int bits) {
  using sort_t = cub::BlockRadixSort<int32_t, schedule_threads, per, int32_t>;
  __shared__ typename sort_t::TempStorage temp;
  int32_t key[per], item[per];
  for (int i = 0; i < per; ++i) {
    const int c = threadIdx.x * per + i;  // blocked: the input position is the tie order
    key[i] = c < items ? keys[c] : 0;     // padding: the smallest key, after every item of it
    item[i] = c;
  }
  sort_t(temp).SortDescending(key, item, 0, bits);
  for (int i = 0; i < per; ++i) {
    const int64_t at = threadIdx.x * per + i;
    if (at < items) {
      schedule[2 * at] = static_cast<int32_t>(item[i] / nb);
      schedule[2 * at + 1] = static_cast<int32_t>(item[i] % nb);
    }
  }
}

}  // namespace

bool launch_schedule_sort(const int32_t* keys, int32_t* schedule, int64_t heads, int64_t nb,
                          cudaStream_t stream) {
  const int64_t items = heads * nb;
  if (items > schedule_block_max || items <= 0) return false;
  const int bits = schedule_key_bits(nb);
  if (items <= schedule_threads * 4)
    schedule_sort_kernel<4><<<1, schedule_threads, 0, stream>>>(keys, schedule, items, nb, bits);
  else
    schedule_sort_kernel<16><<<1, schedule_threads, 0, stream>>>(keys, schedule, items, nb, bits);
  check_cuda(cudaGetLastError(), "device_planner::plan", "launching the schedule sort");
  return true;
}

}  // namespace sp::cuda
