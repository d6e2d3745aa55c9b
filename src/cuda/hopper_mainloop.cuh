// The consumer math of the Hopper attention forward: one consumer warpgroup's 64 query rows of a
// work item. Per key tile, S = Q K^T by wgmma from shared memory (both K-major, 128-byte
// swizzle), the causal rule and the base-2 online softmax on the accumulator fragments
// (online_softmax.cuh, the mma.sync layout per warp), then O += P V by wgmma with P from
// registers and V MN-major, waiting for each GEMM (the other consumer's GEMMs fill a consumer's
// softmax). K, V and Q buffers are released to the producer as soon as they are read; the item
// ends with the O / LSE stores and, for pivot heads, the block-attention row (epilogue.cuh).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "block_iter.cuh"
#include "epilogue.cuh"
#include "hopper_traits.cuh"
#include "mask.cuh"
#include "online_softmax.cuh"
#include "ptx_sm90.cuh"
#include "wgmma_sm90.cuh"

namespace sp::cuda {

// Per-thread view of one consumer warpgroup's part of a work item: 64 query rows, 16 per warp,
// rows thread_row and thread_row + 8 per thread (the wgmma accumulator layout), read from the
// item's Q buffer, which q_empty releases.
template <class T, int D, int C>
struct consumer_rows {
  using tr = hopper_traits<T, D, C>;
  static constexpr int NT = tr::block_n / 8;  // 8-key column tiles of S
  static constexpr int DT = D / 8;            // 8-column tiles of O
  int consumer, warp, lane;
  int local_row0;       // first of the warp's 16 rows in the block
  int64_t warp_row0;    // its token index
  int64_t thread_row;   // rows thread_row and thread_row + 8
  int tiles;            // the item's visited key blocks
  const unsigned char* q_base;
  uint64_t* q_empty;

  // s_q: the item's Q buffer, [D / 64 chunks][128 rows][64 columns], 128-byte swizzled.
  __device__ __forceinline__ consumer_rows(const hopper_item& it, int consumer_, int tid,
                                           const unsigned char* s_q, uint64_t* q_empty_)
      : consumer(consumer_), warp(tid / 32), lane(tid % 32), q_empty(q_empty_) {
    local_row0 = consumer * 64 + warp * 16;
    warp_row0 = it.first_row + local_row0;
    thread_row = warp_row0 + lane / 4;
    tiles = it.row.tiles;
    q_base = s_q + consumer * 64 * 128;
  }

  // S = Q K^T of the stage's K tile (issued, not waited for).
  __device__ __forceinline__ void issue_qk(float (&s)[NT][4], const unsigned char* kb) const {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int chunk = kk / 4, offset = (kk % 4) * 32;
      const uint64_t da = smem_descriptor(q_base + chunk * tr::chunk_q_bytes + offset, 16, 1024);
      const uint64_t db = smem_descriptor(kb + chunk * tr::chunk_kv_bytes + offset, 16, 1024);
      wgmma_ss_m64n128k16(wgmma_type<T>{}, s, da, db, kk > 0 ? 1 : 0);
    }
    wgmma_commit();
  }

  // O += P V of the stage's V tile (issued, not waited for).
  __device__ __forceinline__ void issue_pv(float (&o)[DT][4], const uint32_t (&pa)[NT / 2][4],
                                           const unsigned char* vb) const {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) {
      const uint64_t db = smem_descriptor(vb + kk * 2048, tr::chunk_kv_bytes, 1024);
      if constexpr (D == 128) wgmma_rs_m64n128k16(wgmma_type<T>{}, o, pa[kk], db, 1);
      else wgmma_rs_m64n64k16(wgmma_type<T>{}, o, pa[kk], db, 1);
    }
    wgmma_commit();
  }

  // Tile t's Q K^T has completed: its K stage may be reloaded and, after the item's last tile,
  // this warp no longer reads Q (the buffer may take a later item's Q).
  __device__ __forceinline__ void release_after_qk(const hopper_barriers& bar, int st,
                                                   int t) const {
    warp_arrive(&bar.k_empty[st], lane);
    if (t == tiles - 1) warp_arrive(q_empty, lane);
  }

  // The causal rule and the ragged end inside the tile at key k0 (only where some pair needs it).
  __device__ __forceinline__ void mask(float (&s)[NT][4], int64_t k0, int64_t n) const {
    if (!span_needs_mask(warp_row0, k0, tr::block_n, n)) return;
    const int query_rel = static_cast<int>(thread_row - k0);
    const int n_rel = static_cast<int>(n - k0 < tr::block_n ? n - k0 : tr::block_n);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key_rel = nt * 8 + 2 * (lane & 3) + (e & 1);
        if (!key_allowed(query_rel + 8 * (e >> 1), key_rel, n_rel)) s[nt][e] = -INFINITY;
      }
  }

  // Probabilities in accumulator layout -> the A fragments of P V.
  __device__ __forceinline__ static void pack(const float (&s)[NT][4], uint32_t (&pa)[NT / 2][4]) {
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) {
      pa[kk][0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      pa[kk][1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      pa[kk][2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[kk][3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
  }

  // Pivot heads: the base-2 log-mass of the tile just softmaxed, per row, into the scratch.
  __device__ __forceinline__ void write_block_mass(const attention_fwd_params& p,
                                                   const hopper_item& it, int t,
                                                   online_softmax& softmax) const {
    const int64_t slot_row = (p.scratch_offset[it.head] + it.row.tile_begin + t) * mask_block;
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const float log_mass = softmax.take_block_log2_mass(rr, p.scale_log2);
      if ((lane & 3) == 0) p.tile_mass[slot_row + local_row0 + lane / 4 + 8 * rr] = log_mass;
    }
  }

  // Normalise and store O and the LSE; pivot heads reduce their block masses to A (both
  // consumers together).
  __device__ __forceinline__ void epilogue(const attention_fwd_params& p, const hopper_item& it,
                                           const float (&o)[DT][4],
                                           const online_softmax& softmax, float* s_lse2) const {
    const bool pivot = !tr::causal && it.pivot >= 0;  // the causal walk has no pivot heads
    store_output_rows<T, D>(p, it.head, it.geo, thread_row, local_row0, lane, o, softmax, pivot,
                            s_lse2);
    if (!pivot) return;
    clear_block_attention_row(p, it.pivot, it.qblock, consumer * 128 + warp * 32 + lane,
                              tr::consumer_threads);
    // s_lse2, the scratch and the row's zeros visible to both consumers
    named_barrier_sync(pivot_epilogue_barrier, tr::consumer_threads);
    reduce_block_attention(p, it.head, it.pivot, it.qblock, it.row, s_lse2, consumer * 4 + warp,
                           tr::consumers * 4, lane);
    named_barrier_sync(pivot_epilogue_barrier, tr::consumer_threads);  // s_lse2 read by all
  }
};

// The mainloop: per tile, Q K^T, wait, softmax, P V, wait.
template <class T, int D, int C>
__device__ __forceinline__ void hopper_mainloop(
    const attention_fwd_params& p, const hopper_item& it, const consumer_rows<T, D, C>& cr,
    const unsigned char* s_k, const unsigned char* s_v, const hopper_barriers& bar, int64_t& g,
    float (&o)[consumer_rows<T, D, C>::DT][4], online_softmax& softmax) {
  using tr = hopper_traits<T, D, C>;
  constexpr int NT = consumer_rows<T, D, C>::NT;
  for (int t = 0; t < it.row.tiles; ++t, ++g) {
    const ring_slot<tr::stages> slot(g);
    const int st = slot.stage;
    const int64_t k0 = it.row.column(t) * mask_block;
    float sc[NT][4];
    mbarrier_wait(&bar.k[st], slot.phase);
    cr.issue_qk(sc, s_k + st * tr::kv_bytes);
    wgmma_wait<0>();
    fence_registers(sc);
    cr.release_after_qk(bar, st, t);
    cr.mask(sc, k0, it.geo.n);
    softmax.update(sc, o, p.scale_log2);
    if (!tr::causal && it.pivot >= 0) cr.write_block_mass(p, it, t, softmax);
    uint32_t pa[NT / 2][4];
    consumer_rows<T, D, C>::pack(sc, pa);
    mbarrier_wait(&bar.v[st], slot.phase);
    cr.issue_pv(o, pa, s_v + st * tr::kv_bytes);
    wgmma_wait<0>();
    fence_registers(o);
    warp_arrive(&bar.v_empty[st], cr.lane);
  }
}

}  // namespace sp::cuda
