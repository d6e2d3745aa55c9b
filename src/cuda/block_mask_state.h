// Private: what cuda_block_mask holds on the device (see cuda_attention.h). Shared by the mask
// upload and the attention launcher.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/cuda_attention.h"

namespace sp {

struct cuda_block_mask::impl {
  int64_t n_tokens = 0, n_blocks = 0, heads = 0, pivots = 0;
  int64_t work_items = 0;  // heads * n_blocks
  std::vector<int64_t> tiles_per_head;
  device_buffer row_ptr;         // int64 [heads * (n_blocks + 1)]
  device_buffer col_idx;         // int32 [total tiles]
  device_buffer schedule;        // int32 [work_items, 2]: (head, query block), longest first
  device_buffer pivot_slot;      // int32 [heads]: A slot or -1 (empty without pivots)
  device_buffer scratch_offset;  // int64 [heads] (empty without pivots)
  device_buffer scratch;         // float [pivot tiles, 128] (empty without pivots)
  device_buffer item_counter;    // uint64: the hopper kernel's next work item (dynamic grid)
};

}  // namespace sp
