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
  __device__ __forceinline__ int64_t key_begin(int s) const {
    return static_cast<int64_t>(col_idx[tile_begin + s / subtiles_per_block]) * mask_block +
           (s % subtiles_per_block) * BN;
  }
  // True for the last sub-tile of a mask block: the block's mass is complete.
  __device__ __forceinline__ bool ends_block(int s) const {
    return s % subtiles_per_block == subtiles_per_block - 1;
  }
};

template <int BN>
__device__ __forceinline__ block_row<BN> block_row_of(const attention_fwd_params& p, int head,
                                                      int row) {
  block_row<BN> b;
  const int64_t* rp = p.row_ptr + static_cast<int64_t>(head) * (p.n_blocks + 1) + row;
  b.col_idx = p.col_idx;
  b.tile_begin = rp[0];
  b.tiles = static_cast<int>(rp[1] - rp[0]);
  return b;
}

}  // namespace sp::cuda
