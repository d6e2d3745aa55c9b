// Rotary position embedding in place on bf16 q and k rows, one block per token: the block's
// first `pairs` threads compute cos and sin of pos * inv_freq[p] in fp64 (as src/model/rope.cpp
// does, so positions of 128K tokens keep full angle precision), round them to fp32 and scale
// them by the attention factor; then all threads rotate the pairs of every q and k head.
// inv_freq travels in the kernel parameters (at most 128 pairs), so the launch reads no table
// from memory and needs no upload. A device-memory position offset (first_pos_device) lets one
// captured launch serve every decode step, and the KV append can be fused in: after a barrier
// the block copies its token's rotated k and its v to the cache row of its position.
#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int rope_threads = 128;

struct rope_kernel_params {
  uint16_t* q;  // q: [n, heads, head_dim], token stride q_token_stride
  uint16_t* k;  // k: [n, kv_heads, head_dim], token stride k_token_stride, or null
  int64_t q_token_stride, k_token_stride, heads, kv_heads, head_dim, first_pos;
  const int64_t* first_pos_device;  // [1] added to first_pos, or null
  uint4* cache_k;                   // cache_k: [cache_capacity, kv_heads * head_dim / 8], or null
  uint4* cache_v;
  const uint4* v;                   // v: [n, v_token_stride / 8]
  int64_t v_token_stride, cache_capacity;
  int pairs;
  float attention_factor;
  float inv_freq[cuda_rope_max_pairs];
};

__device__ __forceinline__ void rotate_pair(uint16_t* v, float c, float s) {
  const float a = bf16_bits_to_float(v[0]), b = bf16_bits_to_float(v[1]);
  v[0] = float_to_bf16_bits(a * c - b * s);
  v[1] = float_to_bf16_bits(a * s + b * c);
}

__global__ void __launch_bounds__(rope_threads) rope_kernel(const rope_kernel_params p) {
  __shared__ float s_cos[cuda_rope_max_pairs], s_sin[cuda_rope_max_pairs];
  const int64_t token = blockIdx.x;
  // This token's position: the angle's multiplier and, with the fused append, its cache row.
  const int64_t pos =
      p.first_pos + token + (p.first_pos_device != nullptr ? *p.first_pos_device : 0);
  if (threadIdx.x < p.pairs) {
    const double angle = static_cast<double>(pos) * static_cast<double>(p.inv_freq[threadIdx.x]);
    double s, c;
    sincos(angle, &s, &c);
    s_cos[threadIdx.x] = static_cast<float>(c) * p.attention_factor;
    s_sin[threadIdx.x] = static_cast<float>(s) * p.attention_factor;
  }
  __syncthreads();
  const int64_t q_items = p.heads * p.pairs, k_items = p.k != nullptr ? p.kv_heads * p.pairs : 0;
  for (int64_t item = threadIdx.x; item < q_items + k_items; item += rope_threads) {
    const bool is_q = item < q_items;
    const int64_t local = is_q ? item : item - q_items;
    const int64_t head = local / p.pairs;
    const int pair = static_cast<int>(local % p.pairs);
    uint16_t* v = is_q ? p.q + token * p.q_token_stride + head * p.head_dim
                       : p.k + token * p.k_token_stride + head * p.head_dim;
    rotate_pair(v + 2 * pair, s_cos[pair], s_sin[pair]);
  }
  if (p.cache_k == nullptr) return;
  if (pos < 0 || pos >= p.cache_capacity) return;
  __syncthreads();  // the rotated k of this token is written
  const int64_t row_vectors = p.kv_heads * p.head_dim / 8;
  const uint4* k_row = reinterpret_cast<const uint4*>(p.k + token * p.k_token_stride);
  const uint4* v_row = p.v + token * (p.v_token_stride / 8);
  for (int64_t i = threadIdx.x; i < row_vectors; i += rope_threads) {
    p.cache_k[pos * row_vectors + i] = k_row[i];
    p.cache_v[pos * row_vectors + i] = v_row[i];
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
  if (a.cache_k != nullptr)
    check(a.k != nullptr && a.cache_v != nullptr && a.v != nullptr && a.cache_capacity > 0 &&
              a.head_dim % 8 == 0 && a.k_token_stride % 8 == 0 && a.v_token_stride % 8 == 0 &&
              a.v_token_stride >= a.kv_heads * a.head_dim && cuda::aligned_to(a.k, 16) &&
              cuda::aligned_to(a.v, 16) && cuda::aligned_to(a.cache_k, 16) &&
              cuda::aligned_to(a.cache_v, 16),
          fn, "the fused KV append needs k, v, cache_k, cache_v (16-byte aligned), cache_capacity > 0 "
          "and head_dim, k_token_stride, v_token_stride multiples of 8 (got head_dim=", a.head_dim,
          " k_token_stride=", a.k_token_stride, " v_token_stride=", a.v_token_stride,
          " cache_capacity=", a.cache_capacity, ")");
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
  p.first_pos_device = a.first_pos_device;
  p.cache_k = reinterpret_cast<uint4*>(a.cache_k);
  p.cache_v = reinterpret_cast<uint4*>(a.cache_v);
  p.v = reinterpret_cast<const uint4*>(a.v);
  p.v_token_stride = a.v_token_stride;
  p.cache_capacity = a.cache_capacity;
  p.pairs = static_cast<int>(a.pairs);
  p.attention_factor = a.attention_factor;
  for (int64_t i = 0; i < a.pairs; ++i) p.inv_freq[i] = a.inv_freq[i];
  cuda::rope_kernel<<<static_cast<unsigned>(a.n), cuda::rope_threads, 0, cuda::as_stream(stream)>>>(p);
  cuda::check_launch(fn);
}

}  // namespace sp
