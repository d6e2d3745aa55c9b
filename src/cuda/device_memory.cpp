// Device allocations, synchronisation and event timing behind the CUDA-free public header.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "cuda_check.h"
#include "shareprefill/cuda_attention.h"

namespace sp {

using cuda::check_cuda;

bool cuda_device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky "no device" status
    return false;
  }
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) return false;
  return major >= 8;
}

device_buffer::device_buffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) check_cuda(cudaMalloc(&data_, bytes), "device_buffer", str("cudaMalloc of ", bytes, " bytes").c_str());
}

device_buffer::~device_buffer() {
  if (data_ != nullptr) cudaFree(data_);
}

device_buffer::device_buffer(device_buffer&& other) noexcept
    : data_(other.data_), bytes_(other.bytes_) {
  other.data_ = nullptr;
  other.bytes_ = 0;
}

device_buffer& device_buffer::operator=(device_buffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = other.data_;
    bytes_ = other.bytes_;
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void device_buffer::upload(const void* src, size_t bytes, size_t offset) {
  check(offset <= bytes_ && bytes <= bytes_ - offset, "device_buffer::upload", "range ", offset,
        "+", bytes, " exceeds the buffer's ", bytes_, " bytes");
  if (bytes == 0) return;
  check_cuda(cudaMemcpy(static_cast<char*>(data_) + offset, src, bytes, cudaMemcpyHostToDevice),
             "device_buffer::upload", "cudaMemcpy");
}

void device_buffer::download(void* dst, size_t bytes, size_t offset) const {
  check(offset <= bytes_ && bytes <= bytes_ - offset, "device_buffer::download", "range ",
        offset, "+", bytes, " exceeds the buffer's ", bytes_, " bytes");
  if (bytes == 0) return;
  check_cuda(cudaMemcpy(dst, static_cast<const char*>(data_) + offset, bytes, cudaMemcpyDeviceToHost),
             "device_buffer::download", "cudaMemcpy");
}

void device_buffer::fill_bytes(uint8_t value) {
  if (bytes_ == 0) return;
  check_cuda(cudaMemset(data_, value, bytes_), "device_buffer::fill_bytes", "cudaMemset");
}

void cuda_synchronize() {
  check_cuda(cudaDeviceSynchronize(), "cuda_synchronize", "device work");
}

double cuda_time_ms(const std::function<void()>& launch, int warmup, int repeats) {
  const char* fn = "cuda_time_ms";
  check(repeats > 0 && warmup >= 0, fn, "repeats=", repeats, " warmup=", warmup);
  for (int i = 0; i < warmup; ++i) launch();
  cudaEvent_t start, stop;
  check_cuda(cudaEventCreate(&start), fn, "cudaEventCreate");
  check_cuda(cudaEventCreate(&stop), fn, "cudaEventCreate");
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    cudaEventRecord(start);
    launch();
    cudaEventRecord(stop);
    const cudaError_t status = cudaEventSynchronize(stop);
    float ms = 0.0f;
    if (status == cudaSuccess) cudaEventElapsedTime(&ms, start, stop);
    if (status != cudaSuccess) {
      cudaEventDestroy(start);
      cudaEventDestroy(stop);
      check_cuda(status, fn, "timed launch");
    }
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace sp
