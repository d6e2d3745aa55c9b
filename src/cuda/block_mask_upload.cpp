// cuda_block_mask: validates a layer's CSR mask, orders its (head, query block) work items by
// visited tiles, longest first (a dense pivot row must not start last and form the tail), and
// copies mask, schedule and the pivot heads' block-attention scratch layout to the device.
#include <algorithm>
#include <numeric>

#include "attention_params.h"
#include "block_mask_state.h"
#include "shareprefill/error.h"

namespace sp {

namespace {

template <class T>
device_buffer upload_vector(const std::vector<T>& values) {
  device_buffer buffer(values.size() * sizeof(T));
  buffer.upload(values.data(), buffer.size());
  return buffer;
}

// The kernel reads the CSR unchecked, so every index it will follow is checked here (the same
// rules as block_mask::validate, restated to keep sp_cuda free of link-time cycles).
void check_csr(const char* fn, const block_mask& m) {
  const int64_t nb = m.n_blocks;
  check(nb == (m.n_tokens + m.block_size - 1) / m.block_size, fn, "n_blocks=", nb,
        " does not match n_tokens=", m.n_tokens);
  check(static_cast<int64_t>(m.row_ptr.size()) == m.heads * (nb + 1), fn, "row_ptr has ",
        m.row_ptr.size(), " entries, expected ", m.heads * (nb + 1));
  const int64_t total = m.total_tiles();
  for (int64_t h = 0; h < m.heads; ++h) {
    for (int64_t r = 0; r < nb; ++r) {
      const int64_t begin = m.row_begin(h, r), end = m.row_end(h, r);
      check(0 <= begin && begin <= end && end <= total, fn, "head ", h, " row ", r,
            ": row_ptr range [", begin, ", ", end, ") outside [0, ", total, "]");
      for (int64_t p = begin; p < end; ++p) {
        const int32_t c = m.col_idx[static_cast<size_t>(p)];
        check(c >= 0 && c <= r && (p == begin || c > m.col_idx[static_cast<size_t>(p - 1)]), fn,
              "head ", h, " row ", r, ": column ", c, " is not causal, ascending and unique");
      }
    }
  }
}

}  // namespace

cuda_block_mask::cuda_block_mask(const block_mask& mask, const std::vector<int32_t>& pivot_heads)
    : impl_(std::make_unique<impl>()) {
  const char* fn = "cuda_block_mask";
  check(mask.block_size == cuda::mask_block, fn, "block_size=", mask.block_size,
        " (the CUDA kernel needs ", cuda::mask_block, ")");
  check(mask.n_tokens > 0 && mask.heads > 0, fn, "empty mask: n_tokens=", mask.n_tokens,
        " heads=", mask.heads);
  check(mask.n_blocks < (int64_t{1} << 24), fn, "n_blocks=", mask.n_blocks, " too large");
  check_csr(fn, mask);
  for (size_t i = 0; i < pivot_heads.size(); ++i) {
    check(pivot_heads[i] >= 0 && pivot_heads[i] < mask.heads, fn, "pivot head ", pivot_heads[i],
          " out of range [0, ", mask.heads, ")");
    check(i == 0 || pivot_heads[i] > pivot_heads[i - 1], fn,
          "pivot heads must be ascending and unique, got ", pivot_heads[i], " after ",
          pivot_heads[i == 0 ? 0 : i - 1]);
  }
  impl& s = *impl_;
  const int64_t nb = mask.n_blocks, heads = mask.heads;
  s.n_tokens = mask.n_tokens;
  s.n_blocks = nb;
  s.heads = heads;
  s.pivots = static_cast<int64_t>(pivot_heads.size());
  s.work_items = heads * nb;
  s.tiles_per_head.resize(static_cast<size_t>(heads));
  for (int64_t h = 0; h < heads; ++h) s.tiles_per_head[static_cast<size_t>(h)] = mask.head_tiles(h);

  std::vector<int64_t> order(static_cast<size_t>(s.work_items));
  std::iota(order.begin(), order.end(), int64_t{0});
  auto tiles_of = [&](int64_t item) {
    const int64_t h = item / nb, r = item % nb;
    return mask.row_end(h, r) - mask.row_begin(h, r);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return tiles_of(a) > tiles_of(b); });
  std::vector<int32_t> schedule(2 * order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    schedule[2 * i] = static_cast<int32_t>(order[i] / nb);
    schedule[2 * i + 1] = static_cast<int32_t>(order[i] % nb);
  }

  s.row_ptr = upload_vector(mask.row_ptr);
  s.col_idx = upload_vector(mask.col_idx);
  s.schedule = upload_vector(schedule);
  s.item_counter = device_buffer(sizeof(uint64_t));
  if (!pivot_heads.empty()) {
    std::vector<int32_t> slot(static_cast<size_t>(heads), -1);
    std::vector<int64_t> offset(static_cast<size_t>(heads), 0);
    int64_t scratch_tiles = 0;
    for (size_t i = 0; i < pivot_heads.size(); ++i) {
      const int32_t h = pivot_heads[i];
      slot[static_cast<size_t>(h)] = static_cast<int32_t>(i);
      // Tile p of head h (absolute index into col_idx) maps to scratch row offset[h] + p.
      offset[static_cast<size_t>(h)] = scratch_tiles - mask.row_begin(h, 0);
      scratch_tiles += mask.head_tiles(h);
    }
    s.pivot_slot = upload_vector(slot);
    s.scratch_offset = upload_vector(offset);
    s.scratch = device_buffer(static_cast<size_t>(std::max<int64_t>(scratch_tiles, 1)) *
                              cuda::mask_block * sizeof(float));
  }
}

cuda_block_mask::~cuda_block_mask() = default;
cuda_block_mask::cuda_block_mask(cuda_block_mask&&) noexcept = default;
cuda_block_mask& cuda_block_mask::operator=(cuda_block_mask&&) noexcept = default;

int64_t cuda_block_mask::n_tokens() const { return impl_->n_tokens; }
int64_t cuda_block_mask::n_blocks() const { return impl_->n_blocks; }
int64_t cuda_block_mask::heads() const { return impl_->heads; }
int64_t cuda_block_mask::pivots() const { return impl_->pivots; }
const std::vector<int64_t>& cuda_block_mask::tiles_per_head() const { return impl_->tiles_per_head; }

}  // namespace sp
