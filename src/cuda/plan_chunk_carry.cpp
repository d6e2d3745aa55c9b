// The device planner's state moved from chunk to chunk (plan_chunk_carry.h): one download, the
// host's rule (extend_pivot_pattern_bits, sp_core) on the published patterns' bitsets, one
// upload, per chunk.
#include "plan_chunk_carry.h"

#include <algorithm>
#include <cstring>

#include "cuda_check.h"
#include "plan_layout.h"
#include "shareprefill/pattern_extension.h"

namespace sp::cuda {

std::vector<tile> tiles_of_bits(const uint32_t* bits, int64_t nb, int64_t words) {
  std::vector<tile> t;
  for (int64_t r = 0; r < nb; ++r)
    for (int64_t c = 0; c <= r; ++c)
      if ((bits[r * words + c / 32] >> (c % 32)) & 1u)
        t.emplace_back(static_cast<int32_t>(r), static_cast<int32_t>(c));
  return t;
}

void carry_state(void* memory, int64_t slots, int64_t old_start, int64_t old_n, int64_t new_n,
                 cudaStream_t stream) {
  const char* fn = "device_planner::begin_chunk";
  const state_layout from = make_state_layout(slots, old_n), to = make_state_layout(slots, new_n);
  std::vector<uint8_t> old_bytes(static_cast<size_t>(from.total));
  check_cuda(cudaMemcpyAsync(old_bytes.data(), memory, old_bytes.size(), cudaMemcpyDeviceToHost,
                             stream),
             fn, "copying the state to the host");
  check_cuda(cudaStreamSynchronize(stream), fn, "waiting for the previous chunk");
  std::vector<uint8_t> new_bytes(static_cast<size_t>(to.total), 0);
  auto copy = [&](int64_t to_offset, int64_t from_offset, int64_t bytes) {
    std::memcpy(new_bytes.data() + to_offset, old_bytes.data() + from_offset,
                static_cast<size_t>(bytes));
  };
  const int64_t sl = std::max<int64_t>(slots, 1);  // make_state_layout's count
  copy(to.error, from.error, 16);
  copy(to.has_pivot, from.has_pivot, 4 * sl);
  copy(to.pivot_layer, from.pivot_layer, 4 * sl);
  copy(to.pivot_head, from.pivot_head, 4 * sl);
  copy(to.has_pattern, from.has_pattern, 4 * sl);
  copy(to.vs_ratio, from.vs_ratio, 8 * sl);
  copy(to.profile_blocks, from.profile_blocks, 4 * sl);
  const int64_t old_nb = from.nb, new_nb = to.nb, old_w = from.words, new_w = to.words;
  const int64_t old_r0 = old_start / plan_block, old_r1 = (old_n + plan_block - 1) / plan_block;
  const int64_t new_r0 = old_n / plan_block;
  for (int64_t s = 0; s < slots; ++s) {
    copy(to.pivot_v_blk + 4 * s * new_nb, from.pivot_v_blk + 4 * s * old_nb, 4 * old_nb);
    copy(to.pivot_s_blk + 4 * s * new_nb, from.pivot_s_blk + 4 * s * old_nb, 4 * old_nb);
    for (int64_t r = 0; r < old_nb; ++r)
      copy(to.vs_bits + 4 * (s * new_nb + r) * new_w, from.vs_bits + 4 * (s * old_nb + r) * old_w,
           4 * old_w);
    int32_t has_pattern = 0;
    std::memcpy(&has_pattern, old_bytes.data() + from.has_pattern + 4 * s, 4);
    if (has_pattern == 0) continue;
    std::vector<uint32_t> bits(static_cast<size_t>(old_nb * old_w));
    std::memcpy(bits.data(), old_bytes.data() + from.pattern_bits + 4 * s * old_nb * old_w,
                4 * bits.size());
    const std::vector<uint32_t> extended =
        extend_pivot_pattern_bits(bits.data(), old_w, old_r0, old_r1, new_r0, new_nb, new_w);
    std::memcpy(new_bytes.data() + to.pattern_bits + 4 * s * new_nb * new_w, extended.data(),
                4 * extended.size());
  }
  check_cuda(cudaMemcpyAsync(memory, new_bytes.data(), new_bytes.size(), cudaMemcpyHostToDevice,
                             stream),
             fn, "copying the carried state to the device");
  check_cuda(cudaStreamSynchronize(stream), fn, "waiting for the carried state's copy");
}

}  // namespace sp::cuda
