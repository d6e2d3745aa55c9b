// Private: rotary position embedding on [N, heads, D] rows, adjacent-pair convention
// (x[2i], x[2i+1]) rotated by pos * theta_i, theta_i = base^(-2i/rope_dim), with optional
// frequency scaling (linear, NTK-aware, YaRN) for positions beyond the trained context.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sp {

struct rope_table {
  std::vector<float> inv_freq;  // [rope_dim / 2] effective theta_i after scaling
  float attention_factor = 1.0f;  // YaRN's magnitude correction, multiplies cos and sin
};

// type: none, linear, ntk, yarn; factor >= 1; original_context: the trained context length.
rope_table rope_make_table(int64_t rope_dim, double base, const std::string& type, double factor,
                           int64_t original_context);

// x: [n, heads, head_dim], positions first_pos .. first_pos + n - 1; rotates the first
// rope_dim = 2 * inv_freq.size() entries of every head vector in place.
void rope_apply(float* x, int64_t n, int64_t heads, int64_t head_dim, int64_t first_pos,
                const rope_table& table);

}  // namespace sp
