// Rotary position embedding on the device in two steps. rope_angles_kernel: cos and sin of
// pos * inv_freq[p] in fp64 for each position and pair (as src/model/rope.cpp does, so positions
// of 128K tokens keep full angle precision), rounded to fp32 and scaled by the attention factor,
// one thread each; a prefill computes them once for all its layers (the fp64 sine of a 128K-
// radian angle costs more than a layer's whole rotation). rope_kernel: bf16 q and k rows rotated
// in place, two bf16 of a pair in one 32-bit word (two pairs a load where alignment allows), with
// each pair's cos and sin from the table; a prefill's KV append rides along (the rotated k and
// the copied v written to the cache instead of back). (A decode step's RoPE is fused into its
// attention launch: model_decode_attention.cu, with the same arithmetic from model_rope.cuh.)
#include <algorithm>

#include "model_common.cuh"
#include "model_rope.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int rope_threads = 256;      // rope_angles_kernel
constexpr int rope_max_threads = 512;  // rope_kernel: one thread per item up to this
constexpr int rope_tokens = 16;        // tokens per block of rope_kernel

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

// Token rows as words of `per` pairs (W = uint32_t: one pair, uint2: two). Strides in words.
template <class W>
struct rope_kernel_params {
  W* q;                   // q: [n, heads, head_words] rotated in place
  const W* k;             // k: [n, kv_heads, head_words] or null
  W* k_out;               // k_out: [n, kv_heads, head_words] (k itself when in place)
  const W* v;             // v: [n, kv_heads, head_words] or null (no copy)
  W* v_out;               // v_out: [n, kv_heads, head_words]
  const float2* cos_sin;  // cos_sin: [n, pairs]
  int64_t q_stride, k_stride, k_out_stride, v_stride, v_out_stride, n;
  int heads, kv_heads, head_words, pairs;
  int q_words, k_words, v_words;  // words per head each segment touches
};

template <class W>
__device__ __forceinline__ uint32_t& word_part(W& w, int j);
template <>
__device__ __forceinline__ uint32_t& word_part(uint32_t& w, int) {
  return w;
}
template <>
__device__ __forceinline__ uint32_t& word_part(uint2& w, int j) {
  return j == 0 ? w.x : w.y;
}

// A block takes rope_tokens tokens: thread t takes the items t, t + blockDim, ... (a word
// position of one head: q's, then k's, then v's), finds the item's word once and walks the
// tokens with it (32-bit index arithmetic once per item; all the tokens' loads first). q and k
// words holding pairs below `pairs` are rotated; the other k words and all v words are copied.
template <class W>
__global__ void __launch_bounds__(rope_max_threads) rope_kernel(const rope_kernel_params<W> p) {
  constexpr int per = sizeof(W) / sizeof(uint32_t);
  const int q_items = p.heads * p.q_words, k_items = p.k != nullptr ? p.kv_heads * p.k_words : 0;
  const int v_items = p.v != nullptr ? p.kv_heads * p.v_words : 0;
  const int64_t token0 = static_cast<int64_t>(blockIdx.x) * rope_tokens;
  const int tokens = static_cast<int>(p.n - token0 < rope_tokens ? p.n - token0 : rope_tokens);
  for (int item = threadIdx.x; item < q_items + k_items + v_items; item += blockDim.x) {
    const W* src;
    W* dst;
    int64_t src_stride, dst_stride;
    int rel, words;
    if (item < q_items) {
      rel = item, words = p.q_words;
      src = dst = p.q;
      src_stride = dst_stride = p.q_stride;
    } else if (item < q_items + k_items) {
      rel = item - q_items, words = p.k_words;
      src = p.k, dst = p.k_out;
      src_stride = p.k_stride, dst_stride = p.k_out_stride;
    } else {
      rel = item - q_items - k_items, words = p.v_words;
      src = p.v, dst = p.v_out;
      src_stride = p.v_stride, dst_stride = p.v_out_stride;
    }
    const int head = rel / words, word = rel - head * words, pair0 = word * per;
    const int offset = head * p.head_words + word;
    src += token0 * src_stride + offset;
    dst += token0 * dst_stride + offset;
    const bool rotate = item < q_items + k_items && pair0 < p.pairs;
    const float2* cs = p.cos_sin + token0 * p.pairs + pair0;
    // Unrolled so that every token's loads are in flight before the first rotation.
    W bits[rope_tokens];
    float2 c[rope_tokens][per];
#pragma unroll
    for (int t = 0; t < rope_tokens; ++t) {
      if (t < tokens) {
        bits[t] = src[t * src_stride];
        if (rotate)
#pragma unroll
          for (int j = 0; j < per; ++j)
            if (pair0 + j < p.pairs) c[t][j] = cs[t * p.pairs + j];
      }
    }
#pragma unroll
    for (int t = 0; t < rope_tokens; ++t) {
      if (t < tokens) {
        if (rotate)
#pragma unroll
          for (int j = 0; j < per; ++j) {
            if (pair0 + j >= p.pairs) continue;
            uint32_t& w = word_part(bits[t], j);
            uint16_t a = static_cast<uint16_t>(w & 0xffffu), b = static_cast<uint16_t>(w >> 16);
            rope_rotate_bits(a, b, c[t][j].x, c[t][j].y);
            w = static_cast<uint32_t>(a) | static_cast<uint32_t>(b) << 16;
          }
        dst[t * dst_stride] = bits[t];
      }
    }
  }
}

// The launch in words of W (strides and dims in bf16 elements are divisible by 2 * per).
template <class W>
void launch_rope(const cuda_rope_params& a, cudaStream_t stream) {
  constexpr int per = sizeof(W) / sizeof(uint32_t), elements = 2 * per;
  rope_kernel_params<W> p{};
  const bool append = a.k_out != nullptr;
  p.q = reinterpret_cast<W*>(a.q);
  p.k = reinterpret_cast<const W*>(a.k);
  p.k_out = reinterpret_cast<W*>(append ? a.k_out : a.k);
  p.v = reinterpret_cast<const W*>(a.v);
  p.v_out = reinterpret_cast<W*>(a.v_out);
  p.cos_sin = reinterpret_cast<const float2*>(a.cos_sin);
  p.q_stride = a.q_token_stride / elements;
  p.k_stride = a.k_token_stride / elements;
  p.k_out_stride = append ? a.kv_out_token_stride / elements : p.k_stride;
  p.v_stride = a.v_token_stride / elements;
  p.v_out_stride = a.kv_out_token_stride / elements;
  p.n = a.n;
  p.heads = static_cast<int>(a.heads);
  p.kv_heads = static_cast<int>(a.kv_heads);
  p.head_words = static_cast<int>(a.head_dim / elements);
  p.pairs = static_cast<int>(a.pairs);
  p.q_words = static_cast<int>((a.pairs + per - 1) / per);
  p.k_words = append ? p.head_words : p.q_words;  // the copy takes the unrotated dims too
  p.v_words = p.head_words;
  const int64_t items = a.heads * p.q_words + (a.k != nullptr ? a.kv_heads * p.k_words : 0) +
                        (append ? a.kv_heads * p.v_words : 0);
  const int threads = static_cast<int>(std::min<int64_t>(rope_max_threads, (items + 31) / 32 * 32));
  const int64_t blocks = (a.n + rope_tokens - 1) / rope_tokens;
  rope_kernel<W><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p);
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
  const bool append = a.k_out != nullptr;
  check(append == (a.v != nullptr) && append == (a.v_out != nullptr) && (!append || a.k != nullptr),
        fn, "the KV append needs k, v, k_out and v_out together (k_out ",
        a.k_out != nullptr ? "set" : "null", ", v ", a.v != nullptr ? "set" : "null", ", v_out ",
        a.v_out != nullptr ? "set" : "null", ")");
  check(!append || (a.v_token_stride >= a.kv_heads * a.head_dim &&
                    a.kv_out_token_stride >= a.kv_heads * a.head_dim),
        fn, "v_token_stride=", a.v_token_stride, " kv_out_token_stride=", a.kv_out_token_stride,
        " (at least kv_heads * head_dim)");
  if (a.n == 0) return;
  check(a.q != nullptr && a.cos_sin != nullptr && cuda::aligned_to(a.cos_sin, 8), fn,
        "q and cos_sin (8-byte aligned) must be set");
  // Pairs move as 32-bit words: even head dim and token strides, 4-byte aligned rows; two pairs
  // at once where everything is a multiple of 4 elements and 8-byte aligned.
  const int64_t strides[] = {a.q_token_stride, a.k != nullptr ? a.k_token_stride : 0,
                             append ? a.v_token_stride : 0, append ? a.kv_out_token_stride : 0};
  const void* pointers[] = {a.q, a.k, a.v, a.k_out, a.v_out};
  const auto all_fit = [&](int64_t elements) {
    bool ok = a.head_dim % elements == 0;
    for (const int64_t s : strides) ok = ok && s % elements == 0;
    for (const void* ptr : pointers)
      ok = ok && (ptr == nullptr || cuda::aligned_to(ptr, 2 * elements));
    return ok;
  };
  check(all_fit(2), fn, "head_dim=", a.head_dim, " q_token_stride=", a.q_token_stride,
        " k_token_stride=", a.k_token_stride, " v_token_stride=", a.v_token_stride,
        " kv_out_token_stride=", a.kv_out_token_stride,
        ": the head dim and token strides must be even and the rows 4-byte aligned");
  check((a.heads + 2 * a.kv_heads) * a.head_dim < (int64_t{1} << 24), fn, "heads=", a.heads,
        " kv_heads=", a.kv_heads, " head_dim=", a.head_dim, " (too many)");
  if (all_fit(4))
    cuda::launch_rope<uint2>(a, cuda::as_stream(stream));
  else
    cuda::launch_rope<uint32_t>(a, cuda::as_stream(stream));
  cuda::check_launch(fn);
}

}  // namespace sp
