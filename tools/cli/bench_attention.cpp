// `shareprefill bench attention`: times dense (all causal tiles) and block-sparse attention with
// the same kernel on random inputs and random block-causal masks, checks the sparse output
// against the fp64 oracle on sampled rows, and measures the machine's sgemm rate in the same run
// so the attention rate can be read as a fraction of it (`efficiency`).
#include "bench_attention.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "command.h"
#include "cpu/tile_math.h"
#include "option_checks.h"
#include "shareprefill/attention.h"
#include "shareprefill/error.h"

namespace sp::cli {

void setup_bench_layer(CLI::App& bench);  // bench_layer.cpp
void setup_bench_prefill(CLI::App& bench);  // bench_prefill.cpp
void setup_bench_chunk_plan(CLI::App& bench);  // bench_chunk_plan.cpp

nlohmann::json attention_row(const char* device, const attention_bench_options& o,
                             double density, const block_mask& mask, double dense_ms,
                             double sparse_ms, double rel_err) {
  return {{"device", device},
          {"n", o.n},
          {"heads", o.heads},
          {"kv_heads", o.kv_heads},
          {"dim", o.dim},
          {"density", density},
          {"measured_density", mask.density()},
          {"dense_ms", dense_ms},
          {"sparse_ms", sparse_ms},
          {"speedup", dense_ms / sparse_ms},
          {"rel_err", rel_err}};
}

block_mask random_block_mask(int64_t n, int64_t block_size, int64_t heads, double density,
                             uint64_t seed) {
  check(density > 0.0 && density <= 1.0, "random_block_mask", "density must be in (0, 1], got ",
        density);
  const int64_t nb = (n + block_size - 1) / block_size;
  std::mt19937_64 rng(seed);
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(heads));
  for (auto& t : tiles) {
    for (int32_t r = 0; r < nb; ++r) {
      // Row r has r+1 causal tiles; keep the sink and the diagonal, then sample the rest so the
      // row holds about density*(r+1) tiles.
      const int64_t want = std::max<int64_t>(std::llround(density * (r + 1)), std::min(r + 1, 2));
      std::vector<int32_t> middle;
      for (int32_t c = 1; c < r; ++c) middle.push_back(c);
      std::shuffle(middle.begin(), middle.end(), rng);
      t.emplace_back(r, 0);
      t.emplace_back(r, r);
      for (int64_t i = 0; i < want - 2 && i < static_cast<int64_t>(middle.size()); ++i)
        t.emplace_back(r, middle[static_cast<size_t>(i)]);
    }
  }
  return block_mask::from_tiles(n, block_size, tiles);
}

#ifndef SP_HAVE_CUDA
void run_attention_bench_cuda(const attention_bench_options&) {
  fail("bench attention", "--device cuda: this build has no CUDA (configure with -DSP_CUDA=ON)");
}
#endif

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <class F>
double min_time_ms(int repeats, F&& f) {
  double best = 1e300;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, seconds_since(t0) * 1e3);
  }
  return best;
}

// fp32 matrix-multiply rate of this machine with `threads` BLAS threads (2048^3 sgemm).
double measure_sgemm_gflops(int threads) {
  const int64_t m = 2048;
  std::vector<float> a(static_cast<size_t>(m * m), 0.5f), b(a), c(a);
  const tile_math::blas_thread_scope blas_threads(threads);
  const double ms = min_time_ms(3, [&] {
    tile_math::gemm_abt(c.data(), m, a.data(), m, b.data(), m, m, m, m, 1.0f);
  });
  return 2.0 * m * m * m / (ms * 1e-3) / 1e9;
}

// Relative error (Frobenius norm over the sampled rows) of `out` vs the fp64 oracle, on query
// rows drawn from the last 1024 positions, where a sparse mask drops the most.
double sampled_rel_err(const attention_bench_options& o, const tensor_view& q,
                       const tensor_view& k, const tensor_view& v, const block_mask& mask,
                       const std::vector<float>& out) {
  std::mt19937_64 rng(o.seed + 17);
  std::vector<float> ref(static_cast<size_t>(o.heads * o.dim));
  double err2 = 0.0, ref2 = 0.0;
  for (int64_t s = 0; s < o.sample_rows; ++s) {
    const int64_t i =
        o.n - 1 - static_cast<int64_t>(rng() % static_cast<uint64_t>(std::min<int64_t>(o.n, 1024)));
    attention_reference_row(ref.data(), nullptr, q, k, v, i, &mask);
    for (int64_t e = 0; e < o.heads * o.dim; ++e) {
      const double r = ref[static_cast<size_t>(e)];
      const double d = out[static_cast<size_t>(i * o.heads * o.dim + e)] - r;
      err2 += d * d;
      ref2 += r * r;
    }
  }
  return std::sqrt(err2 / std::max(ref2, 1e-300));
}

void run_cpu(const attention_bench_options& o) {
  check(o.n > 0 && o.heads > 0 && o.kv_heads > 0 && o.dim > 0, "bench attention",
        "n, heads, kv-heads and dim must be positive");
  check(o.heads % o.kv_heads == 0, "bench attention", "heads ", o.heads,
        " not divisible by kv-heads ", o.kv_heads);
  thread_pool pool(o.threads);
  const double sgemm_gflops = measure_sgemm_gflops(pool.size());
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(o.n * o.heads * o.dim));
  std::vector<float> k(static_cast<size_t>(o.n * o.kv_heads * o.dim)), v(k.size());
  for (auto& x : q) x = normal(rng);
  for (auto& x : k) x = normal(rng);
  for (auto& x : v) x = normal(rng);
  const auto qv = tensor_view::contiguous(q.data(), dtype::f32, {o.n, o.heads, o.dim});
  const auto kv = tensor_view::contiguous(k.data(), dtype::f32, {o.n, o.kv_heads, o.dim});
  const auto vv = tensor_view::contiguous(v.data(), dtype::f32, {o.n, o.kv_heads, o.dim});
  std::vector<float> out(q.size());
  const auto ov = tensor_view::contiguous(out.data(), dtype::f32, {o.n, o.heads, o.dim});

  const block_mask dense = block_mask::dense_causal(o.n, 128, o.heads);
  const double dense_ms =
      min_time_ms(o.repeats, [&] { attention_block_sparse(ov, {}, nullptr, qv, kv, vv, dense, pool); });
  // Causal attention FLOPs actually needed: QK^T and PV over the lower triangle, 2*2*N^2/2*D*H.
  const double causal_flops = 2.0 * static_cast<double>(o.n) * o.n * o.dim * o.heads;
  const double gflops_dense = causal_flops / (dense_ms * 1e-3) / 1e9;
  json_lines json(o.json);
  FILE* const report = o.json.text_stream();
  std::fprintf(
      report, "bench attention (cpu): n=%lld heads=%lld kv_heads=%lld dim=%lld threads=%d\n",
      (long long)o.n, (long long)o.heads, (long long)o.kv_heads, (long long)o.dim, pool.size());
  std::fprintf(report, "sgemm %.1f GFLOP/s | dense %.1f ms, %.1f GFLOP/s, efficiency %.2f\n",
               sgemm_gflops, dense_ms, gflops_dense, gflops_dense / sgemm_gflops);
  std::fprintf(report, "%8s %10s %10s %10s %8s %10s\n", "density", "measured", "dense_ms",
               "sparse_ms", "speedup", "rel_err");
  for (double density : o.densities) {
    const block_mask mask = random_block_mask(o.n, 128, o.heads, density, o.seed + 1);
    const double sparse_ms =
        min_time_ms(o.repeats, [&] { attention_block_sparse(ov, {}, nullptr, qv, kv, vv, mask, pool); });
    const double rel_err = sampled_rel_err(o, qv, kv, vv, mask, out);
    nlohmann::json row = attention_row("cpu", o, density, mask, dense_ms, sparse_ms, rel_err);
    row.update({{"threads", pool.size()},
                {"gflops_dense", gflops_dense},
                {"sgemm_gflops", sgemm_gflops},
                {"efficiency", gflops_dense / sgemm_gflops},
                {"blas", tile_math::have_blas()}});
    json.write(row);
    std::fprintf(report, "%8.3f %10.3f %10.1f %10.1f %8.2f %10.2e\n", density, mask.density(),
                 dense_ms, sparse_ms, dense_ms / sparse_ms, rel_err);
    std::fflush(report);
  }
}

void setup_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  setup_bench_layer(*bench);  // bench_layer.cpp
  setup_bench_prefill(*bench);  // bench_prefill.cpp
  setup_bench_chunk_plan(*bench);  // bench_chunk_plan.cpp
  auto* sub = bench->add_subcommand("attention", "Dense vs block-sparse attention timing");
  auto o = std::make_shared<attention_bench_options>();
  auto device = std::make_shared<std::string>("cpu");
  sub->add_option("--device", *device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_option("--n", o->n, "sequence length")->capture_default_str();
  sub->add_option("--heads", o->heads, "query heads")->capture_default_str();
  sub->add_option("--kv-heads", o->kv_heads, "key/value heads")->capture_default_str();
  sub->add_option("--dim", o->dim, "head dimension")->capture_default_str();
  sub->add_option("--densities", o->densities, "tile densities in (0, 1] (comma separated)")
      ->delimiter(',')
      ->capture_default_str();
  add_threads_option(sub, o->threads)->capture_default_str();
  sub->add_option("--repeats", o->repeats, "timed repetitions (minimum reported)")
      ->capture_default_str();
  sub->add_option("--sample-rows", o->sample_rows, "rows checked against the fp64 oracle")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  add_seed_option(sub, o->seed, "random seed");
  sub->add_option("--seqlens", o->seqlens,
                  "a varlen batch of these lengths (comma separated) vs one call each")
      ->delimiter(',');
  sub->add_option("--tie-band", o->tie_band,
                  "--seqlens: order the batch's work items in bands of this many tiles, a "
                  "sequence's items together within a band (1 = longest first)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  sub->add_option("--chunk", o->chunk, "chunked prefill in chunks of C tokens vs one call");
  sub->add_flag("--split", o->split, "key halves merged by their LSE vs one call");
  sub->add_option("--kernel", o->kernel,
                  "--device cuda: auto (hopper on sm_90a, else portable), portable or hopper")
      ->check(CLI::IsMember({"auto", "portable", "hopper"}))
      ->capture_default_str();
  sub->add_option("--ctas", o->ctas, "--device cuda, hopper kernel: CTAs (0 = one per SM)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20))
      ->capture_default_str();
  add_json_option(sub, o->json, "one object per density");
  sub->callback([o, device] {
    check(o->repeats > 0, "bench attention", "--repeats must be positive, got ", o->repeats);
    if (!o->seqlens.empty() || o->chunk != 0 || o->split)
      run_attention_serving_bench(*o, *device == "cuda");
    else if (*device == "cuda")
      run_attention_bench_cuda(*o);
    else
      run_cpu(*o);
  });
}

command_registration reg(setup_bench);

}  // namespace
}  // namespace sp::cli
