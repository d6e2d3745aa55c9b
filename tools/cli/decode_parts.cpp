// decode_parts.h: parts of a decode step timed apart, each replayed in a CUDA graph.
#include "decode_parts.h"

#include <algorithm>
#include <functional>
#include <tuple>
#include <vector>

#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_events.h"
#include "shareprefill/cuda_graph.h"
#include "shareprefill/cuda_model_ops.h"

namespace sp::cli {

namespace {

// Median ms of 20 replays (after 3) of the graph of what `enqueue` launches on a stream.
double graph_ms(const std::function<void(void*)>& enqueue) {
  cuda_stream stream;
  const cuda_graph g = cuda_graph::capture(stream.get(), [&] { enqueue(stream.get()); });
  stream.synchronize();
  return cuda_time_ms([&] { g.launch(nullptr); }, 3, 20);
}

}  // namespace

decode_parts decode_parts_ms(const llama_config& c, int64_t len) {
  decode_parts r;
  const int64_t row = c.n_kv_heads * c.head_dim, L = c.n_layers;
  {
    // Chunk sizes compared: the automatic one first, then fixed ones (smaller than it need more
    // workspace, which ws is sized for).
    const int64_t automatic = cuda_decode_chunk(len, c.n_kv_heads);
    std::vector<int64_t> chunks = {automatic};
    for (const int64_t ch : {64, 128, 256, 512, 1024, 2048, 4096})
      if (ch != automatic && ch < 2 * len) chunks.push_back(ch);
    device_buffer k(static_cast<size_t>(L * len * row) * 2), v(k.size());
    device_buffer q(static_cast<size_t>(c.n_heads * c.head_dim) * 2), out(q.size());
    device_buffer ws(cuda_decode_workspace_bytes(len, c.n_heads, c.n_kv_heads, c.head_dim, 64));
    for (device_buffer* b : {&k, &v, &q}) b->fill_bytes(0x3c);
    ws.fill_bytes(0);  // the counters start at zero
    for (const int64_t chunk : chunks) {
      const double ms = graph_ms([&](void* stream) {
        for (int64_t l = 0; l < L; ++l) {
          cuda_decode_params p;
          p.chunk = chunk;
          p.len = len;
          p.heads = c.n_heads;
          p.kv_heads = c.n_kv_heads;
          p.head_dim = c.head_dim;
          p.q = static_cast<const uint16_t*>(q.data());
          p.k = static_cast<const uint16_t*>(k.data()) + l * len * row;
          p.v = static_cast<const uint16_t*>(v.data()) + l * len * row;
          p.kv_token_stride = row;
          p.out = static_cast<uint16_t*>(out.data());
          p.workspace = ws.data();
          p.workspace_bytes = ws.size();
          cuda_decode_attention(p, stream);
        }
      });
      r.attention_by_chunk.emplace_back(chunk, ms);
    }
    r.attention_ms = r.attention_by_chunk.front().second;
  }
  // (n, k, f32 output accumulated) of the layer's GEMMs, as the forward runs them.
  const int64_t qkv = (c.n_heads + 2 * c.n_kv_heads) * c.head_dim, hd = c.n_heads * c.head_dim;
  const std::vector<std::tuple<int64_t, int64_t, bool>> shapes = {
      {qkv, c.dim, false}, {c.dim, hd, true}, {2 * c.ffn_dim, c.dim, false}, {c.dim, c.ffn_dim, true}};
  std::vector<device_buffer> weights;
  for (const auto& [n, k, acc] : shapes) weights.emplace_back(static_cast<size_t>(L * n * k) * 2);
  device_buffer head(static_cast<size_t>(c.vocab_size * c.dim) * 2);
  device_buffer x(static_cast<size_t>(std::max(c.ffn_dim, hd) * 2) * 2);
  device_buffer y(static_cast<size_t>(c.vocab_size) * 4);
  for (device_buffer& b : weights) b.fill_bytes(0x3c);
  for (device_buffer* b : {&head, &x}) b->fill_bytes(0x3c);
  // Every GEMM of the step: (y, y is f32, w, n, k, accumulate).
  std::vector<std::tuple<dtype, const uint16_t*, int64_t, int64_t, bool>> calls;
  for (int64_t l = 0; l < L; ++l)
    for (size_t i = 0; i < shapes.size(); ++i) {
      const auto [n, k, acc] = shapes[i];
      calls.emplace_back(acc ? dtype::f32 : dtype::bf16,
                         static_cast<const uint16_t*>(weights[i].data()) + l * n * k, n, k, acc);
    }
  calls.emplace_back(dtype::f32, static_cast<const uint16_t*>(head.data()), c.vocab_size, c.dim,
                     false);
  const auto* in = static_cast<const uint16_t*>(x.data());
  const auto gemms_ms = [&](cuda_gemm& gemm) {
    return graph_ms([&](void* stream) {
      for (const auto& [type, w, n, k, acc] : calls)
        gemm.linear(y.data(), type, in, w, 1, n, k, acc, stream);
    });
  };
  cuda_gemm heuristic, timed;
  r.gemm_ms = gemms_ms(heuristic);
  for (const auto& [type, w, n, k, acc] : calls) timed.tune(y.data(), type, in, w, 1, n, k, acc);
  r.gemm_tuned_ms = gemms_ms(timed);
  return r;
}

}  // namespace sp::cli
