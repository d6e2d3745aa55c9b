// Strided byte copies between any two memories the CUDA runtime knows (device-device for the
// context-parallel simulation's row scatter, device-host for reading a plan's small arrays).
// No CUDA types; builds without CUDA get a stub that throws "[cuda_copy_2d] built without CUDA".
#pragma once

#include <cstdint>

namespace sp {

// rows copies of width_bytes: row i from src + i * src_pitch to dst + i * dst_pitch
// (cudaMemcpy2DAsync, direction inferred from the pointers). Asynchronous on `stream` (a
// cudaStream_t; null = the default stream); a pageable host destination is written before it
// returns. Throws sp::error on a pitch smaller than the width, negative sizes or a CUDA error.
void cuda_copy_2d(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch,
                  int64_t width_bytes, int64_t rows, void* stream = nullptr);

}  // namespace sp
