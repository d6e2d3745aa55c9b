// `shareprefill bench chunk-plan` (issue 16 item 3): planning a chunked prefill against planning
// the whole prompt, on the synthetic structured generator, CPU. For each mode, every layer of
// the prompt is planned and run three times:
//   one-shot: planner::plan on the N tokens, attention_block_sparse, publish (DESIGN.md 2);
//   chunked:  per chunk [s, e), per layer: planner::plan on the keys [0, e) with the chunk's
//             queries in place (the statistics come from the chunk's own last block; rows before
//             the chunk are zeros the kernel never reads), attention of the chunk's queries with
//             query_offset s, publish of the chunk's rows of the pivots' block attention. The
//             sharing state is per chunk: pivots are chosen and their patterns shared within the
//             chunk, across its layers (docs/PLANNER.md, "Chunked prefill");
//   carried:  the same chunks with one plan_state for the prompt, moved to each next chunk by
//             planner::begin_chunk: pivots keep their identity, and layers before a pivot's
//             layer share its pattern extended from the previous chunk.
// Reported per mode: relative error of the attention output against dense (Frobenius over all
// layers and rows) and the tile density (visited / causal tiles of the rows each computes).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "command.h"
#include "json_output.h"
#include "option_checks.h"
#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "shareprefill/planner.h"
#include "shareprefill/synthetic.h"

namespace sp::cli {

namespace {

struct chunk_plan_options {
  synthetic_params synthetic;
  int64_t chunk = 1024;
  std::vector<std::string> modes{"vslash", "flexprefill", "shareprefill"};
  double gamma = 0.95;
  int threads = 0;
  json_option json;
};

// Tiles of rows [r0, nb) of a mask, and their causal count.
void count_rows(const block_mask& m, int64_t r0, double& tiles, double& causal) {
  for (int64_t h = 0; h < m.heads; ++h)
    for (int64_t r = r0; r < m.n_blocks; ++r) {
      tiles += static_cast<double>(m.row_end(h, r) - m.row_begin(h, r));
      causal += static_cast<double>(r + 1);
    }
}

// Error accumulator of outputs against dense.
struct error_sum {
  double d2 = 0.0, r2 = 0.0;
  void add(const float* x, const float* ref, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(x[i]) - ref[i];
      d2 += d * d;
      r2 += static_cast<double>(ref[i]) * ref[i];
    }
  }
  double rel() const { return std::sqrt(d2 / std::max(r2, 1e-300)); }
};

// Plans and runs one (chunk of a) layer: queries [s, e) of `x` over keys [0, e). Writes the
// chunk's output rows into out ([e - s, H, D]); returns the plan's mask.
block_mask plan_and_run(const planner& pl, const synthetic_params& sp_, const synthetic_layer& x,
                        int64_t layer, int64_t s, int64_t e, plan_state& state, thread_pool& pool,
                        std::vector<float>& out) {
  const int64_t h = sp_.heads, hkv = sp_.kv_heads, d = sp_.dim, rows = e - s;
  std::vector<float> q_pad(static_cast<size_t>(e * h * d), 0.0f);
  std::copy(x.q.begin() + s * h * d, x.q.begin() + e * h * d, q_pad.begin() + s * h * d);
  const tensor_view qp = tensor_view::contiguous(q_pad.data(), dtype::f32, {e, h, d});
  const tensor_view kv = tensor_view::contiguous(x.k.data(), dtype::f32, {e, hkv, d});
  const tensor_view vv = tensor_view::contiguous(x.v.data(), dtype::f32, {e, hkv, d});
  const layer_plan p = pl.plan(layer, qp, kv, state, pool);
  check(p.deferred_heads.empty(), "bench chunk-plan", "share_within_layer is not supported here");
  const int64_t nb = p.mask.n_blocks, np = static_cast<int64_t>(p.pivot_heads.size());
  std::vector<float> a(static_cast<size_t>(np * nb * nb), 0.0f);  // rows before s stay 0
  block_attention_output ba{p.pivot_heads, a.data()};
  out.assign(static_cast<size_t>(rows * h * d), 0.0f);
  attention_block_sparse(tensor_view::contiguous(out.data(), dtype::f32, {rows, h, d}), {}, &ba,
                         tensor_view::contiguous(x.q.data() + s * h * d, dtype::f32, {rows, h, d}),
                         kv, vv, p.mask, pool, s);
  pl.publish(layer, p.pivot_heads, a.data(), state);
  return p.mask;
}

void run(const chunk_plan_options& o) {
  const char* fn = "bench chunk-plan";
  o.synthetic.validate();
  check(o.chunk > 0 && o.chunk % 128 == 0, fn, "--chunk ", o.chunk,
        " (a positive multiple of the block size 128)");
  const synthetic_params& s = o.synthetic;
  const int64_t n = s.n_tokens, hd = s.heads * s.dim;
  thread_pool pool(o.threads);
  const cluster_map clusters = synthetic_cluster_map(s);
  std::vector<synthetic_layer> layers;
  std::vector<std::vector<float>> dense(static_cast<size_t>(s.layers));
  for (int64_t l = 0; l < s.layers; ++l) {
    layers.push_back(synthetic_generate_layer(s, l));
    const synthetic_layer& x = layers.back();
    dense[l].resize(static_cast<size_t>(n * hd));
    attention_block_sparse(
        tensor_view::contiguous(dense[l].data(), dtype::f32, {n, s.heads, s.dim}), {}, nullptr,
        tensor_view::contiguous(x.q.data(), dtype::f32, {n, s.heads, s.dim}),
        tensor_view::contiguous(x.k.data(), dtype::f32, {n, s.kv_heads, s.dim}),
        tensor_view::contiguous(x.v.data(), dtype::f32, {n, s.kv_heads, s.dim}),
        block_mask::dense_causal(n, 128, s.heads), pool);
  }
  json_lines json(o.json);
  FILE* const report = o.json.text_stream();
  std::fprintf(report,
               "bench chunk-plan (cpu, synthetic): n=%lld layers=%lld heads=%lld/%lld dim=%lld "
               "chunk=%lld\n%-13s %12s %12s %12s %12s %12s %12s\n",
               (long long)n, (long long)s.layers, (long long)s.heads, (long long)s.kv_heads,
               (long long)s.dim, (long long)o.chunk, "mode", "err_oneshot", "err_chunked",
               "err_carried", "dens_oneshot", "dens_chunked", "dens_carried");
  for (const std::string& mode_name : o.modes) {
    planner_params params;
    params.mode = plan_mode_from_name(mode_name);
    params.gamma = o.gamma;
    const planner pl(params, s.layers, s.heads, &clusters);
    error_sum e_one, e_chunk, e_carry;
    double t_one = 0, c_one = 0, t_chunk = 0, c_chunk = 0, t_carry = 0, c_carry = 0;
    std::vector<float> out;
    plan_state state;
    for (int64_t l = 0; l < s.layers; ++l) {
      const block_mask m = plan_and_run(pl, s, layers[l], l, 0, n, state, pool, out);
      e_one.add(out.data(), dense[l].data(), n * hd);
      count_rows(m, 0, t_one, c_one);
    }
    for (int64_t c0 = 0; c0 < n; c0 += o.chunk) {
      const int64_t c1 = std::min(n, c0 + o.chunk);
      plan_state chunk_state;  // the sharing state of this chunk
      for (int64_t l = 0; l < s.layers; ++l) {
        const block_mask m = plan_and_run(pl, s, layers[l], l, c0, c1, chunk_state, pool, out);
        e_chunk.add(out.data(), dense[l].data() + c0 * hd, (c1 - c0) * hd);
        count_rows(m, c0 / 128, t_chunk, c_chunk);
      }
    }
    plan_state carried;  // the prompt's sharing state, carried from chunk to chunk
    for (int64_t c0 = 0; c0 < n; c0 += o.chunk) {
      const int64_t c1 = std::min(n, c0 + o.chunk);
      pl.begin_chunk(carried, c1);
      for (int64_t l = 0; l < s.layers; ++l) {
        const block_mask m = plan_and_run(pl, s, layers[l], l, c0, c1, carried, pool, out);
        e_carry.add(out.data(), dense[l].data() + c0 * hd, (c1 - c0) * hd);
        count_rows(m, c0 / 128, t_carry, c_carry);
      }
    }
    const nlohmann::json row = {{"mode", mode_name},
                                {"n", n},
                                {"chunk", o.chunk},
                                {"layers", s.layers},
                                {"heads", s.heads},
                                {"kv_heads", s.kv_heads},
                                {"dim", s.dim},
                                {"gamma", o.gamma},
                                {"seed", s.seed},
                                {"rel_err_one_shot", e_one.rel()},
                                {"rel_err_chunked", e_chunk.rel()},
                                {"density_one_shot", t_one / c_one},
                                {"rel_err_carried", e_carry.rel()},
                                {"density_chunked", t_chunk / c_chunk},
                                {"density_carried", t_carry / c_carry}};
    json.write(row);
    std::fprintf(report, "%-13s %12.3e %12.3e %12.3e %12.4f %12.4f %12.4f\n", mode_name.c_str(),
                 e_one.rel(), e_chunk.rel(), e_carry.rel(), t_one / c_one, t_chunk / c_chunk,
                 t_carry / c_carry);
    std::fflush(report);
  }
}

}  // namespace

void setup_bench_chunk_plan(CLI::App& bench) {
  auto* sub = bench.add_subcommand(
      "chunk-plan", "Planning a chunked prefill vs the whole prompt (synthetic inputs, CPU)");
  auto o = std::make_shared<chunk_plan_options>();
  sub->add_option("--n", o->synthetic.n_tokens, "prompt tokens")->capture_default_str();
  sub->add_option("--layers", o->synthetic.layers, "layers")->capture_default_str();
  sub->add_option("--heads", o->synthetic.heads, "query heads")->capture_default_str();
  sub->add_option("--kv-heads", o->synthetic.kv_heads, "key/value heads")->capture_default_str();
  sub->add_option("--dim", o->synthetic.dim, "head dimension")->capture_default_str();
  sub->add_option("--chunk", o->chunk, "chunk tokens (a multiple of 128)")->capture_default_str();
  sub->add_option("--modes", o->modes, "planner modes (comma separated)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--gamma", o->gamma, "pattern threshold")->capture_default_str();
  add_threads_option(sub, o->threads)->capture_default_str();
  add_seed_option(sub, o->synthetic.seed, "synthetic generator seed");
  add_json_option(sub, o->json, "one object per mode");
  sub->callback([o] { run(*o); });
}

}  // namespace sp::cli
