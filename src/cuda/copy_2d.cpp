// cuda_copy_2d (cuda_copy.h): cudaMemcpy2DAsync with the direction inferred (cudaMemcpyDefault),
// or cudaMemcpyAsync when the rows form one contiguous range.
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
  // One row reads and writes width_bytes from each pointer: its pitches are never used.
  check(rows == 1 || (dst_pitch >= width_bytes && src_pitch >= width_bytes), fn, "pitches ",
        dst_pitch, "/", src_pitch, " smaller than the width ", width_bytes);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (rows == 1 || (dst_pitch == width_bytes && src_pitch == width_bytes)) {
    // One contiguous range: cudaMemcpyAsync, which has no pitch limit (cudaMemcpy2DAsync
    // rejects pitches above the device's cudaDevAttrMaxPitch, which a 1M-token row range exceeds).
    cuda::check_cuda(
        cudaMemcpyAsync(dst, src, static_cast<size_t>(width_bytes * rows), cudaMemcpyDefault, s),
        fn, "cudaMemcpyAsync");
    return;
  }
  cuda::check_cuda(
      cudaMemcpy2DAsync(dst, static_cast<size_t>(dst_pitch), src, static_cast<size_t>(src_pitch),
                        static_cast<size_t>(width_bytes), static_cast<size_t>(rows),
                        cudaMemcpyDefault, s),
      fn, "cudaMemcpy2DAsync");
}

}  // namespace sp
