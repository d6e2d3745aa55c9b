// The arithmetic of one RoPE rotation on the device, shared by the RoPE kernel (model_rope.cu)
// and the decode attention's fused new token (model_decode_attention.cu) so that both give the
// same bits: cos and sin of pos * inv_freq in fp64 (as src/model/rope.cpp), rounded to fp32 and
// scaled by the attention factor; the pair rotated in fp32 with the roundings spelled out (no
// contraction left to the compiler), rounded to bf16.
#pragma once

#include "model_common.cuh"

namespace sp::cuda {

__device__ __forceinline__ void rope_cos_sin(int64_t pos, float inv_freq, float attention_factor,
                                             float& c, float& s) {
  const double angle = static_cast<double>(pos) * static_cast<double>(inv_freq);
  double sd, cd;
  sincos(angle, &sd, &cd);
  c = static_cast<float>(cd) * attention_factor;
  s = static_cast<float>(sd) * attention_factor;
}

// (a, b) of bf16 bits rotated by (c, s): (a c - b s, a s + b c), each rounded to bf16 bits.
__device__ __forceinline__ void rope_rotate_bits(uint16_t& a_bits, uint16_t& b_bits, float c,
                                                 float s) {
  const float a = bf16_bits_to_float(a_bits), b = bf16_bits_to_float(b_bits);
  a_bits = float_to_bf16_bits(__fmaf_rn(a, c, -__fmul_rn(b, s)));
  b_bits = float_to_bf16_bits(__fmaf_rn(a, s, __fmul_rn(b, c)));
}

}  // namespace sp::cuda
