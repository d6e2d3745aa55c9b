// `shareprefill bench layer --chunk C` (issue 16 item 2, its 128K target): every mode run as a
// one-shot prefill and as a chunked prefill of the same prompt (chunks [s, s + C), the last one
// ragged; per chunk a fresh sharing state, prefill_layer with query_offset = s on the chunk's
// queries and the keys [0, s + C); the chunks' layer outputs written into one [N, H, D] output
// per layer). Dense one-shot is the reference. One JSON row per mode ("bench": "layer_chunk"):
// total_ms of both (wall clock of a whole prompt, all layers, one device synchronisation per
// chunk; median over --repeats prompts after one untimed prompt), their ratio, rel_err vs dense
// of both (all layers and rows), their ratio, and the density of both (visited / causal tiles of
// the rows each run computes). With carried = true (--chunk-state carried) the chunked run
// carries one sharing state through the prompt instead (prefill_layer_begin_chunk: pivots kept
// from chunk to chunk, their patterns extended to the next chunk's rows), on the CPU and the
// GPU alike; the rows say which ("chunk_state": "fresh" or "carried").
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "json_output.h"
#include "shareprefill/cluster_map.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/tensor.h"
#include "shareprefill/thread_pool.h"

namespace sp::cli {

// One layer of the prompt on the run's device: q, out [N, H, D]; k, v [N, Hkv, D]. out is
// overwritten (CPU: f32; CUDA: bf16, in device_out, which is read back from).
struct chunk_layer_views {
  tensor_view q, k, v, out;
  const device_buffer* device_out = nullptr;
};

struct chunk_bench_input {
  int64_t n = 0, heads = 0, kv_heads = 0, dim = 0;
  int64_t chunk = 0;  // tokens per chunk, a multiple of 128
  bool carried = false;  // one sharing state through the chunks (else a fresh one per chunk)
  bool on_device = false;
  int repeats = 1;
  thread_pool* pool = nullptr;       // CPU
  const cluster_map* map = nullptr;  // shareprefill mode (null: not available)
  std::vector<chunk_layer_views> layers;
  std::string device, kernel, inputs;  // as named in the JSON rows
};

void run_chunk_bench(const chunk_bench_input& in, const std::vector<std::string>& modes,
                     json_lines& json, FILE* text);

}  // namespace sp::cli
