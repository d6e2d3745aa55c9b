// `shareprefill bench attention --device cuda`: times the CUDA block-sparse attention with CUDA
// events (after warm-up; median of --repeats) on the full causal mask and on random block masks
// of the requested densities, plus the full mask with every head a pivot (block attention A
// fused in) and, at D = 64 on the Hopper kernel, the full mask on the plan's 128-row items
// instead of the causal walk (dense_plan_items_ms). Reports TFLOP/s both as causal-dense FLOPs
// 2*N^2*D*H / time (tflops_effective) and as the FLOPs of the tiles actually computed
// (tflops_computed), a sampled error vs the fp64 oracle, and which kernel ran (--kernel, --ctas).
// Inputs are random bf16, generated for 2048 tokens and tiled over N (fast to build).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "bench_attention.h"
#include "shareprefill/attention.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/error.h"

namespace sp::cli {

#ifdef SP_HAVE_CUDA

namespace {

// [n, heads, dim] bf16 bits (tiled_random_values).
std::vector<uint16_t> tiled_random_bf16(int64_t n, int64_t heads, int64_t dim, uint64_t seed) {
  return tiled_random_values<uint16_t>(n, heads, dim, seed, fp32_to_bf16);
}

// --kernel and --ctas as the kernel's options.
cuda_attention_options cuda_options_of(const attention_bench_options& o) {
  cuda_attention_options options;
  options.kernel = o.kernel == "portable" ? cuda_kernel::portable
                   : o.kernel == "hopper" ? cuda_kernel::hopper
                                          : cuda_kernel::automatic;
  options.ctas = o.ctas;
  return options;
}

device_buffer upload(const std::vector<uint16_t>& v) {
  device_buffer b(v.size() * 2);
  b.upload(v.data(), b.size());
  return b;
}

}  // namespace

void run_attention_bench_cuda(const attention_bench_options& o) {
  const char* fn = "bench attention";
  check(cuda_device_available(), fn, "--device cuda: no usable CUDA device");
  check(o.n > 0 && o.heads > 0 && o.kv_heads > 0 && o.heads % o.kv_heads == 0, fn, "n=", o.n,
        " heads=", o.heads, " kv_heads=", o.kv_heads);
  check(o.dim == 64 || o.dim == 128, fn, "--dim ", o.dim, " (the CUDA kernel has 64 and 128)");
  const auto q = tiled_random_bf16(o.n, o.heads, o.dim, o.seed);
  const auto k = tiled_random_bf16(o.n, o.kv_heads, o.dim, o.seed + 1);
  const auto v = tiled_random_bf16(o.n, o.kv_heads, o.dim, o.seed + 2);
  device_buffer dq = upload(q), dk = upload(k), dv = upload(v);
  device_buffer dout(q.size() * 2), dlse(static_cast<size_t>(o.heads * o.n) * 4);
  auto device_view = [&](void* data, std::initializer_list<int64_t> shape, dtype type) {
    tensor_view t = tensor_view::contiguous(data, type, shape);
    t.on_device = true;
    return t;
  };
  const tensor_view dqv = device_view(dq.data(), {o.n, o.heads, o.dim}, dtype::bf16);
  const tensor_view dkv = device_view(dk.data(), {o.n, o.kv_heads, o.dim}, dtype::bf16);
  const tensor_view dvv = device_view(dv.data(), {o.n, o.kv_heads, o.dim}, dtype::bf16);
  const tensor_view doutv = device_view(dout.data(), {o.n, o.heads, o.dim}, dtype::bf16);
  const tensor_view dlsev = device_view(dlse.data(), {o.heads, o.n}, dtype::f32);
  const int warmup = 2;
  const cuda_attention_options options = cuda_options_of(o);
  const std::string path = cuda_kernel_name(cuda_attention_kernel(options));

  auto time_with = [&](const device_layer_plan& plan, const tensor_view& block_attention,
                       const cuda_attention_options& with) {
    return cuda_time_ms(
        [&] {
          cuda_attention_block_sparse(doutv, dlsev, block_attention, dqv, dkv, dvv, plan.plan(),
                                      plan.scratch(), with);
        },
        warmup, o.repeats);
  };
  auto time_mask = [&](const device_layer_plan& plan, const tensor_view& block_attention) {
    return time_with(plan, block_attention, options);
  };
  // The full mask at D = 64 takes the Hopper kernel's causal walk; timed on the plan's items too.
  const bool causal_walk = cuda_attention_walks_causal(options, o.dim);
  const double causal_flops = 2.0 * static_cast<double>(o.n) * o.n * o.dim * o.heads;
  const double tile_flops = 4.0 * 128 * 128 * o.dim;  // QK^T and PV of one 128x128 tile
  const block_mask dense = block_mask::dense_causal(o.n, 128, o.heads);
  double dense_ms = 0.0, pivot_ms = 0.0, plan_items_ms = 0.0;
  {
    const device_layer_plan dmask(dense);
    dense_ms = time_mask(dmask, {});
    if (causal_walk) {
      cuda_attention_options plan_items = options;
      plan_items.causal_kernel = false;
      plan_items_ms = time_with(dmask, {}, plan_items);
    }
    std::vector<int32_t> all(static_cast<size_t>(o.heads));
    for (int32_t h = 0; h < o.heads; ++h) all[static_cast<size_t>(h)] = h;
    const device_layer_plan pivots(dense, all);
    device_buffer a(static_cast<size_t>(o.heads * dense.n_blocks * dense.n_blocks) * 4);
    pivot_ms = time_mask(pivots, device_view(a.data(), {o.heads, dense.n_blocks, dense.n_blocks},
                                             dtype::f32));
  }

  const auto tensor_of = [&](const std::vector<uint16_t>& x, int64_t heads) {
    return tensor_view::contiguous(x.data(), dtype::bf16, {o.n, heads, o.dim});
  };
  const tensor_view qv = tensor_of(q, o.heads), kv = tensor_of(k, o.kv_heads), vv = tensor_of(v, o.kv_heads);
  json_lines json(o.json);
  FILE* const report = o.json.text_stream();
  std::fprintf(
      report, "bench attention (cuda, %s kernel): n=%lld heads=%lld kv_heads=%lld dim=%lld\n",
      path.c_str(), (long long)o.n, (long long)o.heads, (long long)o.kv_heads, (long long)o.dim);
  std::fprintf(report,
               "full mask %.3f ms (%.1f TFLOP/s) | all heads pivots with A %.3f ms (x%.3f)\n",
               dense_ms, causal_flops / dense_ms * 1e-9, pivot_ms, pivot_ms / dense_ms);
  if (causal_walk)
    std::fprintf(report, "full mask on the plan's items (no causal walk) %.3f ms (x%.3f)\n",
                 plan_items_ms, plan_items_ms / dense_ms);
  std::fprintf(report, "%8s %9s %10s %10s %8s %9s %9s %10s\n", "density", "measured", "dense_ms",
               "sparse_ms", "speedup", "tf_eff", "tf_comp", "rel_err");
  std::vector<uint16_t> out(q.size());
  std::vector<float> ref(static_cast<size_t>(o.heads * o.dim));
  for (double density : o.densities) {
    const block_mask mask = density >= 1.0 ? dense : random_block_mask(o.n, 128, o.heads, density, o.seed + 1);
    const device_layer_plan dmask(mask);
    const double sparse_ms = time_mask(dmask, {});
    dout.download(out.data(), out.size() * 2);
    // Sampled error of the last launch: rows near the end (the longest rows).
    std::mt19937_64 rng(o.seed + 17);
    double err2 = 0.0, ref2 = 0.0;
    for (int64_t s = 0; s < o.sample_rows; ++s) {
      const int64_t i = o.n - 1 - static_cast<int64_t>(rng() % static_cast<uint64_t>(std::min<int64_t>(o.n, 1024)));
      attention_reference_row(ref.data(), nullptr, qv, kv, vv, i, &mask);
      for (int64_t e = 0; e < o.heads * o.dim; ++e) {
        const double r = ref[static_cast<size_t>(e)];
        const double d = bf16_to_fp32(out[static_cast<size_t>(i * o.heads * o.dim + e)]) - r;
        err2 += d * d;
        ref2 += r * r;
      }
    }
    const double rel_err = std::sqrt(err2 / std::max(ref2, 1e-300));
    const double tf_eff = causal_flops / sparse_ms * 1e-9;
    const double tf_comp = tile_flops * static_cast<double>(mask.total_tiles()) / sparse_ms * 1e-9;
    nlohmann::json row = attention_row("cuda", o, density, mask, dense_ms, sparse_ms, rel_err);
    row.update({{"path", path},
                {"gflops_dense", causal_flops / dense_ms * 1e-6},
                {"tflops_effective", tf_eff},
                {"tflops_computed", tf_comp},
                {"pivot_all_heads_ms", pivot_ms},
                {"pivot_overhead", pivot_ms / dense_ms}});
    if (causal_walk) row["dense_plan_items_ms"] = plan_items_ms;
    json.write(row);
    std::fprintf(report, "%8.3f %9.4f %10.3f %10.3f %8.2f %9.1f %9.1f %10.2e\n", density,
                 mask.density(), dense_ms, sparse_ms, dense_ms / sparse_ms, tf_eff, tf_comp,
                 rel_err);
    std::fflush(report);
  }
}

#endif

}  // namespace sp::cli
