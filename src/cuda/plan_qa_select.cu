// Step E's budget (DESIGN.md section 2E) without a sort: per query-aware head, the largest
// entries of its flattened lower triangle (big_keys [H, tri]) are kept while their running sum
// stays <= gamma * nb, ties in index order (the host's stable sort). A CUB segmented sort of the
// H x tri entries ran one thread block per head (~1 ms per head at 128K tokens, 525K entries);
// this is a radix select on the keys' bits instead. The keys are non-negative floats, whose bit
// patterns order as their values, so three histogram passes (bits 30..21, 20..10, 9..0) with
// per-bin counts and sums narrow the boundary to one key value v: every entry above v is kept,
// and of the entries equal to v the first m in index order, m = what the budget left after the
// entries above v holds (an exclusive scan of the "equal to v" flags gives the order,
// cub_scan_query_aware_ties in plan_cub.cu).
// Sums are 64-bit fixed point in units of 2^-44 (entries <= 1, a head's total is nb): the same
// bits on every run, within 1e-8 of the host's fp64 running sum. plan_budgets.cu selects step
// A's budgets the same way; there a count is the result, here the kept set, ties included.
#include <cub/block/block_scan.cuh>

#include "cuda_check.h"
#include "plan_common.cuh"
#include "plan_layout.h"

namespace sp::cuda {
namespace {

constexpr int qa_passes = 3;
// A pass's digit: its lowest bit and its width (bits 30..21, 20..10, 9..0; bit 31, the sign,
// is 0).
__host__ __device__ constexpr int qa_shift(int pass) { return pass == 0 ? 21 : pass == 1 ? 10 : 0; }
__host__ __device__ constexpr int qa_width(int pass) { return pass == 1 ? 11 : 10; }
constexpr int qa_boundary_threads = 256;
static_assert(qa_bins_max == 1 << 11, "the widest digit has 11 bits");

__device__ __forceinline__ unsigned long long fixed_point(float x) {
  return __double2ull_rn(static_cast<double>(x) * 0x1p44);
}

// Each query-aware head's cut: nothing fixed yet, the whole budget left.
__global__ void qa_cut_init_kernel(plan_pointers p, plan_rules r) {
  const int64_t h = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (h >= p.s.heads) return;
  const double gamma = r.head_gamma != nullptr ? r.head_gamma[h] : r.gamma;
  qa_cut_state& cut = p.qa_cut[h];
  cut.prefix = 0;
  cut.state = p.kinds[h] == kind_query_aware ? qa_cut_searching : qa_cut_unused;
  cut.remaining = __double2ull_rd(gamma * static_cast<double>(p.s.nb) * 0x1p44);
  cut.take_equal = 0;
}

// Counts and fixed-point sums of the digit of `pass` over the head's entries whose higher bits
// equal the cut's prefix, into qa_count / qa_sum [H, qa_bins_max] (cleared before). grid
// (parts, H), qa_histogram_threads.
__global__ void qa_histogram_kernel(plan_pointers p, int pass) {
  __shared__ uint32_t count[qa_bins_max];
  __shared__ unsigned long long sum[qa_bins_max];
  const int64_t h = blockIdx.y, tri = p.s.tri;
  const qa_cut_state cut = p.qa_cut[h];
  if (cut.state != qa_cut_searching) return;
  const int shift = qa_shift(pass), fixed_shift = shift + qa_width(pass);
  const uint32_t digit_mask = (1u << qa_width(pass)) - 1u;
  const uint32_t want = cut.prefix >> fixed_shift;  // pass 0: the sign bit, 0
  const int bins = 1 << qa_width(pass);
  for (int b = threadIdx.x; b < bins; b += blockDim.x) count[b] = 0, sum[b] = 0;
  __syncthreads();
  const int64_t span = (tri + gridDim.x - 1) / gridDim.x;
  const int64_t begin = blockIdx.x * span, end = min(tri, begin + span);
  const float* keys = p.big_keys + h * tri;
  for (int64_t e = begin + threadIdx.x; e < end; e += blockDim.x) {
    const float x = keys[e];
    const uint32_t u = __float_as_uint(x);
    if ((u >> fixed_shift) != want) continue;
    const uint32_t b = (u >> shift) & digit_mask;
    atomicAdd(&count[b], 1u);
    atomicAdd(&sum[b], fixed_point(x));
  }
  __syncthreads();
  for (int b = threadIdx.x; b < bins; b += blockDim.x)
    if (count[b] != 0) {
      atomicAdd(&p.qa_count[h * qa_bins_max + b], count[b]);
      atomicAdd(&p.qa_sum[h * qa_bins_max + b], sum[b]);
    }
}

// The bin of `pass` where the running sum from the top passes the cut's remaining budget: its
// digit joins the prefix and the budget left before it becomes the remainder; after the last
// pass the prefix is the boundary value and take_equal how many entries of that value fit. When
// the whole histogram fits, every entry is kept. grid (H), qa_boundary_threads.
__global__ void qa_boundary_kernel(plan_pointers p, int pass) {
  using scan = cub::BlockScan<unsigned long long, qa_boundary_threads>;
  __shared__ typename scan::TempStorage temp;
  const int64_t h = blockIdx.x;
  qa_cut_state& cut = p.qa_cut[h];
  if (cut.state != qa_cut_searching) return;
  const int bins = 1 << qa_width(pass), per = bins / qa_boundary_threads;
  const uint32_t* count = p.qa_count + h * qa_bins_max;
  const unsigned long long* sum = p.qa_sum + h * qa_bins_max;
  // Thread t owns the bins top - t*per down to top - (t+1)*per + 1 (descending values).
  const int top = bins - 1 - static_cast<int>(threadIdx.x) * per;
  unsigned long long own = 0;
  for (int i = 0; i < per; ++i) own += sum[top - i];
  unsigned long long before = 0, total = 0;
  scan(temp).ExclusiveSum(own, before, total);
  const unsigned long long remaining = cut.remaining;
  __syncthreads();  // every thread has read the cut
  if (threadIdx.x == 0 && total <= remaining) cut.state = qa_cut_keep_all;
  if (!(before <= remaining && remaining < before + own)) return;
  unsigned long long above = before;
  for (int i = 0; i < per; ++i) {
    const int b = top - i;
    if (above + sum[b] <= remaining) {
      above += sum[b];
      continue;
    }
    cut.prefix |= static_cast<uint32_t>(b) << qa_shift(pass);
    cut.remaining = remaining - above;
    if (pass == qa_passes - 1) {
      // One value: every entry of the bin adds the same fixed-point amount (> 0, or the bin
      // could not pass the budget).
      const unsigned long long each = fixed_point(__uint_as_float(cut.prefix));
      cut.take_equal = static_cast<int64_t>(min((remaining - above) / each,
                                                static_cast<unsigned long long>(count[b])));
      cut.state = qa_cut_found;
    }
    return;
  }
}

// Marks the kept query-aware tiles in the bitmask. grid (ceil(tri / 256), H), 256 threads.
__global__ void qa_mark_kernel(plan_pointers p) {
  const plan_sizes& s = p.s;
  const int64_t h = blockIdx.y, e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const qa_cut_state cut = p.qa_cut[h];
  if (cut.state == qa_cut_unused || e >= s.tri) return;
  const int64_t i = h * s.tri + e;
  const uint32_t u = __float_as_uint(p.big_keys[i]);
  const bool keep =
      cut.state == qa_cut_keep_all || u > cut.prefix ||
      (u == cut.prefix && p.qa_equal_rank[i] - p.qa_equal_rank[h * s.tri] < cut.take_equal);
  if (!keep) return;
  const int64_t row = tri_row(e), col = e - tri_start(row);
  atomicOr(p.bitmask + (h * s.nb + row) * s.words + col / 32, 1u << (col % 32));
}

}  // namespace

void launch_query_aware_select(const plan_pointers& p, const plan_rules& r, cub_plan& c,
                               cudaStream_t stream) {
  const char* fn = "device_planner::plan";
  const plan_sizes& s = p.s;
  const unsigned heads = static_cast<unsigned>(s.heads);
  qa_cut_init_kernel<<<(heads + 127) / 128, 128, 0, stream>>>(p, r);
  const unsigned parts = static_cast<unsigned>(
      std::min<int64_t>(qa_histogram_parts_max, (s.tri + qa_entries_per_part - 1) / qa_entries_per_part));
  for (int pass = 0; pass < qa_passes; ++pass) {
    check_cuda(cudaMemsetAsync(p.qa_count, 0, 4 * s.heads * qa_bins_max, stream), fn,
               "clearing the query-aware histograms");
    check_cuda(cudaMemsetAsync(p.qa_sum, 0, 8 * s.heads * qa_bins_max, stream), fn,
               "clearing the query-aware histograms");
    qa_histogram_kernel<<<dim3(parts, heads), qa_histogram_threads, 0, stream>>>(p, pass);
    qa_boundary_kernel<<<heads, qa_boundary_threads, 0, stream>>>(p, pass);
  }
  cub_scan_query_aware_ties(c, p, stream);
  qa_mark_kernel<<<dim3(static_cast<unsigned>((s.tri + 255) / 256), heads), 256, 0, stream>>>(p);
  check_cuda(cudaGetLastError(), fn, "launching the query-aware select");
}

}  // namespace sp::cuda
