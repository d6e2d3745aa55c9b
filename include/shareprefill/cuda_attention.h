// CUDA block-sparse causal flash-attention forward (DESIGN.md section 5) and the small device
// toolkit its callers need (device buffers, timing). No CUDA types appear here, so plain C++
// code and builds without CUDA (SP_CUDA=OFF: every function but cuda_device_available throws
// "[fn] built without CUDA") include it alike.
//
// Usage: upload a layer's mask once (cuda_block_mask), then launch:
//   sp::cuda_block_mask dmask(mask, /*pivot_heads=*/{3});
//   sp::cuda_attention_params p;  p.q = dq.data(); ...;  sp::cuda_attention_block_sparse(p, dmask);
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/tensor.h"

namespace sp {

// True when this build has CUDA and a device of compute capability >= 8.0 is usable.
bool cuda_device_available();

// Owning, move-only device allocation of plain bytes.
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(size_t bytes);
  ~device_buffer();
  device_buffer(device_buffer&& other) noexcept;
  device_buffer& operator=(device_buffer&& other) noexcept;
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return bytes_; }
  // Synchronous copies of `bytes` at byte `offset` of the buffer; throw when out of range.
  void upload(const void* src, size_t bytes, size_t offset = 0);
  void download(void* dst, size_t bytes, size_t offset = 0) const;
  void fill_bytes(uint8_t value);  // memset of the whole buffer

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Waits for all device work; throws sp::error if any of it failed.
void cuda_synchronize();

// Calls launch() `warmup` times, then times `repeats` calls one by one with CUDA events on the
// default stream; returns the median in milliseconds.
double cuda_time_ms(const std::function<void()>& launch, int warmup, int repeats);

// A layer's block mask on the device (CSR of block_mask.h, block size 128), its longest-row-
// first schedule of (head, query block) work items, and for pivot heads the scratch of the fused
// block-attention output. Built once per layer; immutable afterwards.
class cuda_block_mask {
 public:
  // pivot_heads: query heads that produce block attention A (ascending, unique, < heads).
  explicit cuda_block_mask(const block_mask& mask, const std::vector<int32_t>& pivot_heads = {});
  ~cuda_block_mask();
  cuda_block_mask(cuda_block_mask&&) noexcept;
  cuda_block_mask& operator=(cuda_block_mask&&) noexcept;

  int64_t n_tokens() const;
  int64_t n_blocks() const;
  int64_t heads() const;
  int64_t pivots() const;
  const std::vector<int64_t>& tiles_per_head() const;  // visited tiles of each head

  struct impl;
  const impl& state() const { return *impl_; }

 private:
  std::unique_ptr<impl> impl_;
};

struct cuda_attention_params {
  dtype type = dtype::bf16;  // of q, k, v and out: bf16 or f16
  int64_t n = 0, heads = 0, kv_heads = 0, dim = 0;  // dim 64 or 128; heads % kv_heads == 0
  // Device pointers, 16-byte aligned; token strides in elements, multiples of 8. Head h's
  // values of token i start at i * token_stride + h * dim (heads contiguous within a token).
  const void* q = nullptr;  // q: [N, H, D]
  int64_t q_token_stride = 0;
  const void* k = nullptr;  // k: [N, Hkv, D]
  int64_t k_token_stride = 0;
  const void* v = nullptr;  // v: [N, Hkv, D]
  int64_t v_token_stride = 0;
  void* out = nullptr;      // out: [N, H, D], same dtype as q
  int64_t out_token_stride = 0;
  float* lse = nullptr;     // lse: [H, N] natural-log LSE of the scaled scores, or null
  // block_attention: [pivots, nb, nb] row-major, fully overwritten (unvisited tiles 0); required
  // iff the mask has pivot heads; slot i belongs to the i-th pivot head in ascending order.
  float* block_attention = nullptr;
  void* stream = nullptr;  // cudaStream_t; null = the default stream
};

// The kernel cuda_attention_block_sparse will run: "hopper" (sm_90a: wgmma, TMA, warp-
// specialised) on a compute capability 9.0 device when the build has sm_90a code, else
// "portable" (sm_80+ mma.sync). SP_CUDA_KERNEL=portable|hopper|auto in the environment forces a
// path (read at every call); forcing hopper where it cannot run throws sp::error.
std::string cuda_attention_path();

// Causal attention over the visited tiles of `mask` (exact causal rule inside every tile); scores
// scaled by 1/sqrt(D), fp32 accumulation. Rows without tiles get out = 0 and lse = -inf.
// Asynchronous on params.stream; throws sp::error on invalid parameters or a launch failure.
void cuda_attention_block_sparse(const cuda_attention_params& params, const cuda_block_mask& mask);

}  // namespace sp
