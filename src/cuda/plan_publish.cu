// Step G of DESIGN.md section 2 on the device: after the layer's attention wrote the pivots'
// exact block attention A [max_pivots, nb, nb], each pivot's pattern (per row r the fewest key
// blocks, largest A first, whose mass reaches gamma, positive entries only, plus tile (0, 0);
// the global gamma, also for a pivot with its own: the pattern is its cluster's, as on the host)
// and its vs_ratio (the share of A on the pivot's own vertical-slash tiles, each valid tile
// once) go into its cluster's slot, which then has a pattern. A row is ranked by a CUB block
// radix sort (stable: ties to the lower column, as the host) and a CUB block scan (fp64) in one
// thread block, for nb <= 4096; longer prompts use a CUB segmented sort and a device-wide
// prefix sum over all slots' rows (the same rule, more passes over memory).
#include <cmath>
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_scan.cuh>

#include "cuda_check.h"
#include "plan_common.cuh"
#include "plan_layout.h"

namespace sp::cuda {
namespace {

// The cluster slot whose state pivot `slot` of A publishes into: the layer's pivot's cluster, or
// the deferred pivot's being served (plan_rules::publish_cluster_slot).
__device__ __forceinline__ int64_t published_cluster_slot(const plan_pointers& p,
                                                          const plan_rules& r, int64_t slot) {
  return r.publish_cluster_slot >= 0 ? r.publish_cluster_slot
                                     : r.slot_of[r.layer * p.s.heads + p.slot_head[slot]];
}

// Segments (one per pivot row; empty past the layer's pivot count) and column indices.
__global__ void publish_segments_kernel(plan_pointers p) {
  const int64_t nb = p.s.nb, segs = p.s.max_pivots * nb;
  const int32_t pivots = *p.pivot_count;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < segs * nb;
       i += stride) {
    p.big_vals[i] = static_cast<int32_t>(i % nb);
    if (i < segs) {
      const int64_t slot = i / nb, row = i % nb;
      p.seg_begin[i] = static_cast<int32_t>(i * nb);
      p.seg_end[i] = static_cast<int32_t>(i * nb + (slot < pivots ? row + 1 : 0));
    }
  }
}

// One warp per pivot row: kept = min(positive entries, 1 + first index whose prefix >= gamma).
// grid (ceil(nb/8), max_pivots), 256 threads.
__global__ void pattern_kernel(plan_pointers p, state_pointers st, plan_rules r) {
  const int64_t nb = p.s.nb, words = p.s.words, slot = blockIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (slot >= *p.pivot_count || row >= nb) return;
  const int64_t cs = published_cluster_slot(p, r, slot);
  const int64_t base = (slot * nb + row) * nb, len = row + 1;
  const float* keys = p.big_keys_sorted + base;
  const double* prefix = p.prefix + base;
  int64_t lo = 0, hi = len;  // first entry <= 0 (keys descending)
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (keys[mid] > 0.0f) lo = mid + 1;
    else hi = mid;
  }
  const int64_t positive = lo;
  lo = 0;
  hi = len;  // first prefix >= gamma
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (prefix[mid] >= r.gamma) hi = mid;
    else lo = mid + 1;
  }
  const int64_t kept = min(positive, min(lo + 1, len));
  uint32_t* out = st.pattern_bits + (cs * nb + row) * words;
  for (int64_t w = lane; w < words; w += 32) out[w] = row == 0 && w == 0 ? 1u : 0u;
  __syncwarp();
  for (int64_t i = lane; i < kept; i += 32) {
    const int64_t c = p.big_vals_sorted[base + i];
    atomicOr(out + c / 32, 1u << (c % 32));
  }
}

// One thread block per pivot row: the row's columns sorted by A (descending, stable), their
// exclusive prefix sums in fp64; column k is kept iff A > 0 and the mass before it is < gamma
// (both hold for a leading run, as on the host). grid (nb, max_pivots), 256 threads.
constexpr int pattern_threads = 256;

template <int items>
__global__ void __launch_bounds__(pattern_threads) pattern_rows_kernel(plan_pointers p,
                                                                       state_pointers st,
                                                                       plan_rules r) {
  using sort_t = cub::BlockRadixSort<float, pattern_threads, items, int32_t>;
  using scan_t = cub::BlockScan<double, pattern_threads>;
  __shared__ union {
    typename sort_t::TempStorage sort;
    typename scan_t::TempStorage scan;
  } temp;
  __shared__ uint32_t row_bits[pattern_threads * items / 32];
  const int64_t nb = p.s.nb, words = p.s.words, slot = blockIdx.y, row = blockIdx.x;
  if (slot >= *p.pivot_count) return;
  const int64_t cs = published_cluster_slot(p, r, slot);
  const float* a = p.block_attention + (slot * nb + row) * nb;
  float key[items];
  int32_t col[items];
  for (int i = 0; i < items; ++i) {
    const int c = threadIdx.x * items + i;  // blocked: thread t holds columns t*items + i
    key[i] = c <= row ? a[c] : -1.0f;
    col[i] = c;
  }
  for (int64_t w = threadIdx.x; w < words; w += pattern_threads) row_bits[w] = 0u;
  sort_t(temp.sort).SortDescending(key, col);
  __syncthreads();
  double mass[items], total = 0.0;
  for (int i = 0; i < items; ++i) total += key[i] > 0.0f ? key[i] : 0.0f;
  double before = 0.0;
  scan_t(temp.scan).ExclusiveSum(total, before);
  for (int i = 0; i < items; ++i) {
    mass[i] = before;
    before += key[i] > 0.0f ? key[i] : 0.0f;
  }
  for (int i = 0; i < items; ++i)
    if (key[i] > 0.0f && mass[i] < r.gamma) atomicOr(&row_bits[col[i] / 32], 1u << (col[i] % 32));
  if (row == 0 && threadIdx.x == 0) atomicOr(&row_bits[0], 1u);
  __syncthreads();
  uint32_t* out = st.pattern_bits + (cs * nb + row) * words;
  for (int64_t w = threadIdx.x; w < words; w += pattern_threads) out[w] = row_bits[w];
}

// vs_ratio's sums over part blockIdx.x of the pivot's A (entries [part * len, (part + 1) * len)
// of the nb x nb matrix), and the validity of A (finite, >= 0). grid (vs_parts, max_pivots), 256.
constexpr int vs_threads = 256;
__global__ void __launch_bounds__(vs_threads) vs_partial_kernel(plan_pointers p, state_pointers st,
                                                                plan_rules r) {
  __shared__ double scratch[32];
  const int64_t nb = p.s.nb, words = p.s.words, slot = blockIdx.y;
  if (slot >= *p.pivot_count) return;
  const int32_t head = p.slot_head[slot];
  const int64_t cs = published_cluster_slot(p, r, slot);
  const float* a = p.block_attention + slot * nb * nb;
  const uint32_t* vs = st.vs_bits + cs * nb * words;
  // nb * nb < 2^31 (make_workspace_layout), so 32-bit index math.
  const int32_t nb32 = static_cast<int32_t>(nb), all = nb32 * nb32;
  const int32_t len = (all + static_cast<int32_t>(gridDim.x) - 1) / static_cast<int32_t>(gridDim.x);
  const int32_t begin = min(all, static_cast<int32_t>(blockIdx.x) * len), end = min(all, begin + len);
  double covered = 0.0, total = 0.0;
  bool bad = false;
  // Thread t adds entries begin + t, + blockDim, ... in that order; the loads of `unroll` of them
  // are issued before the adds.
  constexpr int unroll = 16;
  for (int32_t e0 = begin + threadIdx.x; e0 < end; e0 += unroll * vs_threads) {
    float v[unroll];
    bool in[unroll];
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const int32_t e = e0 + u * vs_threads;
      const int32_t row = e / nb32, c = e - row * nb32;
      v[u] = e < end ? a[e] : 0.0f;
      in[u] = e < end && c <= row && (vs[row * words + c / 32] >> (c % 32)) & 1u;
    }
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      if (e0 + u * vs_threads >= end) break;
      bad |= !(isfinite(v[u]) && v[u] >= 0.0f);
      total += v[u];
      if (in[u]) covered += v[u];
    }
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0)
    record_error(st.error, plan_error_bad_block_attention, r.layer, head);
  covered = block_reduce<false>(covered, scratch);
  total = block_reduce<false>(total, scratch);
  if (threadIdx.x == 0) {
    double* out = p.vs_partial + (slot * gridDim.x + blockIdx.x) * 2;
    out[0] = covered;
    out[1] = total;
  }
}

// vs_ratio (the parts' sums added in part order: deterministic) and has_pattern of each pivot's
// cluster slot. One thread per pivot.
__global__ void vs_ratio_kernel(plan_pointers p, state_pointers st, plan_rules r) {
  const int64_t slot = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (slot >= *p.pivot_count) return;
  const int64_t cs = published_cluster_slot(p, r, slot);
  double covered = 0.0, total = 0.0;
  for (int64_t part = 0; part < p.s.vs_parts; ++part) {
    covered += p.vs_partial[(slot * p.s.vs_parts + part) * 2];
    total += p.vs_partial[(slot * p.s.vs_parts + part) * 2 + 1];
  }
  st.vs_ratio[cs] = total > 0.0 ? covered / total : 0.0;
  st.has_pattern[cs] = 1;
}

void launch_vs_ratio(const plan_pointers& p, const state_pointers& st, const plan_rules& r,
                     cudaStream_t stream) {
  const plan_sizes& s = p.s;
  vs_partial_kernel<<<dim3(static_cast<unsigned>(s.vs_parts), static_cast<unsigned>(s.max_pivots)),
                      vs_threads, 0, stream>>>(p, st, r);
  vs_ratio_kernel<<<static_cast<unsigned>((s.max_pivots + 127) / 128), 128, 0, stream>>>(p, st, r);
}

}  // namespace

void launch_publish(const plan_pointers& p, const state_pointers& st, const plan_rules& r,
                    cub_plan& c, cudaStream_t stream) {
  const plan_sizes& s = p.s;
  if (s.max_pivots == 0) return;
  const dim3 rows(static_cast<unsigned>(s.nb), static_cast<unsigned>(s.max_pivots));
  static_assert(publish_block_rows_max == pattern_threads * 16, "the block path's longest row");
  if (s.nb <= publish_block_rows_max) {
    if (s.nb <= pattern_threads * 4) pattern_rows_kernel<4><<<rows, pattern_threads, 0, stream>>>(p, st, r);
    else if (s.nb <= pattern_threads * 8) pattern_rows_kernel<8><<<rows, pattern_threads, 0, stream>>>(p, st, r);
    else pattern_rows_kernel<16><<<rows, pattern_threads, 0, stream>>>(p, st, r);
    launch_vs_ratio(p, st, r, stream);
    check_cuda(cudaGetLastError(), "device_planner::publish", "launching the publish kernels");
    return;
  }
  const int64_t items = s.max_pivots * s.nb * s.nb;
  publish_segments_kernel<<<static_cast<unsigned>(std::min<int64_t>((items + 255) / 256, 4096)),
                            256, 0, stream>>>(p);
  cub_sort_publish(c, p, p.block_attention, stream);
  cub_segment_prefix(c, p.prefix, p.big_keys_sorted, items, s.nb, stream);
  pattern_kernel<<<dim3(static_cast<unsigned>((s.nb + 7) / 8), static_cast<unsigned>(s.max_pivots)),
                   256, 0, stream>>>(p, st, r);
  launch_vs_ratio(p, st, r, stream);
  check_cuda(cudaGetLastError(), "device_planner::publish", "launching the publish kernels");
}

}  // namespace sp::cuda
