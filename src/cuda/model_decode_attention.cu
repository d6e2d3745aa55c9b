// Decode attention: one query row per head over the KV cache, split-K. Kernel 1 runs one block
// per (key chunk, KV head) for all G = heads / kv_heads query heads of the group, so each K and V
// row is read once (native GQA). A row of D bf16 is D/8 16-byte vectors held by D/8 adjacent
// lanes, so a warp reads 32/(D/8) whole rows per instruction (coalesced); dot products reduce
// over those lanes by shuffles. One pass: each thread loads the K and the V vectors of `unroll`
// rows before it uses any of them (2 * unroll loads in flight), and keeps an online softmax
// (running max, sum and output, base 2, scores pre-scaled by log2(e)/sqrt(D)) over its rows; the
// row groups of a warp and then the warps merge by their LSE. So a block waits for memory once
// per `unroll` rows, with no barrier in the loop, and the chunk count targets ~4 blocks per SM:
// enough bytes in flight to approach memory bandwidth (the two-pass kernel before, one load at a
// time, reached about a quarter of it). The block writes its chunk's normalised output and
// base-2 LSE. Kernel 2 merges the chunks by their LSE in fp32 (FlashAttention's split-KV combine;
// with a single chunk kernel 1 writes the result directly), 1024 threads per head so that the
// loads of many chunks are in flight at once.
// The length may come from device memory (a captured decode step): the grid is then sized for
// the largest length and blocks past the run-time length exit at once.
#include <algorithm>
#include <cmath>

#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int decode_threads = 128;
constexpr int decode_warps = decode_threads / 32;
constexpr int unroll = 4;             // row loads in flight per thread
constexpr int max_group = 8;          // query heads per KV head
constexpr int64_t max_chunk = 1024;   // keys per block (past ~175K keys the chunk count grows)
constexpr int64_t min_chunk = 64;
constexpr int64_t chunk_multiple = 64;
constexpr int64_t target_blocks = 512;  // ~4 blocks per SM of an H100/H200 (132 SMs)
constexpr int merge_threads = 1024;
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
  float* part_o;      // part_o: [splits, heads, D] chunk outputs, normalised
  float* part_lse;    // part_lse: [splits, heads] base-2 LSE of each chunk
  uint16_t* out;      // out: [heads, D], written here when the grid has one chunk
  float* lse;         // lse: [heads] natural log, or null
};

__device__ __forceinline__ int64_t run_length(const decode_kernel_params& p) {
  if (p.len_device == nullptr) return p.len;
  return max(int64_t{1}, min(p.len, *p.len_device));
}

__device__ __forceinline__ void unpack8(const uint4& u, float* f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
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

template <int D, int G>
__global__ void __launch_bounds__(decode_threads, G <= 4 ? 4 : 2)
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

  // This lane's 8 dimensions of every query head of the group, pre-scaled.
  float q[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    unpack8(reinterpret_cast<const uint4*>(p.q + (head0 + h) * D)[vec], q[h]);
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
    uint4 kraw[unroll], vraw[unroll];
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const int r = r0 + u * rows_per_pass + first_row;
      const bool valid = r < count;
      kraw[u] = valid ? __ldcs(k + r * row_stride) : make_uint4(0, 0, 0, 0);
      vraw[u] = valid ? __ldcs(v + r * row_stride) : make_uint4(0, 0, 0, 0);
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
  const bool single = gridDim.x == 1;
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
}

// One block per head: out = sum_s w_s o_s / sum_s w_s with w_s = exp2(lse_s - max lse) over the
// chunks of the run-time length. The block's threads form merge_threads / D groups of D (one
// thread per dimension), each group summing every groups-th chunk; shared memory adds the groups.
template <int D>
__global__ void __launch_bounds__(merge_threads) decode_merge_kernel(const decode_kernel_params p) {
  constexpr int groups = merge_threads / D;
  __shared__ float s_red[merge_threads / 32];
  __shared__ float s_o[groups][D], s_w[groups];
  const int64_t len = run_length(p);
  const int splits = static_cast<int>((len + p.chunk - 1) / p.chunk);
  const int head = blockIdx.x, d = threadIdx.x % D, g = threadIdx.x / D;
  const float* lse = p.part_lse + head;  // chunk s at lse[s * heads]
  float m = -INFINITY;
  for (int s = threadIdx.x; s < splits; s += merge_threads) m = fmaxf(m, lse[static_cast<int64_t>(s) * p.heads]);
  m = warp_max(m);
  if (threadIdx.x % 32 == 0) s_red[threadIdx.x / 32] = m;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < merge_threads / 32; ++w) m = fmaxf(m, s_red[w]);
  float weight_sum = 0.0f, o = 0.0f;
#pragma unroll 4
  for (int s = g; s < splits; s += groups) {
    const float w = exp2f(lse[static_cast<int64_t>(s) * p.heads] - m);
    weight_sum += w;
    o += w * p.part_o[(static_cast<int64_t>(s) * p.heads + head) * D + d];
  }
  s_o[g][d] = o;
  if (d == 0) s_w[g] = weight_sum;
  __syncthreads();
  if (g != 0) return;
  weight_sum = 0.0f;
  o = 0.0f;
#pragma unroll
  for (int i = 0; i < groups; ++i) {
    weight_sum += s_w[i];
    o += s_o[i][d];
  }
  p.out[head * D + d] = float_to_bf16_bits(o / weight_sum);
  if (d == 0 && p.lse != nullptr) p.lse[head] = (m + log2f(weight_sum)) * ln2;
}

int64_t splits_of(int64_t len, int64_t chunk) { return (len + chunk - 1) / chunk; }

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

template <int D, int G>
void launch_chunks(const decode_kernel_params& p, dim3 grid, cudaStream_t s) {
  decode_chunk_kernel<D, G><<<grid, decode_threads, 0, s>>>(p);
}

template <int D>
void launch_chunks_of_group(int group, const decode_kernel_params& p, dim3 grid, cudaStream_t s) {
  switch (group) {
    case 1: return launch_chunks<D, 1>(p, grid, s);
    case 2: return launch_chunks<D, 2>(p, grid, s);
    case 3: return launch_chunks<D, 3>(p, grid, s);
    case 4: return launch_chunks<D, 4>(p, grid, s);
    case 5: return launch_chunks<D, 5>(p, grid, s);
    case 6: return launch_chunks<D, 6>(p, grid, s);
    case 7: return launch_chunks<D, 7>(p, grid, s);
    default: return launch_chunks<D, 8>(p, grid, s);
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
                                   int64_t head_dim) {
  check(max_len > 0 && heads > 0 && kv_heads > 0 && head_dim > 0, "cuda_decode_workspace_bytes",
        "max_len=", max_len, " heads=", heads, " kv_heads=", kv_heads, " head_dim=", head_dim);
  // cuda_decode_chunk gives at most splits_target chunks, or len / max_chunk when clamped.
  const int64_t splits_target = (cuda::target_blocks + kv_heads - 1) / kv_heads;
  const int64_t splits = std::max(splits_target, cuda::splits_of(max_len, cuda::max_chunk));
  return cuda::align256(static_cast<size_t>(splits * heads * head_dim) * sizeof(float)) +
         static_cast<size_t>(splits * heads) * sizeof(float);
}

void cuda_decode_attention(const cuda_decode_params& params, void* stream) {
  const char* fn = "cuda_decode_attention";
  const cuda_decode_params& a = params;
  check(a.head_dim == 64 || a.head_dim == 128, fn, "head_dim=", a.head_dim, " (64 or 128)");
  check(a.len > 0 && a.heads > 0 && a.kv_heads > 0 && a.heads % a.kv_heads == 0, fn, "len=",
        a.len, " heads=", a.heads, " kv_heads=", a.kv_heads);
  check(a.heads / a.kv_heads <= cuda::max_group, fn, "GQA group of ", a.heads / a.kv_heads,
        " query heads per KV head (at most ", cuda::max_group, ")");
  check(a.kv_token_stride >= a.kv_heads * a.head_dim && a.kv_token_stride % 8 == 0, fn,
        "kv_token_stride=", a.kv_token_stride, " (a multiple of 8, at least kv_heads * head_dim)");
  check(a.q != nullptr && a.k != nullptr && a.v != nullptr && a.out != nullptr, fn,
        "null q, k, v or out");
  check(cuda::aligned_to(a.q, 16) && cuda::aligned_to(a.k, 16) && cuda::aligned_to(a.v, 16), fn,
        "q, k and v must be 16-byte aligned");
  const int64_t chunk = cuda_decode_chunk(a.len, a.kv_heads);
  const int64_t splits = cuda::splits_of(a.len, chunk);
  check(splits <= 0x7fffffff, fn, "len=", a.len, " needs ", splits, " chunks (grid limit)");
  const size_t o_bytes = cuda::align256(static_cast<size_t>(splits * a.heads * a.head_dim) * sizeof(float));
  const size_t need = splits > 1 ? o_bytes + static_cast<size_t>(splits * a.heads) * sizeof(float) : 0;
  check(need == 0 || (a.workspace != nullptr && a.workspace_bytes >= need &&
                      cuda::aligned_to(a.workspace, 256)),
        fn, "workspace of ", a.workspace_bytes, " bytes at ", a.workspace, " for len=", a.len,
        " (needs ", need, " bytes, 256-byte aligned: cuda_decode_workspace_bytes)");
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
  p.part_o = static_cast<float*>(a.workspace);
  p.part_lse = splits > 1 ? reinterpret_cast<float*>(static_cast<char*>(a.workspace) + o_bytes) : nullptr;
  p.out = a.out;
  p.lse = a.lse;
  const cudaStream_t s = cuda::as_stream(stream);
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(a.kv_heads));
  const int group = static_cast<int>(a.heads / a.kv_heads);
  if (a.head_dim == 64)
    cuda::launch_chunks_of_group<64>(group, p, grid, s);
  else
    cuda::launch_chunks_of_group<128>(group, p, grid, s);
  cuda::check_launch(fn);
  if (splits > 1) {
    if (a.head_dim == 64)
      cuda::decode_merge_kernel<64><<<static_cast<unsigned>(a.heads), cuda::merge_threads, 0, s>>>(p);
    else
      cuda::decode_merge_kernel<128><<<static_cast<unsigned>(a.heads), cuda::merge_threads, 0, s>>>(p);
    cuda::check_launch(fn);
  }
}

}  // namespace sp
