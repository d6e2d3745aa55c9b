// The Hopper (sm_90a) block-sparse causal flash-attention forward, FlashAttention-3 style. A CTA
// of three warpgroups loops over work items (head h, query block r of 128 rows): with a
// persistent grid (one CTA per SM) CTA b takes items b, 2G-1-b, 2G+b, ... of the longest-first
// schedule (a snake, so every CTA's tile total is about equal); with one CTA per item it takes
// item b only. Warpgroup 0 is the producer: one thread issues TMA loads of each item's Q and of
// the K and V tiles at the mask's key blocks into a ring of `stages` shared-memory buffers, each
// completing on its own mbarrier; consumers release a stage through an `empty` mbarrier and Q
// through `q_empty` after their last Q K^T of the item, so the next item's Q and first tiles
// load under the current item's last P V and epilogue. Warpgroups 1 and 2 are consumers of 64
// query rows each: S = Q K^T by wgmma from shared memory (both K-major, 128-byte swizzle), the
// causal rule and the base-2 online softmax on the accumulator fragments (online_softmax.cuh,
// same per-warp layout as mma.sync), then O += P V by wgmma with P from registers and V
// MN-major. setmaxnreg moves registers from the producer to the consumers. GQA native (KV head
// h / group read in place); ragged N through TMA zero fill plus key_allowed; pivot heads write
// per-block log-masses and reduce them to A in the same epilogue as the portable kernel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "block_iter.cuh"
#include "hopper_params.h"
#include "mask.cuh"
#include "online_softmax.cuh"
#include "ptx_sm90.cuh"
#include "wgmma_sm90.cuh"

namespace sp::cuda {

template <class T, int D>
struct hopper_traits {
  static constexpr int block_m = mask_block;  // query rows per CTA
  static constexpr int block_n = mask_block;  // keys per tile = one mask block
  static constexpr int consumers = 2;         // warpgroups of 64 query rows
  static constexpr int threads = 128 * (consumers + 1);
  static constexpr int stages = D <= 64 ? 4 : 2;
  static constexpr int chunk_q_bytes = block_m * 128;  // one 64-column swizzle chunk of Q
  static constexpr int chunk_kv_bytes = block_n * 128;
  static constexpr int q_bytes = block_m * D * 2;
  static constexpr int kv_bytes = block_n * D * 2;
  // Q, K ring, V ring, plus slack to align the dynamic base to 1024 bytes (swizzle atoms).
  static constexpr int smem_bytes = q_bytes + 2 * stages * kv_bytes + 1024;
  static constexpr int producer_regs = 24, consumer_regs = 240;  // 128*24 + 256*240 <= 64K
  static_assert(D == 64 || D == 128, "head dim");
};

// Work items of one CTA: round k of the persistent loop takes item k*ctas + b (k even) or
// k*ctas + ctas-1-b (k odd) of the longest-first schedule, skipping indices past the end.
struct item_cursor {
  int64_t items, ctas, round = 0;
  int64_t cta;
  __device__ __forceinline__ item_cursor(int64_t items_, int64_t ctas_, int64_t cta_)
      : items(items_), ctas(ctas_), cta(cta_) {}
  // The next item index, or -1 when the CTA is done.
  __device__ __forceinline__ int64_t next() {
    for (;; ++round) {
      const int64_t base = round * ctas;
      if (base >= items) return -1;
      const int64_t item = base + ((round & 1) == 0 ? cta : ctas - 1 - cta);
      if (item < items) {
        ++round;
        return item;
      }
    }
  }
};

// Ring position of the CTA's g-th loaded K/V tile (counted over all its items).
template <int stages>
struct ring_slot {
  int stage;
  uint32_t phase;  // parity of the slot's use: (g / stages) & 1
  __device__ __forceinline__ explicit ring_slot(int64_t g)
      : stage(static_cast<int>(g % stages)), phase(static_cast<uint32_t>((g / stages) & 1)) {}
};

struct hopper_barriers {
  uint64_t* q;        // Q landed (count 1 + tx)
  uint64_t* q_empty;  // every consumer warp finished its last Q K^T of the item (count 8)
  uint64_t* k;        // [stages] K tile landed
  uint64_t* v;        // [stages] V tile landed
  uint64_t* empty;    // [stages] every consumer warp finished the stage (count 8)
};

template <class T, int D>
__device__ __forceinline__ void hopper_produce(const hopper_fwd_params& hp, int64_t cta,
                                               int64_t ctas, unsigned char* s_q,
                                               unsigned char* s_k, unsigned char* s_v,
                                               const hopper_barriers& bar) {
  using tr = hopper_traits<T, D>;
  const int64_t items = static_cast<int64_t>(hp.p.heads) * hp.p.n_blocks;
  item_cursor cursor(items, ctas, cta);
  int64_t g = 0;      // K/V tiles loaded so far
  int64_t loads = 0;  // Q loads so far
  for (int64_t item = cursor.next(); item >= 0; item = cursor.next()) {
    const int head = hp.p.work_items[2 * item], qblock = hp.p.work_items[2 * item + 1];
    const block_row<mask_block> row = block_row_of<mask_block>(hp.p, head, qblock);
    if (row.tiles == 0) continue;  // consumers write zeros without waiting for anything
    const int kv_head = head / hp.p.group;
    if (loads > 0) mbarrier_wait(bar.q_empty, static_cast<uint32_t>((loads - 1) & 1));
    mbarrier_arrive_expect_tx(bar.q, tr::q_bytes);
#pragma unroll
    for (int c = 0; c < D / 64; ++c)
      tma_load_3d(s_q + c * tr::chunk_q_bytes, &hp.q_map, bar.q, c * 64, head, qblock * mask_block);
    ++loads;
    for (int t = 0; t < row.tiles; ++t, ++g) {
      const ring_slot<tr::stages> slot(g);
      const int st = slot.stage;
      if (g >= tr::stages) mbarrier_wait(&bar.empty[st], slot.phase ^ 1u);
      const int k0 = row.col_idx[row.tile_begin + t] * mask_block;
      mbarrier_arrive_expect_tx(&bar.k[st], tr::kv_bytes);
#pragma unroll
      for (int c = 0; c < D / 64; ++c)
        tma_load_3d(s_k + st * tr::kv_bytes + c * tr::chunk_kv_bytes, &hp.k_map, &bar.k[st],
                    c * 64, kv_head, k0);
      mbarrier_arrive_expect_tx(&bar.v[st], tr::kv_bytes);
#pragma unroll
      for (int c = 0; c < D / 64; ++c)
        tma_load_3d(s_v + st * tr::kv_bytes + c * tr::chunk_kv_bytes, &hp.v_map, &bar.v[st],
                    c * 64, kv_head, k0);
    }
  }
}

// What a CTA needs to know about one work item, read from the schedule and the CSR index.
struct hopper_item {
  int head = 0, qblock = 0;
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

// One work item of one consumer warpgroup: its 64 query rows against the row's tiles, starting
// at ring position g (advanced past the item's tiles); q_phase is the parity of this item's Q.
template <class T, int D>
__device__ __forceinline__ void hopper_consume_item(const attention_fwd_params& p,
                                                    const hopper_item& it, int consumer, int tid,
                                                    const unsigned char* s_q,
                                                    const unsigned char* s_k,
                                                    const unsigned char* s_v,
                                                    const hopper_barriers& bar, int64_t& g,
                                                    uint32_t q_phase, float* s_lse2) {
  using tr = hopper_traits<T, D>;
  constexpr int NT = tr::block_n / 8;  // 8-key column tiles of S
  constexpr int DT = D / 8;            // 8-column tiles of O
  const int warp = tid / 32, lane = tid % 32;
  const int head = it.head, qblock = it.qblock, pivot = it.pivot;
  const block_row<mask_block>& row = it.row;
  const int64_t n = p.n;
  const int64_t q0 = static_cast<int64_t>(qblock) * mask_block;
  const int local_row0 = consumer * 64 + warp * 16;  // first of the warp's 16 rows in the block
  const int64_t warp_row0 = q0 + local_row0;
  const int64_t thread_row = warp_row0 + lane / 4;  // rows thread_row and thread_row + 8
  const unsigned char* q_base = s_q + consumer * 64 * 128;

  float o[DT][4];
#pragma unroll
  for (int dt = 0; dt < DT; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  online_softmax softmax;
  if (row.tiles > 0) mbarrier_wait(bar.q, q_phase);

  for (int t = 0; t < row.tiles; ++t, ++g) {
    const ring_slot<tr::stages> slot(g);
    const int st = slot.stage;
    const int64_t k0 = static_cast<int64_t>(row.col_idx[row.tile_begin + t]) * mask_block;
    const unsigned char* kb = s_k + st * tr::kv_bytes;
    const unsigned char* vb = s_v + st * tr::kv_bytes;

    float sc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
    mbarrier_wait(&bar.k[st], slot.phase);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int chunk = kk / 4, offset = (kk % 4) * 32;
      const uint64_t da = smem_descriptor(q_base + chunk * tr::chunk_q_bytes + offset, 16, 1024);
      const uint64_t db = smem_descriptor(kb + chunk * tr::chunk_kv_bytes + offset, 16, 1024);
      wgmma_ss_m64n128k16(wgmma_type<T>{}, sc, da, db, kk > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(sc);
    // After the item's last Q K^T this warp no longer reads Q: the next item's Q may land.
    if (t == row.tiles - 1 && lane == 0) mbarrier_arrive(bar.q_empty);

    if (span_needs_mask(warp_row0, k0, tr::block_n, n)) {
      const int query_rel = static_cast<int>(thread_row - k0);
      const int n_rel = static_cast<int>(n - k0 < tr::block_n ? n - k0 : tr::block_n);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key_rel = nt * 8 + 2 * (lane & 3) + (e & 1);
          if (!key_allowed(query_rel + 8 * (e >> 1), key_rel, n_rel)) sc[nt][e] = -INFINITY;
        }
    }
    softmax.update(sc, o, p.scale_log2);
    uint32_t pa[NT / 2][4];
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) {
      pa[kk][0] = pack2<T>(sc[2 * kk][0], sc[2 * kk][1]);
      pa[kk][1] = pack2<T>(sc[2 * kk][2], sc[2 * kk][3]);
      pa[kk][2] = pack2<T>(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
      pa[kk][3] = pack2<T>(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
    }

    mbarrier_wait(&bar.v[st], slot.phase);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) {
      const uint64_t db = smem_descriptor(vb + kk * 2048, tr::chunk_kv_bytes, 1024);
      if constexpr (D == 128) wgmma_rs_m64n128k16(wgmma_type<T>{}, o, pa[kk], db, 1);
      else wgmma_rs_m64n64k16(wgmma_type<T>{}, o, pa[kk], db, 1);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_registers(o);
    if (lane == 0) mbarrier_arrive(&bar.empty[st]);  // this warp is done with stage st

    if (pivot >= 0) {
      const int64_t slot_row = (p.scratch_offset[head] + row.tile_begin + t) * mask_block;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float log_mass = softmax.take_block_log2_mass(rr, p.scale_log2);
        if ((lane & 3) == 0) p.scratch[slot_row + local_row0 + lane / 4 + 8 * rr] = log_mass;
      }
    }
  }

  // Epilogue: normalise, store O (rows < N) and the natural-log LSE.
  const float ln2 = 0.69314718055994531f;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t query = thread_row + 8 * rr;
    const float total = softmax.total(rr);
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    const float lse2 = softmax.lse2(rr, total, p.scale_log2);
    if (query < n) {
      T* g_o = static_cast<T*>(p.out) + query * p.out_token_stride +
               static_cast<int64_t>(head) * D + 2 * (lane & 3);
#pragma unroll
      for (int dt = 0; dt < DT; ++dt)
        *reinterpret_cast<uint32_t*>(g_o + dt * 8) =
            pack2<T>(o[dt][2 * rr] * inv, o[dt][2 * rr + 1] * inv);
      if (p.lse != nullptr && (lane & 3) == 0)
        p.lse[static_cast<int64_t>(head) * n + query] = lse2 * ln2;
    }
    if (pivot >= 0 && (lane & 3) == 0) s_lse2[local_row0 + lane / 4 + 8 * rr] = lse2;
  }

  if (pivot >= 0) {
    named_barrier_sync(1, tr::consumers * 128);  // s_lse2 and the scratch writes are visible
    const int cwarp = consumer * 4 + warp;
    const int valid_rows = static_cast<int>(n - q0 < mask_block ? n - q0 : mask_block);
    float* a_row = p.block_attention +
                   (static_cast<int64_t>(pivot) * p.n_blocks + qblock) * p.n_blocks;
    for (int t = cwarp; t < row.tiles; t += tr::consumers * 4) {
      const float* log_mass =
          p.scratch + (p.scratch_offset[head] + row.tile_begin + t) * mask_block;
      float sum = 0.0f;
      for (int i = lane; i < valid_rows; i += 32) sum += exp2_approx(log_mass[i] - s_lse2[i]);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (lane == 0) a_row[row.col_idx[row.tile_begin + t]] = sum / static_cast<float>(valid_rows);
    }
    named_barrier_sync(1, tr::consumers * 128);  // s_lse2 is read by all before the next item
  }
}

template <class T, int D>
__device__ __forceinline__ void hopper_consume(const attention_fwd_params& p, int64_t cta,
                                               int64_t ctas, int consumer, int tid,
                                               const unsigned char* s_q, const unsigned char* s_k,
                                               const unsigned char* s_v, const hopper_barriers& bar,
                                               float* s_lse2) {
  const int64_t items = static_cast<int64_t>(p.heads) * p.n_blocks;
  item_cursor cursor(items, ctas, cta);
  int64_t g = 0;      // K/V tiles consumed so far (the producer's ring position, in step)
  int64_t loads = 0;  // Q loads consumed so far
  // The next item's header is read one item ahead, so its latency hides under the current one.
  int64_t item = cursor.next();
  hopper_item current;
  if (item >= 0) current = hopper_item_of(p, item);
  while (item >= 0) {
    const int64_t next_item = cursor.next();
    hopper_item next;
    if (next_item >= 0) next = hopper_item_of(p, next_item);
    hopper_consume_item<T, D>(p, current, consumer, tid, s_q, s_k, s_v, bar, g,
                              static_cast<uint32_t>(loads & 1), s_lse2);
    if (current.row.tiles > 0) ++loads;
    current = next;
    item = next_item;
  }
}

template <class T, int D>
__global__ void __launch_bounds__(hopper_traits<T, D>::threads, 1)
    hopper_fwd_kernel(const __grid_constant__ hopper_fwd_params hp) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using tr = hopper_traits<T, D>;
  extern __shared__ unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t bar_q, bar_q_empty, bar_k[tr::stages], bar_v[tr::stages],
      bar_empty[tr::stages];
  __shared__ float s_lse2[mask_block];  // base-2 LSE of the item's rows, for the A epilogue
  unsigned char* s_q = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~static_cast<uintptr_t>(1023));
  unsigned char* s_k = s_q + tr::q_bytes;
  unsigned char* s_v = s_k + tr::stages * tr::kv_bytes;
  const hopper_barriers bar{&bar_q, &bar_q_empty, bar_k, bar_v, bar_empty};

  if (threadIdx.x == 0) {
    prefetch_tensor_map(&hp.q_map);
    prefetch_tensor_map(&hp.k_map);
    prefetch_tensor_map(&hp.v_map);
    mbarrier_init(&bar_q, 1);
    mbarrier_init(&bar_q_empty, tr::consumers * 4);
    for (int s = 0; s < tr::stages; ++s) {
      mbarrier_init(&bar_k[s], 1);
      mbarrier_init(&bar_v[s], 1);
      mbarrier_init(&bar_empty[s], tr::consumers * 4);
    }
    fence_barrier_init();
  }
  __syncthreads();

  const int warpgroup = threadIdx.x / 128;
  if (warpgroup == 0) {
    setmaxnreg_dec<tr::producer_regs>();
    if (threadIdx.x == 0) hopper_produce<T, D>(hp, blockIdx.x, gridDim.x, s_q, s_k, s_v, bar);
  } else {
    setmaxnreg_inc<tr::consumer_regs>();
    hopper_consume<T, D>(hp.p, blockIdx.x, gridDim.x, warpgroup - 1, threadIdx.x % 128, s_q, s_k,
                         s_v, bar, s_lse2);
  }
#endif
}

}  // namespace sp::cuda
