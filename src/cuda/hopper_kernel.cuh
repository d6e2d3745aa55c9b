// The Hopper (sm_90a) block-sparse causal flash-attention forward, FlashAttention-3 style. A CTA
// of three warpgroups loops over work items (head h, query block r of 128 rows) of the
// longest-first schedule (the full causal mask at D = 64: four warpgroups, items of 192 rows
// walking key blocks 0 .. r, hopper_traits' C = 3; everything below holds per consumer): CTA b takes item b, then claims the next item from a global counter
// (the items in flight stay a contiguous window of the schedule, as with the hardware block
// scheduler, so CTAs reading the same K/V share L2).
//
// Warpgroup 0 is the producer: one thread picks items, publishes each item's header in shared
// memory with its Q load, and issues TMA loads of Q and of the K and V tiles at the mask's key
// blocks into rings (q_stages Q buffers, `stages` K and V buffers), each buffer completing on
// its own mbarrier. Consumers release K and V separately (k_empty after the tile's Q K^T,
// v_empty after its P V) and Q with its header through q_empty after their last Q K^T of the
// item; with two Q buffers the next item's Q loads while the current item runs, and its first
// tiles load under the current item's last P V and epilogue.
//
// Warpgroups 1 and 2 are consumers of 64 query rows each: S = Q K^T by wgmma from shared memory
// (both K-major, 128-byte swizzle), the causal rule and the base-2 online softmax on the
// accumulator fragments (online_softmax.cuh, same per-warp layout as mma.sync), then O += P V by
// wgmma with P from registers and V MN-major, waiting for each GEMM (the other consumer's GEMMs
// fill a consumer's softmax). setmaxnreg moves registers from the producer to the consumers.
// GQA native (KV head h / group read in place); ragged N through TMA zero fill plus
// key_allowed; pivot heads write per-block log-masses and reduce them to A in the epilogue.
//
// This file composes the roles: hopper_scheduler.cuh (which items), hopper_producer.cuh (TMA
// loads), hopper_mainloop.cuh (consumer math and epilogue); shared types in hopper_traits.cuh.
#pragma once

#include <cstdint>

#include "hopper_mainloop.cuh"
#include "hopper_params.h"
#include "hopper_producer.cuh"
#include "hopper_traits.cuh"
#include "online_softmax.cuh"
#include "ptx_sm90.cuh"

namespace sp::cuda {

// Lane 0's value in every lane of the warp, word by word.
template <class S>
__device__ __forceinline__ S warp_broadcast(const S& value) {
  static_assert(sizeof(S) % 4 == 0, "whole words");
  uint32_t words[sizeof(S) / 4];
  memcpy(words, &value, sizeof(S));
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(S) / 4); ++i)
    words[i] = __shfl_sync(0xffffffffu, words[i], 0);
  S out;
  memcpy(&out, words, sizeof(S));
  return out;
}

// A consumer warpgroup: takes the items the producer publishes until it publishes head = -1.
// Only lane 0 of each warp reads a header (and broadcasts it), so the warp's one q_empty
// arrival, by lane 0, releases every read of it.
template <class T, int D, int C>
__device__ __forceinline__ void hopper_consume(const attention_fwd_params& p, int consumer, int tid,
                                               const unsigned char* s_q, const unsigned char* s_k,
                                               const unsigned char* s_v, const hopper_item* s_item,
                                               const hopper_barriers& bar, float* s_lse2) {
  using tr = hopper_traits<T, D, C>;
  constexpr int DT = consumer_rows<T, D, C>::DT;
  int64_t g = 0;  // K/V tiles consumed so far (the producer's ring position, in step)
  for (int64_t loads = 0;; ++loads) {
    const ring_slot<tr::q_stages> qs(loads);
    mbarrier_wait(&bar.q[qs.stage], qs.phase);
    hopper_item header;
    if (tid % 32 == 0) header = s_item[qs.stage];
    const hopper_item it = warp_broadcast(header);
    if (it.head < 0) break;
    uint64_t* q_empty = &bar.q_empty[qs.stage];
    // Without tiles the header is all this item reads; with tiles Q is released after the
    // last Q K^T (in the mainloop).
    if (it.row.tiles == 0) warp_arrive(q_empty, tid % 32);
    const consumer_rows<T, D, C> cr(it, consumer, tid, s_q + qs.stage * tr::q_bytes, q_empty);
    float o[DT][4];
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    online_softmax softmax;
    hopper_mainloop<T, D, C>(p, it, cr, s_k, s_v, bar, g, o, softmax);
    cr.epilogue(p, it, o, softmax, s_lse2);
  }
}

template <class T, int D, int C>
__global__ void __launch_bounds__(hopper_traits<T, D, C>::threads, 1)
    hopper_fwd_kernel(const __grid_constant__ hopper_fwd_params hp) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using tr = hopper_traits<T, D, C>;
  extern __shared__ unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t bar_q[tr::q_stages], bar_q_empty[tr::q_stages],
      bar_k[tr::stages], bar_v[tr::stages], bar_k_empty[tr::stages], bar_v_empty[tr::stages];
  __shared__ float s_lse2[tr::block_m];         // base-2 LSE of the item's rows, for the A epilogue
  __shared__ hopper_item s_item[tr::q_stages];  // items of the Q buffers, published by the producer
  unsigned char* s_q = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~static_cast<uintptr_t>(1023));
  unsigned char* s_k = s_q + tr::q_stages * tr::q_bytes;
  unsigned char* s_v = s_k + tr::stages * tr::kv_bytes;
  const hopper_barriers bar{bar_q, bar_q_empty, bar_k, bar_v, bar_k_empty, bar_v_empty};

  if (threadIdx.x == 0) {
    prefetch_tensor_map(&hp.q_map);
    prefetch_tensor_map(&hp.k_map);
    prefetch_tensor_map(&hp.v_map);
    for (int s = 0; s < tr::q_stages; ++s) {
      mbarrier_init(&bar_q[s], 1);
      mbarrier_init(&bar_q_empty[s], tr::consumers * 4);
    }
    for (int s = 0; s < tr::stages; ++s) {
      mbarrier_init(&bar_k[s], 1);
      mbarrier_init(&bar_v[s], 1);
      mbarrier_init(&bar_k_empty[s], tr::consumers * 4);
      mbarrier_init(&bar_v_empty[s], tr::consumers * 4);
    }
    fence_barrier_init();
  }
  __syncthreads();

  const int warpgroup = threadIdx.x / 128;
  if (warpgroup == 0) {
    setmaxnreg_dec<tr::producer_regs>();
    if (threadIdx.x == 0)
      hopper_produce<T, D, C>(hp, gridDim.x, blockIdx.x, s_q, s_k, s_v, s_item, bar);
  } else {
    setmaxnreg_inc<tr::consumer_regs>();
    hopper_consume<T, D, C>(hp.p, warpgroup - 1, threadIdx.x % 128, s_q, s_k, s_v, s_item, bar,
                            s_lse2);
  }
#endif
}

}  // namespace sp::cuda
