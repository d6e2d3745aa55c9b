// CUDA events, pinned host memory and memory figures behind the CUDA-free cuda_events.h.
#include "shareprefill/cuda_events.h"

#include <cuda_runtime.h>

#include <utility>

#include "cuda_check.h"

namespace sp {

using cuda::check_cuda;

cuda_event::cuda_event() {
  cudaEvent_t e = nullptr;
  check_cuda(cudaEventCreate(&e), "cuda_event", "cudaEventCreate");
  event_ = e;
}

cuda_event::~cuda_event() {
  if (event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

cuda_event::cuda_event(cuda_event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}

cuda_event& cuda_event::operator=(cuda_event&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

void cuda_event::record(void* stream) {
  check(event_ != nullptr, "cuda_event::record", "the event was moved from");
  check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(stream)),
             "cuda_event::record", "cudaEventRecord");
}

double cuda_event::elapsed_ms_since(const cuda_event& start) const {
  const char* fn = "cuda_event::elapsed_ms_since";
  check(event_ != nullptr && start.event_ != nullptr, fn, "an event was moved from");
  check_cuda(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)), fn, "cudaEventSynchronize");
  float ms = 0.0f;
  check_cuda(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.event_),
                                  static_cast<cudaEvent_t>(event_)),
             fn, "cudaEventElapsedTime (were both events recorded?)");
  return ms;
}

pinned_buffer::pinned_buffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0)
    check_cuda(cudaMallocHost(&data_, bytes), "pinned_buffer",
               str("cudaMallocHost of ", bytes, " bytes").c_str());
}

pinned_buffer::~pinned_buffer() {
  if (data_ != nullptr) cudaFreeHost(data_);
}

pinned_buffer::pinned_buffer(pinned_buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

pinned_buffer& pinned_buffer::operator=(pinned_buffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void cuda_copy_to_host_async(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(dst != nullptr && src != nullptr, "cuda_copy_to_host_async", "null pointer");
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost,
                             static_cast<cudaStream_t>(stream)),
             "cuda_copy_to_host_async", "cudaMemcpyAsync");
}

void cuda_copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(dst != nullptr && src != nullptr, "cuda_copy_to_device_async", "null pointer");
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice,
                             static_cast<cudaStream_t>(stream)),
             "cuda_copy_to_device_async", "cudaMemcpyAsync");
}

cuda_memory_info cuda_memory() {
  cuda_memory_info m;
  check_cuda(cudaMemGetInfo(&m.free, &m.total), "cuda_memory", "cudaMemGetInfo");
  return m;
}

}  // namespace sp
