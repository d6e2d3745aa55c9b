// cuda_token_logprob: one block of 256 threads per row; a max pass and a sum-of-exp pass over
// the row with block reductions through shared memory (8 warp partials).
#include "model_common.cuh"
#include "shareprefill/cuda_token_logprob.h"

namespace sp {
namespace cuda {
namespace {

constexpr int threads = 256;

// Reduces v over the block with op (warp shuffle, then the 8 warp partials); all threads get it.
template <bool is_max>
__device__ float block_reduce(float v, float* partial) {
  v = is_max ? warp_max(v) : warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float r = partial[0];
  for (int w = 1; w < threads / 32; ++w) r = is_max ? fmaxf(r, partial[w]) : r + partial[w];
  __syncthreads();  // partial is reused by the next reduction
  return r;
}

__global__ void token_logprob_kernel(float* __restrict__ out,            // out: [count]
                                     const float* __restrict__ logits,   // logits: [count, vocab]
                                     const int32_t* __restrict__ targets,  // targets: [count]
                                     int64_t vocab) {
  __shared__ float partial[threads / 32];
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < vocab; j += threads) mx = fmaxf(mx, row[j]);
  mx = block_reduce<true>(mx, partial);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < vocab; j += threads) sum += expf(row[j] - mx);
  sum = block_reduce<false>(sum, partial);
  if (threadIdx.x == 0) {
    const int64_t t = targets[blockIdx.x];
    out[blockIdx.x] = t >= 0 && t < vocab ? row[t] - mx - logf(sum) : NAN;
  }
}

}  // namespace
}  // namespace cuda

void cuda_token_logprob(float* out, const float* logits, const int32_t* targets, int64_t count,
                        int64_t vocab, void* stream) {
  const char* fn = "cuda_token_logprob";
  check(count >= 0 && count < (int64_t{1} << 31) && vocab > 0, fn, "count=", count,
        " vocab=", vocab, " (count below 2^31, vocab positive)");
  if (count == 0) return;
  check(out != nullptr && logits != nullptr && targets != nullptr, fn, "null pointer");
  cuda::token_logprob_kernel<<<static_cast<unsigned>(count), cuda::threads, 0,
                               cuda::as_stream(stream)>>>(out, logits, targets, vocab);
  cuda::check_launch(fn);
}

}  // namespace sp
