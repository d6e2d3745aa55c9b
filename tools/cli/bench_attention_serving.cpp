// `shareprefill bench attention --seqlens a,b,... | --chunk C | --split` (issue 16): the serving
// shapes against their one-call counterparts on the same tiles, on the CPU or the GPU.
//   --seqlens: a varlen batch (one call) vs the same sequences one call each;
//   --chunk C: a chunked prefill (chunks of C tokens, each over the keys so far) vs one call;
//   --split:   the keys split in two halves at a block boundary, attention over each half with
//              its LSE, merged (merge_attention_states) vs one call.
// Masks: every causal tile (density 1) or random block masks of the requested densities
// (random_block_mask; a chunk uses the one-shot mask's rows). Each row of the JSON output has
// rel_err, the Frobenius relative difference of the batched / chunked / merged output against
// the separate / one-shot one, next to both times and their ratio. Inputs: random N(0,1) values
// rounded to bf16 (the GPU kernel's dtype; the CPU computes in fp32 on the same values), a
// 2048-token pattern repeated over the tokens. Times: CPU wall clock, minimum of --repeats;
// GPU CUDA events, median of --repeats after 2 warm-up calls.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "bench_attention.h"
#include "shareprefill/attention.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/error.h"
#include "shareprefill/merge_attention.h"

namespace sp::cli {

namespace {

using launch_fn = std::function<void()>;

// Packed inputs of `total` tokens and output slots [total, H, D] with lse [H, total]; the calls
// return closures (plans built once, outside the timing).
class serving_engine {
 public:
  virtual ~serving_engine() = default;
  // Queries [q_begin, q_end) over keys [k_begin, q_end) with `mask` (over q_end - k_begin tokens,
  // query_offset q_begin - k_begin) into rows [q_begin, q_end) of slot `out`; with_lse needs the
  // whole range (k_begin = q_begin = 0, q_end = total).
  virtual launch_fn attention(int out, int64_t k_begin, int64_t q_begin, int64_t q_end,
                              const block_mask& mask, bool with_lse) = 0;
  virtual launch_fn varlen(int out, const std::vector<int32_t>& cu,
                           const std::vector<block_mask>& masks) = 0;
  virtual launch_fn merge(int out, int a, int b) = 0;
  virtual double time_ms(const launch_fn& f, int repeats) = 0;
  virtual std::vector<float> output(int slot) = 0;  // [total, H, D] as fp32
};

constexpr int slots = 4;

// [n, heads, dim] fp32 values rounded to bf16 (tiled_random_values, the same values as the
// one-sequence CUDA bench's).
std::vector<float> bf16_values(int64_t n, int64_t heads, int64_t dim, uint64_t seed) {
  return tiled_random_values<float>(n, heads, dim, seed, round_to_bf16);
}

class cpu_engine : public serving_engine {
 public:
  cpu_engine(const attention_bench_options& o, int64_t total)
      : o_(o), total_(total), pool_(o.threads) {
    q_ = bf16_values(total, o.heads, o.dim, o.seed);
    k_ = bf16_values(total, o.kv_heads, o.dim, o.seed + 1);
    v_ = bf16_values(total, o.kv_heads, o.dim, o.seed + 2);
    for (int s = 0; s < slots; ++s) {
      out_[s].assign(q_.size(), 0.0f);
      lse_[s].assign(static_cast<size_t>(o.heads * total), 0.0f);
    }
  }
  launch_fn attention(int out, int64_t k_begin, int64_t q_begin, int64_t q_end,
                      const block_mask& mask, bool with_lse) override {
    const int64_t hd = o_.heads * o_.dim, kvd = o_.kv_heads * o_.dim, rows = q_end - q_begin,
                  keys = q_end - k_begin;
    const tensor_view ov = tensor_view::contiguous(out_[out].data() + q_begin * hd, dtype::f32,
                                                   {rows, o_.heads, o_.dim});
    const tensor_view lv =
        with_lse ? tensor_view::contiguous(lse_[out].data(), dtype::f32, {o_.heads, rows})
                 : tensor_view{};
    const tensor_view qv =
        tensor_view::contiguous(q_.data() + q_begin * hd, dtype::f32, {rows, o_.heads, o_.dim});
    const tensor_view kv =
        tensor_view::contiguous(k_.data() + k_begin * kvd, dtype::f32, {keys, o_.kv_heads, o_.dim});
    const tensor_view vv =
        tensor_view::contiguous(v_.data() + k_begin * kvd, dtype::f32, {keys, o_.kv_heads, o_.dim});
    auto m = std::make_shared<block_mask>(mask);
    const int64_t offset = q_begin - k_begin;
    return [=] { attention_block_sparse(ov, lv, nullptr, qv, kv, vv, *m, pool_, offset); };
  }
  launch_fn varlen(int out, const std::vector<int32_t>& cu,
                   const std::vector<block_mask>& masks) override {
    auto m = std::make_shared<std::vector<block_mask>>(masks);
    const tensor_view ov =
        tensor_view::contiguous(out_[out].data(), dtype::f32, {total_, o_.heads, o_.dim});
    return [=] {
      attention_block_sparse_varlen(ov, {}, view(q_, o_.heads), view(k_, o_.kv_heads),
                                    view(v_, o_.kv_heads), cu, *m, pool_);
    };
  }
  launch_fn merge(int out, int a, int b) override {
    return [=] {
      merge_attention_states(view(out_[out], o_.heads), lse_view(out), view(out_[a], o_.heads),
                             lse_view(a), view(out_[b], o_.heads), lse_view(b), &pool_);
    };
  }
  double time_ms(const launch_fn& f, int repeats) override {
    double best = 1e300;
    for (int i = 0; i < repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      best = std::min(
          best,
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  }
  std::vector<float> output(int slot) override { return out_[slot]; }

 private:
  tensor_view view(const std::vector<float>& x, int64_t heads) const {
    return tensor_view::contiguous(x.data(), dtype::f32, {total_, heads, o_.dim});
  }
  tensor_view lse_view(int slot) const {
    return tensor_view::contiguous(lse_[slot].data(), dtype::f32, {o_.heads, total_});
  }
  const attention_bench_options& o_;
  int64_t total_;
  mutable thread_pool pool_;
  std::vector<float> q_, k_, v_, out_[slots], lse_[slots];
};

#ifdef SP_HAVE_CUDA
class cuda_engine : public serving_engine {
 public:
  cuda_engine(const attention_bench_options& o, int64_t total) : o_(o), total_(total) {
    q_ = upload(bf16_values(total, o.heads, o.dim, o.seed));
    k_ = upload(bf16_values(total, o.kv_heads, o.dim, o.seed + 1));
    v_ = upload(bf16_values(total, o.kv_heads, o.dim, o.seed + 2));
    for (int s = 0; s < slots; ++s) {
      out_[s] = device_buffer(static_cast<size_t>(total * o.heads * o.dim) * 2);
      lse_[s] = device_buffer(static_cast<size_t>(total * o.heads) * 4);
    }
  }
  launch_fn attention(int out, int64_t k_begin, int64_t q_begin, int64_t q_end,
                      const block_mask& mask, bool with_lse) override {
    const int64_t rows = q_end - q_begin, keys = q_end - k_begin;
    auto plan = std::make_shared<device_layer_plan>(mask, std::vector<int32_t>{}, nullptr,
                                                    q_begin - k_begin);
    const tensor_view ov = rows_of(out_[out], q_begin, rows, o_.heads);
    const tensor_view lv = with_lse ? lse_view(out) : tensor_view{};
    const tensor_view qv = rows_of(q_, q_begin, rows, o_.heads);
    const tensor_view kv = rows_of(k_, k_begin, keys, o_.kv_heads);
    const tensor_view vv = rows_of(v_, k_begin, keys, o_.kv_heads);
    return
        [=] { cuda_attention_block_sparse(ov, lv, {}, qv, kv, vv, plan->plan(), plan->scratch()); };
  }
  launch_fn varlen(int out, const std::vector<int32_t>& cu,
                   const std::vector<block_mask>& masks) override {
    auto plan = std::make_shared<device_varlen_plan>(cu, masks, nullptr, o_.tie_band);
    const tensor_view ov = rows_of(out_[out], 0, total_, o_.heads);
    const tensor_view qv = rows_of(q_, 0, total_, o_.heads);
    const tensor_view kv = rows_of(k_, 0, total_, o_.kv_heads);
    const tensor_view vv = rows_of(v_, 0, total_, o_.kv_heads);
    return [=] { cuda_attention_varlen(ov, {}, qv, kv, vv, *plan); };
  }
  launch_fn merge(int out, int a, int b) override {
    return [=] {
      cuda_merge_attention_states(rows_of(out_[out], 0, total_, o_.heads), lse_view(out),
                                  rows_of(out_[a], 0, total_, o_.heads), lse_view(a),
                                  rows_of(out_[b], 0, total_, o_.heads), lse_view(b));
    };
  }
  double time_ms(const launch_fn& f, int repeats) override { return cuda_time_ms(f, 2, repeats); }
  std::vector<float> output(int slot) override {
    std::vector<uint16_t> raw(static_cast<size_t>(total_ * o_.heads * o_.dim));
    cuda_synchronize();
    out_[slot].download(raw.data(), raw.size() * 2);
    std::vector<float> x(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) x[i] = bf16_to_fp32(raw[i]);
    return x;
  }

 private:
  static device_buffer upload(const std::vector<float>& x) {
    std::vector<uint16_t> w(x.size());
    for (size_t i = 0; i < x.size(); ++i) w[i] = fp32_to_bf16(x[i]);
    device_buffer b(w.size() * 2);
    b.upload(w.data(), b.size());
    return b;
  }
  tensor_view rows_of(const device_buffer& b, int64_t t0, int64_t rows, int64_t heads) const {
    tensor_view t =
        tensor_view::contiguous(static_cast<const uint16_t*>(b.data()) + t0 * heads * o_.dim,
                                dtype::bf16, {rows, heads, o_.dim});
    t.on_device = true;
    return t;
  }
  tensor_view lse_view(int slot) const {
    tensor_view t = tensor_view::contiguous(lse_[slot].data(), dtype::f32, {o_.heads, total_});
    t.on_device = true;
    return t;
  }
  const attention_bench_options& o_;
  int64_t total_;
  device_buffer q_, k_, v_, out_[slots], lse_[slots];
};
#endif

std::unique_ptr<serving_engine> make_engine(const attention_bench_options& o, bool cuda,
                                            int64_t total) {
  if (!cuda) return std::make_unique<cpu_engine>(o, total);
#ifdef SP_HAVE_CUDA
  check(cuda_device_available(), "bench attention", "--device cuda: no usable CUDA device");
  return std::make_unique<cuda_engine>(o, total);
#else
  fail("bench attention", "--device cuda: this build has no CUDA (configure with -DSP_CUDA=ON)");
#endif
}

double rel_diff(const std::vector<float>& x, const std::vector<float>& ref) {
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - ref[i];
    d2 += d * d;
    r2 += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(d2 / std::max(r2, 1e-300));
}

block_mask mask_of(int64_t n, int64_t heads, double density, uint64_t seed) {
  return density >= 1.0 ? block_mask::dense_causal(n, 128, heads)
                        : random_block_mask(n, 128, heads, density, seed);
}

// The tiles of m in the query blocks of tokens [0, end) (the mask of a chunk ending at end) and
// the tiles with key blocks in [c0, c1) (the mask of a key half).
block_mask prefix_of(const block_mask& m, int64_t end) {
  const int64_t nb = (end + m.block_size - 1) / m.block_size;
  std::vector<int64_t> row_ptr;
  std::vector<int32_t> col_idx;
  const int32_t* cols = m.col_idx.data();
  for (int64_t h = 0; h < m.heads; ++h) {
    for (int64_t r = 0; r < nb; ++r) {
      row_ptr.push_back(static_cast<int64_t>(col_idx.size()));
      col_idx.insert(col_idx.end(), cols + m.row_begin(h, r), cols + m.row_end(h, r));
    }
    row_ptr.push_back(static_cast<int64_t>(col_idx.size()));
  }
  return block_mask::from_csr(end, m.block_size, m.heads, std::move(row_ptr), std::move(col_idx));
}

block_mask keys_in(const block_mask& m, int32_t c0, int32_t c1) {
  std::vector<int64_t> row_ptr;
  std::vector<int32_t> col_idx;
  for (int64_t h = 0; h < m.heads; ++h)
    for (int64_t r = 0; r <= m.n_blocks; ++r) {
      row_ptr.push_back(static_cast<int64_t>(col_idx.size()));
      if (r == m.n_blocks) break;
      for (int64_t t = m.row_begin(h, r); t < m.row_end(h, r); ++t)
        if (m.col_idx[static_cast<size_t>(t)] >= c0 && m.col_idx[static_cast<size_t>(t)] < c1)
          col_idx.push_back(m.col_idx[static_cast<size_t>(t)]);
    }
  return block_mask::from_csr(m.n_tokens, m.block_size, m.heads, std::move(row_ptr),
                              std::move(col_idx));
}

}  // namespace

void run_attention_serving_bench(const attention_bench_options& o, bool cuda) {
  const char* fn = "bench attention";
  const int modes = (o.seqlens.empty() ? 0 : 1) + (o.chunk > 0 ? 1 : 0) + (o.split ? 1 : 0);
  check(modes == 1, fn, "--seqlens, --chunk and --split are exclusive (one per run)");
  check(o.heads > 0 && o.kv_heads > 0 && o.heads % o.kv_heads == 0, fn, "heads=", o.heads,
        " kv_heads=", o.kv_heads);
  check(!cuda || o.dim == 64 || o.dim == 128, fn, "--dim ", o.dim,
        " (the CUDA kernel has 64 and 128)");
  int64_t total = o.n;
  std::vector<int32_t> cu = {0};
  for (int64_t len : o.seqlens) {
    check(len > 0 && cu.back() + len < (int64_t{1} << 31), fn, "--seqlens: length ", len,
          " (positive, total below 2^31)");
    cu.push_back(static_cast<int32_t>(cu.back() + len));
  }
  if (!o.seqlens.empty()) total = cu.back();
  check(o.chunk == 0 || (o.chunk % 128 == 0 && o.chunk > 0), fn, "--chunk ", o.chunk,
        " (a positive multiple of the block size 128)");
  check(!o.split || o.n > 128, fn, "--split needs --n > 128");
  const std::unique_ptr<serving_engine> e = make_engine(o, cuda, total);
  json_lines json(o.json);
  FILE* const report = o.json.text_stream();
  const char* mode = !o.seqlens.empty() ? "varlen" : o.chunk > 0 ? "chunked" : "split";
  std::fprintf(report, "bench attention %s (%s): total=%lld heads=%lld kv_heads=%lld dim=%lld\n",
               mode, cuda ? "cuda" : "cpu", (long long)total, (long long)o.heads,
               (long long)o.kv_heads, (long long)o.dim);
  std::fprintf(report, "%8s %9s %12s %12s %9s %10s %10s\n", "density", "measured", "reference_ms",
               "serving_ms", "ratio", "extra_ms", "rel_err");
  for (double density : o.densities) {
    nlohmann::json row = {{"device", cuda ? "cuda" : "cpu"}, {"mode", mode}, {"heads", o.heads},
                          {"kv_heads", o.kv_heads},          {"dim", o.dim}, {"density", density}};
    double ref_ms = 0.0, serving_ms = 0.0, extra_ms = 0.0, measured = 0.0;
    if (!o.seqlens.empty()) {  // slot 0: one call per sequence; slot 1: the batch
      std::vector<block_mask> masks;
      std::vector<launch_fn> calls;
      int64_t tiles = 0, causal = 0;
      for (size_t b = 0; b + 1 < cu.size(); ++b) {
        masks.push_back(mask_of(cu[b + 1] - cu[b], o.heads, density, o.seed + 5 + b));
        calls.push_back(e->attention(0, cu[b], cu[b], cu[b + 1], masks.back(), false));
        tiles += masks.back().total_tiles();
        causal += o.heads * causal_tile_count(masks.back().n_blocks);
      }
      measured = static_cast<double>(tiles) / static_cast<double>(causal);
      ref_ms = e->time_ms(
          [&] {
            for (auto& c : calls) c();
          },
          o.repeats);
      serving_ms = e->time_ms(e->varlen(1, cu, masks), o.repeats);
      row["seqlens"] = o.seqlens;
      row["tie_band"] = o.tie_band;
      row["separate_ms"] = ref_ms;
      row["batched_ms"] = serving_ms;
      row["speedup"] = ref_ms / serving_ms;
    } else if (o.chunk > 0) {  // slot 0: one-shot; slot 1: the chunks
      const block_mask full = mask_of(o.n, o.heads, density, o.seed + 5);
      measured = full.density();
      ref_ms = e->time_ms(e->attention(0, 0, 0, o.n, full, false), o.repeats);
      std::vector<launch_fn> chunks;
      for (int64_t s = 0; s < o.n; s += o.chunk) {
        const int64_t end = std::min(o.n, s + o.chunk);
        chunks.push_back(e->attention(1, 0, s, end, prefix_of(full, end), false));
      }
      serving_ms = e->time_ms(
          [&] {
            for (auto& c : chunks) c();
          },
          o.repeats);
      row["n"] = o.n;
      row["chunk"] = o.chunk;
      row["one_shot_ms"] = ref_ms;
      row["chunked_ms"] = serving_ms;
      row["ratio"] = serving_ms / ref_ms;
    } else {  // slot 0: one call; slots 1, 2: the key halves; slot 3: merged
      const block_mask full = mask_of(o.n, o.heads, density, o.seed + 5);
      measured = full.density();
      const int32_t split = static_cast<int32_t>((o.n / 2 + 127) / 128);
      ref_ms = e->time_ms(e->attention(0, 0, 0, o.n, full, true), o.repeats);
      const launch_fn a = e->attention(1, 0, 0, o.n, keys_in(full, 0, split), true);
      const launch_fn b = e->attention(2, 0, 0, o.n, keys_in(full, split, INT32_MAX), true);
      const double halves_ms = e->time_ms(
          [&] {
            a();
            b();
          },
          o.repeats);
      const launch_fn m = e->merge(3, 1, 2);
      extra_ms = e->time_ms(m, o.repeats);
      serving_ms = halves_ms + extra_ms;
      row["n"] = o.n;
      row["split_token"] = static_cast<int64_t>(split) * 128;
      row["one_call_ms"] = ref_ms;
      row["halves_ms"] = halves_ms;
      row["merge_ms"] = extra_ms;
      row["merge_fraction"] = extra_ms / ref_ms;
    }
    const double rel_err = rel_diff(e->output(o.split ? 3 : 1), e->output(0));
    row["measured_density"] = measured;
    row["rel_err"] = rel_err;
    json.write(row);
    std::fprintf(report, "%8.3f %9.4f %12.3f %12.3f %9.3f %10.3f %10.2e\n", density, measured,
                 ref_ms, serving_ms, serving_ms / ref_ms, extra_ms, rel_err);
    std::fflush(report);
  }
}

}  // namespace sp::cli
