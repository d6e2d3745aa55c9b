// Every sort and scan of the device planner, through CUB (DESIGN.md 8: no hand-written sorts).
// Radix sorts are stable, so equal keys keep index order: the host planner's tie rule (lower
// index first). With c.temp == nullptr a call only records its temporary storage need.
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <algorithm>
#include <cstring>
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <cuda/std/functional>

#include "cuda_check.h"
#include "plan_layout.h"

namespace sp::cuda {
namespace {

void finish(cub_plan& c, size_t need, cudaError_t status, const char* what) {
  if (c.temp == nullptr) {
    c.bytes = std::max(c.bytes, need);
    return;
  }
  check_cuda(status, "device_planner::plan", what);
}

struct segment_of {
  int64_t length;
  __host__ __device__ int64_t operator()(int64_t i) const { return i / length; }
};

struct to_double {
  __host__ __device__ double operator()(float x) const { return static_cast<double>(x); }
};

// 1 where entry i of big_keys [H, tri] equals its head's query-aware cut (plan_qa_select.cu).
struct equal_to_cut {
  const float* keys;
  const qa_cut_state* cut;
  int64_t tri;
  __device__ int32_t operator()(int64_t i) const {
    const qa_cut_state c = cut[i / tri];
    return c.state == qa_cut_found && __float_as_uint(keys[i]) == c.prefix ? 1 : 0;
  }
};


}  // namespace


void cub_sort_blk(cub_plan& c, const plan_pointers& p, cudaStream_t stream) {
  size_t need = c.temp ? c.bytes : 0;
  const int items = static_cast<int>(2 * p.s.heads * p.s.nb), segs = static_cast<int>(2 * p.s.heads);
  const cudaError_t e = cub::DeviceSegmentedRadixSort::SortPairsDescending(
      c.temp, need, p.blk_keys, p.blk_keys_sorted, p.blk_idx, p.blk_idx_sorted, items, segs,
      p.blk_offsets, p.blk_offsets + 1, 0, 32, stream);
  finish(c, need, e, "ranking the block profiles");
}

void cub_scan_query_aware_ties(cub_plan& c, const plan_pointers& p, cudaStream_t stream) {
  size_t need = c.temp ? c.bytes : 0;
  auto flags = thrust::make_transform_iterator(thrust::counting_iterator<int64_t>(0),
                                               equal_to_cut{p.big_keys, p.qa_cut, p.s.tri});
  const cudaError_t e = cub::DeviceScan::ExclusiveSum(c.temp, need, flags, p.qa_equal_rank,
                                                      static_cast<int>(p.s.heads * p.s.tri),
                                                      stream);
  finish(c, need, e, "ranking the query-aware entries equal to the cut");
}

void cub_sort_publish(cub_plan& c, const plan_pointers& p, const float* block_attention,
                      cudaStream_t stream) {
  size_t need = c.temp ? c.bytes : 0;
  const int items = static_cast<int>(p.s.max_pivots * p.s.nb * p.s.nb);
  const int segs = static_cast<int>(p.s.max_pivots * p.s.nb);
  const cudaError_t e = cub::DeviceSegmentedRadixSort::SortPairsDescending(
      c.temp, need, block_attention, p.big_keys_sorted, p.big_vals, p.big_vals_sorted, items,
      segs, p.seg_begin, p.seg_end, 0, 32, stream);
  finish(c, need, e, "sorting the pivots' block attention rows");
}

void cub_segment_prefix(cub_plan& c, double* out, const float* keys, int64_t items,
                        int64_t seg_len, cudaStream_t stream) {
  size_t need = c.temp ? c.bytes : 0;
  auto segment = thrust::make_transform_iterator(thrust::counting_iterator<int64_t>(0),
                                                 segment_of{seg_len});
  auto values = thrust::make_transform_iterator(keys, to_double{});
  const cudaError_t e = cub::DeviceScan::InclusiveSumByKey(c.temp, need, segment, values, out,
                                                           static_cast<int>(items),
                                                           ::cuda::std::equal_to<>(), stream);
  finish(c, need, e, "prefix sums");
}


void cub_row_ptr_scan(cub_plan& c, const plan_pointers& p, cudaStream_t stream) {
  size_t need = c.temp ? c.bytes : 0;
  const int items = static_cast<int>(p.s.heads * (p.s.nb + 1));
  const cudaError_t e =
      cub::DeviceScan::ExclusiveSum(c.temp, need, p.row_count, p.row_ptr, items, stream);
  finish(c, need, e, "the row_ptr scan");
}

void cub_sort_schedule(cub_plan& c, const plan_pointers& p, cudaStream_t stream) {
  size_t need = c.temp ? c.bytes : 0;
  const int items = static_cast<int>(p.s.heads * p.s.nb);
  const int bits = schedule_key_bits(p.s.nb);
  const cudaError_t e = cub::DeviceRadixSort::SortPairsDescending(
      c.temp, need, p.sched_keys, p.sched_keys_sorted, p.sched_vals, p.sched_vals_sorted, items,
      0, bits, stream);
  finish(c, need, e, "sorting the schedule");
}

}  // namespace sp::cuda
