// CUDA block-sparse causal flash-attention forward (DESIGN.md section 5) and the small device
// toolkit its callers need (device buffers, timing, plan upload). No CUDA types appear here, so
// plain C++ code and builds without CUDA (SP_CUDA=OFF: every function but cuda_device_available
// throws "[fn] built without CUDA") include it alike.
//
// Usage: tensors are tensor_views of device memory (on_device = true), in the layout of the CPU
// call (attention.h); the kernel reads a layer plan (layer_plan_view.h) and writes its scratch,
// both in workspaces the caller owns. For a block mask built on the host:
//   sp::device_layer_plan dplan(mask, /*pivot_heads=*/{3});   // host build + upload
//   sp::cuda_attention_block_sparse(out, lse, a, q, k, v, dplan.plan(), dplan.scratch());
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "shareprefill/block_mask.h"
#include "shareprefill/layer_plan_view.h"
#include "shareprefill/tensor.h"
#include "shareprefill/varlen_plan.h"

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
  // query_offset: a chunk's plan (layer_plan_view::query_offset; 0 = the whole prompt).
  explicit device_layer_plan(const block_mask& mask, const std::vector<int32_t>& pivot_heads = {},
                             void* stream = nullptr, int64_t query_offset = 0);

  const layer_plan_view& plan() const { return plan_; }
  const attention_scratch_view& scratch() const { return scratch_; }

 private:
  std::vector<std::byte> host_;  // the host plan the upload copied
  device_buffer workspace_, scratch_buffer_;
  layer_plan_view plan_;
  attention_scratch_view scratch_;
};

// Which kernel runs. automatic: hopper (sm_90a: wgmma, TMA, warp-specialised producer and two
// consumer warpgroups) on a compute capability 9.0 device when the build has sm_90a code, else
// portable (sm_80+ mma.sync, one CTA per work item).
enum class cuda_kernel : uint8_t { automatic, portable, hopper };
inline const char* cuda_kernel_name(cuda_kernel k) {
  return k == cuda_kernel::portable ? "portable" : k == cuda_kernel::hopper ? "hopper" : "auto";
}

// Launch choices of the CUDA attention; the defaults are chosen by device and shape.
struct cuda_attention_options {
  cuda_kernel kernel = cuda_kernel::automatic;
  // Hopper kernel: CTAs of its grid, each claiming work items from a counter in the scratch
  // (items in flight stay a contiguous window of the longest-first schedule). 0: one CTA per SM.
  // Capped at the work items (H * nb); a smaller count makes every CTA run many items (tests).
  int64_t ctas = 0;
  // Hopper kernel at D = 64: a plan that is the full causal mask (layer_plan_view::full_causal)
  // runs in items of 192 query rows with three consumer warpgroups, each K/V tile serving all
  // 192, and so do a sparse plan's walked dense heads (layer_plan_view::walk_heads, a second
  // launch after the plan's other items). false: the plan's items of 128 rows, two consumers.
  bool causal_kernel = true;
};

// The kernel `options` select on the current device: portable or hopper (never automatic).
// Throws sp::error when hopper is forced where it cannot run.
cuda_kernel cuda_attention_kernel(const cuda_attention_options& options = {});

// True when a full causal plan (layer_plan_view::full_causal) and a plan's walked heads at head
// dim `dim` run on the Hopper kernel's causal walk with these options on the current device (see
// causal_kernel).
bool cuda_attention_walks_causal(const cuda_attention_options& options, int64_t dim);

// Causal attention over the visited tiles of the plan (exact causal rule inside every tile);
// scores scaled by 1/sqrt(D), fp32 accumulation. Rows without tiles get out = 0 and lse = -inf.
// Every view is a device view (on_device); heads are contiguous within a token and the
// dimension stride is 1; token strides are multiples of 8 elements, bases 16-byte aligned (so K
// and V may be strided views of one fused [N, 2 * Hkv * D] buffer).
//   out: [Nq, H, D] bf16 or f16, the dtype of q, k and v
//   lse: [H, Nq] f32 contiguous, natural-log LSE of the scaled scores; or empty
//   block_attention: [max_pivots, nb, nb] f32 contiguous; required iff plan.max_pivots > 0.
//     Slot pivot_slot[h] of each pivot head h is fully overwritten (unvisited tiles 0); other
//     slots are left as they are.
//   q: [Nq, H, D]; k, v: [N, Hkv, D] (H % Hkv == 0; query head h reads KV head h / (H / Hkv));
//     D = 64 or 128; N = plan.n_tokens, Nq = N - plan.query_offset. Chunked prefill: a plan
//     with query_offset = s (a multiple of 128) takes q = the tokens [s, N) of the prompt and
//     k/v = all N tokens; the causal rule compares absolute positions, so its rows equal rows
//     s.. of the one-shot call on the same tiles. Pivot A rows: the chunk's query blocks only.
// plan and scratch: device views, block size 128; the scratch holds the plan's scratch_tiles.
// The plan's arrays are not checked (the host builder validated them; a device planner must
// produce the invariants of layer_plan_view.h). Asynchronous on `stream` (a cudaStream_t; null =
// the default stream); throws sp::error on invalid arguments or a launch failure.
void cuda_attention_block_sparse(const tensor_view& out, const tensor_view& lse,
                                 const tensor_view& block_attention, const tensor_view& q,
                                 const tensor_view& k, const tensor_view& v,
                                 const layer_plan_view& plan, const attention_scratch_view& scratch,
                                 const cuda_attention_options& options = {},
                                 void* stream = nullptr);

// A varlen batch's plan on the device (varlen_plan.h): built on the host from cu_seqlens and one
// mask per sequence (block size 128; no pivot heads), uploaded with its kernel scratch (the work
// counter); tie_band orders the schedule (varlen_plan_build). The arrays stay valid while the
// object lives.
class device_varlen_plan {
 public:
  device_varlen_plan(const std::vector<int32_t>& cu_seqlens, const std::vector<block_mask>& masks,
                     void* stream = nullptr, int64_t tie_band = 1);

  int64_t sequences() const { return sequences_; }
  int64_t total_tokens() const { return total_tokens_; }
  int64_t heads() const { return heads_; }
  int64_t work_items() const { return work_items_; }
  // Device arrays: sequences [B], row_ptr, col_idx, schedule [work_items, 2], item_sequence
  // [work_items], the work counter [1].
  const varlen_sequence* sequence_info() const;
  const int64_t* row_ptr() const;
  const int32_t* col_idx() const;
  const int32_t* schedule() const;
  const int32_t* item_sequence() const;
  unsigned long long* item_counter() const;

 private:
  int64_t sequences_ = 0, total_tokens_ = 0, heads_ = 0, work_items_ = 0;
  int64_t offsets_[6] = {};      // byte offsets of the arrays above in buffer_
  std::vector<std::byte> host_;  // the staging copy the upload reads
  device_buffer buffer_;
};

// A varlen batch in one launch: q/out [total, H, D], k/v [total, Hkv, D] packed by the plan's
// cu_seqlens (views as for cuda_attention_block_sparse), lse [H, total] f32 or empty. The work
// items of all sequences run longest row first from one schedule; sequence b's rows equal those
// of cuda_attention_block_sparse on its own rows and mask (the same per-item code).
void cuda_attention_varlen(const tensor_view& out, const tensor_view& lse, const tensor_view& q,
                           const tensor_view& k, const tensor_view& v,
                           const device_varlen_plan& plan,
                           const cuda_attention_options& options = {}, void* stream = nullptr);

}  // namespace sp
