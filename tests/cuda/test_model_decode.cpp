// The decode attention (cuda_decode_attention, split-K over the KV cache, with the new token's
// RoPE and KV append fused in) against an fp64 reference and against the separate RoPE, append
// and attention launches, at ragged lengths and GQA groups. Outputs are poisoned (NaN) before each
// launch; everything that launches is skipped without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

#include "model/rope.h"
#include "model_ops_test_util.h"
#include "shareprefill/cuda_graph.h"
#include "shareprefill/cuda_model_ops.h"
#include "test_util.h"

namespace sp {
namespace {

using namespace device_test;
using testing::random_values;

// The decode attention's launch parameters as both decode tests fill them: q [heads, D], k and v
// rows kv_stride elements apart, the grid sized for grid_len (len_device: the run-time length on
// the device, or null), out [heads, D], lse [heads], the workspace of ws_bytes.
cuda_decode_params decode_launch(int64_t heads, int64_t kv_heads, int64_t D, int64_t grid_len,
                                 const int64_t* len_device, const uint16_t* q, const uint16_t* k,
                                 const uint16_t* v, int64_t kv_stride, uint16_t* out, float* lse,
                                 void* ws, size_t ws_bytes) {
  cuda_decode_params p;
  p.len = grid_len;
  p.len_device = len_device;
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.head_dim = D;
  p.q = q;
  p.k = k;
  p.v = v;
  p.kv_token_stride = kv_stride;
  p.out = out;
  p.lse = lse;
  p.workspace = ws;
  p.workspace_bytes = ws_bytes;
  return p;
}

struct decode_case {
  int64_t len, heads, kv_heads, dim;
  bool fused_kv;  // K and V as the column halves of one [len, 2 Hkv D] buffer, else cache rows
  // > 0: the grid is sized for grid_len tokens and len is read from device memory (a captured
  // decode step's launch); 0: len on the host.
  int64_t grid_len = 0;
  int64_t chunk = 0;  // keys per block; 0: automatic (cuda_decode_chunk)
};

TEST(ModelOpsDecode, MatchesFp64Reference) {
  SP_SKIP_WITHOUT_DEVICE();
  std::vector<decode_case> cases;
  for (const int64_t len : {1, 127, 129, 1000, 4224}) {
    cases.push_back({len, 9, 3, 64, false});   // SmolLM2, group 3
    cases.push_back({len, 32, 8, 128, true});  // Llama-3-8B, group 4
  }
  cases.push_back({1000, 8, 8, 64, true});     // group 1
  cases.push_back({4224, 16, 2, 128, false});  // group 8
  cases.push_back({400000, 9, 3, 64, false});  // chunks clamped to 4096 keys (98 of them)
  // Run-time lengths under a grid sized for a larger one: one chunk, ragged last chunks, all.
  for (const int64_t len : {1, 63, 65, 1000, 4223, 4224})
    cases.push_back({len, 9, 3, 64, false, 4224});
  cases.push_back({129, 32, 8, 128, true, 40000});
  cases.push_back({40000, 9, 3, 64, false, 131072});
  // Chunk sizes chosen by the caller (bench prefill compares them): multiples of 64, a ragged
  // one, one chunk for everything, and under a larger grid.
  cases.push_back({4224, 9, 3, 64, false, 0, 256});
  cases.push_back({4224, 32, 8, 128, true, 0, 1000});
  cases.push_back({1000, 9, 3, 64, false, 0, 4096});
  cases.push_back({1000, 9, 3, 64, false, 4224, 512});
  for (const decode_case& c : cases) {
    const int64_t grid_len = c.grid_len > 0 ? c.grid_len : c.len;
    SCOPED_TRACE(str("decode(len=", c.len, ",h=", c.heads, ",hkv=", c.kv_heads, ",d=", c.dim,
                     ",fused_kv=", c.fused_kv, ",grid_len=", grid_len, ",chunk=",
                     c.chunk > 0 ? c.chunk : cuda_decode_chunk(grid_len, c.kv_heads), ")"));
    const int64_t D = c.dim, g = c.heads / c.kv_heads, row = c.kv_heads * D;
    const auto seed = static_cast<uint64_t>(c.len * 13 + c.heads + D);
    // Peaked scores: |q| up to 3 so that the softmax is far from uniform.
    const std::vector<float> q = random_bf16_values(c.heads * D, seed, -3.0f, 3.0f);
    const std::vector<float> k = random_bf16_values(c.len * row, seed + 1);
    const std::vector<float> v = random_bf16_values(c.len * row, seed + 2);
    const int64_t stride = c.fused_kv ? 2 * row : row;
    std::vector<uint16_t> kbuf, vbuf;
    if (c.fused_kv) {
      kbuf.resize(static_cast<size_t>(c.len * 2 * row));
      for (int64_t i = 0; i < c.len; ++i)
        for (int64_t e = 0; e < row; ++e) {
          kbuf[static_cast<size_t>(i * 2 * row + e)] = fp32_to_bf16(k[static_cast<size_t>(i * row + e)]);
          kbuf[static_cast<size_t>(i * 2 * row + row + e)] = fp32_to_bf16(v[static_cast<size_t>(i * row + e)]);
        }
    } else {
      kbuf = to_bf16(k);
      vbuf = to_bf16(v);
    }
    const device_array<uint16_t> dq = upload(to_bf16(q)), dk = upload(kbuf);
    const device_array<uint16_t> dv = c.fused_kv ? device_array<uint16_t>{} : upload(vbuf);
    const size_t ws_bytes = cuda_decode_workspace_bytes(grid_len, c.heads, c.kv_heads, D, c.chunk);
    const device_array<int64_t> dlen = upload(std::vector<int64_t>{c.len});
    const device_array<uint8_t> ws = poisoned<uint8_t>(ws_bytes);
    // The chunk counters at the head of the workspace start at zero; the partials are poisoned.
    ASSERT_EQ(cudaMemset(ws.data(), 0, cuda_decode_counter_bytes), cudaSuccess);
    const device_array<uint16_t> dout = poisoned<uint16_t>(static_cast<size_t>(c.heads * D));
    const device_array<float> dlse = poisoned<float>(static_cast<size_t>(c.heads));
    cuda_decode_params p = decode_launch(
        c.heads, c.kv_heads, D, grid_len, c.grid_len > 0 ? dlen.data() : nullptr, dq.data(),
        dk.data(), c.fused_kv ? dk.data() + row : dv.data(), stride, dout.data(), dlse.data(),
        ws.data(), ws_bytes);
    p.chunk = c.chunk;
    cuda_decode_attention(p, nullptr);
    const std::vector<uint16_t> out_bits = fetch(dout, "out");
    const std::vector<float> out = from_bf16(out_bits);
    const std::vector<float> lse = fetch(dlse, "lse");
    fetch(ws, "workspace");
    // The launch left its counters at zero: a second one over the same workspace (outputs
    // poisoned again) merges its chunks too and gives the same bits.
    std::vector<uint32_t> counters(cuda_decode_counter_bytes / 4, 1);
    ASSERT_EQ(cudaMemcpy(counters.data(), ws.data(), cuda_decode_counter_bytes, cudaMemcpyDeviceToHost),
              cudaSuccess);
    EXPECT_EQ(counters, std::vector<uint32_t>(counters.size(), 0)) << "chunk counters after the launch";
    ASSERT_EQ(cudaMemset(dout.data(), 0xff, static_cast<size_t>(c.heads * D) * 2), cudaSuccess);
    ASSERT_EQ(cudaMemset(dlse.data(), 0xff, static_cast<size_t>(c.heads) * 4), cudaSuccess);
    cuda_decode_attention(p, nullptr);
    EXPECT_EQ(fetch(dout, "out (second launch)"), out_bits);
    const std::vector<float> lse_again = fetch(dlse, "lse (second launch)");
    EXPECT_EQ(std::memcmp(lse_again.data(), lse.data(), lse.size() * 4), 0) << "lse (second launch)";
    double max_abs_q = 0.0;
    for (float x : q) max_abs_q = std::max(max_abs_q, double(std::fabs(x)));
    // fp32 scores: each dot of D products is off by <= D u32 sum|q k| <= D u32 D max|q| (|k| <= 1),
    // scaled by 1/sqrt(D); a score error e moves the normalised weights by <= 2e relative, so
    // the output by <= 2e max|v| (|v| <= 1); the merge adds a few u32. Output rounding: u_bf16.
    const double score_err = double(D) * double(D) * fp32_u * max_abs_q / std::sqrt(double(D));
    int64_t bad = 0;
    std::vector<double> s(static_cast<size_t>(c.len));
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t kh = h / g;
      double m = -INFINITY;
      for (int64_t j = 0; j < c.len; ++j) {
        double dot = 0.0;
        for (int64_t e = 0; e < D; ++e)
          dot += double(q[static_cast<size_t>(h * D + e)]) * k[static_cast<size_t>(j * row + kh * D + e)];
        s[static_cast<size_t>(j)] = dot / std::sqrt(double(D));
        m = std::max(m, s[static_cast<size_t>(j)]);
      }
      double l = 0.0;
      for (double& x : s) l += (x = std::exp(x - m));
      const double ref_lse = m + std::log(l);
      if (!within(lse[static_cast<size_t>(h)], ref_lse, score_err + 4 * fp32_u * std::fabs(ref_lse)) && bad++ < 5)
        ADD_FAILURE() << "lse[" << h << "] = " << lse[static_cast<size_t>(h)] << ", reference " << ref_lse;
      for (int64_t e = 0; e < D; ++e) {
        double ref = 0.0;
        for (int64_t j = 0; j < c.len; ++j)
          ref += s[static_cast<size_t>(j)] / l * v[static_cast<size_t>(j * row + kh * D + e)];
        const double tol = bf16_u * std::fabs(ref) + 2 * score_err + 16 * fp32_u;
        const double got = out[static_cast<size_t>(h * D + e)];
        if (!within(got, ref, tol) && bad++ < 5)
          ADD_FAILURE() << "out[" << h << "," << e << "] = " << got << ", reference " << ref
                        << " (tolerance " << tol << ")";
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

struct fused_token_case {
  int64_t len, heads, kv_heads, dim, rope_dim;
  const char* type;
  double factor;
  int64_t grid_len;  // > 0: the grid is sized for grid_len and len comes from device memory
};

// A decode step's new token fused into the attention (RoPE of q and k, KV append, attention in
// one launch) against the three steps apart: cuda_rope_apply (tested against the CPU RoPE above)
// of q and k at position len - 1, the rotated k and the v written to cache row len - 1, then the
// plain decode attention (tested against fp64 above). Equal bits: output, LSE and the cache,
// whose row len - 1 the fused launch must write and not read (it starts as NaN) and whose other
// rows it must leave alone.
TEST(ModelOpsDecode, FusedNewTokenEqualsRopeAppendThenAttention) {
  SP_SKIP_WITHOUT_DEVICE();
  const std::vector<fused_token_case> cases = {
      {1, 9, 3, 64, 64, "none", 1.0, 0},           // the new token is the whole cache
      {129, 9, 3, 64, 64, "linear", 4.0, 0},
      {64, 8, 8, 64, 64, "none", 1.0, 0},          // group 1, one full chunk
      {1000, 32, 8, 128, 128, "ntk", 4.0, 0},
      {127, 12, 4, 128, 64, "yarn", 4.0, 0},       // partial rotary: dims 64.. not rotated
      {4000, 16, 2, 128, 128, "none", 1.0, 0},     // group 8
      {4224, 9, 3, 64, 64, "yarn", 16.0, 8192},    // run-time length under a larger grid
      {33000, 9, 3, 64, 64, "none", 1.0, 65536},   // many chunks merged
  };
  for (const fused_token_case& c : cases) {
    const int64_t grid_len = c.grid_len > 0 ? c.grid_len : c.len;
    SCOPED_TRACE(str("fused(len=", c.len, ",h=", c.heads, ",hkv=", c.kv_heads, ",d=", c.dim,
                     ",rope_dim=", c.rope_dim, ",", c.type, "x", c.factor, ",grid_len=", grid_len, ")"));
    const rope_table table = rope_make_table(c.rope_dim, 100000.0, c.type, c.factor, 8192);
    const int64_t D = c.dim, row = c.kv_heads * D, width = (c.heads + 2 * c.kv_heads) * D;
    const int64_t capacity = c.len + 2;  // two rows past the new token, to be left alone
    const auto seed = static_cast<uint64_t>(c.len * 7 + c.heads + D);
    // The new token's q | k | v before RoPE (one fused projection row) and a random cache.
    const std::vector<uint16_t> qkv = to_bf16(random_bf16_values(width, seed, -3.0f, 3.0f));
    std::vector<uint16_t> cache_k = to_bf16(random_bf16_values(capacity * row, seed + 1));
    std::vector<uint16_t> cache_v = to_bf16(random_bf16_values(capacity * row, seed + 2));
    // Three steps apart: RoPE on a copy of the row, the append on the host, plain attention.
    const device_array<uint16_t> rotated = upload(qkv);
    device_array<float> angles;
    cuda_rope_apply(
        rope_launch(1, D, c.len - 1, rotated.data(), width, c.heads, c.kv_heads, table, angles),
        nullptr);
    const std::vector<uint16_t> rotated_row = fetch(rotated, "rotated q | k");
    std::vector<uint16_t> expect_k = cache_k, expect_v = cache_v;
    for (int64_t e = 0; e < row; ++e) {
      expect_k[static_cast<size_t>((c.len - 1) * row + e)] = rotated_row[static_cast<size_t>(c.heads * D + e)];
      expect_v[static_cast<size_t>((c.len - 1) * row + e)] = qkv[static_cast<size_t>((c.heads + c.kv_heads) * D + e)];
    }
    const device_array<int64_t> dlen = upload(std::vector<int64_t>{c.len});
    const auto run = [&](const device_array<uint16_t>& q, const device_array<uint16_t>& k,
                         const device_array<uint16_t>& v, const device_array<uint16_t>* fused_row,
                         bool programmatic = false) {
      const size_t ws_bytes = cuda_decode_workspace_bytes(grid_len, c.heads, c.kv_heads, D);
      const device_array<uint8_t> ws = poisoned<uint8_t>(ws_bytes);
      EXPECT_EQ(cudaMemset(ws.data(), 0, cuda_decode_counter_bytes), cudaSuccess);
      const device_array<uint16_t> out = poisoned<uint16_t>(static_cast<size_t>(c.heads * D));
      const device_array<float> lse = poisoned<float>(static_cast<size_t>(c.heads));
      cuda_decode_params p =
          decode_launch(c.heads, c.kv_heads, D, grid_len, c.grid_len > 0 ? dlen.data() : nullptr,
                        q.data(), k.data(), v.data(), row, out.data(), lse.data(), ws.data(),
                        ws_bytes);
      if (fused_row != nullptr) {
        p.new_token.k = fused_row->data() + c.heads * D;
        p.new_token.v = fused_row->data() + (c.heads + c.kv_heads) * D;
        p.new_token.cache_k = k.data();
        p.new_token.cache_v = v.data();
        p.new_token.inv_freq = table.inv_freq.data();
        p.new_token.pairs = static_cast<int64_t>(table.inv_freq.size());
        p.new_token.attention_factor = table.attention_factor;
      }
      p.programmatic_launch = programmatic;
      cuda_stream stream;  // a programmatic launch goes on a stream of its own, as in a session
      cuda_decode_attention(p, programmatic ? stream.get() : nullptr);
      fetch(ws, "workspace");
      return std::make_pair(fetch(out, "out"), fetch(lse, "lse"));
    };
    const device_array<uint16_t> ref_k = upload(expect_k), ref_v = upload(expect_v);
    const auto [ref_out, ref_lse] = run(rotated, ref_k, ref_v, nullptr);
    // Fused: q and k before RoPE, cache row len - 1 NaN (it must be written, not read).
    for (int64_t e = 0; e < row; ++e)
      cache_k[static_cast<size_t>((c.len - 1) * row + e)] = cache_v[static_cast<size_t>((c.len - 1) * row + e)] = 0xffff;
    const device_array<uint16_t> row_in = upload(qkv), k = upload(cache_k), v = upload(cache_v);
    const auto [out, lse] = run(row_in, k, v, &row_in);
    EXPECT_EQ(out, ref_out) << "attention output";
    EXPECT_EQ(std::memcmp(lse.data(), ref_lse.data(), lse.size() * 4), 0) << "lse";
    EXPECT_EQ(fetch(k, "cache k"), expect_k) << "cache k";
    EXPECT_EQ(fetch(v, "cache v"), expect_v) << "cache v";
    EXPECT_EQ(fetch(row_in, "q | k | v"), qkv) << "the projection row is read only";
    // Programmatic Dependent Launch: the same bits.
    const device_array<uint16_t> k2 = upload(cache_k), v2 = upload(cache_v);
    const auto [out2, lse2] = run(row_in, k2, v2, &row_in, true);
    EXPECT_EQ(out2, ref_out) << "attention output, programmatic launch";
    EXPECT_EQ(std::memcmp(lse2.data(), ref_lse.data(), lse2.size() * 4), 0) << "lse, programmatic";
    EXPECT_EQ(fetch(k2, "cache k"), expect_k) << "cache k, programmatic launch";
  }
}

}  // namespace
}  // namespace sp
