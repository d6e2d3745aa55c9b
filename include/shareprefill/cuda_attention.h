// CUDA block-sparse causal flash-attention forward (DESIGN.md section 5) and the small device
// toolkit its callers need (device buffers, timing, plan upload). No CUDA types appear here, so
// plain C++ code and builds without CUDA (SP_CUDA=OFF: every function but cuda_device_available
// throws "[fn] built without CUDA") include it alike.
//
// Usage: the kernel reads a layer plan (layer_plan_view.h) from device memory and writes its
// scratch; both live in workspaces the caller owns. For a block mask built on the host:
//   sp::device_layer_plan dplan(mask, /*pivot_heads=*/{3});   // host build + upload
//   sp::cuda_attention_params p;  p.q = dq.data(); ...;
//   sp::cuda_attention_block_sparse(p, dplan.plan(), dplan.scratch());
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/layer_plan_view.h"
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

// Copies a host plan (layer_plan_fill) into a device plan carved for at least its capacities
// (cudaMemcpyAsync on `stream`, a cudaStream_t; null = the default stream). The host arrays may
// be reused when this returns if they are pageable; pinned host memory must outlive the copy.
void layer_plan_upload(const layer_plan_view& device_plan, const layer_plan_view& host_plan,
                       void* stream = nullptr);

// Owning convenience for tests, benches and one-off callers: the plan of a host block mask
// (layer_plan_fill, exact capacities) uploaded into its own device workspace, and the kernel's
// scratch. Built once per layer; the views stay valid while the object lives (moves keep them).
class device_layer_plan {
 public:
  // pivot_heads: query heads that produce block attention A (ascending, unique, < heads).
  explicit device_layer_plan(const block_mask& mask, const std::vector<int32_t>& pivot_heads = {},
                             void* stream = nullptr);

  const layer_plan_view& plan() const { return plan_; }
  const attention_scratch_view& scratch() const { return scratch_; }

 private:
  std::vector<std::byte> host_;  // the host plan the upload copied
  device_buffer workspace_, scratch_buffer_;
  layer_plan_view plan_;
  attention_scratch_view scratch_;
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
  // block_attention: [max_pivots, nb, nb] row-major; required iff the plan has pivot slots
  // (max_pivots > 0). Slot pivot_slot[h] of each pivot head h is fully overwritten (unvisited
  // tiles 0); other slots are left as they are.
  float* block_attention = nullptr;
  void* stream = nullptr;  // cudaStream_t; null = the default stream
};

// The kernel cuda_attention_block_sparse will run: "hopper" (sm_90a: wgmma, TMA, warp-
// specialised) on a compute capability 9.0 device when the build has sm_90a code, else
// "portable" (sm_80+ mma.sync). SP_CUDA_KERNEL=portable|hopper|auto in the environment forces a
// path (read at every call); forcing hopper where it cannot run throws sp::error.
std::string cuda_attention_path();

// Causal attention over the visited tiles of the plan (exact causal rule inside every tile);
// scores scaled by 1/sqrt(D), fp32 accumulation. Rows without tiles get out = 0 and lse = -inf.
// plan and scratch: device views (block size 128); the scratch holds at least the plan's
// scratch_tiles. Asynchronous on params.stream; throws sp::error on invalid parameters or a
// launch failure. The plan's arrays are not checked (the host builder validated them; a device
// planner must produce the invariants of layer_plan_view.h).
void cuda_attention_block_sparse(const cuda_attention_params& params, const layer_plan_view& plan,
                                 const attention_scratch_view& scratch);

}  // namespace sp
