// Builds without CUDA (SP_CUDA=OFF): the helpers of cuda_events.h exist so callers compile
// everywhere; each throws "[fn] built without CUDA".
#include "shareprefill/cuda_events.h"
#include "shareprefill/error.h"

namespace sp {

cuda_event::cuda_event() { fail("cuda_event", "built without CUDA"); }
cuda_event::~cuda_event() = default;
cuda_event::cuda_event(cuda_event&&) noexcept = default;
cuda_event& cuda_event::operator=(cuda_event&&) noexcept = default;
void cuda_event::record(void*) { fail("cuda_event::record", "built without CUDA"); }
double cuda_event::elapsed_ms_since(const cuda_event&) const {
  fail("cuda_event::elapsed_ms_since", "built without CUDA");
}

pinned_buffer::pinned_buffer(size_t) { fail("pinned_buffer", "built without CUDA"); }
pinned_buffer::~pinned_buffer() = default;
pinned_buffer::pinned_buffer(pinned_buffer&&) noexcept = default;
pinned_buffer& pinned_buffer::operator=(pinned_buffer&&) noexcept = default;

void cuda_copy_to_host_async(void*, const void*, size_t, void*) {
  fail("cuda_copy_to_host_async", "built without CUDA");
}
void cuda_copy_to_device_async(void*, const void*, size_t, void*) {
  fail("cuda_copy_to_device_async", "built without CUDA");
}

cuda_memory_info cuda_memory() { fail("cuda_memory", "built without CUDA"); }

}  // namespace sp
