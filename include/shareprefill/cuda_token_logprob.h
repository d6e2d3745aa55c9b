// Log-probabilities of chosen tokens under rows of logits, on the device: the scoring step of a
// perplexity evaluation, so that [positions, vocab] logits never leave the GPU. The CPU oracle is
// sp::token_logprob (eval.h). No CUDA types; builds without CUDA throw "[fn] built without CUDA".
#pragma once

#include <cstdint>

namespace sp {

// out[i] = logits[i, targets[i]] - log(sum_j exp(logits[i, j])), fp32 math (max-shifted). A
// target outside [0, vocab) gives NaN (the caller validates ids on the host).
// out: [count] f32; logits: [count, vocab] f32 row-major; targets: [count] int32. Device
// pointers; asynchronous on `stream` (a cudaStream_t; null = the default stream).
void cuda_token_logprob(float* out, const float* logits, const int32_t* targets, int64_t count,
                        int64_t vocab, void* stream);

}  // namespace sp
