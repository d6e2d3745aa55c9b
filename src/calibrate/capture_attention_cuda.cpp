// The calibration capture on the GPU (calibrate.h, cuda_capture): per layer, from the CUDA
// forward's q, k, v, every head's block attention A by our kernel (cuda_dense_attention.h: a
// dense causal plan, every head a pivot; the output is scratch, the forward computes its own) and
// each head's vs coverage from last-block statistics on the CPU (capture_layer.h, shared with
// the CPU capture). Order per layer: q's last rows and k to the host (waits for the forward's
// RoPE and cache append), the kernel launched, the statistics on the CPU while it runs, then A
// downloaded.
#include <algorithm>

#include "capture_layer.h"
#include "shareprefill/calibrate.h"
#include "shareprefill/cuda_dense_attention.h"
#include "shareprefill/cuda_copy.h"
#include "shareprefill/error.h"

namespace sp {

namespace {

constexpr int64_t block_size = cuda_dense_attention::block_size;

// Rows [first, first + rows) of a device view into the same rows of a contiguous host buffer.
void download_rows(uint16_t* host, const tensor_view& t, int64_t first, int64_t rows) {
  const int64_t width = t.shape[1] * t.shape[2];  // elements of a token
  cuda_copy_2d(host + first * width, width * 2, t.as<const uint16_t>() + first * t.stride[0],
               t.stride[0] * 2, width * 2, rows);
}

}  // namespace

struct cuda_capture::state {
  state(calibration_input* d, int64_t l, thread_pool& p, double g, int64_t m)
      : dst(d), layers(l), pool(p), gamma(g), min_budget(m) {}
  calibration_input* dst;
  int64_t layers;
  thread_pool& pool;
  double gamma;
  int64_t min_budget;
  bool begun = false;              // layer 0 of a prompt came
  cuda_dense_attention dense;      // A of every head (its output is discarded)
  std::vector<uint16_t> q_host;    // [N, H, D] bf16, only the last block's rows set
  std::vector<uint16_t> k_host;    // [N, Hkv, D] bf16
};

cuda_capture::cuda_capture(calibration_input* dst, int64_t layers, thread_pool& pool, double gamma,
                           int64_t min_budget)
    : s_(std::make_unique<state>(dst, layers, pool, gamma, min_budget)) {
  capture::check_settings("cuda_capture", dst, layers, block_size, gamma);
  dst->block_size = block_size;
}

cuda_capture::~cuda_capture() = default;

void cuda_capture::capture_layer(int64_t l, const tensor_view& q, const tensor_view& k,
                                 const tensor_view& v) {
  const char* fn = "cuda_capture";
  state& s = *s_;
  const layer_shape shape = check_prompt_views(fn, q, k, v);
  const int64_t n = shape.n_tokens, heads = shape.heads, kv_heads = shape.kv_heads,
                dim = shape.dim;
  if (l == 0) {
    capture::begin_prompt(fn, *s.dst, s.layers, n);
    s.begun = true;
  }
  check(s.begun, fn, "layer ", l, " came before layer 0 of a prompt");
  float* a_host = capture::layer_attention(fn, *s.dst, l, n, heads);

  // The statistics read q's last min(block_size, N) rows (estimation_blocks = 1) and all of k.
  const int64_t rows = std::min(block_size, n);
  s.q_host.resize(static_cast<size_t>(n * heads * dim));
  s.k_host.resize(static_cast<size_t>(n * kv_heads * dim));
  download_rows(s.q_host.data(), q, n - rows, rows);
  download_rows(s.k_host.data(), k, 0, n);

  s.dense.run(q, k, v);

  const std::vector<head_statistics> stats = capture::statistics(
      tensor_view::contiguous(s.q_host.data(), dtype::bf16, {n, heads, dim}),
      tensor_view::contiguous(s.k_host.data(), dtype::bf16, {n, kv_heads, dim}), block_size,
      s.gamma, s.min_budget, s.pool);
  s.dense.download_block_attention(a_host);  // synchronises
  capture::store_coverage(*s.dst, l, stats);
}

prefill_options::attention_inputs_hook cuda_capture::hook() {
  return [this](int64_t l, const tensor_view& q, const tensor_view& k, const tensor_view& v) {
    capture_layer(l, q, k, v);
  };
}

}  // namespace sp
