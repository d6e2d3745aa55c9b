// What the CPU and GPU calibration captures (capture_attention.cpp, capture_attention_cuda.cpp)
// share: the shapes of a calibration_input for a prompt, the slice of a layer's block attention
// A, and each head's vertical-slash coverage of A from its last-block statistics (2A, 2D).
#pragma once

#include <cstdint>
#include <vector>

#include "shareprefill/calibrate.h"
#include "shareprefill/statistics.h"
#include "shareprefill/thread_pool.h"

namespace sp::capture {

// Checks the capture's parameters (fn names the caller in errors).
void check_settings(const char* fn, const calibration_input* dst, int64_t layers,
                    int64_t block_size, double gamma);

// A new prompt of n_tokens: sets dst's token, block and layer counts (heads and tensors are set
// by the first layer_attention). Throws when the prompt is shorter than one block.
void begin_prompt(const char* fn, calibration_input& dst, int64_t layers, int64_t n_tokens);

// Layer `layer`'s block attention [heads, nb, nb] inside dst.block_attention; the first call of
// a prompt sizes dst's tensors for `heads`. Checks the layer, the token count n and the heads.
float* layer_attention(const char* fn, calibration_input& dst, int64_t layer, int64_t n,
                       int64_t heads);

// The last-block statistics the coverage needs. q: [N, H, D], k: [N, Hkv, D] host views (f32,
// f16 or bf16, contiguous; only q's last min(block_size, N) rows are read).
std::vector<head_statistics> statistics(const tensor_view& q, const tensor_view& k,
                                        int64_t block_size, double gamma, int64_t min_budget,
                                        thread_pool& pool);

// dst.vs_coverage of every head of `layer`, from the layer's A (already in dst) and `stats`.
void store_coverage(calibration_input& dst, int64_t layer, const std::vector<head_statistics>& stats);

}  // namespace sp::capture
