// Builds without CUDA (SP_CUDA=OFF): the CUDA API of cuda_attention.h exists so the CLI and the
// tests compile everywhere; cuda_device_available() says false and everything else throws.
#include "shareprefill/cuda_attention.h"
#include "shareprefill/error.h"

namespace sp {

bool cuda_device_available() { return false; }

device_buffer::device_buffer(size_t bytes) { fail("device_buffer", "built without CUDA"); }
device_buffer::~device_buffer() = default;
device_buffer::device_buffer(device_buffer&& other) noexcept
    : data_(other.data_), bytes_(other.bytes_) {}
device_buffer& device_buffer::operator=(device_buffer&& other) noexcept {
  data_ = other.data_;
  bytes_ = other.bytes_;
  return *this;
}
void device_buffer::upload(const void*, size_t, size_t) {
  fail("device_buffer::upload", "built without CUDA");
}
void device_buffer::download(void*, size_t, size_t) const {
  fail("device_buffer::download", "built without CUDA");
}
void device_buffer::fill_bytes(uint8_t) { fail("device_buffer::fill_bytes", "built without CUDA"); }

void cuda_synchronize() { fail("cuda_synchronize", "built without CUDA"); }

double cuda_time_ms(const std::function<void()>&, int, int) {
  fail("cuda_time_ms", "built without CUDA");
}

void layer_plan_upload(const layer_plan_view&, const layer_plan_view&, void*) {
  fail("layer_plan_upload", "built without CUDA");
}

device_layer_plan::device_layer_plan(const block_mask&, const std::vector<int32_t>&, void*,
                                     int64_t) {
  fail("device_layer_plan", "built without CUDA");
}

cuda_kernel cuda_attention_kernel(const cuda_attention_options&) {
  fail("cuda_attention_kernel", "built without CUDA");
}

bool cuda_attention_walks_causal(const cuda_attention_options&, int64_t) {
  fail("cuda_attention_walks_causal", "built without CUDA");
}

void cuda_attention_block_sparse(const tensor_view&, const tensor_view&, const tensor_view&,
                                 const tensor_view&, const tensor_view&, const tensor_view&,
                                 const layer_plan_view&, const attention_scratch_view&,
                                 const cuda_attention_options&, void*) {
  fail("cuda_attention_block_sparse", "built without CUDA");
}

device_varlen_plan::device_varlen_plan(const std::vector<int32_t>&, const std::vector<block_mask>&,
                                       void*, int64_t) {
  fail("device_varlen_plan", "built without CUDA");
}
const varlen_sequence* device_varlen_plan::sequence_info() const { return nullptr; }
const int64_t* device_varlen_plan::row_ptr() const { return nullptr; }
const int32_t* device_varlen_plan::col_idx() const { return nullptr; }
const int32_t* device_varlen_plan::schedule() const { return nullptr; }
const int32_t* device_varlen_plan::item_sequence() const { return nullptr; }
unsigned long long* device_varlen_plan::item_counter() const { return nullptr; }

void cuda_attention_varlen(const tensor_view&, const tensor_view&, const tensor_view&,
                           const tensor_view&, const tensor_view&, const device_varlen_plan&,
                           const cuda_attention_options&, void*) {
  fail("cuda_attention_varlen", "built without CUDA");
}

}  // namespace sp
