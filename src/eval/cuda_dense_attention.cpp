// Dense causal attention with every head's block attention on the GPU (cuda_dense_attention.h).
#include "shareprefill/cuda_dense_attention.h"

#include "shareprefill/block_mask.h"
#include "shareprefill/cuda_copy.h"
#include "shareprefill/error.h"

namespace sp {

namespace {

void check_device_rows(const char* fn, const char* name, const tensor_view& t) {
  check(t.on_device && t.type == dtype::bf16 && t.rank == 3, fn, name,
        " must be a rank-3 bf16 device view ([N, heads, D])");
  check(t.stride[2] == 1 && t.stride[1] == t.shape[2] && t.stride[0] >= t.shape[1] * t.shape[2],
        fn, name, " must have its heads contiguous within a token (strides ", t.stride[0], ", ",
        t.stride[1], ", ", t.stride[2], ")");
}

}  // namespace

layer_shape check_prompt_views(const char* fn, const tensor_view& q, const tensor_view& k,
                               const tensor_view& v) {
  check_device_rows(fn, "q", q);
  check_device_rows(fn, "k", k);
  check_device_rows(fn, "v", v);
  const int64_t n = q.shape[0];
  check(k.shape[0] == n && v.shape[0] == n, fn, "q has ", n, " tokens, k ", k.shape[0], ", v ",
        v.shape[0], " (the whole prompt, not a chunk)");
  return {n, q.shape[1], k.shape[1], q.shape[2]};
}

void cuda_dense_attention::run(const tensor_view& q, const tensor_view& k, const tensor_view& v) {
  const layer_shape shape = check_prompt_views("cuda_dense_attention", q, k, v);
  const int64_t n = shape.n_tokens, heads = shape.heads, dim = shape.dim;
  if (n != n_ || heads != heads_ || dim != dim_) {
    std::vector<int32_t> pivots(static_cast<size_t>(heads));
    for (int32_t h = 0; h < heads; ++h) pivots[static_cast<size_t>(h)] = h;
    plan_ = std::make_unique<device_layer_plan>(block_mask::dense_causal(n, block_size, heads),
                                                pivots);
    n_ = n, heads_ = heads, dim_ = dim;
    const int64_t nb = n_blocks();
    out_buffer_ = device_buffer(static_cast<size_t>(n * heads * dim) * 2);
    a_buffer_ = device_buffer(static_cast<size_t>(heads * nb * nb) * sizeof(float));
    out_ = tensor_view::contiguous(out_buffer_.data(), dtype::bf16, {n, heads, dim});
    a_ = tensor_view::contiguous(a_buffer_.data(), dtype::f32, {heads, nb, nb});
    out_.on_device = a_.on_device = true;
  }
  cuda_attention_block_sparse(out_, {}, a_, q, k, v, plan_->plan(), plan_->scratch());
}

void cuda_dense_attention::download_out(std::vector<float>& host) const {
  download_bf16_as_fp32(host, out_, out_bits_);
}

void cuda_dense_attention::download_block_attention(float* host) const {
  a_buffer_.download(host, a_buffer_.size());  // synchronises with the default stream
}

void download_bf16_as_fp32(std::vector<float>& host, const tensor_view& device,
                           std::vector<uint16_t>& staging) {
  check(device.on_device && device.type == dtype::bf16 && device.is_contiguous(),
        "download_bf16_as_fp32", "needs a contiguous bf16 device view");
  const size_t count = static_cast<size_t>(device.numel());
  staging.resize(count);
  const int64_t bytes = static_cast<int64_t>(count) * 2;
  cuda_copy_2d(staging.data(), bytes, device.data, bytes, bytes, 1);  // pageable: waits
  host.resize(count);
  for (size_t i = 0; i < count; ++i) host[i] = bf16_to_fp32(staging[i]);
}

}  // namespace sp
