// The Hopper (sm_90a) block-sparse causal flash-attention forward, FlashAttention-3 style. A CTA
// of three warpgroups loops over work items (head h, query block r of 128 rows) of the
// longest-first schedule: CTA b takes item b, then claims the next item from a global counter
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
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "block_iter.cuh"
#include "epilogue.cuh"
#include "hopper_params.h"
#include "mask.cuh"
#include "online_softmax.cuh"
#include "ptx_sm90.cuh"
#include "wgmma_sm90.cuh"

namespace sp::cuda {

constexpr int hopper_consumers = 2;  // consumer warpgroups per CTA, 64 query rows each

template <class T, int D>
struct hopper_traits {
  static constexpr int block_m = mask_block;  // query rows per CTA
  static constexpr int block_n = mask_block;  // keys per tile = one mask block
  static constexpr int consumers = hopper_consumers;
  static constexpr int consumer_threads = 128 * consumers;
  static constexpr int threads = 128 * (consumers + 1);
  static constexpr int q_stages = 2;  // Q buffers: the next item's Q loads during this item
  static constexpr int stages = D <= 64 ? 4 : 2;
  static constexpr int chunk_q_bytes = block_m * 128;  // one 64-column swizzle chunk of Q
  static constexpr int chunk_kv_bytes = block_n * 128;
  static constexpr int q_bytes = block_m * D * 2;
  static constexpr int kv_bytes = block_n * D * 2;
  // Q ring, K ring, V ring, plus slack to align the dynamic base to 1024 bytes (swizzle atoms).
  static constexpr int smem_bytes = q_stages * q_bytes + 2 * stages * kv_bytes + 1024;
  // 128*56 + 256*224 = 384*168, the pool __launch_bounds__(384, 1) gives the CTA (setmaxnreg.inc
  // past the pool waits forever); neither side spills at these limits (ptxas -warn-spills).
  static constexpr int producer_regs = 56, consumer_regs = 224;
  static_assert(D == 64 || D == 128, "head dim");
};

// Named barrier 1 (0 is __syncthreads): the pivot epilogue's, among the consumer threads.
constexpr int pivot_epilogue_barrier = 1;

// The producer's source of items: CTA `cta` takes item `cta` first, then (counter set: a grid
// smaller than the work items) claims item ctas + atomicAdd(counter, 1) until past the end.
struct item_source {
  int64_t items, ctas, cta;
  unsigned long long* counter;
  bool first = true;
  __device__ __forceinline__ item_source(int64_t items_, int64_t ctas_, int64_t cta_,
                                         unsigned long long* counter_)
      : items(items_), ctas(ctas_), cta(cta_), counter(counter_) {}
  // The next item index, or -1 when the CTA is done.
  __device__ __forceinline__ int64_t next() {
    int64_t item = cta;
    if (!first) {
      if (counter == nullptr) return -1;
      item = ctas + static_cast<int64_t>(atomicAdd(counter, 1ull));
    }
    first = false;
    return item < items ? item : -1;
  }
};

// Ring position of the CTA's g-th loaded K/V tile or Q (counted over all its items).
template <int stages>
struct ring_slot {
  int stage;
  uint32_t phase;  // parity of the slot's use: (g / stages) & 1
  __device__ __forceinline__ explicit ring_slot(int64_t g)
      : stage(static_cast<int>(g % stages)), phase(static_cast<uint32_t>((g / stages) & 1)) {}
};

// What a CTA needs to know about one work item, read from the schedule and the CSR index;
// head = -1 ends the CTA's loop.
struct hopper_item {
  int head = -1, qblock = 0;
  int pivot = -1;  // A slot of the head, or -1
  block_row<mask_block> row;
};

__device__ __forceinline__ hopper_item hopper_item_of(const attention_fwd_params& p, int64_t item) {
  hopper_item it;
  it.head = p.work_items[2 * item];
  it.qblock = p.work_items[2 * item + 1];
  it.pivot = p.pivot_slot != nullptr ? p.pivot_slot[it.head] : -1;
  it.row = block_row_of<mask_block>(p, it.head, it.qblock);
  return it;
}

struct hopper_barriers {
  uint64_t* q;        // [q_stages] the item header is published and its Q landed (count 1 + tx)
  uint64_t* q_empty;  // [q_stages] every consumer warp finished with Q and its header (count 8)
  uint64_t* k;        // [stages] K tile landed
  uint64_t* v;        // [stages] V tile landed
  uint64_t* k_empty;  // [stages] every consumer warp finished its Q K^T of the stage (count 8)
  uint64_t* v_empty;  // [stages] every consumer warp finished its P V of the stage (count 8)
};

// The producer thread: publishes each item with its Q, streams its K/V tiles through the rings,
// and publishes head = -1 when its source runs dry.
// s_item: [q_stages] headers, one per Q buffer of s_q.
// ctas, cta: the grid's size and this CTA's index.
template <class T, int D>
__device__ __forceinline__ void hopper_produce(const hopper_fwd_params& hp, int64_t ctas,
                                               int64_t cta, unsigned char* s_q,
                                               unsigned char* s_k, unsigned char* s_v,
                                               hopper_item* s_item, const hopper_barriers& bar) {
  using tr = hopper_traits<T, D>;
  item_source source(static_cast<int64_t>(hp.p.heads) * hp.p.n_blocks, ctas, cta, hp.next_item);
  int64_t item = source.next();
  hopper_item it;
  if (item >= 0) it = hopper_item_of(hp.p, item);
  int64_t g = 0;  // K/V tiles loaded so far
  for (int64_t loads = 0;; ++loads) {
    // The consumers have read the buffer's previous header and finished with its previous Q.
    const ring_slot<tr::q_stages> qs(loads);
    if (loads >= tr::q_stages) mbarrier_wait(&bar.q_empty[qs.stage], qs.phase ^ 1u);
    uint64_t* q_full = &bar.q[qs.stage];
    if (item < 0) {
      s_item[qs.stage].head = -1;
      mbarrier_arrive(q_full);
      return;
    }
    s_item[qs.stage] = it;
    // Claimed now, read after this item's loads are issued: the latency hides under them.
    const int64_t next = source.next();
    const block_row<mask_block>& row = it.row;
    if (row.tiles == 0) {  // consumers write zeros; nothing to load
      mbarrier_arrive(q_full);
    } else {
      mbarrier_arrive_expect_tx(q_full, tr::q_bytes);
#pragma unroll
      for (int c = 0; c < D / 64; ++c)
        tma_load_3d(s_q + qs.stage * tr::q_bytes + c * tr::chunk_q_bytes, &hp.q_map, q_full,
                    c * 64, it.head, it.qblock * mask_block);
    }
    const int kv_head = it.head / hp.p.group;
    for (int t = 0; t < row.tiles; ++t, ++g) {
      const ring_slot<tr::stages> slot(g);
      const int st = slot.stage;
      const int k0 = row.col_idx[row.tile_begin + t] * mask_block;
      if (g >= tr::stages) mbarrier_wait(&bar.k_empty[st], slot.phase ^ 1u);
      mbarrier_arrive_expect_tx(&bar.k[st], tr::kv_bytes);
#pragma unroll
      for (int c = 0; c < D / 64; ++c)
        tma_load_3d(s_k + st * tr::kv_bytes + c * tr::chunk_kv_bytes, &hp.k_map, &bar.k[st],
                    c * 64, kv_head, k0);
      if (g >= tr::stages) mbarrier_wait(&bar.v_empty[st], slot.phase ^ 1u);
      mbarrier_arrive_expect_tx(&bar.v[st], tr::kv_bytes);
#pragma unroll
      for (int c = 0; c < D / 64; ++c)
        tma_load_3d(s_v + st * tr::kv_bytes + c * tr::chunk_kv_bytes, &hp.v_map, &bar.v[st],
                    c * 64, kv_head, k0);
    }
    item = next;
    if (item >= 0) it = hopper_item_of(hp.p, item);
  }
}

// One arrival per consumer warp: lane 0 arrives once every lane's earlier shared-memory reads
// (operands of waited-for wgmma) are ordered before it.
__device__ __forceinline__ void warp_arrive(uint64_t* bar, int lane) {
  __syncwarp();
  if (lane == 0) mbarrier_arrive(bar);
}

// Per-thread view of one consumer warpgroup's part of a work item: 64 query rows, 16 per warp,
// rows thread_row and thread_row + 8 per thread (the wgmma accumulator layout), read from the
// item's Q buffer, which q_empty releases.
template <class T, int D>
struct consumer_rows {
  using tr = hopper_traits<T, D>;
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
    warp_row0 = static_cast<int64_t>(it.qblock) * mask_block + local_row0;
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
    store_output_rows<T, D>(p, it.head, thread_row, local_row0, lane, o, softmax, it.pivot >= 0,
                            s_lse2);
    if (it.pivot < 0) return;
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
template <class T, int D>
__device__ __forceinline__ void hopper_mainloop(
    const attention_fwd_params& p, const hopper_item& it, const consumer_rows<T, D>& cr,
    const unsigned char* s_k, const unsigned char* s_v, const hopper_barriers& bar, int64_t& g,
    float (&o)[consumer_rows<T, D>::DT][4], online_softmax& softmax) {
  using tr = hopper_traits<T, D>;
  constexpr int NT = consumer_rows<T, D>::NT;
  for (int t = 0; t < it.row.tiles; ++t, ++g) {
    const ring_slot<tr::stages> slot(g);
    const int st = slot.stage;
    const int64_t k0 = static_cast<int64_t>(it.row.col_idx[it.row.tile_begin + t]) * mask_block;
    float sc[NT][4];
    mbarrier_wait(&bar.k[st], slot.phase);
    cr.issue_qk(sc, s_k + st * tr::kv_bytes);
    wgmma_wait<0>();
    fence_registers(sc);
    cr.release_after_qk(bar, st, t);
    cr.mask(sc, k0, p.n);
    softmax.update(sc, o, p.scale_log2);
    if (it.pivot >= 0) cr.write_block_mass(p, it, t, softmax);
    uint32_t pa[NT / 2][4];
    consumer_rows<T, D>::pack(sc, pa);
    mbarrier_wait(&bar.v[st], slot.phase);
    cr.issue_pv(o, pa, s_v + st * tr::kv_bytes);
    wgmma_wait<0>();
    fence_registers(o);
    warp_arrive(&bar.v_empty[st], cr.lane);
  }
}

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
template <class T, int D>
__device__ __forceinline__ void hopper_consume(const attention_fwd_params& p, int consumer,
                                               int tid, const unsigned char* s_q,
                                               const unsigned char* s_k, const unsigned char* s_v,
                                               const hopper_item* s_item,
                                               const hopper_barriers& bar, float* s_lse2) {
  using tr = hopper_traits<T, D>;
  constexpr int DT = consumer_rows<T, D>::DT;
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
    const consumer_rows<T, D> cr(it, consumer, tid, s_q + qs.stage * tr::q_bytes, q_empty);
    float o[DT][4];
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    online_softmax softmax;
    hopper_mainloop<T, D>(p, it, cr, s_k, s_v, bar, g, o, softmax);
    cr.epilogue(p, it, o, softmax, s_lse2);
  }
}

template <class T, int D>
__global__ void __launch_bounds__(hopper_traits<T, D>::threads, 1)
    hopper_fwd_kernel(const __grid_constant__ hopper_fwd_params hp) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using tr = hopper_traits<T, D>;
  extern __shared__ unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t bar_q[tr::q_stages], bar_q_empty[tr::q_stages],
      bar_k[tr::stages], bar_v[tr::stages], bar_k_empty[tr::stages], bar_v_empty[tr::stages];
  __shared__ float s_lse2[mask_block];       // base-2 LSE of the item's rows, for the A epilogue
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
      hopper_produce<T, D>(hp, gridDim.x, blockIdx.x, s_q, s_k, s_v, s_item, bar);
  } else {
    setmaxnreg_inc<tr::consumer_regs>();
    hopper_consume<T, D>(hp.p, warpgroup - 1, threadIdx.x % 128, s_q, s_k, s_v,
                                   s_item, bar, s_lse2);
  }
#endif
}

}  // namespace sp::cuda
