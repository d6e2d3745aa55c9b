// Query-block partitions for context parallelism (context_partition.h): zigzag chunks and the
// sparsity-aware refinement that moves or swaps blocks between the most and least loaded ranks.
#include "shareprefill/context_partition.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "shareprefill/error.h"

namespace sp {
namespace {

void check_inputs(const char* fn, const std::vector<int64_t>& row_work, int64_t ranks) {
  check(!row_work.empty(), fn, "row_work is empty (a prompt has at least one query block)");
  check(ranks >= 1 && ranks <= (int64_t{1} << 20), fn, "ranks=", ranks, " (1 .. 2^20)");
  for (size_t b = 0; b < row_work.size(); ++b)
    check(row_work[b] >= 0, fn, "row_work[", b, "]=", row_work[b], " is negative");
}

void sum_work(context_partition& p, const std::vector<int64_t>& row_work) {
  p.work.assign(static_cast<size_t>(p.ranks), 0);
  for (size_t b = 0; b < p.owner.size(); ++b)
    p.work[static_cast<size_t>(p.owner[b])] += row_work[b];
}

// Moves blocks[from][i] to rank `to`.
void move_block(context_partition& p, std::vector<std::vector<int32_t>>& blocks,
                const std::vector<int64_t>& row_work, size_t from, size_t i, size_t to) {
  const int32_t b = blocks[from][i];
  blocks[from].erase(blocks[from].begin() + static_cast<std::ptrdiff_t>(i));
  blocks[to].push_back(b);
  p.owner[static_cast<size_t>(b)] = static_cast<int32_t>(to);
  p.work[from] -= row_work[static_cast<size_t>(b)];
  p.work[to] += row_work[static_cast<size_t>(b)];
}

}  // namespace

double context_partition::imbalance() const {
  if (work.empty()) return 1.0;
  const int64_t total = std::accumulate(work.begin(), work.end(), int64_t{0});
  if (total == 0) return 1.0;
  const int64_t most = *std::max_element(work.begin(), work.end());
  return static_cast<double>(most) * static_cast<double>(ranks) / static_cast<double>(total);
}

std::vector<int32_t> context_partition::blocks_of(int64_t rank) const {
  std::vector<int32_t> out;
  for (size_t b = 0; b < owner.size(); ++b)
    if (owner[b] == rank) out.push_back(static_cast<int32_t>(b));
  return out;
}

int64_t context_partition::moved_blocks(const context_partition& other) const {
  check(other.owner.size() == owner.size() && other.ranks == ranks,
        "context_partition::moved_blocks", "partitions of ", n_blocks(), " blocks / ", ranks,
        " ranks and ", other.n_blocks(), " blocks / ", other.ranks, " ranks");
  int64_t moved = 0;
  for (size_t b = 0; b < owner.size(); ++b) moved += owner[b] != other.owner[b];
  return moved;
}

std::vector<int64_t> context_row_work(const block_mask& mask) {
  std::vector<int64_t> work(static_cast<size_t>(mask.n_blocks), 0);
  for (int64_t h = 0; h < mask.heads; ++h)
    for (int64_t r = 0; r < mask.n_blocks; ++r)
      work[static_cast<size_t>(r)] += mask.row_end(h, r) - mask.row_begin(h, r);
  return work;
}

std::vector<int64_t> context_row_work_dense(int64_t n_blocks, int64_t heads) {
  check(n_blocks >= 1 && heads >= 1, "context_row_work_dense", "n_blocks=", n_blocks,
        " heads=", heads, " (both must be positive)");
  std::vector<int64_t> work(static_cast<size_t>(n_blocks));
  for (int64_t b = 0; b < n_blocks; ++b) work[static_cast<size_t>(b)] = heads * (b + 1);
  return work;
}

context_partition context_partition_zigzag(const std::vector<int64_t>& row_work, int64_t ranks) {
  check_inputs("context_partition_zigzag", row_work, ranks);
  const int64_t nb = static_cast<int64_t>(row_work.size()), chunks = 2 * ranks;
  context_partition p;
  p.ranks = ranks;
  p.owner.resize(static_cast<size_t>(nb));
  // Chunk c holds blocks [c*nb/(2R), (c+1)*nb/(2R)): sizes differ by at most one.
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * nb / chunks, end = (c + 1) * nb / chunks;
    const int64_t rank = c < ranks ? c : chunks - 1 - c;
    for (int64_t b = begin; b < end; ++b)
      p.owner[static_cast<size_t>(b)] = static_cast<int32_t>(rank);
  }
  sum_work(p, row_work);
  return p;
}

context_partition context_partition_balanced(const std::vector<int64_t>& row_work, int64_t ranks,
                                             double target_imbalance) {
  const char* fn = "context_partition_balanced";
  check_inputs(fn, row_work, ranks);
  check(std::isfinite(target_imbalance) && target_imbalance >= 1.0, fn,
        "target_imbalance=", target_imbalance, " (must be >= 1)");
  context_partition p = context_partition_zigzag(row_work, ranks);
  const int64_t nb = p.n_blocks();
  std::vector<std::vector<int32_t>> blocks(static_cast<size_t>(ranks));
  for (int64_t b = 0; b < nb; ++b)
    blocks[static_cast<size_t>(p.owner[static_cast<size_t>(b)])].push_back(static_cast<int32_t>(b));
  // Each step shifts w from hi to lo with 0 < w < gap (one block, or a swap), which lowers the
  // sum of squared loads by 2w(gap - w) > 0, so the loop ends; the cap only bounds the steps.
  for (int64_t moves = 0; moves < nb; ++moves) {
    if (p.imbalance() <= target_imbalance) break;
    const auto hi_it = std::max_element(p.work.begin(), p.work.end());
    const auto lo_it = std::min_element(p.work.begin(), p.work.end());
    const size_t hi = static_cast<size_t>(hi_it - p.work.begin());
    const size_t lo = static_cast<size_t>(lo_it - p.work.begin());
    const int64_t gap = *hi_it - *lo_it;
    // The block of hi whose work is nearest gap/2 among those in (0, gap).
    size_t best = blocks[hi].size();
    int64_t best_distance = 0;
    for (size_t i = 0; i < blocks[hi].size(); ++i) {
      const int64_t w = row_work[static_cast<size_t>(blocks[hi][i])];
      if (w <= 0 || w >= gap) continue;
      const int64_t distance = std::llabs(2 * w - gap);
      if (best == blocks[hi].size() || distance < best_distance) best = i, best_distance = distance;
    }
    if (best != blocks[hi].size()) {
      move_block(p, blocks, row_work, hi, best, lo);
      continue;
    }
    // No single block fits: exchange x of hi for a lighter y of lo, w_x - w_y in (0, gap)
    // nearest gap/2 (the same strict decrease with w = w_x - w_y).
    std::vector<std::pair<int64_t, size_t>> light;  // (work, index in blocks[lo]) ascending
    for (size_t j = 0; j < blocks[lo].size(); ++j)
      light.push_back({row_work[static_cast<size_t>(blocks[lo][j])], j});
    std::sort(light.begin(), light.end());
    size_t best_x = blocks[hi].size(), best_y = 0;
    for (size_t i = 0; i < blocks[hi].size(); ++i) {
      const int64_t wx = row_work[static_cast<size_t>(blocks[hi][i])];
      // Candidates: the lightest y above wx - gap/2 and the heaviest below it.
      const auto at =
          std::lower_bound(light.begin(), light.end(), std::pair<int64_t, size_t>{wx - gap / 2, 0});
      for (auto it : {at, at == light.begin() ? light.end() : at - 1}) {
        if (it == light.end()) continue;
        const int64_t w = wx - it->first;
        if (w <= 0 || w >= gap) continue;
        const int64_t distance = std::llabs(2 * w - gap);
        if (best_x == blocks[hi].size() || distance < best_distance)
          best_x = i, best_y = it->second, best_distance = distance;
      }
    }
    if (best_x == blocks[hi].size()) break;
    const int32_t y = blocks[lo][best_y];
    move_block(p, blocks, row_work, hi, best_x, lo);
    const auto y_at = std::find(blocks[lo].begin(), blocks[lo].end(), y);
    move_block(p, blocks, row_work, lo, static_cast<size_t>(y_at - blocks[lo].begin()), hi);
  }
  return p;
}

}  // namespace sp
