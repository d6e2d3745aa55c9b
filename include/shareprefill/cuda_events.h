// Timing and reporting helpers for a CUDA pipeline that must not wait for the device per step:
// events recorded on a stream and read once at the end, pinned host memory that asynchronous
// device-to-host copies can land in, and the device's memory figures. No CUDA types appear here
// (streams are void*, a cudaStream_t; null = the default stream); builds without CUDA get stubs
// that throw "[fn] built without CUDA".
//
//   sp::cuda_event a, b;  a.record(stream);  ...launches...  b.record(stream);
//   ...more launches...   double ms = b.elapsed_ms_since(a);   // waits for b only
#pragma once

#include <cstddef>
#include <cstdint>

namespace sp {

// A timing event (cudaEvent_t), created at construction. Move-only.
class cuda_event {
 public:
  cuda_event();
  ~cuda_event();
  cuda_event(cuda_event&& other) noexcept;
  cuda_event& operator=(cuda_event&& other) noexcept;
  cuda_event(const cuda_event&) = delete;
  cuda_event& operator=(const cuda_event&) = delete;

  // Enqueues the event on `stream` (no host wait).
  void record(void* stream);
  // Milliseconds between `start` and this event, both recorded; waits for this event.
  double elapsed_ms_since(const cuda_event& start) const;

 private:
  void* event_ = nullptr;
};

// Page-locked host memory (cudaMallocHost): the destination of asynchronous downloads. Move-only.
class pinned_buffer {
 public:
  pinned_buffer() = default;
  explicit pinned_buffer(size_t bytes);
  ~pinned_buffer();
  pinned_buffer(pinned_buffer&& other) noexcept;
  pinned_buffer& operator=(pinned_buffer&& other) noexcept;
  pinned_buffer(const pinned_buffer&) = delete;
  pinned_buffer& operator=(const pinned_buffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Enqueues a copy of `bytes` from device memory `src` to pinned host memory `dst` on `stream`;
// the host may read dst once the stream has passed the copy (an event, or a synchronisation).
void cuda_copy_to_host_async(void* dst, const void* src, size_t bytes, void* stream);
// The other way: from host memory `src` (pinned, for the copy to be asynchronous) to device
// memory `dst`; src must stay unchanged until the stream has passed the copy.
void cuda_copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream);

// The current device's memory: total and free bytes (cudaMemGetInfo; every process's and the
// CUDA context's allocations count as used).
struct cuda_memory_info {
  size_t total = 0, free = 0;
  size_t used() const { return total - free; }
};
cuda_memory_info cuda_memory();

}  // namespace sp
