// Step G of DESIGN.md section 2 on the device: after the layer's attention wrote the pivots'
// exact block attention A [max_pivots, nb, nb], each pivot's pattern (per row r the fewest key
// blocks, largest A first, whose mass reaches gamma, positive entries only, plus tile (0, 0))
// and its vs_ratio (the share of A on the pivot's own vertical-slash tiles, each valid tile
// once) go into its cluster's slot, which then has a pattern. Rows are ranked by one CUB
// segmented sort (stable: ties to the lower column, as the host) and a CUB prefix sum (fp64).
#include <cmath>

#include "cuda_check.h"
#include "plan_common.cuh"
#include "plan_layout.h"

namespace sp::cuda {
namespace {

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
  const int32_t head = p.slot_head[slot];
  const int64_t cs = r.slot_of[r.layer * p.s.heads + head];
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

// vs_ratio, has_pattern, and the validity of A (finite, >= 0). grid (max_pivots), 256.
__global__ void vs_ratio_kernel(plan_pointers p, state_pointers st, plan_rules r) {
  __shared__ double scratch[32];
  const int64_t nb = p.s.nb, words = p.s.words, slot = blockIdx.x;
  if (slot >= *p.pivot_count) return;
  const int32_t head = p.slot_head[slot];
  const int64_t cs = r.slot_of[r.layer * p.s.heads + head];
  const float* a = p.block_attention + slot * nb * nb;
  const uint32_t* vs = st.vs_bits + cs * nb * words;
  double covered = 0.0, total = 0.0;
  bool bad = false;
  for (int64_t e = threadIdx.x; e < nb * nb; e += blockDim.x) {
    const float v = a[e];
    bad |= !(isfinite(v) && v >= 0.0f);
    total += v;
    const int64_t row = e / nb, c = e % nb;
    if (c <= row && (vs[row * words + c / 32] >> (c % 32)) & 1u) covered += v;
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0)
    record_error(st.error, plan_error_bad_block_attention, r.layer, head);
  covered = block_reduce<false>(covered, scratch);
  total = block_reduce<false>(total, scratch);
  if (threadIdx.x == 0) {
    st.vs_ratio[cs] = total > 0.0 ? covered / total : 0.0;
    st.has_pattern[cs] = 1;
  }
}

}  // namespace

void launch_publish(const plan_pointers& p, const state_pointers& st, const plan_rules& r,
                    cub_plan& c, cudaStream_t stream) {
  const plan_sizes& s = p.s;
  if (s.max_pivots == 0) return;
  const int64_t items = s.max_pivots * s.nb * s.nb;
  publish_segments_kernel<<<static_cast<unsigned>(std::min<int64_t>((items + 255) / 256, 4096)),
                            256, 0, stream>>>(p);
  cub_sort_publish(c, p, p.block_attention, stream);
  cub_segment_prefix(c, p.prefix, p.big_keys_sorted, items, s.nb, stream);
  pattern_kernel<<<dim3(static_cast<unsigned>((s.nb + 7) / 8), static_cast<unsigned>(s.max_pivots)),
                   256, 0, stream>>>(p, st, r);
  vs_ratio_kernel<<<static_cast<unsigned>(s.max_pivots), 256, 0, stream>>>(p, st, r);
  check_cuda(cudaGetLastError(), "device_planner::publish", "launching the publish kernels");
}

}  // namespace sp::cuda
