// The project's own GPU runner (cuda_llama.h) from Python, for comparisons: the logits a GGUF
// model gives a token sequence, prefilled densely on the device. Builds without CUDA raise.
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <vector>

#include "bindings.h"
#include "shareprefill/cuda_llama.h"

namespace sp_python {

void bind_model(nb::module_& m) {
  m.def(
      "cuda_llama_logits",
      [](const std::string& gguf_path, const std::vector<int32_t>& tokens,
         const std::vector<int64_t>& positions) {
        auto* logits = new std::vector<float>();
        size_t rows = 0;
        {
          nb::gil_scoped_release release;
          const sp::cuda_llama_weights weights = sp::cuda_llama_weights_load(gguf_path);
          sp::cuda_llama_session session(weights, static_cast<int64_t>(tokens.size()));
          sp::prefill_options options;
          options.logit_positions = positions;
          sp::prefill_result r = session.prefill(tokens, options);
          rows = r.positions.size();
          *logits = std::move(r.logits);
        }
        nb::capsule owner(logits,
                          [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
        const size_t vocab = rows ? logits->size() / rows : 0;
        return nb::ndarray<nb::numpy, float>(logits->data(), {rows, vocab}, owner);
      },
      nb::arg("gguf_path"), nb::arg("tokens"), nb::arg("positions"),
      "Next-token logits [len(positions), vocab] float32 of `tokens` prefilled densely by the "
      "project's CUDA Llama runner (bf16 weights dequantised from the GGUF on the device).");
}

}  // namespace sp_python
