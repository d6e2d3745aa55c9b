// A CUDA stream and captured CUDA graphs behind CUDA-free types, for work replayed many times with
// one launch each (the decode step of cuda_llama_session: ~330 kernels per token). Streams are
// void* (a cudaStream_t); builds without CUDA get stubs that throw "[fn] built without CUDA".
//
//   sp::cuda_stream s;
//   sp::cuda_graph g = sp::cuda_graph::capture(s.get(), [&] { ...launches on s.get()... });
//   g.launch(s.get());  s.synchronize();
#pragma once

#include <functional>

namespace sp {

// A stream created with cudaStreamCreate: it orders with the legacy default stream (work on the
// default stream waits for it and it waits for the default stream), so it can be mixed with code
// that launches on the default stream; unlike that stream it can be captured. Move-only.
class cuda_stream {
 public:
  cuda_stream();
  ~cuda_stream();
  cuda_stream(cuda_stream&& other) noexcept;
  cuda_stream& operator=(cuda_stream&& other) noexcept;
  cuda_stream(const cuda_stream&) = delete;
  cuda_stream& operator=(const cuda_stream&) = delete;

  void* get() const { return stream_; }
  // Waits for the stream's work; throws sp::error if any of it failed.
  void synchronize() const;

 private:
  void* stream_ = nullptr;
};

// An instantiated graph (cudaGraphExec_t). Move-only; default-constructed = empty.
class cuda_graph {
 public:
  cuda_graph() = default;
  ~cuda_graph();
  cuda_graph(cuda_graph&& other) noexcept;
  cuda_graph& operator=(cuda_graph&& other) noexcept;
  cuda_graph(const cuda_graph&) = delete;
  cuda_graph& operator=(const cuda_graph&) = delete;

  // Captures what `enqueue` launches on `stream` (thread-local capture mode: other threads may
  // keep using the GPU) and instantiates it. The launches are recorded, not run. enqueue must
  // not synchronise or copy to pageable host memory; an exception from it ends the capture and
  // propagates.
  static cuda_graph capture(void* stream, const std::function<void()>& enqueue);
  // Enqueues one replay on `stream` (asynchronous).
  void launch(void* stream) const;
  bool empty() const { return exec_ == nullptr; }

 private:
  void* exec_ = nullptr;
};

}  // namespace sp
