// Rotary position embedding on the device in two steps. rope_angles_kernel: cos and sin of
// pos * inv_freq[p] in fp64 for each position and pair (as src/model/rope.cpp does, so positions
// of 128K tokens keep full angle precision), rounded to fp32 and scaled by the attention factor,
// one thread each; a prefill computes them once for all its layers (the fp64 sine of a 128K-
// radian angle costs more than a layer's whole rotation). rope_kernel: in place on bf16 q and k
// rows, two bf16 of a pair in one 32-bit load and store, with the pair's cos and sin from the
// table. (A decode step's RoPE is fused into its attention launch:
// model_decode_attention.cu, with the same arithmetic from model_rope.cuh.)
#include "model_common.cuh"
#include "model_rope.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int rope_threads = 256;
constexpr int rope_tokens = 16;  // tokens per block of rope_kernel

struct rope_angles_params {
  float* cos_sin;  // cos_sin: [n, pairs, 2]
  int64_t first_pos, n;
  int pairs;
  float attention_factor;
  float inv_freq[cuda_rope_max_pairs];
};

__global__ void __launch_bounds__(rope_threads) rope_angles_kernel(const rope_angles_params p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * rope_threads + threadIdx.x;
  if (i >= p.n * p.pairs) return;
  const int64_t token = i / p.pairs;
  const int pair = static_cast<int>(i % p.pairs);
  float c, s;
  rope_cos_sin(p.first_pos + token, p.inv_freq[pair], p.attention_factor, c, s);
  reinterpret_cast<float2*>(p.cos_sin)[i] = make_float2(c, s);
}

struct rope_kernel_params {
  uint32_t* q;  // q: [n, heads, head_dim / 2] bf16 pairs, token stride q_token_stride (pairs)
  uint32_t* k;  // k: [n, kv_heads, head_dim / 2] bf16 pairs, token stride k_token_stride, or null
  const float2* cos_sin;  // cos_sin: [n, pairs]
  int64_t q_token_stride, k_token_stride, n;
  int heads, kv_heads, half_dim, pairs;
};

// A block rotates rope_tokens tokens: thread t takes the token's (head, pair) items t, t + 256,
// ... (q's heads, then k's), finds each item's word once and walks the tokens with it (32-bit
// index arithmetic once per item, not per token and word; all the tokens' loads first).
__global__ void __launch_bounds__(rope_threads) rope_kernel(const rope_kernel_params p) {
  const int q_items = p.heads * p.pairs, k_items = p.k != nullptr ? p.kv_heads * p.pairs : 0;
  const int64_t token0 = static_cast<int64_t>(blockIdx.x) * rope_tokens;
  const int tokens = static_cast<int>(p.n - token0 < rope_tokens ? p.n - token0 : rope_tokens);
  for (int item = threadIdx.x; item < q_items + k_items; item += rope_threads) {
    const bool is_q = item < q_items;
    const int head_pair = is_q ? item : item - q_items;
    const int head = head_pair / p.pairs, pair = head_pair - head * p.pairs;
    uint32_t* v = (is_q ? p.q + token0 * p.q_token_stride : p.k + token0 * p.k_token_stride) +
                  head * p.half_dim + pair;
    const int64_t stride = is_q ? p.q_token_stride : p.k_token_stride;
    const float2* cs = p.cos_sin + token0 * p.pairs + pair;
    // Unrolled so that every token's loads are in flight before the first rotation.
    uint32_t bits[rope_tokens];
    float2 c[rope_tokens];
#pragma unroll
    for (int t = 0; t < rope_tokens; ++t) {
      if (t < tokens) {
        bits[t] = v[t * stride];
        c[t] = cs[t * p.pairs];
      }
    }
#pragma unroll
    for (int t = 0; t < rope_tokens; ++t) {
      if (t < tokens) {
        uint16_t a = static_cast<uint16_t>(bits[t] & 0xffffu), b = static_cast<uint16_t>(bits[t] >> 16);
        rope_rotate_bits(a, b, c[t].x, c[t].y);
        v[t * stride] = static_cast<uint32_t>(a) | static_cast<uint32_t>(b) << 16;
      }
    }
  }
}

void check_pairs(const char* fn, int64_t pairs) {
  check(pairs > 0 && pairs <= cuda_rope_max_pairs, fn, "pairs=", pairs, " (1..",
        cuda_rope_max_pairs, ")");
}

}  // namespace
}  // namespace cuda

void cuda_rope_angles(float* cos_sin, int64_t first_pos, int64_t n, const float* inv_freq,
                      int64_t pairs, float attention_factor, void* stream) {
  const char* fn = "cuda_rope_angles";
  check(n >= 0 && first_pos >= 0, fn, "n=", n, " first_pos=", first_pos);
  cuda::check_pairs(fn, pairs);
  if (n == 0) return;
  check(cos_sin != nullptr && inv_freq != nullptr && cuda::aligned_to(cos_sin, 8), fn,
        "cos_sin (8-byte aligned device memory) and inv_freq must be set");
  check(n * pairs < (int64_t{1} << 38), fn, "n=", n, " pairs=", pairs, " (too many for the grid)");
  cuda::rope_angles_params p{};
  p.cos_sin = cos_sin;
  p.first_pos = first_pos;
  p.n = n;
  p.pairs = static_cast<int>(pairs);
  p.attention_factor = attention_factor;
  for (int64_t i = 0; i < pairs; ++i) p.inv_freq[i] = inv_freq[i];
  const int64_t blocks = (n * pairs + cuda::rope_threads - 1) / cuda::rope_threads;
  cuda::rope_angles_kernel<<<static_cast<unsigned>(blocks), cuda::rope_threads, 0,
                             cuda::as_stream(stream)>>>(p);
  cuda::check_launch(fn);
}

void cuda_rope_apply(const cuda_rope_params& params, void* stream) {
  const char* fn = "cuda_rope_apply";
  const cuda_rope_params& a = params;
  check(a.n >= 0 && a.head_dim > 0, fn, "n=", a.n, " head_dim=", a.head_dim);
  cuda::check_pairs(fn, a.pairs);
  check(2 * a.pairs <= a.head_dim, fn, "pairs=", a.pairs, " (at most head_dim/2 = ",
        a.head_dim / 2, ")");
  check(a.heads > 0 && a.q_token_stride >= a.heads * a.head_dim, fn, "heads=", a.heads,
        " q_token_stride=", a.q_token_stride, " (at least heads * head_dim)");
  check(a.k == nullptr || (a.kv_heads > 0 && a.k_token_stride >= a.kv_heads * a.head_dim), fn,
        "kv_heads=", a.kv_heads, " k_token_stride=", a.k_token_stride,
        " (at least kv_heads * head_dim)");
  if (a.n == 0) return;
  check(a.q != nullptr && a.cos_sin != nullptr && cuda::aligned_to(a.cos_sin, 8), fn,
        "q and cos_sin (8-byte aligned) must be set");
  // Pairs move as 32-bit words: even head dim and token strides, 4-byte aligned rows.
  check(a.head_dim % 2 == 0 && a.q_token_stride % 2 == 0 && cuda::aligned_to(a.q, 4) &&
            (a.k == nullptr || (a.k_token_stride % 2 == 0 && cuda::aligned_to(a.k, 4))),
        fn, "head_dim=", a.head_dim, " q_token_stride=", a.q_token_stride, " k_token_stride=",
        a.k_token_stride, ": the head dim and token strides must be even and q, k 4-byte aligned");
  check((a.heads + a.kv_heads) * a.pairs < (int64_t{1} << 24), fn, "heads=", a.heads,
        " kv_heads=", a.kv_heads, " pairs=", a.pairs, " (too many)");
  cuda::rope_kernel_params p{};
  p.q = reinterpret_cast<uint32_t*>(a.q);
  p.k = reinterpret_cast<uint32_t*>(a.k);
  p.cos_sin = reinterpret_cast<const float2*>(a.cos_sin);
  p.q_token_stride = a.q_token_stride / 2;
  p.k_token_stride = a.k_token_stride / 2;
  p.n = a.n;
  p.heads = static_cast<int>(a.heads);
  p.kv_heads = static_cast<int>(a.kv_heads);
  p.half_dim = static_cast<int>(a.head_dim / 2);
  p.pairs = static_cast<int>(a.pairs);
  const int64_t blocks = (a.n + cuda::rope_tokens - 1) / cuda::rope_tokens;
  cuda::rope_kernel<<<static_cast<unsigned>(blocks), cuda::rope_threads, 0,
                      cuda::as_stream(stream)>>>(p);
  cuda::check_launch(fn);
}

}  // namespace sp
