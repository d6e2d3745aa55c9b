// `shareprefill plan`: runs the planner and the CPU block-sparse attention layer by layer on
// synthetic inputs (--synthetic) or captured activations (--inputs FILE.safetensors with
// layer{L}.q/k/v of shape [N, heads, dim]), and reports per layer and in total the tile density,
// the head kinds, planning and attention time, and the output error against dense attention
// computed by the same kernel with the full causal mask. --json [FILE] writes one object per layer
// and a final {"total": {...}}.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <limits>
#include <optional>
#include <utility>

#include "attention_options.h"
#include "command.h"
#include "json_output.h"
#include "option_checks.h"
#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "shareprefill/planner.h"
#include "shareprefill/prefill_attention.h"
#include "shareprefill/safetensors.h"
#include "shareprefill/synthetic.h"

namespace {

struct plan_options {
  bool synthetic = false;
  std::string inputs, clusters, mode = "shareprefill";
  int64_t n = 4096, layers = 4, heads = 8, kv_heads = 2, dim = 128;
  uint64_t seed = 1;
  int threads = 0;
  sp::cli::json_option json;
  sp::planner_params params;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Inputs of one layer as views; owns the synthetic buffers.
struct layer_inputs {
  sp::synthetic_layer synthetic;
  sp::tensor_view q, k, v;
};

struct input_source {
  std::optional<sp::synthetic_params> synthetic;
  std::optional<sp::safetensors_file> file;
  int64_t n = 0, layers = 0, heads = 0, kv_heads = 0, dim = 0;

  layer_inputs layer(int64_t l) const {
    layer_inputs in;
    if (synthetic) {
      in.synthetic = sp::synthetic_generate_layer(*synthetic, l);
      in.q = sp::tensor_view::contiguous(in.synthetic.q.data(), sp::dtype::f32, {n, heads, dim});
      in.k = sp::tensor_view::contiguous(in.synthetic.k.data(), sp::dtype::f32, {n, kv_heads, dim});
      in.v = sp::tensor_view::contiguous(in.synthetic.v.data(), sp::dtype::f32, {n, kv_heads, dim});
    } else {
      const std::string p = "layer" + std::to_string(l) + ".";
      in.q = file->get(p + "q");
      in.k = file->get(p + "k");
      in.v = file->get(p + "v");
      const std::pair<const char*, const sp::tensor_view*> views[] = {
          {"q", &in.q}, {"k", &in.k}, {"v", &in.v}};
      for (const auto& [name, view] : views) {
        const int64_t want_heads = name[0] == 'q' ? heads : kv_heads;
        sp::check(view->rank == 3 && view->shape[0] == n && view->shape[1] == want_heads &&
                      view->shape[2] == dim,
                  "shareprefill plan", file->path, ": tensor ", p, name, " must be [", n, ", ",
                  want_heads, ", ", dim, "] like layer0");
      }
    }
    return in;
  }
};

input_source open_inputs(const plan_options& o) {
  const char* fn = "shareprefill plan";
  sp::check(o.synthetic != !o.inputs.empty(), fn, "give exactly one of --synthetic and --inputs");
  input_source src;
  if (o.synthetic) {
    sp::synthetic_params sp_params;
    sp_params.n_tokens = o.n;
    sp_params.layers = o.layers;
    sp_params.heads = o.heads;
    sp_params.kv_heads = o.kv_heads;
    sp_params.dim = o.dim;
    sp_params.seed = o.seed;
    sp_params.validate();
    src.synthetic = sp_params;
    src.n = o.n, src.layers = o.layers, src.heads = o.heads, src.kv_heads = o.kv_heads;
    src.dim = o.dim;
    return src;
  }
  src.file = sp::safetensors_load(o.inputs);
  const sp::tensor_view& q0 = src.file->get("layer0.q");
  const sp::tensor_view& k0 = src.file->get("layer0.k");
  sp::check(q0.rank == 3 && k0.rank == 3, fn, o.inputs,
            ": layer0.q and layer0.k must be [N, heads, dim]");
  src.n = q0.shape[0], src.heads = q0.shape[1], src.dim = q0.shape[2];
  src.kv_heads = k0.shape[1];
  sp::check(src.kv_heads > 0 && src.heads % src.kv_heads == 0, fn, o.inputs, ": ", src.heads,
            " query heads not divisible by ", src.kv_heads, " kv heads");
  while (src.file->has("layer" + std::to_string(src.layers) + ".q")) ++src.layers;
  return src;
}

struct layer_result {
  int64_t tiles = 0, causal_tiles = 0;
  double plan_ms = 0, attention_ms = 0, dense_ms = 0, err2 = 0, ref2 = 0;
  int64_t kinds[sp::head_kind_count] = {};
};

nlohmann::json result_json(const layer_result& r) {
  nlohmann::json kinds;
  for (int k = 0; k < sp::head_kind_count; ++k) {
    const auto kind = static_cast<sp::head_kind>(k);
    if (kind != sp::head_kind::deferred) kinds[sp::head_kind_name(kind)] = r.kinds[k];
  }
  return {{"density", static_cast<double>(r.tiles) / static_cast<double>(r.causal_tiles)},
          {"plan_ms", r.plan_ms},
          {"attention_ms", r.attention_ms},
          {"dense_attention_ms", r.dense_ms},
          {"rel_err", r.ref2 > 0   ? std::sqrt(r.err2 / r.ref2)
                      : r.err2 > 0 ? std::numeric_limits<double>::infinity()
                                   : 0.0},
          {"kinds", kinds}};
}

void print_row(FILE* out, const std::string& label, const nlohmann::json& j) {
  const auto& k = j["kinds"];
  std::fprintf(out,
               "%-6s %8.4f %10.1f %12.1f %10.1f %10.2e   dense %d pivot %d shared %d qa %d vs %d\n",
               label.c_str(), j["density"].get<double>(), j["plan_ms"].get<double>(),
               j["attention_ms"].get<double>(), j["dense_attention_ms"].get<double>(),
               j["rel_err"].get<double>(), k["dense"].get<int>(), k["pivot"].get<int>(),
               k["shared"].get<int>(), k["query_aware"].get<int>(), k["vertical_slash"].get<int>());
}

void run_plan(plan_options o) {
  o.params.mode = sp::plan_mode_from_name(o.mode);
  o.params.validate();
  const input_source src = open_inputs(o);

  std::optional<sp::cluster_map> map;
  std::string cluster_source = "none";
  if (!o.clusters.empty()) {
    map = sp::cluster_map_load(o.clusters);
    cluster_source = o.clusters;
  } else if (src.synthetic && o.params.mode == sp::plan_mode::shareprefill) {
    map = sp::synthetic_cluster_map(*src.synthetic);
    cluster_source = "synthetic head groups (all shared)";
  }
  const sp::planner planner(o.params, src.layers, src.heads, map ? &*map : nullptr);
  sp::thread_pool pool(o.threads);

  nlohmann::json setup = {{"params", o.params.to_json()},
                          {"inputs", src.synthetic ? "synthetic" : o.inputs},
                          {"seed", o.seed},
                          {"n", src.n},
                          {"layers", src.layers},
                          {"heads", src.heads},
                          {"kv_heads", src.kv_heads},
                          {"dim", src.dim},
                          {"threads", pool.size()},
                          {"clusters", cluster_source}};
  sp::cli::json_lines json(o.json);
  FILE* const report = o.json.text_stream();
  std::fprintf(report, "shareprefill plan: %s\n", setup.dump().c_str());
  std::fprintf(report, "%-6s %8s %10s %12s %10s %10s   kinds\n", "layer", "density", "plan_ms",
               "attention_ms", "dense_ms", "rel_err");

  const int64_t n = src.n;
  const std::unique_ptr<sp::prefill_attention> attention = sp::make_planned_attention(planner);
  attention->begin_prompt(n);
  layer_result total;
  std::vector<float> out(static_cast<size_t>(n * src.heads * src.dim)), ref(out.size());
  const sp::block_mask dense = sp::block_mask::dense_causal(n, o.params.block_size, src.heads);
  for (int64_t l = 0; l < src.layers; ++l) {
    const layer_inputs in = src.layer(l);
    const sp::layer_attention_report rep = attention->attend(
        l, sp::tensor_view::contiguous(out.data(), sp::dtype::f32, {n, src.heads, src.dim}), in.q,
        in.k, in.v, pool);
    layer_result r;
    r.tiles = rep.tiles;
    r.causal_tiles = rep.causal_tiles;
    r.plan_ms = rep.plan_ms;
    r.attention_ms = rep.attention_ms;
    for (int k = 0; k < sp::head_kind_count; ++k) r.kinds[k] = rep.kind_counts[static_cast<size_t>(k)];

    const auto t0 = std::chrono::steady_clock::now();
    sp::attention_block_sparse(
        sp::tensor_view::contiguous(ref.data(), sp::dtype::f32, {n, src.heads, src.dim}), {},
        nullptr, in.q, in.k, in.v, dense, pool);
    r.dense_ms = ms_since(t0);
    // Finite inputs can still overflow fp32 scores (|q| |k| near 1e38): a NaN output must not
    // be reported as rel_err 0.
    using named_view = std::pair<const char*, std::vector<float>*>;
    for (const auto& [name, values] : {named_view{"planned", &out}, named_view{"dense", &ref}}) {
      const auto view =
          sp::tensor_view::contiguous(values->data(), sp::dtype::f32, {n, src.heads, src.dim});
      const int64_t bad = sp::find_non_finite(view);
      sp::check(bad < 0, "shareprefill plan", "layer ", l, ": the ", name,
                " attention output is not finite at token ", bad / (src.heads * src.dim),
                " (the scores overflow fp32: q and k values too large)");
    }
    for (size_t i = 0; i < out.size(); ++i) {
      const double d = static_cast<double>(out[i]) - ref[i];
      r.err2 += d * d;
      r.ref2 += static_cast<double>(ref[i]) * ref[i];
    }

    total.tiles += r.tiles;
    total.causal_tiles += r.causal_tiles;
    total.plan_ms += r.plan_ms;
    total.attention_ms += r.attention_ms;
    total.dense_ms += r.dense_ms;
    total.err2 += r.err2;
    total.ref2 += r.ref2;
    for (int k = 0; k < sp::head_kind_count; ++k) total.kinds[k] += r.kinds[k];

    nlohmann::json row = result_json(r);
    print_row(report, std::to_string(l), row);
    std::fflush(report);
    row["layer"] = l;
    json.write(row);
  }
  nlohmann::json t = result_json(total);
  print_row(report, "total", t);
  t.update(setup);
  json.write({{"total", t}});
}

void setup_plan(CLI::App& app) {
  auto o = std::make_shared<plan_options>();
  auto* sub = app.add_subcommand(
      "plan", "Plan sparse attention layer by layer and measure density, time and error");
  auto* synthetic =
      sub->add_flag("--synthetic", o->synthetic, "Generate structured synthetic Q/K/V");
  auto* inputs =
      sub->add_option("--inputs", o->inputs, "safetensors file with layer{L}.q/k/v [N, heads, dim]")
          ->excludes(synthetic);
  // The synthetic generator's options mean nothing with --inputs: refused, not ignored.
  for (CLI::Option* synthetic_only :
       {sub->add_option("--n", o->n, "Prompt length (synthetic)"),
        sub->add_option("--layers", o->layers, "Layers (synthetic)"),
        sub->add_option("--heads", o->heads, "Query heads (synthetic)"),
        sub->add_option("--kv-heads", o->kv_heads, "KV heads (synthetic)"),
        sub->add_option("--dim", o->dim, "Head dimension (synthetic)"),
        sp::cli::add_seed_option(sub, o->seed, "Seed of the synthetic generator")})
    synthetic_only->excludes(inputs);
  sub->add_option("--mode", o->mode, "dense | vslash | flexprefill | shareprefill");
  sub->add_option("--clusters", o->clusters, "Cluster map JSON (default for --synthetic: groups)");
  sp::cli::add_json_option(sub, o->json, "one object per layer, then {\"total\": ...}");
  sp::cli::add_planner_options(sub, o->params);
  sp::cli::add_threads_option(sub, o->threads);
  sub->callback([o, sub] {
    if (o->mode == "dense") sp::cli::warn_ignored_in_dense(sub, "with --mode dense");
    run_plan(*o);
  });
}

sp::cli::command_registration reg(setup_plan);

}  // namespace
