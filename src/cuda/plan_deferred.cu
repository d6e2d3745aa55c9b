// Deferred pivots (pivot_publishing::deferred, device_planner.h): a pivot that may serve members of
// later layers runs without its block attention A at its own layer (walked, like a dense head:
// classify) and keeps its q and k in the state. A later layer where a member's profiles pass
// the similarity gate (needed_pivots_kernel) computes the pivot's A then, with the attention
// kernel on a one-head full causal plan whose head is pivot slot 0 (the same items as at the
// pivot's layer, so the same bits), and publishes it before that layer's gates run. The host
// enqueues these launches for every cluster a member of the layer may need; the device calls off
// the ones nobody needs (run_if, pivot_count 0).
#include <cmath>

#include "cuda_check.h"
#include "plan_common.cuh"
#include "plan_layout.h"

namespace sp::cuda {
namespace {

constexpr int deferred_threads = 256;

// The q and k rows of the layer's deferred pivots into their slots' kept memory: kept[slot] =
// q[:, h, :], then k[:, h / group, :] ([N, D] each), in 16-byte vectors.
// grid (ceil(N * D / 8 / 256), H), 256.
__global__ void keep_kernel(plan_pointers p, state_pointers st, plan_rules r, qk_views x) {
  const int64_t h = blockIdx.y;
  if (p.kinds[h] != kind_pivot) return;
  const int32_t slot = r.slot_of[r.layer * p.s.heads + h];
  if (st.deferred[slot] == 0) return;
  const int64_t n = p.s.n, dim = p.s.dim, per_row = dim / 8;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * per_row) return;
  const int64_t t = i / per_row, c = (i % per_row) * 8;
  uint16_t* kept_q = st.kept + slot * 2 * n * dim;  // kept_q, kept_k: [N, D]
  uint16_t* kept_k = kept_q + n * dim;
  const auto* q = static_cast<const uint16_t*>(x.q);  // q: [N, H, D] (token 0 first: no chunk)
  const auto* k = static_cast<const uint16_t*>(x.k);  // k: [N, Hkv, D]
  *reinterpret_cast<uint4*>(kept_q + t * dim + c) =
      *reinterpret_cast<const uint4*>(q + t * x.q_token_stride + h * x.q_head_stride + c);
  *reinterpret_cast<uint4*>(kept_k + t * dim + c) = *reinterpret_cast<const uint4*>(
      k + t * x.k_token_stride + (h / p.s.group) * x.k_head_stride + c);
}

// A one-head plan of the full causal mask whose head is pivot slot 0, in the plan arrays:
// row_ptr[r] = r (r + 1) / 2, row r's columns 0 .. r, the rows longest first, scratch offset 0.
// grid (ceil((tri + 1) / 256)), 256.
__global__ void pivot_plan_kernel(plan_pointers p) {
  const int64_t nb = p.s.nb, tri = p.s.tri;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < tri) {  // entry i lies in row r: r (r + 1) / 2 <= i < (r + 1) (r + 2) / 2
    int64_t r = static_cast<int64_t>((sqrt(8.0 * static_cast<double>(i) + 1.0) - 1.0) / 2.0);
    while (r * (r + 1) / 2 > i) --r;
    while ((r + 1) * (r + 2) / 2 <= i) ++r;
    p.col_idx[i] = static_cast<int32_t>(i - r * (r + 1) / 2);
  }
  if (i <= nb) p.row_ptr[i] = i * (i + 1) / 2;
  if (i < nb) {
    p.schedule[2 * i] = 0;
    p.schedule[2 * i + 1] = static_cast<int32_t>(nb - 1 - i);
  }
  if (i == 0) {
    p.pivot_slot[0] = 0;
    p.scratch_offset[0] = 0;
    p.kinds[0] = kind_pivot;
  }
}

// Whether cluster slot `slot`'s deferred pivot is served now (a member needed it): run_if and
// pivot_count say so to the attention and publish launches that follow; slot_head[0] is the
// pivot's head. One thread.
__global__ void serve_kernel(plan_pointers p, state_pointers st, int32_t slot, int32_t* run_if) {
  const bool serve = st.needed[slot] != 0 && st.deferred[slot] != 0;
  st.needed[slot] = 0;
  if (serve) st.deferred[slot] = 0;
  *run_if = serve ? 1 : 0;
  *p.pivot_count = serve ? 1 : 0;
  p.slot_head[0] = st.pivot_head[slot];
}

}  // namespace

void launch_keep_deferred_pivots(const plan_pointers& p, const state_pointers& st,
                                 const plan_rules& r, const qk_views& x, cudaStream_t stream) {
  const int64_t vectors = p.s.n * p.s.dim / 8;
  const dim3 grid(static_cast<unsigned>((vectors + deferred_threads - 1) / deferred_threads),
                  static_cast<unsigned>(p.s.heads));
  keep_kernel<<<grid, deferred_threads, 0, stream>>>(p, st, r, x);
  check_cuda(cudaGetLastError(), "device_planner::plan", "launching the deferred pivots' copy");
}

void launch_pivot_plan(const plan_pointers& p, cudaStream_t stream) {
  const int64_t entries = std::max(p.s.tri, p.s.nb + 1);
  pivot_plan_kernel<<<static_cast<unsigned>((entries + deferred_threads - 1) / deferred_threads),
                      deferred_threads, 0, stream>>>(p);
  check_cuda(cudaGetLastError(), "device_planner::plan", "launching the deferred pivots' plan");
}

void launch_serve_deferred_pivot(const plan_pointers& p, const state_pointers& st, int32_t slot,
                                 int32_t* run_if, cudaStream_t stream) {
  serve_kernel<<<1, 1, 0, stream>>>(p, st, slot, run_if);
  check_cuda(cudaGetLastError(), "device_planner::plan", "launching a deferred pivot's check");
}

}  // namespace sp::cuda
