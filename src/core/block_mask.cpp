// CSR block masks: construction, validation, density and expansion to token masks.
#include "shareprefill/block_mask.h"

#include <algorithm>

#include "shareprefill/error.h"

namespace sp {

int64_t causal_tile_count(int64_t n_blocks) { return n_blocks * (n_blocks + 1) / 2; }

static int64_t blocks_for(const char* fn, int64_t n_tokens, int64_t block_size) {
  check(n_tokens > 0, fn, "n_tokens must be positive, got ", n_tokens);
  check(block_size >= 16 && (block_size & (block_size - 1)) == 0, fn,
        "block_size must be a power of two >= 16, got ", block_size);
  return (n_tokens + block_size - 1) / block_size;
}

block_mask block_mask::from_tiles(int64_t n_tokens, int64_t block_size,
                                  const std::vector<std::vector<tile>>& tiles_per_head) {
  const char* fn = "block_mask::from_tiles";
  block_mask m;
  m.n_tokens = n_tokens;
  m.block_size = block_size;
  m.n_blocks = blocks_for(fn, n_tokens, block_size);
  m.heads = static_cast<int64_t>(tiles_per_head.size());
  check(m.heads > 0, fn, "no heads given");
  m.row_ptr.reserve(static_cast<size_t>(m.heads * (m.n_blocks + 1)));
  for (int64_t h = 0; h < m.heads; ++h) {
    std::vector<tile> tiles = tiles_per_head[static_cast<size_t>(h)];
    for (const tile& t : tiles) {
      check(t.first >= 0 && t.first < m.n_blocks && t.second >= 0 && t.second <= t.first, fn,
            "head ", h, ": tile (", t.first, ", ", t.second, ") is not causal/in range for ",
            m.n_blocks, " blocks");
    }
    std::sort(tiles.begin(), tiles.end());
    tiles.erase(std::unique(tiles.begin(), tiles.end()), tiles.end());
    size_t next = 0;
    for (int64_t r = 0; r < m.n_blocks; ++r) {
      m.row_ptr.push_back(static_cast<int64_t>(m.col_idx.size()));
      for (; next < tiles.size() && tiles[next].first == r; ++next)
        m.col_idx.push_back(tiles[next].second);
    }
    m.row_ptr.push_back(static_cast<int64_t>(m.col_idx.size()));
  }
  return m;
}

block_mask block_mask::from_csr(int64_t n_tokens, int64_t block_size, int64_t heads,
                                std::vector<int64_t> row_ptr, std::vector<int32_t> col_idx) {
  block_mask m;
  m.n_tokens = n_tokens;
  m.block_size = block_size;
  m.n_blocks = blocks_for("block_mask::from_csr", n_tokens, block_size);
  m.heads = heads;
  m.row_ptr = std::move(row_ptr);
  m.col_idx = std::move(col_idx);
  m.validate();
  return m;
}

block_mask block_mask::dense_causal(int64_t n_tokens, int64_t block_size, int64_t heads) {
  block_mask m;
  m.n_tokens = n_tokens;
  m.block_size = block_size;
  m.n_blocks = blocks_for("block_mask::dense_causal", n_tokens, block_size);
  check(heads > 0, "block_mask::dense_causal", "heads must be positive, got ", heads);
  m.heads = heads;
  m.row_ptr.reserve(static_cast<size_t>(heads * (m.n_blocks + 1)));
  m.col_idx.reserve(static_cast<size_t>(heads * causal_tile_count(m.n_blocks)));
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t r = 0; r < m.n_blocks; ++r) {
      m.row_ptr.push_back(static_cast<int64_t>(m.col_idx.size()));
      for (int32_t c = 0; c <= r; ++c) m.col_idx.push_back(c);
    }
    m.row_ptr.push_back(static_cast<int64_t>(m.col_idx.size()));
  }
  return m;
}

void block_mask::validate() const {
  const char* fn = "block_mask::validate";
  check(n_tokens > 0, fn, "n_tokens must be positive, got ", n_tokens);
  check(n_blocks == (n_tokens + block_size - 1) / block_size, fn, "n_blocks ", n_blocks,
        " does not match ceil(", n_tokens, " / ", block_size, ")");
  check(heads > 0, fn, "heads must be positive, got ", heads);
  check(static_cast<int64_t>(row_ptr.size()) == heads * (n_blocks + 1), fn, "row_ptr has ",
        row_ptr.size(), " entries, expected heads*(n_blocks+1) = ", heads * (n_blocks + 1));
  check(row_ptr.front() == 0, fn, "row_ptr[0] must be 0, got ", row_ptr.front());
  check(row_ptr.back() == static_cast<int64_t>(col_idx.size()), fn, "last row_ptr ",
        row_ptr.back(), " != number of column indices ", col_idx.size());
  for (int64_t h = 0; h < heads; ++h) {
    if (h > 0)
      check(row_begin(h, 0) == row_end(h - 1, n_blocks - 1), fn, "head ", h,
            " does not start where head ", h - 1, " ends");
    for (int64_t r = 0; r < n_blocks; ++r) {
      const int64_t b = row_begin(h, r), e = row_end(h, r);
      check(b <= e, fn, "head ", h, " row ", r, ": row_ptr decreases (", b, " > ", e, ")");
      for (int64_t i = b; i < e; ++i) {
        const int32_t c = col_idx[static_cast<size_t>(i)];
        check(c >= 0, fn, "head ", h, " row ", r, ": negative column ", c);
        check(c <= r, fn, "head ", h, " row ", r, ": column ", c, " is above the diagonal");
        if (i > b) {
          const int32_t prev = col_idx[static_cast<size_t>(i - 1)];
          check(prev != c, fn, "head ", h, " row ", r, ": duplicate column ", c);
          check(prev < c, fn, "head ", h, " row ", r, ": columns not sorted (", prev, " before ",
                c, ")");
        }
      }
    }
  }
}

bool block_mask::contains(int64_t head, int32_t r, int32_t c) const {
  if (r < 0 || r >= n_blocks) return false;
  auto b = col_idx.begin() + row_begin(head, r), e = col_idx.begin() + row_end(head, r);
  return std::binary_search(b, e, c);
}

std::vector<tile> block_mask::tiles_of(int64_t head) const {
  std::vector<tile> out;
  for (int64_t r = 0; r < n_blocks; ++r)
    for (int64_t i = row_begin(head, r); i < row_end(head, r); ++i)
      out.emplace_back(static_cast<int32_t>(r), col_idx[static_cast<size_t>(i)]);
  return out;
}

int64_t block_mask::tiles_from_row(int64_t first_row) const {
  check(first_row >= 0 && first_row <= n_blocks, "block_mask::tiles_from_row", "row ", first_row,
        " outside [0, ", n_blocks, "]");
  int64_t tiles = 0;
  for (int64_t h = 0; h < heads; ++h) tiles += row_begin(h, n_blocks) - row_begin(h, first_row);
  return tiles;
}

double block_mask::head_density(int64_t head) const {
  return static_cast<double>(head_tiles(head)) / static_cast<double>(causal_tile_count(n_blocks));
}

bool block_mask::is_dense_causal() const {
  return total_tiles() == heads * causal_tile_count(n_blocks);
}

double block_mask::density() const {
  return static_cast<double>(total_tiles()) /
         static_cast<double>(heads * causal_tile_count(n_blocks));
}

std::vector<uint8_t> block_mask::expand_to_token_mask(int64_t head) const {
  std::vector<uint8_t> mask(static_cast<size_t>(n_tokens * n_tokens), 0);
  for (int64_t r = 0; r < n_blocks; ++r) {
    const int64_t i0 = r * block_size, i1 = std::min(n_tokens, i0 + block_size);
    for (int64_t t = row_begin(head, r); t < row_end(head, r); ++t) {
      const int64_t j0 = col_idx[static_cast<size_t>(t)] * block_size;
      const int64_t j1 = std::min(n_tokens, j0 + block_size);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < std::min(j1, i + 1); ++j) mask[static_cast<size_t>(i * n_tokens + j)] = 1;
    }
  }
  return mask;
}

}  // namespace sp
