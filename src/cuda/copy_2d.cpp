// cuda_copy_2d (cuda_copy.h): cudaMemcpy2DAsync with the direction inferred (cudaMemcpyDefault).
#include "cuda_check.h"
#include "shareprefill/cuda_copy.h"

namespace sp {

void cuda_copy_2d(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch,
                  int64_t width_bytes, int64_t rows, void* stream) {
  const char* fn = "cuda_copy_2d";
  check(width_bytes >= 0 && rows >= 0, fn, "width_bytes=", width_bytes, " rows=", rows,
        " (must be >= 0)");
  if (width_bytes == 0 || rows == 0) return;
  check(dst != nullptr && src != nullptr, fn, "null pointer");
  check(dst_pitch >= width_bytes && src_pitch >= width_bytes, fn, "pitches ", dst_pitch, "/",
        src_pitch, " smaller than the width ", width_bytes);
  cuda::check_cuda(cudaMemcpy2DAsync(dst, static_cast<size_t>(dst_pitch), src,
                                     static_cast<size_t>(src_pitch), static_cast<size_t>(width_bytes),
                                     static_cast<size_t>(rows), cudaMemcpyDefault,
                                     static_cast<cudaStream_t>(stream)),
                   fn, "cudaMemcpy2DAsync");
}

}  // namespace sp
