// Shapes, A slices and vs coverage of the calibration captures (capture_layer.h).
#include "capture_layer.h"

#include "shareprefill/error.h"

namespace sp::capture {

void check_settings(const char* fn, const calibration_input* dst, int64_t layers,
                    int64_t block_size, double gamma) {
  check(dst != nullptr, fn, "destination is null");
  check(layers > 0, fn, "layers must be positive, got ", layers);
  check(block_size >= 16 && (block_size & (block_size - 1)) == 0, fn,
        "block size must be a power of two >= 16, got ", block_size);
  check(gamma > 0.0 && gamma <= 1.0, fn, "gamma must be in (0, 1], got ", gamma);
}

void begin_prompt(const char* fn, calibration_input& dst, int64_t layers, int64_t n_tokens) {
  const int64_t bs = dst.block_size;
  check(n_tokens >= bs, fn, "a calibration input needs at least one block (", bs,
        " tokens), got ", n_tokens);
  dst.n_tokens = n_tokens;
  dst.n_blocks = (n_tokens + bs - 1) / bs;
  dst.layers = layers;
  dst.heads = 0;
}

float* layer_attention(const char* fn, calibration_input& dst, int64_t layer, int64_t n,
                       int64_t heads) {
  const int64_t nb = dst.n_blocks;
  check(n == dst.n_tokens, fn, "layer ", layer, " has ", n, " tokens, the prompt has ",
        dst.n_tokens);
  check(layer >= 0 && layer < dst.layers, fn, "layer ", layer, " out of range [0, ", dst.layers,
        ")");
  if (dst.heads == 0) {
    dst.heads = heads;
    dst.block_attention.assign(static_cast<size_t>(dst.layers * heads * nb * nb), 0.0f);
    dst.vs_coverage.assign(static_cast<size_t>(dst.layers * heads), 0.0f);
  }
  check(dst.heads == heads, fn, "layer ", layer, " has ", heads, " heads, layer 0 had ",
        dst.heads);
  return dst.block_attention.data() + layer * heads * nb * nb;
}

std::vector<head_statistics> statistics(const tensor_view& q, const tensor_view& k,
                                        int64_t block_size, double gamma, int64_t min_budget,
                                        thread_pool& pool) {
  budget_rule rule;
  rule.block_size = block_size;
  rule.gamma = gamma;
  rule.min_blocks = (min_budget + block_size - 1) / block_size;
  return last_block_statistics(q, k, rule, pool);
}

void store_coverage(calibration_input& dst, int64_t layer,
                    const std::vector<head_statistics>& stats) {
  const int64_t nb = dst.n_blocks, heads = dst.heads;
  const float* a = dst.block_attention.data() + layer * heads * nb * nb;
  for (int64_t h = 0; h < heads; ++h) {
    const head_statistics& st = stats[static_cast<size_t>(h)];
    dst.vs_coverage[static_cast<size_t>(layer * heads + h)] = static_cast<float>(
        vs_coverage(a + h * nb * nb, st.v_blk.data(), st.s_blk.data(), nb, st.vertical_blocks,
                    st.slash_blocks));
  }
}

}  // namespace sp::capture
