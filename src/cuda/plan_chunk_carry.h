// Private: host-side work on the device planner's per-prompt state (state_layout): its bitmask
// rows as tiles, and the move of a state to a prompt's next chunk (device_planner::begin_chunk).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "shareprefill/block_mask.h"

namespace sp::cuda {

// The tiles (r, c), c <= r < nb, set in a bitmask of nb rows of `words` 32-bit words.
// bits: [nb, words].
std::vector<tile> tiles_of_bits(const uint32_t* bits, int64_t nb, int64_t words);

// Moves the state in `memory` (laid out by make_state_layout(slots, old_n)) from the chunk
// [old_start, old_n) to the next chunk [old_n, new_n), in place, re-laid out by
// make_state_layout(slots, new_n) (the caller checked that the memory holds it): the error
// record, the pivots, their vs_ratio, profiles (which keep their length, profile_blocks) and own
// vertical-slash tiles as they are; each published pattern replaced by
// extend_pivot_pattern_bits of its rows [old_start/128, old_n/128) to the new rows
// [old_n/128, ceil(new_n/128)). Waits for `stream` twice: for the download and the upload.
void carry_state(void* memory, int64_t slots, int64_t old_start, int64_t old_n, int64_t new_n,
                 cudaStream_t stream);

}  // namespace sp::cuda
