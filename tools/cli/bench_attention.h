// Shared pieces of `shareprefill bench attention`: the options and the random block-causal mask
// the CPU and CUDA benchmarks both time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "json_output.h"
#include "shareprefill/block_mask.h"

namespace sp::cli {

struct attention_bench_options {
  int64_t n = 16384;
  int64_t heads = 8;
  int64_t kv_heads = 2;
  int64_t dim = 128;
  std::vector<double> densities{0.1};
  int threads = 0;      // CPU worker threads; 0 = all cores
  json_option json;     // --json [FILE]: one object per density
  uint64_t seed = 1;
  int repeats = 3;      // timed repetitions; the minimum is reported
  int64_t sample_rows = 64;  // query rows checked against the fp64 reference
  // Serving shapes (bench_attention_serving.cpp), at most one per run:
  std::vector<int64_t> seqlens;  // --seqlens: a varlen batch vs one call per sequence
  int64_t tie_band = 1;          // --tie-band: the batch schedule's band (varlen_plan_build)
  int64_t chunk = 0;             // --chunk C: chunked prefill vs one call
  bool split = false;            // --split: key halves merged by LSE vs one call
  // --device cuda: the kernel (cuda_attention_options)
  std::string kernel = "auto";  // --kernel auto | portable | hopper
  int64_t ctas = 0;             // --ctas: the hopper kernel's grid; 0 = one CTA per SM
};

// Random block-causal mask with about `density` of the causal tiles per head; the diagonal tile
// and key block 0 of every row are always kept (they carry the local window and the sink).
block_mask random_block_mask(int64_t n, int64_t block_size, int64_t heads, double density,
                             uint64_t seed);

// Random N(0,1) values of [n, heads, dim], each stored as convert(value) (bf16 bits, or fp32
// rounded to bf16): a [min(n, 2048), heads, dim] pattern from `seed`, repeated over the tokens.
template <class T, class Convert>
std::vector<T> tiled_random_values(int64_t n, int64_t heads, int64_t dim, uint64_t seed,
                                   Convert convert) {
  const int64_t period = std::min<int64_t>(n, 2048), row = heads * dim;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<T> values(static_cast<size_t>(n * row));
  for (int64_t i = 0; i < period * row; ++i) values[static_cast<size_t>(i)] = convert(normal(rng));
  for (int64_t t = period; t < n; t += period)
    std::memcpy(&values[static_cast<size_t>(t * row)], values.data(),
                static_cast<size_t>(std::min(period, n - t) * row) * sizeof(T));
  return values;
}

// The fields every density row of `bench attention` has, on either device: the shape, the
// asked and measured density, both times, the speedup and the error against the reference.
nlohmann::json attention_row(const char* device, const attention_bench_options& o,
                             double density, const block_mask& mask, double dense_ms,
                             double sparse_ms, double rel_err);

void run_attention_bench_cuda(const attention_bench_options& options);
// --seqlens / --chunk / --split on the CPU (cuda false) or the GPU.
void run_attention_serving_bench(const attention_bench_options& options, bool cuda);

}  // namespace sp::cli
