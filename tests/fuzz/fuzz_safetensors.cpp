// libFuzzer entry point for the safetensors reader: parses the input from memory, then reads
// every byte of every tensor it accepted (find_non_finite, and an fp32 conversion of small ones),
// so a view that points outside the buffer is an AddressSanitizer report. sp::error is the
// expected outcome for bad input; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "shareprefill/error.h"
#include "shareprefill/safetensors.h"
#include "shareprefill/tensor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const sp::safetensors_file f =
        sp::safetensors_from_bytes(std::vector<uint8_t>(data, data + size), "<fuzz>");
    std::vector<float> buffer;
    for (const auto& [name, view] : f.tensors) {
      sp::find_non_finite(view);
      // Tensor data lies inside the input, so numel is bounded by its size; the cap only keeps
      // single runs fast.
      if (view.numel() > (int64_t{1} << 20)) continue;
      buffer.resize(static_cast<size_t>(view.numel()));
      sp::convert_to_fp32(buffer.data(), view);
    }
  } catch (const sp::error&) {
  }
  return 0;
}
