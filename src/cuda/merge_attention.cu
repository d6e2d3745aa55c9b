// CUDA merge of two partial attention results by their log-sum-exp (merge_attention.h): one
// warp per (token, head) row, lanes over the head dimension, fp32 math; memory bound.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

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

constexpr int warps_per_block = 8;

// Rows are (token i, head h) pairs, row = i * heads + h; every lane reads both LSEs, the
// lanes split the head dimension. Aliasing of out with a or b is safe: each element is read
// before the same lane writes it.
__global__ void merge_attention_kernel(const merge_params p) {
  const int64_t row = int64_t(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  if (row >= p.n * p.heads) return;
  const int64_t i = row / p.heads, h = row % p.heads;
  const int lane = threadIdx.x % 32;
  const float la = p.lse_a[h * p.lse_a_stride[0] + i * p.lse_a_stride[1]];
  const float lb = p.lse_b[h * p.lse_b_stride[0] + i * p.lse_b_stride[1]];
  const float m = fmaxf(la, lb);
  const bool empty = m == -INFINITY;
  const float wa = empty ? 0.0f : expf(la - m), wb = empty ? 0.0f : expf(lb - m);
  const float sum = wa + wb;
  const float ca = empty ? 0.0f : wa / sum, cb = empty ? 0.0f : wb / sum;
  const int64_t pa = i * p.a.token_stride + h * p.a.head_stride;
  const int64_t pb = i * p.b.token_stride + h * p.b.head_stride;
  const int64_t po = i * p.out.token_stride + h * p.out.head_stride;
  for (int64_t d = lane; d < p.dim; d += 32) {
    const float value = empty ? 0.0f : ca * load(p.a, pa + d) + cb * load(p.b, pb + d);
    store(p.out, po + d, value);
  }
  if (lane == 0)
    p.lse_out[h * p.lse_out_stride[0] + i * p.lse_out_stride[1]] = empty ? -INFINITY : m + logf(sum);
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
  const int64_t blocks = (rows + cuda::warps_per_block - 1) / cuda::warps_per_block;
  check(blocks < (int64_t{1} << 31), fn, "too many rows: ", rows);
  cuda::merge_attention_kernel<<<static_cast<unsigned>(blocks), 32 * cuda::warps_per_block, 0,
                                 static_cast<cudaStream_t>(stream)>>>(p);
  cuda::check_cuda(cudaGetLastError(), fn, "kernel launch");
}

}  // namespace sp
