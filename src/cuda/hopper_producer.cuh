// The producer of the Hopper attention forward (one thread of warpgroup 0): publishes each work
// item's header in shared memory with its Q load and streams the item's K and V tiles (the key
// blocks of its CSR row) by TMA into the rings of hopper_traits.cuh, each buffer completing on
// its own mbarrier and reused once the consumers release it.
#pragma once

#include <cstdint>

#include "hopper_params.h"
#include "hopper_scheduler.cuh"
#include "hopper_traits.cuh"
#include "ptx_sm90.cuh"

namespace sp::cuda {

// The producer thread: publishes each item with its Q, streams its K/V tiles through the rings,
// and publishes head = -1 when its source runs dry.
// s_item: [q_stages] headers, one per Q buffer of s_q.
// ctas, cta: the grid's size and this CTA's index.
template <class T, int D, int C>
__device__ __forceinline__ void hopper_produce(const hopper_fwd_params& hp, int64_t ctas,
                                               int64_t cta, unsigned char* s_q, unsigned char* s_k,
                                               unsigned char* s_v, hopper_item* s_item,
                                               const hopper_barriers& bar) {
  using tr = hopper_traits<T, D, C>;
  item_source source(hopper_work_items<tr::causal>(hp.p), ctas, cta, hp.next_item);
  int64_t item = source.next();
  hopper_item it;
  if (item >= 0) it = hopper_item_of<tr::causal>(hp.p, item);
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
        tma_load_3d(s_q + qs.stage * tr::q_bytes + c * tr::chunk_q_bytes, &hp.q_map, q_full, c * 64,
                    it.head, static_cast<int>(it.geo.q_row0 + it.first_row));
    }
    const int kv_head = it.head / hp.p.group;
    for (int t = 0; t < row.tiles; ++t, ++g) {
      const ring_slot<tr::stages> slot(g);
      const int st = slot.stage;
      const int k0 = static_cast<int>(it.geo.k_row0 + row.column(t) * mask_block);
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
    if (item >= 0) it = hopper_item_of<tr::causal>(hp.p, item);
  }
}

}  // namespace sp::cuda
