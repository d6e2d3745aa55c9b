// Step A's budgets on the device without sorting: the cover count of each token profile (1 + the
// number of largest entries whose running sum stays <= gamma, ties in any order: equal values add
// the same amounts) by a radix select over the float bits. Each profile row is split into
// `parts` equal ranges, one thread block each (grid parts x 2H, parts chosen so the grid fills the
// GPU when the rows are few or long), and every pass is one kernel launch.
// Profiles are >= 0, so a value's bit pattern orders like the value. Four passes of 8, 8, 8, 7
// bits, from the exponent down: each builds a histogram of count and summed weight per digit
// over the entries that share the digits chosen so far, walks it from the largest digit and keeps
// the digit where the running weight first exceeds gamma (what lies above it is counted and
// summed). After the last pass the threshold value v* is exact; the count is the entries above it
// plus the fewest copies of v* that push the sum past gamma. Stops early when the chosen digit
// holds a single entry or, when only the budgets are asked for (counts null), when every count
// the digit allows gives the same budget. A pass's blocks add their histograms into the row's
// in global memory; the last block of the row to finish (an arrival counter) walks it and
// chooses the digit.
// Each row's limit is its head's gamma (per-head gammas, issue 17; the global gamma otherwise).
// Weights are fixed point (value * 2^56, rounded, in 64-bit integers): integer atomics add in any
// order to the same result, so the budgets are deterministic and do not depend on `parts`. The
// CPU rule sums the sorted values in fp64 in order; the two can differ only where a prefix sum
// lies within ~1e-12 of gamma (the CUB scan this replaces, with its own fp64 order, had the same
// kind of margin).
#include <cmath>

#include "cuda_check.h"
#include "plan_layout.h"

namespace sp::cuda {
namespace {

constexpr int select_threads = 512;
constexpr int select_bins = 256;   // 8-bit digits
constexpr int select_copies = 8;   // histogram copies (warp % 8) against atomic contention
constexpr int select_groups = 4;   // same-digit lane groups a warp adds at once per round
constexpr double fixed_one = 72057594037927936.0;  // 2^56: the weight of the value 1

// Sort key and fixed-point weight of a profile entry. Non-positive, NaN and values past 2 (not a
// profile entry: they sum to 1) count as 0, the last entries of the order.
__device__ __forceinline__ uint32_t select_key(float x) {
  return x > 0.0f && x <= 2.0f ? __float_as_uint(x) : 0u;
}
__device__ __forceinline__ unsigned long long fixed_weight(uint32_t key) {
  return key == 0u ? 0ull : __double2ull_rn(static_cast<double>(__uint_as_float(key)) * fixed_one);
}

// One profile row's select, carried across the four pass kernels in global memory (zeroed
// before pass 0): the digits chosen so far and what lies above them, and the row's histogram that
// its blocks add into; the last block of a pass to arrive chooses the digit and clears the
// histogram and the arrival count for the next pass.
struct cover_select_row {
  unsigned long long above_sum;   // weight of the entries above the chosen digits
  long long above_count;          // their number
  long long result;               // the cover count once known (counts null: one with the
                                  // count's budget), else 0 (counts are >= 1)
  uint32_t prefix;                // digits chosen so far
  uint32_t arrived;               // blocks of the row done with the current pass
  unsigned long long bin_sum[select_bins];
  unsigned int bin_count[select_bins];
};

struct select_smem {
  unsigned long long sum[select_copies][select_bins];
  unsigned int count[select_copies][select_bins];
  unsigned long long bin_sum[select_bins];
  unsigned int bin_count[select_bins];
  uint32_t prefix;
  unsigned long long above_sum;
  long long above_count;
  long long result;
  bool last;                      // this block is the last of its row to finish the pass
};

struct select_args {
  const float* tok;               // [rows, n] profiles
  int64_t heads, n, part_len;     // entries [part * part_len, (part + 1) * part_len) per block
  double gamma;                   // of every row where head_gamma is null
  const double* head_gamma;       // [heads] the gamma of each head's two rows, or null
  int32_t min_blocks, max_blocks;
  cover_select_row* rows;         // [2H]
  int32_t* counts;                // [2H] or null
  int32_t* budgets;               // [H, 2]
};

// The budget in blocks of a cover count: count / plan_block + 1 within [min_blocks, max_blocks].
__device__ __forceinline__ int32_t budget_blocks(long long count, const select_args& a) {
  const long long blocks = count / plan_block + 1;
  return static_cast<int32_t>(min(max(blocks, static_cast<long long>(a.min_blocks)),
                                  static_cast<long long>(a.max_blocks)));
}

// Pass `pass` (0..3, key bits [shift, shift + bits) = 23 15 7 0 / 8 8 8 7: the exponent first,
// bit 31, the sign, is 0, so the first histogram spreads over the exponents instead of two or
// three hot bins) of the select of profile row blockIdx.y over its part blockIdx.x. The row's
// last block to finish writes counts[row] (optional) and the budget in blocks,
// budgets[(row % heads) * 2 + row / heads] = clamp(count / plan_block + 1), once the count is
// known (a digit holding one entry, or after pass 3).
__global__ void __launch_bounds__(select_threads, 2) cover_select_pass_kernel(select_args a,
                                                                              int pass) {
  __shared__ select_smem sm;
  const int64_t row = blockIdx.y, parts = gridDim.x;
  cover_select_row& g = a.rows[row];
  if (g.result != 0) return;  // known after an earlier pass (the same in every thread)
  const int64_t begin = min(a.n, blockIdx.x * a.part_len), end = min(a.n, begin + a.part_len);
  const float* x = a.tok + row * a.n;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, copy = warp % select_copies;
  // prefix sum > gamma  <=>  weight sum > floor(gamma * 2^56) (weights are integers); gamma is
  // the row's head's (rows h and heads + h are head h's vertical and slash profiles).
  const double gamma = a.head_gamma != nullptr ? a.head_gamma[row % a.heads] : a.gamma;
  const unsigned long long limit = static_cast<unsigned long long>(floor(gamma * fixed_one));
  const int shift = max(23 - 8 * pass, 0), bits = pass == 3 ? 7 : 8;
  for (int i = tid; i < select_copies * select_bins; i += select_threads) {
    (&sm.sum[0][0])[i] = 0ull;
    (&sm.count[0][0])[i] = 0u;
  }
  __syncthreads();
  const uint32_t prefix = g.prefix;
  const uint32_t high = ~0u << (shift + bits);  // bits already chosen
  const int64_t rounds = (end - begin + select_threads - 1) / select_threads;
  for (int64_t round = 0; round < rounds; ++round) {
    // Every lane takes part in every round (the warp-wide reductions below); -1: no entry.
    const int64_t i = begin + round * select_threads + tid;
    const uint32_t key = i < end ? select_key(x[i]) : 0u;
    int digit = -1;
    if (i < end && ((key ^ prefix) & high) == 0u)
      digit = static_cast<int>((key >> shift) & ((1u << bits) - 1u));
    // Lanes with the same digit add once, through the group's lowest lane: the count and the
    // weight in three 22-bit pieces (32 lanes x 2^22 fits 32 bits; weights are < 2^58). The
    // groups are taken one at a time with full-warp reductions (`pending` is the same in every
    // lane), at most select_groups of them; the lanes left add their own entry.
    const unsigned long long w = digit < 0 ? 0ull : fixed_weight(key);
    unsigned pending = __ballot_sync(0xffffffffu, digit >= 0);
    for (int group = 0; group < select_groups && pending != 0u; ++group) {
      const int leader = __ffs(pending) - 1;
      const bool mine = digit == __shfl_sync(0xffffffffu, digit, leader);
      const unsigned members = __ballot_sync(0xffffffffu, mine);
      const unsigned long long wm = mine ? w : 0ull;
      const unsigned piece = (1u << 22) - 1u;
      const unsigned p0 = __reduce_add_sync(0xffffffffu, static_cast<unsigned>(wm) & piece);
      const unsigned p1 = __reduce_add_sync(0xffffffffu, static_cast<unsigned>(wm >> 22) & piece);
      const unsigned p2 = __reduce_add_sync(0xffffffffu, static_cast<unsigned>(wm >> 44));
      if (lane == leader) {
        atomicAdd(&sm.count[copy][digit], static_cast<unsigned>(__popc(members)));
        const unsigned long long sum = static_cast<unsigned long long>(p0) +
                                       (static_cast<unsigned long long>(p1) << 22) +
                                       (static_cast<unsigned long long>(p2) << 44);
        if (sum != 0ull) atomicAdd(&sm.sum[copy][digit], sum);
      }
      if (mine) digit = -1;
      pending &= ~members;
    }
    if (digit >= 0) {
      atomicAdd(&sm.count[copy][digit], 1u);
      if (w != 0ull) atomicAdd(&sm.sum[copy][digit], w);
    }
  }
  __syncthreads();
  // The block's histogram into the row's (integer atomics: the same sums in any order).
  if (tid < select_bins) {
    unsigned long long s = 0ull;
    unsigned int c = 0u;
    for (int k = 0; k < select_copies; ++k) s += sm.sum[k][tid], c += sm.count[k][tid];
    if (c != 0u) atomicAdd(&g.bin_count[tid], c);
    if (s != 0ull) atomicAdd(&g.bin_sum[tid], s);
  }
  __threadfence();
  __syncthreads();
  if (tid == 0) sm.last = atomicAdd(&g.arrived, 1u) == static_cast<unsigned>(parts - 1);
  __syncthreads();
  if (!sm.last) return;
  // Every block of the row has added its histogram: choose the digit.
  __threadfence();
  if (tid < select_bins) {
    sm.bin_sum[tid] = __ldcg(&g.bin_sum[tid]);
    sm.bin_count[tid] = __ldcg(&g.bin_count[tid]);
    g.bin_sum[tid] = 0ull;
    g.bin_count[tid] = 0u;
  }
  if (tid == 0) {
    g.arrived = 0u;
    sm.prefix = prefix;
    sm.above_sum = g.above_sum;
    sm.above_count = g.above_count;
    sm.result = 0;
  }
  __syncthreads();
  if (warp == 0) {
    // Lane l walks digits 255 - 8l down to 248 - 8l: the descending order, lanes in order.
    const unsigned long long need = limit - sm.above_sum;  // above_sum <= limit by construction
    unsigned long long local = 0ull;
    for (int j = 0; j < 8; ++j) local += sm.bin_sum[select_bins - 1 - 8 * lane - j];
    unsigned long long incl = local;
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long up = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += up;
    }
    const unsigned long long excl = incl - local;
    if (lane == 31 && incl <= need) sm.result = a.n + 1;  // never exceeds gamma: all kept
    if (excl <= need && incl > need) {                    // exactly one lane
      unsigned long long run = excl;
      long long above = 0;
      for (int l = 0; l < lane; ++l)
        for (int j = 0; j < 8; ++j) above += sm.bin_count[select_bins - 1 - 8 * l - j];
      for (int j = 0; j < 8; ++j) {
        const int digit = select_bins - 1 - 8 * lane - j;
        if (run + sm.bin_sum[digit] > need) {
          sm.prefix |= static_cast<uint32_t>(digit) << shift;
          sm.above_sum += run;
          sm.above_count += above;
          // The count lies in [above + 1, above + the digit's entries]: known when the digit
          // holds one entry, and the budget is when both ends give the same (the counts
          // themselves are not asked for).
          const long long lo = sm.above_count + 1, hi = sm.above_count + sm.bin_count[digit];
          if (lo == hi || (a.counts == nullptr && budget_blocks(lo, a) == budget_blocks(hi, a)))
            sm.result = lo;
          break;
        }
        run += sm.bin_sum[digit];
        above += sm.bin_count[digit];
      }
    }
  }
  __syncthreads();
  if (tid != 0) return;
  g.prefix = sm.prefix;
  g.above_sum = sm.above_sum;
  g.above_count = sm.above_count;
  long long count = sm.result;
  if (count == 0) {
    if (pass < 3) return;
    // v* = prefix: the fewest copies m with above_sum + m * w* > limit (w* > 0: its bin crossed).
    const unsigned long long w = fixed_weight(sm.prefix);
    count = sm.above_count + static_cast<long long>((limit - sm.above_sum) / w) + 1;
  }
  g.result = count;
  if (a.counts) a.counts[row] = static_cast<int32_t>(count);
  a.budgets[(row % a.heads) * 2 + row / a.heads] = budget_blocks(count, a);
}

}  // namespace

int64_t cover_select_scratch_bytes(int64_t rows) {
  return rows * static_cast<int64_t>(sizeof(cover_select_row));
}

void launch_cover_budgets(const float* tok, int64_t heads, int64_t n, int64_t parts,
                          const plan_rules& r, void* scratch, int32_t* budgets, int32_t* counts,
                          cudaStream_t stream) {
  const char* fn = "device_planner::plan";
  check(parts >= 1 && parts <= 65535, fn, "budget select parts ", parts, " outside [1, 65535]");
  const int64_t rows = 2 * heads;
  check_cuda(cudaMemsetAsync(scratch, 0, static_cast<size_t>(cover_select_scratch_bytes(rows)),
                             stream),
             fn, "clearing the budget select");
  select_args a{tok, heads, n, (n + parts - 1) / parts, r.gamma, r.head_gamma, r.min_blocks,
                r.max_blocks, static_cast<cover_select_row*>(scratch), counts, budgets};
  const dim3 grid(static_cast<unsigned>(parts), static_cast<unsigned>(rows));
  for (int pass = 0; pass < 4; ++pass)
    cover_select_pass_kernel<<<grid, select_threads, 0, stream>>>(a, pass);
  check_cuda(cudaGetLastError(), fn, "launching the budget select");
}

}  // namespace sp::cuda
