// layer_plan_upload: copies a host-built layer plan into a device workspace on a stream, and
// device_layer_plan, the owning convenience that builds, uploads and holds one plan with its
// kernel scratch.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/error.h"

namespace sp {

namespace {

template <class T>
void copy_async(const char* fn, T* dst, const T* src, int64_t count, cudaStream_t stream,
                const char* what) {
  if (count == 0) return;
  cuda::check_cuda(cudaMemcpyAsync(dst, src, static_cast<size_t>(count) * sizeof(T),
                                   cudaMemcpyHostToDevice, stream),
                   fn, what);
}

}  // namespace

void layer_plan_upload(const layer_plan_view& device_plan, const layer_plan_view& host_plan,
                       void* stream) {
  const char* fn = "layer_plan_upload";
  check(device_plan.on_device && !host_plan.on_device, fn,
        "expected a device destination and a host source, got on_device=", device_plan.on_device,
        " and ", host_plan.on_device);
  check(device_plan.n_tokens == host_plan.n_tokens && device_plan.heads == host_plan.heads &&
            device_plan.block_size == host_plan.block_size &&
            device_plan.query_offset == host_plan.query_offset,
        fn, "device plan is n_tokens=", device_plan.n_tokens, " heads=", device_plan.heads,
        " block_size=", device_plan.block_size, " query_offset=", device_plan.query_offset,
        ", host plan n_tokens=", host_plan.n_tokens, " heads=", host_plan.heads,
        " block_size=", host_plan.block_size, " query_offset=", host_plan.query_offset);
  const int64_t tiles = layer_plan_used_tiles(host_plan);
  check(tiles <= device_plan.col_capacity, fn, "host plan uses ", tiles,
        " tiles, device col_capacity=", device_plan.col_capacity);
  check(host_plan.max_pivots <= device_plan.max_pivots &&
            host_plan.scratch_tiles <= device_plan.scratch_tiles,
        fn, "host plan has max_pivots=", host_plan.max_pivots,
        " scratch_tiles=", host_plan.scratch_tiles, ", the device plan ", device_plan.max_pivots,
        " and ", device_plan.scratch_tiles);
  const int64_t h = host_plan.heads, nb = host_plan.n_blocks;
  auto s = static_cast<cudaStream_t>(stream);
  copy_async(fn, device_plan.row_ptr, host_plan.row_ptr, h * (nb + 1), s, "row_ptr copy");
  copy_async(fn, device_plan.col_idx, host_plan.col_idx, tiles, s, "col_idx copy");
  copy_async(fn, device_plan.schedule, host_plan.schedule, 2 * layer_plan_work_items(host_plan), s,
             "schedule copy");
  copy_async(fn, device_plan.pivot_slot, host_plan.pivot_slot, h, s, "pivot_slot copy");
  copy_async(fn, device_plan.scratch_offset, host_plan.scratch_offset, h, s, "scratch_offset copy");
  copy_async(fn, device_plan.kinds, host_plan.kinds, h, s, "kinds copy");
}

device_layer_plan::device_layer_plan(const block_mask& mask,
                                     const std::vector<int32_t>& pivot_heads, void* stream,
                                     int64_t query_offset) {
  const layer_plan_capacity capacity = layer_plan_capacity_of(mask, pivot_heads, query_offset);
  const int64_t plan_bytes = plan_workspace_bytes(capacity);
  // Host staging with the workspace's 256-byte alignment (std::vector's is only 16).
  host_.resize(static_cast<size_t>(plan_bytes + 256));
  void* host_base = host_.data();
  size_t space = host_.size();
  std::align(256, static_cast<size_t>(plan_bytes), host_base, space);
  const layer_plan_view host_plan = layer_plan_carve(host_base, space, capacity, false);
  layer_plan_fill(host_plan, mask, pivot_heads);
  workspace_ = device_buffer(static_cast<size_t>(plan_bytes));
  plan_ = layer_plan_carve(workspace_.data(), workspace_.size(), capacity, true);
  layer_plan_upload(plan_, host_plan, stream);
  plan_.full_causal = pivot_heads.empty() && mask.is_dense_causal();
  scratch_buffer_ = device_buffer(static_cast<size_t>(attention_scratch_bytes(capacity)));
  scratch_ =
      attention_scratch_carve(scratch_buffer_.data(), scratch_buffer_.size(), capacity, true);
}

}  // namespace sp
