// Ranking of short rows for the device planner: rank[s, i] = the position of entry i in row s
// sorted descending, ties to the lower index. One thread block per row sorts it with a CUB block
// radix sort (stable, so the order is the one a stable device-wide radix sort gives, the host's
// tie rule); replaces a segmented device sort (six launches) plus a scatter for the 2H block
// profiles of a layer, whose rows are nb <= 4096 entries long up to N = 512K.
#include <cmath>
#include <cub/block/block_radix_sort.cuh>

#include "cuda_check.h"
#include "plan_layout.h"

namespace sp::cuda {
namespace {

constexpr int rank_threads = 256;

// keys: [segs, nb]; rank: [segs, nb]. grid (segs), rank_threads threads, nb <= rank_threads * items.
template <int items>
__global__ void __launch_bounds__(rank_threads) rank_rows_kernel(const float* keys, int32_t* rank,
                                                                  int64_t nb) {
  using sort_t = cub::BlockRadixSort<float, rank_threads, items, int32_t>;
  __shared__ typename sort_t::TempStorage temp;
  const float* row = keys + blockIdx.x * nb;
  int32_t* out = rank + blockIdx.x * nb;
  float key[items];
  int32_t idx[items];
  for (int i = 0; i < items; ++i) {
    const int c = threadIdx.x * items + i;  // blocked: the input position is the tie order
    key[i] = c < nb ? row[c] : -INFINITY;   // padding sorts after every profile entry (>= 0)
    idx[i] = c;
  }
  sort_t(temp).SortDescending(key, idx);
  for (int i = 0; i < items; ++i)
    if (idx[i] < nb) out[idx[i]] = static_cast<int32_t>(threadIdx.x * items + i);
}

}  // namespace

bool launch_rank_rows(const float* keys, int32_t* rank, int64_t segs, int64_t nb,
                      cudaStream_t stream) {
  if (nb > rank_block_max || segs <= 0) return false;
  const unsigned grid = static_cast<unsigned>(segs);
  if (nb <= rank_threads) rank_rows_kernel<1><<<grid, rank_threads, 0, stream>>>(keys, rank, nb);
  else if (nb <= rank_threads * 4) rank_rows_kernel<4><<<grid, rank_threads, 0, stream>>>(keys, rank, nb);
  else rank_rows_kernel<16><<<grid, rank_threads, 0, stream>>>(keys, rank, nb);
  check_cuda(cudaGetLastError(), "device_planner::plan", "launching the profile ranking");
  return true;
}

}  // namespace sp::cuda
