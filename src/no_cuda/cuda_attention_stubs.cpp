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

struct cuda_block_mask::impl {};

cuda_block_mask::cuda_block_mask(const block_mask&, const std::vector<int32_t>&) {
  fail("cuda_block_mask", "built without CUDA");
}
cuda_block_mask::~cuda_block_mask() = default;
cuda_block_mask::cuda_block_mask(cuda_block_mask&&) noexcept = default;
cuda_block_mask& cuda_block_mask::operator=(cuda_block_mask&&) noexcept = default;
int64_t cuda_block_mask::n_tokens() const { fail("cuda_block_mask::n_tokens", "built without CUDA"); }
int64_t cuda_block_mask::n_blocks() const { fail("cuda_block_mask::n_blocks", "built without CUDA"); }
int64_t cuda_block_mask::heads() const { fail("cuda_block_mask::heads", "built without CUDA"); }
int64_t cuda_block_mask::pivots() const { fail("cuda_block_mask::pivots", "built without CUDA"); }
const std::vector<int64_t>& cuda_block_mask::tiles_per_head() const {
  fail("cuda_block_mask::tiles_per_head", "built without CUDA");
}

std::string cuda_attention_path() { fail("cuda_attention_path", "built without CUDA"); }

void cuda_attention_block_sparse(const cuda_attention_params&, const cuda_block_mask&) {
  fail("cuda_attention_block_sparse", "built without CUDA");
}

}  // namespace sp
