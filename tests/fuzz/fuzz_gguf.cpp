// libFuzzer entry point for the GGUF reader: parses the input from memory, then reads every
// metadata value through the typed getters, dequantises every (small enough) supported tensor
// and runs the Llama configuration check. sp::error is the expected outcome for bad input;
// anything else (a crash, a sanitizer report, another exception type, a huge allocation)
// is a finding.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "shareprefill/dequantize.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"
#include "shareprefill/llama_config.h"

namespace {

void read_metadata(const sp::gguf_file& f) {
  for (const sp::gguf_kv& kv : f.metadata()) {
    try {
      switch (kv.type) {
        case sp::gguf_type::string: f.get_string(kv.key); break;
        case sp::gguf_type::boolean: f.get_bool(kv.key); break;
        case sp::gguf_type::f32:
        case sp::gguf_type::f64: f.get_float(kv.key); break;
        case sp::gguf_type::array:
          if (kv.array_type == sp::gguf_type::string) {
            f.get_string_array(kv.key);
          } else if (kv.array_type == sp::gguf_type::f32 || kv.array_type == sp::gguf_type::f64) {
            f.get_float_array(kv.key);
          } else {
            f.get_int32_array(kv.key);
          }
          break;
        default: f.get_int(kv.key); break;
      }
    } catch (const sp::error&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const sp::gguf_file f = sp::gguf_file::from_memory(data, size);
    read_metadata(f);
    std::vector<float> buffer;
    for (const sp::gguf_tensor_info& t : f.tensors()) {
      // Tensor data lies inside the input, so n_elements is bounded by a small multiple of its
      // size; the cap only keeps single runs fast.
      if (!sp::dequantize_supported(t.type) || t.n_elements > (int64_t{1} << 22)) continue;
      buffer.resize(static_cast<size_t>(t.n_elements));
      sp::dequantize_tensor(buffer.data(), t.n_elements, t);
    }
    sp::read_llama_config(f);
  } catch (const sp::error&) {
  }
  return 0;
}
