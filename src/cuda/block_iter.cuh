// Which keys a work item visits: the CSR row (head h, query block r) of the layer's mask lists
// key blocks of 128 tokens; the kernel walks each in sub-tiles of BN keys. This is the only
// place the sparse index is read.
#pragma once

#include <cstdint>

#include "attention_params.h"

namespace sp::cuda {

template <int BN>
struct block_row {
  static constexpr int subtiles_per_block = mask_block / BN;
  const int32_t* col_idx = nullptr;  // col_idx: the layer's [total tiles]
  int64_t tile_begin = 0;            // absolute offset of the row's first tile
  int tiles = 0;                     // visited key blocks in the row

  __device__ __forceinline__ int subtiles() const { return tiles * subtiles_per_block; }
  // Key block of the row's t-th tile; without col_idx the row is the causal walk 0, 1, ...
  __device__ __forceinline__ int64_t column(int t) const {
    return col_idx != nullptr ? col_idx[tile_begin + t] : t;
  }
  __device__ __forceinline__ int64_t key_begin(int s) const {
    return static_cast<int64_t>(col_idx[tile_begin + s / subtiles_per_block]) * mask_block +
           (s % subtiles_per_block) * BN;
  }
  // True for the last sub-tile of a mask block: the block's mass is complete.
  __device__ __forceinline__ bool ends_block(int s) const {
    return s % subtiles_per_block == subtiles_per_block - 1;
  }
};

// Where a work item's sequence lives in the packed tensors: absolute query position i is row
// q_row0 + i of q and out (and column q_row0 + i of the lse), key j row k_row0 + j of k and v;
// keys at or past n are masked. row_ptr0: index into row_ptr of the item's head's block 0.
struct item_geometry {
  int64_t q_row0 = 0, k_row0 = 0, n = 0, row_ptr0 = 0;
};

__device__ __forceinline__ item_geometry item_geometry_of(const attention_fwd_params& p,
                                                          int64_t item, int head) {
  item_geometry g;
  if (p.sequences == nullptr) {
    g.q_row0 = -p.q_offset;
    g.n = p.n;
    g.row_ptr0 = static_cast<int64_t>(head) * (p.n_blocks + 1);
  } else {
    const varlen_sequence s = p.sequences[p.item_sequence[item]];
    g.q_row0 = g.k_row0 = s.token0;
    g.n = s.n_tokens;
    g.row_ptr0 = s.row_ptr0 + static_cast<int64_t>(head) * (s.n_blocks + 1);
  }
  return g;
}

template <int BN>
__device__ __forceinline__ block_row<BN> block_row_of(const attention_fwd_params& p,
                                                      const item_geometry& g, int row) {
  block_row<BN> b;
  const int64_t* rp = p.row_ptr + g.row_ptr0 + row;
  b.col_idx = p.col_idx;
  b.tile_begin = rp[0];
  b.tiles = static_cast<int>(rp[1] - rp[0]);
  return b;
}

}  // namespace sp::cuda
