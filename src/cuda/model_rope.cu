// Rotary position embedding in place on bf16 q and k rows, one block per eight tokens: the
// block's threads compute cos and sin of pos * inv_freq[p] for each token and pair in fp64 (as
// src/model/rope.cpp does, so positions of 128K tokens keep full angle precision), round them to
// fp32 and scale them by the attention factor; then they rotate the pairs of every q and k head,
// a pair (two bf16) per 32-bit load and store.
// inv_freq travels in the kernel parameters (at most 128 pairs), so the launch reads no table
// from memory and needs no upload. (A decode step's RoPE is fused into its attention launch:
// model_decode_attention.cu, with the same arithmetic from model_rope.cuh.)
#include "model_common.cuh"
#include "model_rope.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int rope_threads = 256;
constexpr int rope_tokens = 8;  // tokens per block

struct rope_kernel_params {
  uint32_t* q;  // q: [n, heads, head_dim / 2] bf16 pairs, token stride q_token_stride (pairs)
  uint32_t* k;  // k: [n, kv_heads, head_dim / 2] bf16 pairs, token stride k_token_stride, or null
  int64_t q_token_stride, k_token_stride, n, first_pos;
  int heads, kv_heads, half_dim, pairs;
  float attention_factor;
  float inv_freq[cuda_rope_max_pairs];
};

__global__ void __launch_bounds__(rope_threads) rope_kernel(const rope_kernel_params p) {
  __shared__ float s_cos[rope_tokens][cuda_rope_max_pairs], s_sin[rope_tokens][cuda_rope_max_pairs];
  const int64_t token0 = static_cast<int64_t>(blockIdx.x) * rope_tokens;
  const int tokens = static_cast<int>(p.n - token0 < rope_tokens ? p.n - token0 : rope_tokens);
  for (int i = threadIdx.x; i < tokens * p.pairs; i += rope_threads) {
    const int t = i / p.pairs, pair = i % p.pairs;
    rope_cos_sin(p.first_pos + token0 + t, p.inv_freq[pair], p.attention_factor, s_cos[t][pair],
                 s_sin[t][pair]);
  }
  __syncthreads();
  const int q_items = p.heads * p.pairs, k_items = p.k != nullptr ? p.kv_heads * p.pairs : 0;
  const int per_token = q_items + k_items;
  for (int item = threadIdx.x; item < tokens * per_token; item += rope_threads) {
    const int t = item / per_token, local = item % per_token;
    const bool is_q = local < q_items;
    const int head_pair = is_q ? local : local - q_items;
    const int head = head_pair / p.pairs, pair = head_pair % p.pairs;
    uint32_t* v = is_q ? p.q + (token0 + t) * p.q_token_stride + head * p.half_dim + pair
                       : p.k + (token0 + t) * p.k_token_stride + head * p.half_dim + pair;
    const uint32_t bits = *v;
    uint16_t a = static_cast<uint16_t>(bits & 0xffffu), b = static_cast<uint16_t>(bits >> 16);
    rope_rotate_bits(a, b, s_cos[t][pair], s_sin[t][pair]);
    *v = static_cast<uint32_t>(a) | static_cast<uint32_t>(b) << 16;
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
  // Pairs move as 32-bit words: even head dim and token strides, 4-byte aligned rows.
  check(a.head_dim % 2 == 0 && a.q_token_stride % 2 == 0 && cuda::aligned_to(a.q, 4) &&
            (a.k == nullptr || (a.k_token_stride % 2 == 0 && cuda::aligned_to(a.k, 4))),
        fn, "head_dim=", a.head_dim, " q_token_stride=", a.q_token_stride, " k_token_stride=",
        a.k_token_stride, ": the head dim and token strides must be even and q, k 4-byte aligned");
  check(a.heads * a.pairs < (int64_t{1} << 24) && a.kv_heads * a.pairs < (int64_t{1} << 24), fn,
        "heads=", a.heads, " kv_heads=", a.kv_heads, " pairs=", a.pairs, " (too many)");
  cuda::rope_kernel_params p{};
  p.q = reinterpret_cast<uint32_t*>(a.q);
  p.k = reinterpret_cast<uint32_t*>(a.k);
  p.q_token_stride = a.q_token_stride / 2;
  p.k_token_stride = a.k_token_stride / 2;
  p.n = a.n;
  p.first_pos = a.first_pos;
  p.heads = static_cast<int>(a.heads);
  p.kv_heads = static_cast<int>(a.kv_heads);
  p.half_dim = static_cast<int>(a.head_dim / 2);
  p.pairs = static_cast<int>(a.pairs);
  p.attention_factor = a.attention_factor;
  for (int64_t i = 0; i < a.pairs; ++i) p.inv_freq[i] = a.inv_freq[i];
  const auto blocks = static_cast<unsigned>((a.n + cuda::rope_tokens - 1) / cuda::rope_tokens);
  cuda::rope_kernel<<<blocks, cuda::rope_threads, 0, cuda::as_stream(stream)>>>(p);
  cuda::check_launch(fn);
}

}  // namespace sp
