// CUDA merge of two partial attention results by their log-sum-exp (merge_attention.h), fp32
// math; memory bound. When a, b and out are one 16-bit type with 16-byte aligned rows (D and the
// strides multiples of 8, the bases 16-byte aligned: the attention kernels' outputs), each thread
// merges 8 elements with one 16-byte load per operand, so a warp keeps 1 KiB in flight (the
// one-warp-per-row kernel below kept 128 bytes and reached ~0.9 TB/s on the H200); otherwise
// one warp per (token, head) row, lanes over the head dimension.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda_check.h"
#include "shareprefill/error.h"
#include "shareprefill/merge_attention.h"

namespace sp::cuda {
namespace {

struct merge_operand {
  void* data = nullptr;      // o: [N, H, D] with the strides below (elements)
  int64_t token_stride = 0, head_stride = 0;
  int type = 0;              // sp::dtype as int
};

struct merge_params {
  merge_operand a, b, out;
  const float* lse_a = nullptr;  // lse_a: [H, N] at h * lse_a_stride[0] + i * lse_a_stride[1]
  const float* lse_b = nullptr;  // lse_b: [H, N]
  float* lse_out = nullptr;      // lse_out: [H, N]
  int64_t lse_a_stride[2] = {0, 0}, lse_b_stride[2] = {0, 0}, lse_out_stride[2] = {0, 0};
  int64_t n = 0, heads = 0, dim = 0;
};

__device__ float load(const merge_operand& o, int64_t offset) {
  if (o.type == static_cast<int>(dtype::f32)) return static_cast<const float*>(o.data)[offset];
  if (o.type == static_cast<int>(dtype::bf16))
    return __bfloat162float(static_cast<const __nv_bfloat16*>(o.data)[offset]);
  return __half2float(static_cast<const __half*>(o.data)[offset]);
}

__device__ void store(const merge_operand& o, int64_t offset, float value) {
  if (o.type == static_cast<int>(dtype::f32)) static_cast<float*>(o.data)[offset] = value;
  else if (o.type == static_cast<int>(dtype::bf16))
    static_cast<__nv_bfloat16*>(o.data)[offset] = __float2bfloat16_rn(value);
  else static_cast<__half*>(o.data)[offset] = __float2half_rn(value);
}

// The merge weights of one (token, head) row from the two LSEs: (ca, cb, merged lse); a row
// that attended to no key in either part (both -inf) gets weights 0 and lse -inf.
struct row_weights {
  float ca, cb, lse;
};
__device__ row_weights weights_of(const merge_params& p, int64_t i, int64_t h) {
  const float la = p.lse_a[h * p.lse_a_stride[0] + i * p.lse_a_stride[1]];
  const float lb = p.lse_b[h * p.lse_b_stride[0] + i * p.lse_b_stride[1]];
  const float m = fmaxf(la, lb);
  if (m == -INFINITY) return {0.0f, 0.0f, -INFINITY};
  const float wa = expf(la - m), wb = expf(lb - m), sum = wa + wb;
  return {wa / sum, wb / sum, m + logf(sum)};
}

constexpr int warps_per_block = 8;

// Rows are (token i, head h) pairs, row = i * heads + h; every lane reads both LSEs, the
// lanes split the head dimension. Aliasing of out with a or b is safe: each element is read
// before the same lane writes it.
__global__ void merge_attention_kernel(const merge_params p) {
  const int64_t row = int64_t(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  if (row >= p.n * p.heads) return;
  const int64_t i = row / p.heads, h = row % p.heads;
  const int lane = threadIdx.x % 32;
  const row_weights w = weights_of(p, i, h);
  const int64_t pa = i * p.a.token_stride + h * p.a.head_stride;
  const int64_t pb = i * p.b.token_stride + h * p.b.head_stride;
  const int64_t po = i * p.out.token_stride + h * p.out.head_stride;
  const bool empty = w.lse == -INFINITY;  // no key in either part: 0, whatever a and b hold
  for (int64_t d = lane; d < p.dim; d += 32)
    store(p.out, po + d, empty ? 0.0f : w.ca * load(p.a, pa + d) + w.cb * load(p.b, pb + d));
  __syncwarp();  // every lane has read the LSEs before lane 0 may overwrite one (aliasing)
  if (lane == 0) p.lse_out[h * p.lse_out_stride[0] + i * p.lse_out_stride[1]] = w.lse;
}

// 8 consecutive 16-bit values (one uint4) to fp32 and back.
template <class T>
__device__ void unpack(const uint4& u, float* f) {
  const T* x = reinterpret_cast<const T*>(&u);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) f[e] = __bfloat162float(x[e]);
    else f[e] = __half2float(x[e]);
  }
}
template <class T>
__device__ uint4 pack(const float* f) {
  uint4 u;
  T* x = reinterpret_cast<T*>(&u);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) x[e] = __float2bfloat16_rn(f[e]);
    else x[e] = __float2half_rn(f[e]);
  }
  return u;
}

// One thread per 8 elements of a row: vec = row * (dim / 8) + e8, dim / 8 dividing 32 so that a
// row's threads are lanes of one warp. Aliasing is safe: each thread reads its 16 bytes of a and
// b before writing them, and the warp has read every LSE of its rows before lane e8 == 0 writes
// lse_out (which may alias lse_a or lse_b).
template <class T>
__global__ void merge_attention_vec8_kernel(const merge_params p) {
  const int64_t per_row = p.dim / 8;  // a power of two
  const int64_t vec = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool valid = vec < p.n * p.heads * per_row;  // lanes past the end still join __syncwarp
  const int64_t row = vec >> (__ffsll(per_row) - 1), e8 = vec & (per_row - 1);
  // 32-bit division where the row index fits (a 64-bit one costs ~70 instructions a thread)
  const bool narrow = row <= 0xffffffffll && p.heads <= 0xffffffffll;
  const int64_t i = narrow ? uint32_t(row) / uint32_t(p.heads) : row / p.heads;
  const int64_t h = row - i * p.heads;
  const int64_t d = e8 * 8;
  uint4 ua{}, ub{};
  row_weights w{0.0f, 0.0f, -INFINITY};
  if (valid) {
    ua = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.a.data) + i * p.a.token_stride +
                                         h * p.a.head_stride + d);
    ub = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.b.data) + i * p.b.token_stride +
                                         h * p.b.head_stride + d);
    w = weights_of(p, i, h);
  }
  __syncwarp();
  if (!valid) return;
  float fa[8], fb[8], fo[8];
  unpack<T>(ua, fa);
  unpack<T>(ub, fb);
#pragma unroll
  for (int e = 0; e < 8; ++e) fo[e] = w.lse == -INFINITY ? 0.0f : w.ca * fa[e] + w.cb * fb[e];
  *reinterpret_cast<uint4*>(static_cast<T*>(p.out.data) + i * p.out.token_stride +
                            h * p.out.head_stride + d) = pack<T>(fo);
  if (e8 == 0) p.lse_out[h * p.lse_out_stride[0] + i * p.lse_out_stride[1]] = w.lse;
}

// Whether the 8-wide kernel may read and write o: 16-bit, dim 8..256 with dim / 8 dividing 32,
// 16-byte aligned base and row starts.
bool vec8_ok(const tensor_view& o, dtype type, int64_t dim) {
  return o.type == type && (type == dtype::bf16 || type == dtype::f16) && dim % 8 == 0 &&
         32 % (dim / 8) == 0 &&
         o.stride[0] % 8 == 0 && o.stride[1] % 8 == 0 &&
         reinterpret_cast<uintptr_t>(o.data) % 16 == 0;
}

merge_operand operand_of(const tensor_view& o) {
  return merge_operand{o.data, o.stride[0], o.stride[1], static_cast<int>(o.type)};
}

}  // namespace
}  // namespace sp::cuda

namespace sp {

void cuda_merge_attention_states(const tensor_view& o_out, const tensor_view& lse_out,
                                 const tensor_view& o_a, const tensor_view& lse_a,
                                 const tensor_view& o_b, const tensor_view& lse_b, void* stream) {
  const char* fn = "cuda_merge_attention_states";
  const merge_shape s = merge_shape_of(fn, o_out, lse_out, o_a, lse_a, o_b, lse_b);
  check(o_a.on_device, fn, "the views are in host memory; use merge_attention_states");
  cuda::merge_params p;
  p.a = cuda::operand_of(o_a);
  p.b = cuda::operand_of(o_b);
  p.out = cuda::operand_of(o_out);
  p.lse_a = lse_a.as<const float>();
  p.lse_b = lse_b.as<const float>();
  p.lse_out = lse_out.as<float>();
  for (int d = 0; d < 2; ++d) {
    p.lse_a_stride[d] = lse_a.stride[d];
    p.lse_b_stride[d] = lse_b.stride[d];
    p.lse_out_stride[d] = lse_out.stride[d];
  }
  p.n = s.n;
  p.heads = s.heads;
  p.dim = s.dim;
  const int64_t rows = s.n * s.heads;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  const dtype t = o_a.type;
  if (cuda::vec8_ok(o_a, t, s.dim) && cuda::vec8_ok(o_b, t, s.dim) && cuda::vec8_ok(o_out, t, s.dim)) {
    constexpr int threads = 256;
    const int64_t blocks = (rows * (s.dim / 8) + threads - 1) / threads;
    check(blocks < (int64_t{1} << 31), fn, "too many rows: ", rows);
    if (t == dtype::bf16)
      cuda::merge_attention_vec8_kernel<__nv_bfloat16><<<static_cast<unsigned>(blocks), threads, 0, st>>>(p);
    else
      cuda::merge_attention_vec8_kernel<__half><<<static_cast<unsigned>(blocks), threads, 0, st>>>(p);
  } else {
    const int64_t blocks = (rows + cuda::warps_per_block - 1) / cuda::warps_per_block;
    check(blocks < (int64_t{1} << 31), fn, "too many rows: ", rows);
    cuda::merge_attention_kernel<<<static_cast<unsigned>(blocks), 32 * cuda::warps_per_block, 0, st>>>(p);
  }
  cuda::check_cuda(cudaGetLastError(), fn, "kernel launch");
}

}  // namespace sp
