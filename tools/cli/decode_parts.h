// Parts of one decode step of a model shape, timed apart for `bench prefill --decode`: each is
// replayed in a CUDA graph of its own over fresh buffers (bytes 0x3c: the time depends on the
// shapes only).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "shareprefill/llama_config.h"

namespace sp::cli {

struct decode_parts {
  double attention_ms = 0.0;  // the split-K decode attention over a cache of len tokens, all layers
  // (chunk, ms) of the same with the automatic chunk (first) and with fixed chunk sizes
  std::vector<std::pair<int64_t, double>> attention_by_chunk;
  double gemm_ms = 0.0;       // the m = 1 GEMMs: four per layer and the output head (heuristic)
  double gemm_tuned_ms = 0.0; // the same with the algorithms cuda_gemm::tune chose
};

decode_parts decode_parts_ms(const llama_config& c, int64_t len);

}  // namespace sp::cli
