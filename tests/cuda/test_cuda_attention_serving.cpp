// Serving shapes on the GPU (issue 16): chunked prefill (a plan with query_offset; q = the
// chunk's rows, k/v = the prompt so far) bit for bit equal to the matching rows of the one-shot
// launch on the same tiles (out, lse and pivot A rows) and within bf16 rounding of the CPU
// chunk; varlen batches in one launch bit for bit equal to one launch per sequence; the errors
// of bad cu_seqlens, offsets and totals. Every check runs on the portable kernel, the Hopper
// kernel with one CTA per SM and with a 3-CTA grid (each CTA claims many items); what the build
// or device cannot run is skipped, as is everything without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "shareprefill/attention.h"
#include "shareprefill/cuda_attention.h"
#include "attention_cases.h"
#include "test_util.h"

namespace sp {
namespace {

using testing::prefix_mask;
using testing::error_of;
using testing::random_values;

constexpr int64_t bs = 128;

struct kernel_config {
  const char* name;
  cuda_kernel kernel;
  int64_t ctas;
};
const kernel_config configs[] = {{"portable", cuda_kernel::portable, 0},
                                 {"hopper", cuda_kernel::hopper, 0},
                                 {"hopper_3ctas", cuda_kernel::hopper, 3}};

bool runnable(const kernel_config& k) {
  return error_of([&] { cuda_attention_kernel({k.kernel, k.ctas}); }).empty();
}

block_mask random_mask(int64_t n, int64_t heads, uint64_t seed, const std::vector<int32_t>& dense) {
  std::mt19937_64 rng(seed);
  const int64_t nb = (n + bs - 1) / bs;
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(heads));
  for (int64_t h = 0; h < heads; ++h)
    for (int32_t r = 0; r < nb; ++r)
      for (int32_t c = 0; c <= r; ++c)
        if (c == r || rng() % 3 == 0 || std::find(dense.begin(), dense.end(), h) != dense.end())
          tiles[static_cast<size_t>(h)].emplace_back(r, c);
  return block_mask::from_tiles(n, bs, tiles);
}

tensor_view dev(const void* data, dtype t, std::initializer_list<int64_t> shape) {
  tensor_view v = tensor_view::contiguous(data, t, shape);
  v.on_device = true;
  return v;
}

// bf16 q/k/v of n tokens on the host (as fp32 after rounding and as words) and on the device.
struct problem {
  int64_t n, heads, kv_heads, dim;
  std::vector<float> q, k, v;
  std::vector<uint16_t> q16, k16, v16;
  device_buffer dq, dk, dv;
  problem(int64_t n_, int64_t h, int64_t hkv, int64_t d, uint64_t seed)
      : n(n_), heads(h), kv_heads(hkv), dim(d) {
    q = random_values(n * h * d, seed, -2.0f, 2.0f);
    k = random_values(n * hkv * d, seed + 1, -2.0f, 2.0f);
    v = random_values(n * hkv * d, seed + 2);
    for (auto* x : {&q, &k, &v})
      for (float& f : *x) f = round_to_bf16(f);
    for (auto [x, w] : {std::pair{&q, &q16}, {&k, &k16}, {&v, &v16}}) {
      w->resize(x->size());
      for (size_t i = 0; i < x->size(); ++i) (*w)[i] = fp32_to_bf16((*x)[i]);
    }
    dq = device_buffer(q16.size() * 2);
    dk = device_buffer(k16.size() * 2);
    dv = device_buffer(v16.size() * 2);
    dq.upload(q16.data(), dq.size());
    dk.upload(k16.data(), dk.size());
    dv.upload(v16.data(), dv.size());
  }
  // Rows [t0, t0 + rows) of q, of k, of v as device views.
  tensor_view qv(int64_t t0, int64_t rows) const {
    return dev(static_cast<const uint16_t*>(dq.data()) + t0 * heads * dim, dtype::bf16,
               {rows, heads, dim});
  }
  tensor_view kv(const device_buffer& b, int64_t t0, int64_t rows) const {
    return dev(static_cast<const uint16_t*>(b.data()) + t0 * kv_heads * dim, dtype::bf16,
               {rows, kv_heads, dim});
  }
};

// Downloaded outputs of one launch.
struct result {
  std::vector<uint16_t> out;
  std::vector<float> lse, a;
};

result run_plan(const problem& x, int64_t end, int64_t offset, const block_mask& mask,
                const std::vector<int32_t>& pivots, const kernel_config& k) {
  const int64_t rows = end - offset, nb = mask.n_blocks, np = static_cast<int64_t>(pivots.size());
  device_buffer dout(static_cast<size_t>(rows * x.heads * x.dim) * 2),
      dlse(static_cast<size_t>(x.heads * rows) * 4),
      da(static_cast<size_t>(std::max<int64_t>(np * nb * nb, 1)) * 4);
  dout.fill_bytes(0xff);
  dlse.fill_bytes(0xff);
  da.fill_bytes(0xff);
  const device_layer_plan plan(mask, pivots, nullptr, offset);
  cuda_attention_block_sparse(dev(dout.data(), dtype::bf16, {rows, x.heads, x.dim}),
                              dev(dlse.data(), dtype::f32, {x.heads, rows}),
                              np > 0 ? dev(da.data(), dtype::f32, {np, nb, nb}) : tensor_view{},
                              x.qv(offset, rows), x.kv(x.dk, 0, end), x.kv(x.dv, 0, end),
                              plan.plan(), plan.scratch(), {k.kernel, k.ctas});
  cuda_synchronize();
  result r;
  r.out.resize(static_cast<size_t>(rows * x.heads * x.dim));
  r.lse.resize(static_cast<size_t>(x.heads * rows));
  r.a.resize(static_cast<size_t>(np * nb * nb));
  dout.download(r.out.data(), r.out.size() * 2);
  dlse.download(r.lse.data(), r.lse.size() * 4);
  if (np > 0) da.download(r.a.data(), r.a.size() * 4);
  return r;
}

struct chunk_case {
  int64_t n, heads, kv_heads, dim, chunk;
  bool dense;
  std::vector<int32_t> pivots;
};

void check_chunked(const chunk_case& c, const kernel_config& k) {
  SCOPED_TRACE(str(k.name, " n=", c.n, " H=", c.heads, "/", c.kv_heads, " D=", c.dim,
                   " chunk=", c.chunk, c.dense ? " dense" : " random"));
  const problem x(c.n, c.heads, c.kv_heads, c.dim, 300 + c.n);
  const block_mask full =
      c.dense ? block_mask::dense_causal(c.n, bs, c.heads) : random_mask(c.n, c.heads, 5, c.pivots);
  const result one = run_plan(x, c.n, 0, full, c.pivots, k);
  const int64_t nb = full.n_blocks, hd = c.heads * c.dim;
  thread_pool pool(2);
  for (int64_t s = 0; s < c.n; s += c.chunk) {
    const int64_t end = std::min(c.n, s + c.chunk), rows = end - s;
    const block_mask m = prefix_mask(full, end);
    const result ch = run_plan(x, end, s, m, c.pivots, k);
    EXPECT_EQ(std::memcmp(ch.out.data(), one.out.data() + s * hd, ch.out.size() * 2), 0)
        << "out of the chunk at " << s;
    for (int64_t h = 0; h < c.heads; ++h)
      EXPECT_EQ(std::memcmp(ch.lse.data() + h * rows, one.lse.data() + h * c.n + s, rows * 4), 0)
          << "lse of head " << h << ", chunk at " << s;
    const int64_t mb = m.n_blocks;
    for (size_t p = 0; p < c.pivots.size(); ++p)
      for (int64_t r = s / bs; r < mb; ++r)
        EXPECT_EQ(
            std::memcmp(ch.a.data() + (p * mb + r) * mb, one.a.data() + (p * nb + r) * nb, mb * 4),
            0)
            << "A row " << r << " of pivot slot " << p << ", chunk at " << s;
    // Against the CPU chunk (fp32 on the same bf16 values): within bf16 output rounding.
    std::vector<float> o(static_cast<size_t>(rows * hd)), l(static_cast<size_t>(c.heads * rows));
    attention_block_sparse(
        tensor_view::contiguous(o.data(), dtype::f32, {rows, c.heads, c.dim}),
        tensor_view::contiguous(l.data(), dtype::f32, {c.heads, rows}), nullptr,
        tensor_view::contiguous(x.q.data() + s * hd, dtype::f32, {rows, c.heads, c.dim}),
        tensor_view::contiguous(x.k.data(), dtype::f32, {end, c.kv_heads, c.dim}),
        tensor_view::contiguous(x.v.data(), dtype::f32, {end, c.kv_heads, c.dim}), m, pool, s);
    double worst = 0.0, worst_lse = 0.0;
    for (size_t i = 0; i < o.size(); ++i)
      worst = std::max(worst, std::fabs(double(bf16_to_fp32(ch.out[i])) - o[i]));
    for (size_t i = 0; i < l.size(); ++i)
      worst_lse = std::max(worst_lse, std::fabs(double(ch.lse[i]) - l[i]));
    EXPECT_LT(worst, 2e-2) << "out vs CPU, chunk at " << s;
    EXPECT_LT(worst_lse, 2e-2) << "lse vs CPU, chunk at " << s;
  }
}

TEST(CudaAttentionChunked, EqualsOneShotRowsAndCpu) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  for (const kernel_config& k : configs) {
    if (!runnable(k)) continue;
    check_chunked({1000, 4, 2, 64, 256, false, {0, 3}}, k);
    check_chunked({129, 3, 1, 128, 128, true, {}}, k);
    check_chunked({4224, 8, 2, 128, 1024, false, {5}}, k);
    check_chunked({4224, 2, 2, 64, 2048, true, {}}, k);
    check_chunked({1000, 9, 3, 64, 384, true, {}}, k);  // the causal walk from each chunk's start
  }
}

TEST(CudaAttentionChunked, RejectsBadOffsets) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const block_mask m = block_mask::dense_causal(300, bs, 2);
  EXPECT_NE(error_of([&] { device_layer_plan p(m, {}, nullptr, 100); }).find("query_offset=100"),
            std::string::npos);
  const problem x(300, 2, 2, 64, 9);
  device_buffer dout(300 * 2 * 64 * 2);
  const device_layer_plan plan(m, {}, nullptr, 128);
  const std::string e = error_of([&] {  // q of 300 rows for a chunk of 172
    cuda_attention_block_sparse(dev(dout.data(), dtype::bf16, {300, 2, 64}), {}, {}, x.qv(0, 300),
                                x.kv(x.dk, 0, 300), x.kv(x.dv, 0, 300), plan.plan(),
                                plan.scratch());
  });
  EXPECT_NE(e.find("expected 172"), std::string::npos) << e;
}

void check_varlen(int64_t heads, int64_t kv_heads, int64_t dim, const kernel_config& k) {
  const std::vector<int32_t> lens = {1000, 1, 129, 300, 4224, 127, 2048};
  std::vector<int32_t> cu = {0};
  for (int32_t len : lens) cu.push_back(cu.back() + len);
  const int64_t total = cu.back();
  SCOPED_TRACE(str(k.name, " H=", heads, "/", kv_heads, " D=", dim));
  const problem x(total, heads, kv_heads, dim, 77 + dim);
  std::vector<block_mask> masks;
  for (size_t b = 0; b < lens.size(); ++b)
    masks.push_back(b % 2 ? block_mask::dense_causal(lens[b], bs, heads)
                          : random_mask(lens[b], heads, 40 + b, {}));
  const device_varlen_plan plan(cu, masks);
  device_buffer dout(static_cast<size_t>(total * heads * dim) * 2),
      dlse(static_cast<size_t>(heads * total) * 4);
  dout.fill_bytes(0xff);
  dlse.fill_bytes(0xff);
  cuda_attention_varlen(dev(dout.data(), dtype::bf16, {total, heads, dim}),
                        dev(dlse.data(), dtype::f32, {heads, total}), x.qv(0, total),
                        x.kv(x.dk, 0, total), x.kv(x.dv, 0, total), plan, {k.kernel, k.ctas});
  cuda_synchronize();
  std::vector<uint16_t> out(static_cast<size_t>(total * heads * dim));
  std::vector<float> lse(static_cast<size_t>(heads * total));
  dout.download(out.data(), out.size() * 2);
  dlse.download(lse.data(), lse.size() * 4);
  for (size_t b = 0; b < lens.size(); ++b) {
    const int64_t t0 = cu[b], n = lens[b];
    problem one(n, heads, kv_heads, dim, 0);  // buffers of the right size, overwritten
    one.dq.upload(x.q16.data() + t0 * heads * dim, static_cast<size_t>(n * heads * dim) * 2);
    one.dk.upload(x.k16.data() + t0 * kv_heads * dim, static_cast<size_t>(n * kv_heads * dim) * 2);
    one.dv.upload(x.v16.data() + t0 * kv_heads * dim, static_cast<size_t>(n * kv_heads * dim) * 2);
    const result r = run_plan(one, n, 0, masks[b], {}, k);
    EXPECT_EQ(std::memcmp(r.out.data(), out.data() + t0 * heads * dim, r.out.size() * 2), 0)
        << "out of sequence " << b;
    for (int64_t h = 0; h < heads; ++h)
      EXPECT_EQ(std::memcmp(r.lse.data() + h * n, lse.data() + h * total + t0, n * 4), 0)
          << "lse of sequence " << b << " head " << h;
  }
}

TEST(CudaAttentionVarlen, EqualsPerSequenceLaunchesBitwise) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  for (const kernel_config& k : configs) {
    if (!runnable(k)) continue;
    check_varlen(4, 2, 64, k);
    check_varlen(8, 1, 128, k);
  }
}

TEST(CudaAttentionVarlen, RejectsBadCuSeqlensAndTotals) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const std::vector<block_mask> masks = {block_mask::dense_causal(100, bs, 2),
                                         block_mask::dense_causal(200, bs, 2)};
  auto plan_error = [&](const std::vector<int32_t>& cu) {
    return error_of([&] { device_varlen_plan p(cu, masks); });
  };
  EXPECT_NE(plan_error({0, 200, 100}).find("not ascending"), std::string::npos);
  EXPECT_NE(plan_error({0, 100, 100, 300}).find("sequence 1 is empty"), std::string::npos);
  EXPECT_NE(plan_error({0, 100, 250}).find("mask of sequence 1 is for 200 tokens"),
            std::string::npos);
  const device_varlen_plan plan({0, 100, 300}, masks);
  const problem x(400, 2, 2, 64, 3);
  device_buffer dout(400 * 2 * 64 * 2);
  const std::string e = error_of([&] {  // the packed tensors are longer than the batch
    cuda_attention_varlen(dev(dout.data(), dtype::bf16, {400, 2, 64}), {}, x.qv(0, 400),
                          x.kv(x.dk, 0, 400), x.kv(x.dv, 0, 400), plan);
  });
  EXPECT_NE(e.find("cu_seqlens end at 300"), std::string::npos) << e;
}

}  // namespace
}  // namespace sp
