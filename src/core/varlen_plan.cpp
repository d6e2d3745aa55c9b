// Batch plans of variable-length batches (varlen_plan.h): cu_seqlens validation, the masks'
// CSR concatenated and one longest-first schedule over all sequences.
#include "shareprefill/varlen_plan.h"

#include <algorithm>
#include <numeric>

#include "shareprefill/error.h"

namespace sp {

void check_cu_seqlens(const char* fn, const std::vector<int32_t>& cu_seqlens,
                      int64_t total_tokens) {
  check(cu_seqlens.size() >= 2, fn, "cu_seqlens has ", cu_seqlens.size(),
        " entries; a batch of B sequences needs B + 1 >= 2");
  check(cu_seqlens[0] == 0, fn, "cu_seqlens[0] = ", cu_seqlens[0], " (must be 0)");
  for (size_t b = 1; b < cu_seqlens.size(); ++b) {
    check(cu_seqlens[b] >= cu_seqlens[b - 1], fn, "cu_seqlens is not ascending: cu_seqlens[", b,
          "] = ", cu_seqlens[b], " < cu_seqlens[", b - 1, "] = ", cu_seqlens[b - 1]);
    check(cu_seqlens[b] > cu_seqlens[b - 1], fn, "sequence ", b - 1, " is empty (cu_seqlens[",
          b - 1, "] = cu_seqlens[", b, "] = ", cu_seqlens[b], ")");
  }
  check(cu_seqlens.back() == total_tokens, fn, "cu_seqlens ends at ", cu_seqlens.back(),
        " but the packed tensors have ", total_tokens, " tokens",
        cu_seqlens.back() > total_tokens ? " (past the end)" : "");
}

varlen_plan varlen_plan_build(const std::vector<int32_t>& cu_seqlens,
                              const std::vector<block_mask>& masks, int64_t tie_band) {
  const char* fn = "varlen_plan_build";
  check(!cu_seqlens.empty(), fn, "cu_seqlens is empty");
  check(tie_band >= 1, fn, "tie_band = ", tie_band, " (tiles, at least 1)");
  check_cu_seqlens(fn, cu_seqlens, cu_seqlens.back());
  const size_t batch = cu_seqlens.size() - 1;
  check(masks.size() == batch, fn, masks.size(), " masks for ", batch, " sequences");
  varlen_plan plan;
  plan.heads = masks[0].heads;
  plan.block_size = masks[0].block_size;
  plan.total_tokens = cu_seqlens.back();
  struct item {
    int32_t seq, head, row;
    int64_t tiles;
  };
  std::vector<item> items;
  for (size_t b = 0; b < batch; ++b) {
    const block_mask& m = masks[b];
    const int64_t len = cu_seqlens[b + 1] - cu_seqlens[b];
    check(m.heads == plan.heads && m.block_size == plan.block_size, fn, "mask of sequence ", b,
          " has heads=", m.heads, " block_size=", m.block_size, ", sequence 0's ", plan.heads,
          " and ", plan.block_size);
    check(m.n_tokens == len, fn, "mask of sequence ", b, " is for ", m.n_tokens,
          " tokens, cu_seqlens gives it ", len);
    m.validate();
    varlen_sequence s;
    s.token0 = cu_seqlens[b];
    s.n_tokens = len;
    s.row_ptr0 = static_cast<int64_t>(plan.row_ptr.size());
    s.n_blocks = m.n_blocks;
    plan.sequences.push_back(s);
    const int64_t base = static_cast<int64_t>(plan.col_idx.size());
    for (int64_t e : m.row_ptr) plan.row_ptr.push_back(base + e);
    plan.col_idx.insert(plan.col_idx.end(), m.col_idx.begin(), m.col_idx.end());
    for (int64_t h = 0; h < m.heads; ++h)
      for (int64_t r = 0; r < m.n_blocks; ++r)
        items.push_back({static_cast<int32_t>(b), static_cast<int32_t>(h), static_cast<int32_t>(r),
                         m.row_end(h, r) - m.row_begin(h, r)});
  }
  std::stable_sort(items.begin(), items.end(), [tie_band](const item& a, const item& b) {
    const int64_t band_a = a.tiles / tie_band, band_b = b.tiles / tie_band;
    if (band_a != band_b) return band_a > band_b;
    if (a.seq != b.seq) return a.seq < b.seq;
    return a.tiles > b.tiles;
  });
  plan.schedule.reserve(2 * items.size());
  plan.item_sequence.reserve(items.size());
  for (const item& it : items) {
    plan.schedule.push_back(it.head);
    plan.schedule.push_back(it.row);
    plan.item_sequence.push_back(it.seq);
  }
  return plan;
}

}  // namespace sp
