// Rotary position embedding in place on bf16 q and k rows, one block per token: the block's
// first `pairs` threads compute cos and sin of pos * inv_freq[p] in fp64 (as src/model/rope.cpp
// does, so positions of 128K tokens keep full angle precision), round them to fp32 and scale
// them by the attention factor; then all threads rotate the pairs of every q and k head.
// inv_freq travels in the kernel parameters (at most 128 pairs), so the launch reads no table
// from memory and needs no upload. (A decode step's RoPE is fused into its attention launch:
// model_decode_attention.cu, with the same arithmetic from model_rope.cuh.)
#include "model_common.cuh"
#include "model_rope.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int rope_threads = 128;

struct rope_kernel_params {
  uint16_t* q;  // q: [n, heads, head_dim], token stride q_token_stride
  uint16_t* k;  // k: [n, kv_heads, head_dim], token stride k_token_stride, or null
  int64_t q_token_stride, k_token_stride, heads, kv_heads, head_dim, first_pos;
  int pairs;
  float attention_factor;
  float inv_freq[cuda_rope_max_pairs];
};

__global__ void __launch_bounds__(rope_threads) rope_kernel(const rope_kernel_params p) {
  __shared__ float s_cos[cuda_rope_max_pairs], s_sin[cuda_rope_max_pairs];
  const int64_t token = blockIdx.x;
  const int64_t pos = p.first_pos + token;
  if (threadIdx.x < p.pairs)
    rope_cos_sin(pos, p.inv_freq[threadIdx.x], p.attention_factor, s_cos[threadIdx.x],
                 s_sin[threadIdx.x]);
  __syncthreads();
  const int64_t q_items = p.heads * p.pairs, k_items = p.k != nullptr ? p.kv_heads * p.pairs : 0;
  for (int64_t item = threadIdx.x; item < q_items + k_items; item += rope_threads) {
    const bool is_q = item < q_items;
    const int64_t local = is_q ? item : item - q_items;
    const int64_t head = local / p.pairs;
    const int pair = static_cast<int>(local % p.pairs);
    uint16_t* v = is_q ? p.q + token * p.q_token_stride + head * p.head_dim
                       : p.k + token * p.k_token_stride + head * p.head_dim;
    rope_rotate_bits(v[2 * pair], v[2 * pair + 1], s_cos[pair], s_sin[pair]);
  }
}

}  // namespace
}  // namespace cuda

void cuda_rope_apply(const cuda_rope_params& params, void* stream) {
  const char* fn = "cuda_rope_apply";
  const cuda_rope_params& a = params;
  check(a.n >= 0 && a.head_dim > 0 && a.first_pos >= 0, fn, "n=", a.n, " head_dim=", a.head_dim,
        " first_pos=", a.first_pos);
  check(a.pairs > 0 && a.pairs <= cuda_rope_max_pairs && 2 * a.pairs <= a.head_dim, fn,
        "pairs=", a.pairs, " (1..", cuda_rope_max_pairs, " and at most head_dim/2 = ",
        a.head_dim / 2, ")");
  check(a.heads > 0 && a.q_token_stride >= a.heads * a.head_dim, fn, "heads=", a.heads,
        " q_token_stride=", a.q_token_stride, " (at least heads * head_dim)");
  check(a.k == nullptr || (a.kv_heads > 0 && a.k_token_stride >= a.kv_heads * a.head_dim), fn,
        "kv_heads=", a.kv_heads, " k_token_stride=", a.k_token_stride,
        " (at least kv_heads * head_dim)");
  if (a.n == 0) return;
  check(a.n <= 0x7fffffff, fn, "n=", a.n, " exceeds the grid limit");
  check(a.q != nullptr && a.inv_freq != nullptr, fn, "null q or inv_freq");
  cuda::rope_kernel_params p{};
  p.q = a.q;
  p.k = a.k;
  p.q_token_stride = a.q_token_stride;
  p.k_token_stride = a.k_token_stride;
  p.heads = a.heads;
  p.kv_heads = a.kv_heads;
  p.head_dim = a.head_dim;
  p.first_pos = a.first_pos;
  p.pairs = static_cast<int>(a.pairs);
  p.attention_factor = a.attention_factor;
  for (int64_t i = 0; i < a.pairs; ++i) p.inv_freq[i] = a.inv_freq[i];
  cuda::rope_kernel<<<static_cast<unsigned>(a.n), cuda::rope_threads, 0, cuda::as_stream(stream)>>>(p);
  cuda::check_launch(fn);
}

}  // namespace sp
