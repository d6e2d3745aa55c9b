// When the device planner's pivots compute their block attention A (DESIGN.md 2F, 2G): a choice
// of device_planner::begin_prompt and of the CUDA forward's prefill_options. Separate from
// device_planner.h so that plain option structs can name it.
#pragma once

#include <cstdint>
#include <string>

namespace sp {

// Which pivots compute their block attention A and publish their pattern (step G), and when.
// Every decision and output is the same in all three; only patterns nobody needed go missing.
//   all:      every pivot, at its layer.
//   used:     a pivot whose cluster has no member in a later layer computes no A and runs dense
//             like a dense head (walked where the kernel walks: the same output bytes); the
//             device planner does not share within a layer, so only a carried chunk could take
//             such a pattern (begin_chunk refuses the state).
//   deferred: as used, and when the layers are planned in one piece (query offset 0) every
//             other pivot also runs without A at its layer and keeps its q and k in the state;
//             the first later layer where a member's profile distances pass the similarity gate
//             computes the pivot's A and publishes it just before that layer's gates. Saves the
//             A of pivots nobody shares with (long prompts: no head shares with this model's map
//             past 24K tokens) at the price of a few launches per layer and a second pass over a
//             pivot that is needed (docs/PERF.md: -2.3% at 128K, even at 32K, +3.5% at 8K).
enum class pivot_publishing { all, used, deferred };

// Where deferring the pivots' A starts to pay (docs/PERF.md, eighteenth session, H200, the
// default model and map: +3.5% at 8K, even at 32K, -2.3% at 128K).
constexpr int64_t cuda_defer_pivots_from = 32768;

// The choice of the CUDA forward and of Python's CudaPrefill for a prompt (or chunk) whose keys
// end at n_tokens: `all` when chunks carry the state on (a later chunk takes every pattern);
// `deferred` when the layers are planned from the prompt's first token (from_first_token) and
// n_tokens >= cuda_defer_pivots_from; `used` otherwise.
pivot_publishing default_pivot_publishing(int64_t n_tokens, bool chunks_carry,
                                          bool from_first_token);

// "all", "used", "deferred"; parse_pivot_publishing throws sp::error naming the bad value.
const char* pivot_publishing_name(pivot_publishing p);
pivot_publishing parse_pivot_publishing(const std::string& name);

}  // namespace sp
