// The portable (sm_80+) block-sparse causal flash-attention forward, FlashAttention-2 style:
// one CTA of 8 warps owns one work item (head h, query block r of 128 rows, each warp 16 rows
// with its Q fragments in registers) and walks the row's visited key blocks in sub-tiles of BN
// keys, double-buffered through cp.async. S = Q K^T and O += P V use mma.sync m16n8k16 with fp32
// accumulation; shared memory rows are XOR-swizzled in 16-byte chunks so ldmatrix is
// conflict-free. GQA is native: the CTA reads KV head h / group in place.
// Pivot heads also write each row's per-block log-mass to scratch and, after the row is done,
// reduce it to the exact block attention A[r, c] (DESIGN.md 2F) in a short in-CTA epilogue
// (epilogue.cuh).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "attention_params.h"
#include "block_iter.cuh"
#include "epilogue.cuh"
#include "mask.cuh"
#include "online_softmax.cuh"
#include "ptx_sm80.cuh"

namespace sp::cuda {

template <class T, int D, int BN>
struct attention_traits {
  static constexpr int block_m = mask_block;  // query rows per CTA
  static constexpr int warps = 8;             // 16 query rows each
  static constexpr int threads = warps * 32;
  static constexpr int chunks = D / 8;        // 16-byte chunks per row
  static constexpr int q_elems = block_m * D;
  static constexpr int kv_elems = BN * D;
  // Q, then K and V double-buffered.
  static constexpr int smem_bytes = (q_elems + 4 * kv_elems) * static_cast<int>(sizeof(T));
  // D = 128 needs ~170 registers (O 64, Q 32, S 32): one CTA of 8 warps per SM; D = 64 fits two.
  static constexpr int min_blocks = D <= 64 ? 2 : 1;
  static_assert(D % 16 == 0 && BN % 16 == 0 && mask_block % BN == 0, "tile shape");
};

// Element offset of (row, 16-byte chunk) in a swizzled [rows, D] shared tile.
template <int D>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// Starts the copy of rows [row0, row0 + ROWS) of a [N, *, D] tensor into a swizzled tile;
// rows at or past n are zero-filled (so masked keys multiply zeros, never garbage).
// Positions are absolute within the sequence; position t is row packed_row0 + t of g_base.
template <class T, int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_rows_async(T* s_tile, const T* g_base, int64_t packed_row0,
                                                int64_t row0, int64_t token_stride, int64_t n,
                                                int tid) {
  constexpr int chunks = D / 8;
#pragma unroll
  for (int idx = tid; idx < ROWS * chunks; idx += THREADS) {
    const int row = idx / chunks, chunk = idx % chunks;
    const int64_t token = row0 + row;
    const bool valid = token < n;
    cp_async_16(s_tile + swizzle<D>(row, chunk),
                g_base + (packed_row0 + (valid ? token : row0)) * token_stride + chunk * 8, valid);
  }
}

template <class T, int D, int BN>
__device__ __forceinline__ void attention_fwd_block(const attention_fwd_params& p, int head,
                                                    int qblock, const item_geometry& geo,
                                                    int tid, T* smem, float* s_lse2) {
  using traits = attention_traits<T, D, BN>;
  constexpr int NT = BN / 8;  // 8-key n-tiles of S
  constexpr int DT = D / 8;   // 8-column n-tiles of O
  constexpr int KQ = D / 16;  // k-steps of Q K^T
  const int warp = tid / 32, lane = tid % 32;
  T* s_q = smem;                                // [128, D]
  T* s_k = s_q + traits::q_elems;               // [2, BN, D]
  T* s_v = s_k + 2 * traits::kv_elems;          // [2, BN, D]

  const int64_t n = geo.n;
  const int64_t q0 = static_cast<int64_t>(qblock) * mask_block;
  const int kv_head = head / p.group;
  const T* g_q = static_cast<const T*>(p.q) + static_cast<int64_t>(head) * D;
  const T* g_k = static_cast<const T*>(p.k) + static_cast<int64_t>(kv_head) * D;
  const T* g_v = static_cast<const T*>(p.v) + static_cast<int64_t>(kv_head) * D;
  const block_row<BN> row = block_row_of<BN>(p, geo, qblock);
  const int subtiles = row.subtiles();
  const int pivot = p.pivot_slot != nullptr ? p.pivot_slot[head] : -1;

  if (subtiles > 0) {
    load_rows_async<T, D, mask_block, traits::threads>(s_q, g_q, geo.q_row0, q0, p.q_token_stride,
                                                       n, tid);
    const int64_t k0 = row.key_begin(0);
    load_rows_async<T, D, BN, traits::threads>(s_k, g_k, geo.k_row0, k0, p.k_token_stride, n, tid);
    load_rows_async<T, D, BN, traits::threads>(s_v, g_v, geo.k_row0, k0, p.v_token_stride, n, tid);
    cp_async_commit();
  }

  const int64_t warp_row0 = q0 + warp * 16;
  const int64_t thread_row = warp_row0 + lane / 4;  // rows thread_row and thread_row + 8
  float o[DT][4];
#pragma unroll
  for (int dt = 0; dt < DT; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  online_softmax softmax;
  uint32_t q_frag[KQ][4];

  for (int s = 0; s < subtiles; ++s) {
    cp_async_wait<0>();
    __syncthreads();  // sub-tile s landed; everyone is done with buffer (s + 1) % 2
    if (s == 0) {
#pragma unroll
      for (int kq = 0; kq < KQ; ++kq)
        ldmatrix_x4(q_frag[kq], s_q + swizzle<D>(warp * 16 + (lane & 15), kq * 2 + (lane >> 4)));
    }
    if (s + 1 < subtiles) {
      const int64_t k1 = row.key_begin(s + 1);
      const int buf = (s + 1) & 1;
      load_rows_async<T, D, BN, traits::threads>(s_k + buf * traits::kv_elems, g_k, geo.k_row0,
                                                 k1, p.k_token_stride, n, tid);
      load_rows_async<T, D, BN, traits::threads>(s_v + buf * traits::kv_elems, g_v, geo.k_row0,
                                                 k1, p.v_token_stride, n, tid);
    }
    cp_async_commit();
    const int64_t k0 = row.key_begin(s);
    const T* s_kb = s_k + (s & 1) * traits::kv_elems;
    const T* s_vb = s_v + (s & 1) * traits::kv_elems;

    if (!span_fully_masked(warp_row0 + 15, k0)) {
      float sc[NT][4];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
      for (int kq = 0; kq < KQ; ++kq) {
#pragma unroll
        for (int nn = 0; nn < NT / 2; ++nn) {
          uint32_t b[4];
          ldmatrix_x4(b, s_kb + swizzle<D>(nn * 16 + ((lane >> 4) << 3) + (lane & 7),
                                           kq * 2 + ((lane >> 3) & 1)));
          mma_16816<T>(sc[2 * nn], q_frag[kq], b[0], b[1]);
          mma_16816<T>(sc[2 * nn + 1], q_frag[kq], b[2], b[3]);
        }
      }
      if (span_needs_mask(warp_row0, k0, BN, n)) {
        // Positions relative to k0: the warp's rows are within 128 of it (diagonal block) and
        // the end of the sequence is clamped to the sub-tile.
        const int query_rel = static_cast<int>(thread_row - k0);
        const int n_rel = static_cast<int>(n - k0 < BN ? n - k0 : BN);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key_rel = nt * 8 + 2 * (lane & 3) + (e & 1);
            if (!key_allowed(query_rel + 8 * (e >> 1), key_rel, n_rel)) sc[nt][e] = -INFINITY;
          }
      }
      softmax.update(sc, o, p.scale_log2);
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        const uint32_t a[4] = {pack2<T>(sc[2 * kk][0], sc[2 * kk][1]),
                               pack2<T>(sc[2 * kk][2], sc[2 * kk][3]),
                               pack2<T>(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                               pack2<T>(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
        for (int dd = 0; dd < DT / 2; ++dd) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, s_vb + swizzle<D>(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7),
                                                 dd * 2 + (lane >> 4)));
          mma_16816<T>(o[2 * dd], a, b[0], b[1]);
          mma_16816<T>(o[2 * dd + 1], a, b[2], b[3]);
        }
      }
    }
    if (pivot >= 0 && row.ends_block(s)) {
      const int64_t slot = (p.scratch_offset[head] + row.tile_begin + s / (mask_block / BN)) *
                           mask_block;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float log_mass = softmax.take_block_log2_mass(rr, p.scale_log2);
        if ((lane & 3) == 0) p.tile_mass[slot + warp * 16 + lane / 4 + 8 * rr] = log_mass;
      }
    }
  }

  store_output_rows<T, D>(p, head, geo, thread_row, warp * 16, lane, o, softmax, pivot >= 0,
                          s_lse2);
  if (pivot >= 0) {
    clear_block_attention_row(p, pivot, qblock, tid, traits::threads);
    __syncthreads();  // s_lse2, this CTA's scratch writes and the row's zeros are visible
    reduce_block_attention(p, head, pivot, qblock, row, s_lse2, warp, traits::warps, lane);
  }
}

template <class T, int D, int BN>
__global__ void __launch_bounds__(attention_traits<T, D, BN>::threads,
                                  attention_traits<T, D, BN>::min_blocks)
    attention_fwd_kernel(const __grid_constant__ attention_fwd_params p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ float s_lse2[mask_block];  // base-2 LSE of the CTA's rows, for the A epilogue
  if (p.enabled != nullptr && *p.enabled == 0) return;  // a launch the device called off
  const int item = blockIdx.x;
  const int head = p.work_items[2 * item];
  attention_fwd_block<T, D, BN>(p, head, p.work_items[2 * item + 1],
                                item_geometry_of(p, item, head), threadIdx.x,
                                reinterpret_cast<T*>(smem_raw), s_lse2);
}

}  // namespace sp::cuda
