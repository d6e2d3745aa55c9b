// The extension of a pivot's pattern to a later chunk's query block rows (chunked prefill with a
// carried sharing state, issue 16; docs/PLANNER.md "Chunked prefill"). A plain rule in sp_core,
// so both planners call it: the host planner's begin_chunk (src/pattern/chunk_carry.cpp) on its
// tile lists and the device planner's (src/cuda/plan_chunk_carry.cpp) on its state's bitsets.
// One implementation, on bitsets; the tile form converts.
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/block_mask.h"

namespace sp {

// The extension of a pivot pattern to new query block rows [new_begin, new_end): from its rows
// [row_begin, row_end), a diagonal offset o recurs when its tile (r, r-o) is in at least half of
// the rows r with r-o >= 0; a key block c recurs when, among the tiles not on a recurring offset,
// (r, c) is in at least half of the rows r >= c. The extension is every causal (r, c) of the new
// rows with c a recurring column or r-c a recurring offset. Sorted, no duplicates.
std::vector<tile> extend_pivot_pattern(const std::vector<tile>& pattern, int64_t row_begin,
                                       int64_t row_end, int64_t new_begin, int64_t new_end);

// The same rule on row bitsets (bit c % 32 of word r * words + c / 32 is tile (r, c)), without a
// tile list: what the device planner's state holds. bits: [>= row_end, words], read in rows
// [row_begin, row_end), which must be causal (no bit past the diagonal). Returns
// [new_end, out_words] words, the extension in rows [new_begin, new_end) and zeros before;
// out_words >= ceil(new_end / 32).
std::vector<uint32_t> extend_pivot_pattern_bits(const uint32_t* bits, int64_t words,
                                                int64_t row_begin, int64_t row_end,
                                                int64_t new_begin, int64_t new_end,
                                                int64_t out_words);

}  // namespace sp
