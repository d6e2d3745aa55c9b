// cuda_stream and cuda_graph (stream capture, instantiation, replay) behind cuda_graph.h.
#include "shareprefill/cuda_graph.h"

#include <cuda_runtime.h>

#include <utility>

#include "cuda_check.h"

namespace sp {

using cuda::check_cuda;

cuda_stream::cuda_stream() {
  cudaStream_t s = nullptr;
  check_cuda(cudaStreamCreate(&s), "cuda_stream", "cudaStreamCreate");
  stream_ = s;
}

cuda_stream::~cuda_stream() {
  if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

cuda_stream::cuda_stream(cuda_stream&& other) noexcept
    : stream_(std::exchange(other.stream_, nullptr)) {}

cuda_stream& cuda_stream::operator=(cuda_stream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

void cuda_stream::synchronize() const {
  check(stream_ != nullptr, "cuda_stream::synchronize", "the stream was moved from");
  check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_)), "cuda_stream::synchronize",
             "cudaStreamSynchronize");
}

cuda_graph::~cuda_graph() {
  if (exec_ != nullptr) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
}

cuda_graph::cuda_graph(cuda_graph&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}

cuda_graph& cuda_graph::operator=(cuda_graph&& other) noexcept {
  if (this != &other) {
    if (exec_ != nullptr) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
    exec_ = std::exchange(other.exec_, nullptr);
  }
  return *this;
}

cuda_graph cuda_graph::capture(void* stream, const std::function<void()>& enqueue) {
  const char* fn = "cuda_graph::capture";
  const auto s = static_cast<cudaStream_t>(stream);
  check(s != nullptr, fn, "the legacy default stream cannot be captured (use a cuda_stream)");
  check_cuda(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), fn,
             "cudaStreamBeginCapture");
  cudaGraph_t graph = nullptr;
  try {
    enqueue();
  } catch (...) {
    cudaStreamEndCapture(s, &graph);
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();  // the capture's invalidation error, if any, is not the one to report
    throw;
  }
  check_cuda(cudaStreamEndCapture(s, &graph), fn, "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check_cuda(status, fn, "cudaGraphInstantiate");
  cuda_graph g;
  g.exec_ = exec;
  return g;
}

void cuda_graph::launch(void* stream) const {
  check(exec_ != nullptr, "cuda_graph::launch", "empty graph");
  check_cuda(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(stream)),
             "cuda_graph::launch", "cudaGraphLaunch");
}

}  // namespace sp
