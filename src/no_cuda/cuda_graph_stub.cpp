// Builds without CUDA (SP_CUDA=OFF): cuda_graph.h's types exist so callers compile everywhere;
// each throws "[fn] built without CUDA".
#include "shareprefill/cuda_graph.h"
#include "shareprefill/error.h"

namespace sp {

cuda_stream::cuda_stream() { fail("cuda_stream", "built without CUDA"); }
cuda_stream::~cuda_stream() = default;
cuda_stream::cuda_stream(cuda_stream&&) noexcept = default;
cuda_stream& cuda_stream::operator=(cuda_stream&&) noexcept = default;
void cuda_stream::synchronize() const { fail("cuda_stream::synchronize", "built without CUDA"); }

cuda_graph::~cuda_graph() = default;
cuda_graph::cuda_graph(cuda_graph&&) noexcept = default;
cuda_graph& cuda_graph::operator=(cuda_graph&&) noexcept = default;
cuda_graph cuda_graph::capture(void*, const std::function<void()>&) {
  fail("cuda_graph::capture", "built without CUDA");
}
void cuda_graph::launch(void*) const { fail("cuda_graph::launch", "built without CUDA"); }

}  // namespace sp
