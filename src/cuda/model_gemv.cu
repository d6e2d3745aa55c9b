// The decode step's matrix-vector products (m = 1) with what precedes them fused in (issue 14):
// RMSNorm + GEMV, SwiGLU + GEMV + residual, GEMV + residual. One warp per R consecutive output
// rows (R = 1, 2 or 4: more rows per warp for larger n, so that the grid still fills the GPU
// while the input vector's cost is shared by more rows): lane j reads each row's 16-byte vectors
// j, j + 32, ... (VPL of them per chunk of 32 * VPL vectors, all R * VPL in flight before any
// arithmetic; the first chunk's loads are issued before the kernel waits for its predecessor or
// computes its input; once its predecessor is done it lets the next kernel start, which with
// Programmatic Dependent Launch overlaps that kernel's weight loads with this one), multiplies
// them by the input vector in fp32 and the warp sums by shuffles. The input vector is recomputed by
// every block from what the previous kernels left (no separate norm or SwiGLU launch):
//   rms_norm_input  each warp sums the squares of x itself (dim floats from L1/L2: no barrier),
//                   then a = bf16(x * inv * weight) at its lanes' positions, as cuda_rms_norm
//   swiglu_input    the block writes a = bf16(silu(gate) * up) (as cuda_swiglu) to shared memory
//   bf16_input      a read as it is
// Weights are streamed with evict-first loads (__ldcs): a step reads each once.
#include <initializer_list>

#include "model_common.cuh"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace cuda {
namespace {

constexpr int gemv_warps = 4;  // warps per block
constexpr int gemv_threads = gemv_warps * 32;

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  return static_cast<uint32_t>(float_to_bf16_bits(lo)) |
         (static_cast<uint32_t>(float_to_bf16_bits(hi)) << 16);
}

// Lets the stream's next kernel, when it is launched by Programmatic Dependent Launch, start now
// rather than when this grid's blocks exit: its blocks issue their own independent loads (the
// next weights) while this kernel works, then wait for this kernel's completion before reading
// what it writes. A scheduling hint; no effect on a launch without the attribute.
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cudaTriggerProgrammaticLaunchCompletion();
#endif
}

// Vectors base + lane + 32 i (i < VPL) of weight rows row0 .. row0 + R - 1 (w: [n, kv] vectors),
// zeros past kv or past the last row.
template <int VPL, int R>
__device__ __forceinline__ void load_chunk(uint4 (&wv)[R][VPL], const uint4* w, int64_t row0,
                                           int64_t n, int64_t base, int lane, int64_t kv) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int i = 0; i < VPL; ++i) {
      const int64_t v = base + lane + 32 * i;
      wv[r][i] = row0 + r < n && v < kv ? __ldcs(w + (row0 + r) * kv + v) : make_uint4(0, 0, 0, 0);
    }
  }
}

// a = bf16(x * inv * weight) for the 8 values of vector v, inv = 1 / sqrt(mean(x^2) + eps).
struct rms_norm_input {
  const float* x;       // x: [k] f32 (16-byte aligned)
  const float* weight;  // weight: [k] f32 (16-byte aligned)
  float eps;
  float inv = 0.0f;

  // Every warp sums the squares of all of x (the same order in every warp).
  __device__ __forceinline__ void prepare(uint4*, int lane, int64_t kv) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float ss = 0.0f;
    for (int64_t j = lane; j < 2 * kv; j += 32) ss += squares_of(x4[j]);
    const float total = warp_sum(ss);
    inv = 1.0f / sqrtf(total / static_cast<float>(8 * kv) + eps);
  }
  __device__ __forceinline__ void vector(const uint4*, int64_t v, float (&a)[8]) const {
    const float4* x4 = reinterpret_cast<const float4*>(x) + 2 * v;
    const float4* w4 = reinterpret_cast<const float4*>(weight) + 2 * v;
    const float4 x0 = x4[0], x1 = x4[1], w0 = __ldg(w4), w1 = __ldg(w4 + 1);
    const float xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    const float ws[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) a[i] = bf16_bits_to_float(float_to_bf16_bits(xs[i] * inv * ws[i]));
  }
};

// a = bf16(silu(gate) * up), written by the block to shared memory [kv] x 16 bytes.
struct swiglu_input {
  const uint16_t* gate;  // gate: [k] bf16 (16-byte aligned)
  const uint16_t* up;    // up: [k] bf16 (16-byte aligned)

  __device__ __forceinline__ void prepare(uint4* act, int, int64_t kv) {
    const uint4* g4 = reinterpret_cast<const uint4*>(gate);
    const uint4* u4 = reinterpret_cast<const uint4*>(up);
    for (int64_t v = threadIdx.x; v < kv; v += blockDim.x) {
      float g[8], u[8];
      unpack8(g4[v], g);
      unpack8(u4[v], u);
      float s[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) s[i] = swiglu_value(g[i], u[i]);
      act[v] =
          make_uint4(pack2(s[0], s[1]), pack2(s[2], s[3]), pack2(s[4], s[5]), pack2(s[6], s[7]));
    }
    __syncthreads();
  }
  __device__ __forceinline__ void vector(const uint4* act, int64_t v, float (&a)[8]) const {
    unpack8(act[v], a);
  }
};

struct bf16_input {
  const uint16_t* a;  // a: [k] bf16 (16-byte aligned)

  __device__ __forceinline__ void prepare(uint4*, int, int64_t) {}
  __device__ __forceinline__ void vector(const uint4*, int64_t v, float (&f)[8]) const {
    unpack8(reinterpret_cast<const uint4*>(a)[v], f);
  }
};

struct bf16_output {
  uint16_t* y;  // y: [n] bf16
  __device__ __forceinline__ void store(int64_t row, float sum) const {
    y[row] = float_to_bf16_bits(sum);
  }
};

struct f32_output {
  float* y;  // y: [n] f32
  __device__ __forceinline__ void store(int64_t row, float sum) const { y[row] = sum; }
};

struct residual_output {
  float* x;  // x: [n] f32, += the product
  __device__ __forceinline__ void store(int64_t row, float sum) const { x[row] += sum; }
};

// out[row] = w[row, :] . a for the R rows from row0 = (blockIdx.x * gemv_warps + warp) * R;
// k = 8 kv.
template <int VPL, int R, class Input, class Output>
__global__ void __launch_bounds__(gemv_threads)
    gemv_kernel(const uint16_t* __restrict__ w,  // w: [n, k] bf16 row-major, 16-byte aligned
                int64_t n, int64_t kv, Input in, Output out) {
  extern __shared__ uint4 shared[];  // swiglu_input's activation [kv]; unused by the others
  const int lane = threadIdx.x % 32;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * gemv_warps + threadIdx.x / 32) * R;
  const uint4* w4 = reinterpret_cast<const uint4*>(w);
  uint4 wv[R][VPL];
  load_chunk(wv, w4, row0, n, 0, lane, kv);
  wait_for_predecessor();        // the input and out come from the previous kernels
  allow_dependents();            // after the wait: at most this kernel and the next one overlap
  in.prepare(shared, lane, kv);  // every thread of the block (it may hold a barrier)
  if (row0 >= n) return;
  float sum[R] = {};
  for (int64_t base = 0;;) {
#pragma unroll
    for (int i = 0; i < VPL; ++i) {
      const int64_t v = base + lane + 32 * i;
      if (v < kv) {
        float a[8];
        in.vector(shared, v, a);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float b[8];
          unpack8(wv[r][i], b);
#pragma unroll
          for (int j = 0; j < 8; ++j) sum[r] = fmaf(b[j], a[j], sum[r]);
        }
      }
    }
    base += 32 * VPL;
    if (base >= kv) break;
    load_chunk(wv, w4, row0, n, base, lane, kv);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float total = warp_sum(sum[r]);
    if (lane == 0 && row0 + r < n) out.store(row0 + r, total);
  }
}

// Vectors per lane per chunk: the fewest of 1, 2, 3, 4, 6, 8 that cover a row of kv vectors in
// one chunk, else 8 (longer rows loop over chunks).
template <int R, class Input, class Output>
void launch_gemv(const char* fn, const uint16_t* w, int64_t n, int64_t kv, size_t shared_bytes,
                 cudaStream_t stream, bool programmatic, Input in, Output out) {
  const unsigned blocks = static_cast<unsigned>((n + gemv_warps * R - 1) / (gemv_warps * R));
  const int64_t per_lane = (kv + 31) / 32;
  const auto launch = [&](auto kernel) {
    launch_kernel_smem(fn, kernel, blocks, gemv_threads, shared_bytes, stream, programmatic, w, n,
                       kv, in, out);
  };
  if (per_lane <= 1) {
    launch(gemv_kernel<1, R, Input, Output>);
  } else if (per_lane <= 2) {
    launch(gemv_kernel<2, R, Input, Output>);
  } else if (per_lane <= 3) {
    launch(gemv_kernel<3, R, Input, Output>);
  } else if (per_lane <= 4) {
    launch(gemv_kernel<4, R, Input, Output>);
  } else if (per_lane <= 6) {
    launch(gemv_kernel<6, R, Input, Output>);
  } else {
    launch(gemv_kernel<8, R, Input, Output>);
  }
}

// Rows per warp: 1 below 2048 rows, 2 below 8192, else 4, so that the grid (n / (4 R) blocks)
// stays above ~250 blocks: every SM of an H200 (132) busy.
template <class Input, class Output>
void launch_gemv(const char* fn, const uint16_t* w, int64_t n, int64_t kv, size_t shared_bytes,
                 cudaStream_t stream, bool programmatic, Input in, Output out) {
  if (n < 2048)
    launch_gemv<1>(fn, w, n, kv, shared_bytes, stream, programmatic, in, out);
  else if (n < 8192)
    launch_gemv<2>(fn, w, n, kv, shared_bytes, stream, programmatic, in, out);
  else
    launch_gemv<4>(fn, w, n, kv, shared_bytes, stream, programmatic, in, out);
}

// The checks every GEMV shares: sizes, k a whole number of vectors, 16-byte aligned operands.
void check_gemv(const char* fn, const void* out, const uint16_t* w, int64_t n, int64_t k,
                std::initializer_list<const void*> vectors) {
  check(n > 0 && k > 0, fn, "n=", n, " k=", k, " (both must be positive)");
  check(k % cuda_gemv_k_multiple == 0, fn, "k=", k, " must be a multiple of ", cuda_gemv_k_multiple,
        " (each row read in whole 16-byte vectors)");
  check((n + gemv_warps - 1) / gemv_warps <= 0x7fffffff, fn, "n=", n, " exceeds the grid limit");
  check(out != nullptr && w != nullptr, fn, "null pointer");
  check(aligned_to(w, 16), fn, "w must be 16-byte aligned");
  for (const void* p : vectors) {
    check(p != nullptr, fn, "null pointer");
    check(aligned_to(p, 16), fn, "input vectors must be 16-byte aligned");
  }
}

bool overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

}  // namespace
}  // namespace cuda

void cuda_rms_norm_gemv(void* y, dtype y_type, const float* x, const float* norm_weight,
                        const uint16_t* w, int64_t n, int64_t k, double eps, void* stream,
                        bool programmatic_launch) {
  const char* fn = "cuda_rms_norm_gemv";
  check(y_type == dtype::bf16 || y_type == dtype::f32, fn, "output dtype ", dtype_name(y_type),
        " (bf16 or f32 expected)");
  check(eps > 0.0, fn, "eps must be positive, got ", eps);
  cuda::check_gemv(fn, y, w, n, k, {x, norm_weight});
  check(!cuda::overlap(y, static_cast<size_t>(n) * dtype_size(y_type), x,
                       static_cast<size_t>(k) * sizeof(float)),
        fn, "y overlaps x (every block reads all of x)");
  const cuda::rms_norm_input in{x, norm_weight, static_cast<float>(eps)};
  const cudaStream_t s = cuda::as_stream(stream);
  if (y_type == dtype::bf16)
    cuda::launch_gemv(fn, w, n, k / 8, 0, s, programmatic_launch, in,
                      cuda::bf16_output{static_cast<uint16_t*>(y)});
  else
    cuda::launch_gemv(fn, w, n, k / 8, 0, s, programmatic_launch, in,
                      cuda::f32_output{static_cast<float*>(y)});
}

void cuda_swiglu_gemv_residual(float* x, const uint16_t* gate, const uint16_t* up,
                               const uint16_t* w, int64_t n, int64_t k, void* stream,
                               bool programmatic_launch) {
  const char* fn = "cuda_swiglu_gemv_residual";
  cuda::check_gemv(fn, x, w, n, k, {gate, up});
  check(k <= cuda_gemv_max_swiglu_k, fn, "k=", k, " exceeds ", cuda_gemv_max_swiglu_k,
        " (the activation is kept in 48 KiB of shared memory)");
  cuda::launch_gemv(fn, w, n, k / 8, static_cast<size_t>(k) * 2, cuda::as_stream(stream),
                    programmatic_launch, cuda::swiglu_input{gate, up}, cuda::residual_output{x});
}

void cuda_gemv_residual(float* x, const uint16_t* a, const uint16_t* w, int64_t n, int64_t k,
                        void* stream, bool programmatic_launch) {
  const char* fn = "cuda_gemv_residual";
  cuda::check_gemv(fn, x, w, n, k, {a});
  cuda::launch_gemv(fn, w, n, k / 8, 0, cuda::as_stream(stream), programmatic_launch,
                    cuda::bf16_input{a}, cuda::residual_output{x});
}

}  // namespace sp
