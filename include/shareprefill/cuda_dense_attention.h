// Dense causal attention of one layer on the GPU with every head's exact block attention A: our
// CUDA kernel on the dense causal plan with every head a pivot (block size 128, the kernel's).
// Shared by the GPU calibration capture (calibrate.h, cuda_capture: A) and the GPU attention
// probe (eval.h, cuda_attention_probe: the dense reference output and A). No CUDA types; builds
// without CUDA throw from run().
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "shareprefill/cuda_attention.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/tensor.h"

namespace sp {

// Throws sp::error (naming fn) unless q [N, H, D], k and v [N, Hkv, D] are rank-3 bf16 device
// views of the same N tokens (the whole prompt, not a chunk) with their heads contiguous within a
// token (token stride >= heads * D), as the CUDA forward's are; returns their shape.
layer_shape check_prompt_views(const char* fn, const tensor_view& q, const tensor_view& k,
                               const tensor_view& v);

class cuda_dense_attention {
 public:
  static constexpr int64_t block_size = 128;

  // Enqueues on the default stream the dense causal attention of q [N, H, D], k and v
  // [N, Hkv, D] (device bf16 views, checked by check_prompt_views) into out() and every head's
  // block attention into block_attention(). The plan and buffers are made on the first call and
  // again when N, H or D change.
  void run(const tensor_view& q, const tensor_view& k, const tensor_view& v);

  int64_t n_blocks() const { return (n_ + block_size - 1) / block_size; }
  // out: [N, H, D] bf16, contiguous device view; block_attention: [H, nb, nb] f32, contiguous
  // device view (rows sum to 1 over c <= r). Valid after run(), until the next run() of another
  // shape.
  const tensor_view& out() const { return out_; }
  const tensor_view& block_attention() const { return a_; }
  // Synchronous downloads of the last run: out as fp32 [N, H, D], A as [H, nb, nb].
  void download_out(std::vector<float>& host) const;
  void download_block_attention(float* host) const;

 private:
  int64_t n_ = 0, heads_ = 0, dim_ = 0;
  std::unique_ptr<device_layer_plan> plan_;  // dense causal, every head a pivot
  device_buffer out_buffer_, a_buffer_;
  tensor_view out_, a_;
  mutable std::vector<uint16_t> out_bits_;  // the download's bf16 staging
};

// Device bf16 [N, H, D] (contiguous) to host fp32: the same N * H * D values.
void download_bf16_as_fp32(std::vector<float>& host, const tensor_view& device,
                           std::vector<uint16_t>& staging);

}  // namespace sp
