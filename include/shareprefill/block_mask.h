// Block-sparse attention masks in CSR form (DESIGN.md section 4).
//
// A layer's masks for all heads live in one object. For head h and query block r, the visited
// key blocks are col_idx[row_ptr[h*(nb+1) + r] .. row_ptr[h*(nb+1) + r + 1]), sorted ascending.
// row_ptr offsets are absolute into the concatenated col_idx, so each head's slice can be
// handed to a kernel as is. A tile (r, c) is valid when c <= r < nb (causal, in range); inside
// a visited tile the kernels apply the exact token-level causal rule.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace sp {

using tile = std::pair<int32_t, int32_t>;  // (query block r, key block c)

struct block_mask {
  int64_t n_tokens = 0;
  int64_t block_size = 128;
  int64_t n_blocks = 0;  // ceil(n_tokens / block_size)
  int64_t heads = 0;
  std::vector<int64_t> row_ptr;  // [heads * (n_blocks + 1)], absolute offsets into col_idx
  std::vector<int32_t> col_idx;  // [total tiles]

  // Builds from per-head tile lists (any order, duplicates merged). Throws on invalid tiles.
  static block_mask from_tiles(int64_t n_tokens, int64_t block_size,
                               const std::vector<std::vector<tile>>& tiles_per_head);
  // Takes an explicit CSR and validates it (sorted, unique, causal, in range).
  static block_mask from_csr(int64_t n_tokens, int64_t block_size, int64_t heads,
                             std::vector<int64_t> row_ptr, std::vector<int32_t> col_idx);
  // Every causal tile for every head.
  static block_mask dense_causal(int64_t n_tokens, int64_t block_size, int64_t heads);

  // Throws sp::error naming the head, row and column of the first problem.
  void validate() const;

  int64_t row_begin(int64_t head, int64_t r) const { return row_ptr[head * (n_blocks + 1) + r]; }
  int64_t row_end(int64_t head, int64_t r) const { return row_ptr[head * (n_blocks + 1) + r + 1]; }
  int64_t head_tiles(int64_t head) const { return row_begin(head, n_blocks) - row_begin(head, 0); }
  int64_t total_tiles() const { return static_cast<int64_t>(col_idx.size()); }
  // Tiles of all heads in block rows [first_row, n_blocks) (a chunk's rows).
  int64_t tiles_from_row(int64_t first_row) const;
  bool contains(int64_t head, int32_t r, int32_t c) const;
  std::vector<tile> tiles_of(int64_t head) const;

  // Every head visits every causal tile (a valid mask: its rows hold nothing else).
  bool is_dense_causal() const;
  // Visited tiles / causal tiles (nb*(nb+1)/2 per head), for one head or all heads.
  double head_density(int64_t head) const;
  double density() const;

  // Token-level mask of one head including the causal rule: [n_tokens, n_tokens], row-major,
  // 1 where query i may attend key j. For tests; O(N^2) memory.
  std::vector<uint8_t> expand_to_token_mask(int64_t head) const;
};

int64_t causal_tile_count(int64_t n_blocks);

}  // namespace sp
