// Decode attention: one query row per head over the KV cache, split-K, one launch. One block per
// (key chunk, KV head) for all G = heads / kv_heads query heads of the group, so each K and V row
// is read once (native GQA). A row of D bf16 is D/8 16-byte vectors held by D/8 adjacent lanes,
// so a warp reads 32/(D/8) whole rows per instruction (coalesced); dot products reduce over those
// lanes by shuffles. One pass: each thread loads the K and the V vectors of `unroll` rows before
// it uses any of them (2 * unroll 16-byte loads in flight), and keeps an online softmax (running
// max, sum and output, base 2, scores pre-scaled by log2(e)/sqrt(D)) over its rows; the row
// groups of a warp and then the warps merge by their LSE. 256 threads per block and ~2 blocks per
// SM (132 SMs) keep ~8 MB of loads in flight with few chunks, so that the combine is cheap: each
// block writes its chunk's normalised output and base-2 LSE, and the last block of a KV head to
// finish (an atomic counter per KV head in the workspace, reset by that block) merges the chunks
// of its G heads by their LSE in fp32 (FlashAttention's split-KV combine), so there is no second
// launch. With a single chunk the block writes the result directly.
// The length may come from device memory (a captured decode step): the grid is then sized for
// the largest length and blocks past the run-time length exit at once (they do not count).
// With a programmatic launch a block issues its first K and V loads (group <= 3) before it waits
// for the previous kernel (whose q and new token it reads).
// A decode step's new token can be fused in (cuda_decode_new_token): every block rotates q by
// RoPE itself (cos and sin of position len - 1 in fp64, as the RoPE kernel, computed while the
// block's first K and V loads are in flight), and the last chunk
// takes row len - 1 from the token's rotated k and its v in registers and writes them to the
// cache; so RoPE, KV append and attention are one launch.
#include <algorithm>
#include <cmath>

#include "model_common.cuh"
#include "model_rope.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int decode_threads = 256;
constexpr int decode_warps = decode_threads / 32;
constexpr int unroll = 4;             // row loads in flight per thread
constexpr int max_group = 8;          // query heads per KV head (<= decode_warps: one warp each)
constexpr int64_t max_chunk = 4096;   // keys per block (past ~360K keys the chunk count grows)
constexpr int64_t min_chunk = 64;
constexpr int64_t chunk_multiple = 64;
constexpr int64_t target_blocks = 264;  // ~2 blocks of 256 threads per SM of an H100/H200 (132 SMs)
constexpr int64_t max_kv_heads = static_cast<int64_t>(cuda_decode_counter_bytes / sizeof(unsigned));
constexpr float log2e = 1.4426950408889634f;
constexpr float ln2 = 0.6931471805599453f;

struct decode_kernel_params {
  const uint16_t* q;  // q: [heads, D]
  const uint16_t* k;  // k: [len, kv_heads, D], token stride kv_stride
  const uint16_t* v;
  int64_t kv_stride, len, chunk;  // len: the length, or the largest one when len_device is set
  const int64_t* len_device;      // [1] the run-time length, or null
  int heads, kv_heads;
  float scale_log2;   // log2(e) / sqrt(D)
  unsigned* arrived;  // arrived: [kv_heads] chunks done per KV head, 0 between launches
  float* part_o;      // part_o: [splits, heads, D] chunk outputs, normalised
  float* part_lse;    // part_lse: [splits, heads] base-2 LSE of each chunk
  uint16_t* out;      // out: [heads, D]
  float* lse;         // lse: [heads] natural log, or null
  // The new token fused in (cuda_decode_new_token), or new_k null.
  const uint16_t* new_k;  // new_k, new_v: [kv_heads, D], k before RoPE
  const uint16_t* new_v;
  uint16_t* cache_k;      // cache_k, cache_v: k, v made writable (row len - 1 receives the token)
  uint16_t* cache_v;
  int pairs;
  float attention_factor;
  float inv_freq[cuda_rope_max_pairs];
};

__device__ __forceinline__ int64_t run_length(const decode_kernel_params& p) {
  if (p.len_device == nullptr) return p.len;
  return max(int64_t{1}, min(p.len, *p.len_device));
}

// Folds the running softmax state (m, l, acc) of another set of rows into this one (base 2).
__device__ __forceinline__ void merge_state(float& m, float& l, float (&acc)[8], float om, float ol,
                                            const float (&oacc)[8]) {
  const float mx = fmaxf(m, om);
  const float a = mx == -INFINITY ? 0.0f : exp2f(m - mx), b = mx == -INFINITY ? 0.0f : exp2f(om - mx);
  m = mx;
  l = l * a + ol * b;
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] = acc[e] * a + oacc[e] * b;
}

// The last block of a KV head: out = sum_s w_s o_s / sum_s w_s over the `splits` chunks, with
// w_s = exp2(lse_s - max lse), for the G heads head0... The outputs form G * D / 4 float4 units;
// the block's threads form `groups` sets of them, each set summing every groups-th chunk, and
// shared memory adds the sets. Reads bypass L1 (__ldcg): other blocks wrote the partials.
template <int D, int G>
__device__ __forceinline__ void merge_chunks(const decode_kernel_params& p, int head0, int splits) {
  constexpr int vecs = D / 4;  // float4 units per head
  constexpr int units = G * vecs;
  constexpr int groups = units >= decode_threads ? 1 : decode_threads / units;
  constexpr int items = groups == 1 ? units : groups * units;
  constexpr int merge_unroll = G <= 3 ? 8 : 4;  // 8 would spill registers for G >= 4
  __shared__ float4 s_o[items];
  __shared__ float s_w[groups][G], s_max[G];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp < G) {  // G <= decode_warps
    float m = -INFINITY;
    for (int s = lane; s < splits; s += 32)
      m = fmaxf(m, __ldcg(p.part_lse + static_cast<int64_t>(s) * p.heads + head0 + warp));
    m = warp_max(m);
    if (lane == 0) s_max[warp] = m;
  }
  __syncthreads();
  const int64_t chunk_step = static_cast<int64_t>(p.heads) * vecs;  // float4 from chunk to chunk
  for (int it = threadIdx.x; it < items; it += decode_threads) {
    const int u = it % units, g = it / units, h = u / vecs, c = u % vecs;
    const float m = s_max[h];
    const float4* o4 = reinterpret_cast<const float4*>(p.part_o) + (head0 + h) * vecs + c;
    const float* lse = p.part_lse + head0 + h;  // chunk s at lse[s * heads]
    float w_sum = 0.0f;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll merge_unroll
    for (int s = g; s < splits; s += groups) {  // merge_unroll chunks' loads in flight
      const float w = exp2f(__ldcg(lse + static_cast<int64_t>(s) * p.heads) - m);
      const float4 o = __ldcg(o4 + s * chunk_step);
      w_sum += w;
      acc.x += w * o.x;
      acc.y += w * o.y;
      acc.z += w * o.z;
      acc.w += w * o.w;
    }
    s_o[it] = acc;
    if (c == 0) s_w[g][h] = w_sum;
  }
  __syncthreads();
  for (int u = threadIdx.x; u < units; u += decode_threads) {
    const int h = u / vecs, c = u % vecs;
    float w_sum = 0.0f;
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int g = 0; g < groups; ++g) {
      w_sum += s_w[g][h];
      const float4 x = s_o[g * units + u];
      o.x += x.x;
      o.y += x.y;
      o.z += x.z;
      o.w += x.w;
    }
    const int head = head0 + h;
    uint16_t* out = p.out + head * D + c * 4;
    out[0] = float_to_bf16_bits(o.x / w_sum);
    out[1] = float_to_bf16_bits(o.y / w_sum);
    out[2] = float_to_bf16_bits(o.z / w_sum);
    out[3] = float_to_bf16_bits(o.w / w_sum);
    if (c == 0 && p.lse != nullptr) p.lse[head] = (s_max[h] + log2f(w_sum)) * ln2;
  }
}

// Rotates the pairs of 8 bf16 values (pairs first_pair ...) by the block's cos and sin (pairs
// past `pairs` stay), with the RoPE kernel's arithmetic (the same bits).
__device__ __forceinline__ uint4 rope8(const uint4& u, int first_pair, int pairs, const float* cs,
                                       const float* sn) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
  uint32_t r[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int pair = first_pair + i;
    uint16_t a = static_cast<uint16_t>(w[i] & 0xffffu), b = static_cast<uint16_t>(w[i] >> 16);
    if (pair < pairs) rope_rotate_bits(a, b, cs[pair], sn[pair]);
    r[i] = static_cast<uint32_t>(a) | (static_cast<uint32_t>(b) << 16);
  }
  return make_uint4(r[0], r[1], r[2], r[3]);
}

template <int D, int G>
__global__ void __launch_bounds__(decode_threads, G <= 4 ? 2 : 1)
    decode_chunk_kernel(const decode_kernel_params p) {
  constexpr int row_lanes = D / 8;               // lanes holding one row
  constexpr int rows_per_warp = 32 / row_lanes;  // rows a warp reads per load
  constexpr int rows_per_pass = rows_per_warp * decode_warps;
  constexpr int rows_per_step = rows_per_pass * unroll;
  __shared__ float s_acc[decode_warps][G][D];
  __shared__ float s_m[decode_warps][G], s_l[decode_warps][G];

  const int64_t len = run_length(p);
  const int split = blockIdx.x, kv_head = blockIdx.y;
  const int64_t begin = split * p.chunk;
  if (begin >= len) return;
  const int count = static_cast<int>(min(p.chunk, len - begin));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int vec = lane % row_lanes, first_row = warp * rows_per_warp + lane / row_lanes;
  const int head0 = kv_head * G;
  const uint4* k = reinterpret_cast<const uint4*>(p.k + begin * p.kv_stride + kv_head * D) + vec;
  const uint4* v = reinterpret_cast<const uint4*>(p.v + begin * p.kv_stride + kv_head * D) + vec;
  const int64_t row_stride = p.kv_stride / 8;  // in 16-byte vectors
  const bool fused = p.new_k != nullptr;
  // With the new token fused in: cos and sin of its position (len - 1) as the RoPE kernel makes
  // them (fp64 angle, rounded to fp32, times the attention factor), its rotated k and its v for
  // this lane's vector (the last chunk reads them in place of cache row len - 1, which it writes).
  __shared__ float s_cos[D / 2], s_sin[D / 2];
  const bool last_chunk = begin + count == len;
  const int new_row = last_chunk && fused ? count - 1 : -1;  // chunk row served from k_new, v_new
  // The K and V rows of one step of the loop below (zeros past count and for the new row).
  uint4 kraw[unroll], vraw[unroll];
  const auto load_step = [&](int r0) {
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const int r = r0 + u * rows_per_pass + first_row;
      const bool valid = r < count && r != new_row;
      kraw[u] = valid ? __ldcs(k + r * row_stride) : make_uint4(0, 0, 0, 0);
      vraw[u] = valid ? __ldcs(v + r * row_stride) : make_uint4(0, 0, 0, 0);
    }
  };
  // The first step's K and V are loaded before RoPE when G <= 3 (for G >= 4 holding them across
  // it spills registers under the 2 blocks per SM of __launch_bounds__).
  constexpr bool prefetch = G <= 3;
  // The loads first (the first step's K and V rows when prefetched, which wait neither for RoPE
  // nor for the previous kernel; q of the group's heads and the new token's k and v, which come
  // from the previous kernel), then the fp64 cos and sin.
  if (prefetch) load_step(0);
  wait_for_predecessor();
  uint4 qraw[G];
#pragma unroll
  for (int h = 0; h < G; ++h) qraw[h] = reinterpret_cast<const uint4*>(p.q + (head0 + h) * D)[vec];
  uint4 k_new = make_uint4(0, 0, 0, 0), v_new = k_new;
  if (fused && last_chunk) {
    k_new = reinterpret_cast<const uint4*>(p.new_k + kv_head * D)[vec];
    v_new = reinterpret_cast<const uint4*>(p.new_v + kv_head * D)[vec];
  }
  if (fused) {
    if (threadIdx.x < p.pairs)
      rope_cos_sin(len - 1, p.inv_freq[threadIdx.x], p.attention_factor, s_cos[threadIdx.x],
                   s_sin[threadIdx.x]);
    __syncthreads();
#pragma unroll
    for (int h = 0; h < G; ++h) qraw[h] = rope8(qraw[h], vec * 4, p.pairs, s_cos, s_sin);
    if (last_chunk) {
      k_new = rope8(k_new, vec * 4, p.pairs, s_cos, s_sin);
      if (threadIdx.x < row_lanes) {  // lane vec of warp 0 writes vector vec of the cache row
        reinterpret_cast<uint4*>(p.cache_k + (len - 1) * p.kv_stride + kv_head * D)[vec] = k_new;
        reinterpret_cast<uint4*>(p.cache_v + (len - 1) * p.kv_stride + kv_head * D)[vec] = v_new;
      }
    }
  }

  // This lane's 8 dimensions of every query head of the group, pre-scaled.
  float q[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    unpack8(qraw[h], q[h]);
#pragma unroll
    for (int e = 0; e < 8; ++e) q[h][e] *= p.scale_log2;
  }

  // Online softmax over this thread's rows (the lanes of a row hold equal m and l).
  float m[G], l[G], acc[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.0f;
  }
  for (int r0 = 0; r0 < count; r0 += rows_per_step) {
    if (r0 > 0 || !prefetch) load_step(r0);
#pragma unroll
    for (int u = 0; u < unroll; ++u)
      if (r0 + u * rows_per_pass + first_row == new_row) {
        kraw[u] = k_new;
        vraw[u] = v_new;
      }
    float s[unroll][G];  // every lane takes part in the shuffles, rows past count too
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const bool valid = r0 + u * rows_per_pass + first_row < count;
      float kf[8];
      unpack8(kraw[u], kf);
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot += q[h][e] * kf[e];
#pragma unroll
        for (int offset = row_lanes / 2; offset > 0; offset >>= 1)
          dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        s[u][h] = valid ? dot : -INFINITY;
      }
    }
    if (r0 + first_row >= count) continue;  // no row of this thread in this step
#pragma unroll
    for (int h = 0; h < G; ++h) {  // s[0][h] is finite: the new max is
      float mx = m[h];
#pragma unroll
      for (int u = 0; u < unroll; ++u) mx = fmaxf(mx, s[u][h]);
      const float scale = exp2f(m[h] - mx);  // 0 while m[h] = -inf
      m[h] = mx;
      l[h] *= scale;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] *= scale;
    }
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      float vf[8];
      unpack8(vraw[u], vf);  // zeros past count, where the weight is 0 too
#pragma unroll
      for (int h = 0; h < G; ++h) {
        const float pr = exp2f(s[u][h] - m[h]);
        l[h] += pr;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[h][e] += pr * vf[e];
      }
    }
  }
  // Merge the row groups of a warp (lanes with equal vec), then the warps in shared memory.
#pragma unroll
  for (int offset = 16; offset >= row_lanes; offset >>= 1) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float oacc[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) oacc[e] = __shfl_xor_sync(0xffffffffu, acc[h][e], offset);
      const float om = __shfl_xor_sync(0xffffffffu, m[h], offset);
      const float ol = __shfl_xor_sync(0xffffffffu, l[h], offset);
      merge_state(m[h], l[h], acc[h], om, ol, oacc);
    }
  }
  if (lane < row_lanes) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
#pragma unroll
      for (int e = 0; e < 8; ++e) s_acc[warp][h][vec * 8 + e] = acc[h][e];
      if (lane == 0) {
        s_m[warp][h] = m[h];
        s_l[warp][h] = l[h];
      }
    }
  }
  __syncthreads();
  const int splits = static_cast<int>((len + p.chunk - 1) / p.chunk);  // at run time
  const bool single = splits == 1;
  for (int i = threadIdx.x; i < G * D; i += decode_threads) {
    const int h = i / D, d = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < decode_warps; ++w) mx = fmaxf(mx, s_m[w][h]);  // finite: row 0 is in warp 0
    float o = 0.0f, sum = 0.0f;
#pragma unroll
    for (int w = 0; w < decode_warps; ++w) {
      const float f = exp2f(s_m[w][h] - mx);  // 0 for a warp without rows
      o += s_acc[w][h][d] * f;
      sum += s_l[w][h] * f;
    }
    o /= sum;
    const int head = head0 + h;
    if (single) {
      p.out[head * D + d] = float_to_bf16_bits(o);
    } else {
      p.part_o[(static_cast<int64_t>(split) * p.heads + head) * D + d] = o;
    }
    if (d == 0) {
      const float lse2 = mx + log2f(sum);
      if (single) {
        if (p.lse != nullptr) p.lse[head] = lse2 * ln2;
      } else {
        p.part_lse[static_cast<int64_t>(split) * p.heads + head] = lse2;
      }
    }
  }
  if (single) return;
  // Publish this chunk (fence, then count it); the block that counts the last chunk merges.
  __shared__ bool s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    s_last = atomicAdd(p.arrived + kv_head, 1u) == static_cast<unsigned>(splits - 1);
    if (s_last) p.arrived[kv_head] = 0u;  // ready for the next launch (stream-ordered)
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  merge_chunks<D, G>(p, head0, splits);
}

int64_t splits_of(int64_t len, int64_t chunk) { return (len + chunk - 1) / chunk; }

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

template <int D, int G>
void launch_chunks(const decode_kernel_params& p, dim3 grid, cudaStream_t s, bool programmatic) {
  launch_kernel("cuda_decode_attention", decode_chunk_kernel<D, G>, grid, decode_threads, s,
                programmatic, p);
}

template <int D>
void launch_chunks_of_group(int group, const decode_kernel_params& p, dim3 grid, cudaStream_t s,
                            bool programmatic) {
  switch (group) {
    case 1: return launch_chunks<D, 1>(p, grid, s, programmatic);
    case 2: return launch_chunks<D, 2>(p, grid, s, programmatic);
    case 3: return launch_chunks<D, 3>(p, grid, s, programmatic);
    case 4: return launch_chunks<D, 4>(p, grid, s, programmatic);
    case 5: return launch_chunks<D, 5>(p, grid, s, programmatic);
    case 6: return launch_chunks<D, 6>(p, grid, s, programmatic);
    case 7: return launch_chunks<D, 7>(p, grid, s, programmatic);
    default: return launch_chunks<D, 8>(p, grid, s, programmatic);
  }
}

}  // namespace
}  // namespace cuda

int64_t cuda_decode_chunk(int64_t len, int64_t kv_heads) {
  check(len > 0 && kv_heads > 0, "cuda_decode_chunk", "len=", len, " kv_heads=", kv_heads);
  const int64_t splits_target = (cuda::target_blocks + kv_heads - 1) / kv_heads;
  int64_t chunk = (len + splits_target - 1) / splits_target;
  chunk = (chunk + cuda::chunk_multiple - 1) / cuda::chunk_multiple * cuda::chunk_multiple;
  return std::min(cuda::max_chunk, std::max(cuda::min_chunk, chunk));
}

size_t cuda_decode_workspace_bytes(int64_t max_len, int64_t heads, int64_t kv_heads,
                                   int64_t head_dim, int64_t chunk) {
  check(max_len > 0 && heads > 0 && kv_heads > 0 && head_dim > 0, "cuda_decode_workspace_bytes",
        "max_len=", max_len, " heads=", heads, " kv_heads=", kv_heads, " head_dim=", head_dim);
  check(chunk >= 0 && chunk <= cuda_decode_max_chunk, "cuda_decode_workspace_bytes", "chunk=",
        chunk, " outside [0, ", cuda_decode_max_chunk, "]");
  // cuda_decode_chunk gives at most splits_target chunks, or len / max_chunk when clamped.
  const int64_t splits_target = (cuda::target_blocks + kv_heads - 1) / kv_heads;
  int64_t splits = std::max(splits_target, cuda::splits_of(max_len, cuda::max_chunk));
  if (chunk > 0) splits = std::max(splits, cuda::splits_of(max_len, chunk));
  return cuda_decode_counter_bytes +
         cuda::align256(static_cast<size_t>(splits * heads * head_dim) * sizeof(float)) +
         static_cast<size_t>(splits * heads) * sizeof(float);
}

void cuda_decode_attention(const cuda_decode_params& params, void* stream) {
  const char* fn = "cuda_decode_attention";
  const cuda_decode_params& a = params;
  check(a.head_dim == 64 || a.head_dim == 128, fn, "head_dim=", a.head_dim, " (64 or 128)");
  check(a.len > 0 && a.heads > 0 && a.kv_heads > 0 && a.heads % a.kv_heads == 0, fn, "len=",
        a.len, " heads=", a.heads, " kv_heads=", a.kv_heads);
  check(a.kv_heads <= cuda::max_kv_heads, fn, "kv_heads=", a.kv_heads, " (at most ",
        cuda::max_kv_heads, ": one counter each in the workspace's first ",
        cuda_decode_counter_bytes, " bytes)");
  check(a.heads / a.kv_heads <= cuda::max_group, fn, "GQA group of ", a.heads / a.kv_heads,
        " query heads per KV head (at most ", cuda::max_group, ")");
  check(a.kv_token_stride >= a.kv_heads * a.head_dim && a.kv_token_stride % 8 == 0, fn,
        "kv_token_stride=", a.kv_token_stride, " (a multiple of 8, at least kv_heads * head_dim)");
  check(a.q != nullptr && a.k != nullptr && a.v != nullptr && a.out != nullptr, fn,
        "null q, k, v or out");
  check(cuda::aligned_to(a.q, 16) && cuda::aligned_to(a.k, 16) && cuda::aligned_to(a.v, 16), fn,
        "q, k and v must be 16-byte aligned");
  const cuda_decode_new_token& t = a.new_token;
  if (t.k != nullptr)
    check(t.v != nullptr && t.cache_k == a.k && t.cache_v == a.v && cuda::aligned_to(t.k, 16) &&
              cuda::aligned_to(t.v, 16) && t.inv_freq != nullptr && t.pairs > 0 &&
              2 * t.pairs <= a.head_dim,
          fn, "the fused new token needs v, cache_k == k and cache_v == v, 16-byte aligned k and "
          "v, inv_freq and 1 <= pairs <= head_dim / 2 (got pairs=", t.pairs, ")");
  check(a.chunk >= 0 && a.chunk <= cuda_decode_max_chunk, fn, "chunk=", a.chunk, " outside [0, ",
        cuda_decode_max_chunk, "]");
  const int64_t chunk = a.chunk > 0 ? a.chunk : cuda_decode_chunk(a.len, a.kv_heads);
  const int64_t splits = cuda::splits_of(a.len, chunk);
  check(splits <= 0x7fffffff, fn, "len=", a.len, " needs ", splits, " chunks (grid limit)");
  const size_t o_bytes = cuda::align256(static_cast<size_t>(splits * a.heads * a.head_dim) * sizeof(float));
  const size_t need =
      splits > 1 ? cuda_decode_counter_bytes + o_bytes + static_cast<size_t>(splits * a.heads) * sizeof(float) : 0;
  check(need == 0 || (a.workspace != nullptr && a.workspace_bytes >= need &&
                      cuda::aligned_to(a.workspace, 256)),
        fn, "workspace of ", a.workspace_bytes, " bytes at ", a.workspace, " for len=", a.len,
        " (needs ", need, " bytes, 256-byte aligned: cuda_decode_workspace_bytes)");
  char* const ws = static_cast<char*>(a.workspace);
  cuda::decode_kernel_params p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.kv_stride = a.kv_token_stride;
  p.len = a.len;
  p.chunk = chunk;
  p.len_device = a.len_device;
  p.heads = static_cast<int>(a.heads);
  p.kv_heads = static_cast<int>(a.kv_heads);
  p.scale_log2 = cuda::log2e / std::sqrt(static_cast<float>(a.head_dim));
  p.arrived = splits > 1 ? reinterpret_cast<unsigned*>(ws) : nullptr;
  p.part_o = splits > 1 ? reinterpret_cast<float*>(ws + cuda_decode_counter_bytes) : nullptr;
  p.part_lse = splits > 1 ? reinterpret_cast<float*>(ws + cuda_decode_counter_bytes + o_bytes) : nullptr;
  p.out = a.out;
  p.lse = a.lse;
  p.new_k = t.k;
  if (t.k != nullptr) {
    p.new_v = t.v;
    p.cache_k = t.cache_k;
    p.cache_v = t.cache_v;
    p.pairs = static_cast<int>(t.pairs);
    p.attention_factor = t.attention_factor;
    for (int64_t i = 0; i < t.pairs; ++i) p.inv_freq[i] = t.inv_freq[i];
  }
  const cudaStream_t s = cuda::as_stream(stream);
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(a.kv_heads));
  const int group = static_cast<int>(a.heads / a.kv_heads);
  if (a.head_dim == 64)
    cuda::launch_chunks_of_group<64>(group, p, grid, s, a.programmatic_launch);
  else
    cuda::launch_chunks_of_group<128>(group, p, grid, s, a.programmatic_launch);
  cuda::check_launch(fn);
}

}  // namespace sp
