// `shareprefill eval attn`: one prefill of a text window whose every layer runs dense attention
// (passed on, so all modes see the dense model's activations) and each mode x gamma planner on the
// same q, k, v; per layer and head: relative output error vs dense, recall of the dense attention
// mass, tile density and head kind. Summaries per candidate and per layer, the error of the
// baselines interpolated at shareprefill's density, and the figures.
// --device cuda probes on the GPU (cuda_attention_probe: the CUDA forward prefills densely, each
// layer's q, k, v go to our kernel densely and to every candidate's device planner); the rows,
// summaries and figures below are the same code for both devices.
#include <algorithm>
#include <array>
#include <cstdio>
#include <map>

#include "cuda_model.h"
#include "device_option.h"
#include "eval_common.h"
#include "option_checks.h"
#include "prefill_report.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/plot.h"

namespace sp::cli {
namespace {

struct attn_options {
  eval_common_options common;
  std::string text;
  int64_t length = 2048;
  int64_t offset = 0;
  std::string device;
};

struct candidate_summary {
  double err = 0, err_half = 0, recall = 0, density = 0;
  std::array<int64_t, head_kind_count> kinds{};
  std::vector<double> layer_err, layer_density, layer_recall;
};

std::string g_str(double g) {
  char b[32];
  std::snprintf(b, sizeof(b), "%g", g);
  return b;
}

void run_attn(const attn_options& o) {
  const char* fn = "eval attn";
  const std::string device = resolve_device(o.device);
  const int64_t bs = o.common.attention.params.block_size;
  check(o.length % bs == 0, fn, "--length ", o.length, " is not a multiple of the block size ", bs);
  check(o.offset >= 0, fn, "--offset must be >= 0, got ", o.offset);
  std::vector<std::string> modes = eval_parse_modes(o.common.modes);
  modes.erase(std::remove(modes.begin(), modes.end(), "dense"), modes.end());
  check(!modes.empty(), fn, "--modes needs at least one sparse mode (dense is the reference)");
  const std::vector<double> gammas = eval_gammas(o.common);
  thread_pool pool(o.common.threads);
  loaded_model m = load_model(o.common.model, pool);
  const llama_config& c = m.weights.config;
  check_rope_length(o.common.rope, c, o.length, fn);
  const std::vector<int32_t> ids = m.tok->encode(read_text_file(o.text), false);
  check(static_cast<int64_t>(ids.size()) >= o.offset + o.length, fn, "'", o.text, "' has ",
        ids.size(), " tokens, fewer than --offset ", o.offset, " + --length ", o.length);
  const std::vector<int32_t> tokens(ids.begin() + o.offset, ids.begin() + o.offset + o.length);

  const bool gpu = device == "cuda";
  std::vector<attention_setup> setups;
  std::vector<std::unique_ptr<device_planner>> device_planners;
  std::vector<probe_candidate> cands;
  for (const std::string& mode : modes)
    for (double g : gammas) {
      attention_options ao = o.common.attention;
      ao.params.gamma = g;
      setups.push_back(make_attention(ao, mode, c, m.path, o.length));
      if (gpu) device_planners.push_back(make_device_planner(setups.back(), c));
      cands.push_back({mode, g, setups.back().plan.get(),
                       gpu ? device_planners.back().get() : nullptr});
    }
  prefill_options po;
  po.rope = o.common.rope;
  po.on_layer = layer_progress("[probe " + std::to_string(cands.size()) + " candidates]");
  std::vector<probe_row> rows;
  double prefill_ms = 0.0;
  if (gpu) {
    const cuda_llama_weights gw = load_cuda_weights(m.path);
    cuda_llama_session session(gw, o.length);
    cuda_attention_probe probe(cands, c.n_layers);
    po.on_attention_inputs = probe.hook();
    prefill_ms = session.prefill(tokens, po).total_ms;  // dense: the planner is null
    rows = probe.rows();
  } else {
    attention_probe probe(cands, bs);
    llama_session session(m.weights, pool, o.length);
    po.attention = &probe;
    prefill_ms = session.prefill(tokens, po).total_ms;
    rows = probe.rows();
  }
  std::fprintf(stderr, "probe prefill (%s): %.1f s\n", device.c_str(), prefill_ms * 1e-3);

  json_lines out(o.common.json);
  FILE* const report = o.common.json.text_stream();
  const int64_t layers = c.n_layers, heads = c.n_heads;
  std::vector<candidate_summary> sum(cands.size());
  for (auto& s : sum) {
    s.layer_err.assign(static_cast<size_t>(layers), 0.0);
    s.layer_density.assign(static_cast<size_t>(layers), 0.0);
    s.layer_recall.assign(static_cast<size_t>(layers), 0.0);
  }
  const double per_model = 1.0 / double(layers * heads), per_layer = 1.0 / double(heads);
  for (const probe_row& row : rows) {
    candidate_summary& s = sum[row.candidate];
    s.err += row.rel_err * per_model;
    s.err_half += row.rel_err_second_half * per_model;
    s.recall += row.recall * per_model;
    s.density += row.density * per_model;
    ++s.kinds[static_cast<size_t>(row.kind)];
    s.layer_err[static_cast<size_t>(row.layer)] += row.rel_err * per_layer;
    s.layer_density[static_cast<size_t>(row.layer)] += row.density * per_layer;
    s.layer_recall[static_cast<size_t>(row.layer)] += row.recall * per_layer;
    const probe_candidate& pc = cands[row.candidate];
    out.write({{"eval", "attn"},
               {"mode", pc.mode},
               {"gamma", pc.gamma},
               {"length", o.length},
               {"layer", row.layer},
               {"head", row.head},
               {"kind", head_kind_name(row.kind)},
               {"rel_err", row.rel_err},
               {"rel_err_second_half", row.rel_err_second_half},
               {"recall", row.recall},
               {"density", row.density},
               {"dense_layers", setups[row.candidate].dense_layers},
               {"device", device}});
  }

  std::fprintf(report, "attention vs dense, %lld tokens of %s (offset %lld), on the %s\n",
               (long long)o.length, o.text.c_str(), (long long)o.offset,
               gpu ? "GPU (bf16)" : "CPU (f32)");
  std::fprintf(report, "%-13s %6s %10s %12s %8s %8s  kinds\n", "mode", "gamma", "rel_err",
               "err_2nd_half", "recall", "density");
  for (size_t i = 0; i < cands.size(); ++i) {
    std::string kinds;
    for (int k = 0; k < head_kind_count; ++k)
      if (sum[i].kinds[static_cast<size_t>(k)] > 0)
        kinds += std::string(head_kind_name(static_cast<head_kind>(k))) + "=" +
                 std::to_string(sum[i].kinds[static_cast<size_t>(k)]) + " ";
    std::fprintf(report, "%-13s %6s %10.5f %12.5f %8.4f %8.4f  %s\n", cands[i].mode.c_str(),
                 g_str(cands[i].gamma).c_str(), sum[i].err, sum[i].err_half, sum[i].recall,
                 sum[i].density, kinds.c_str());
    out.write({{"eval", "attn_summary"},
               {"mode", cands[i].mode},
               {"gamma", cands[i].gamma},
               {"length", o.length},
               {"rel_err", sum[i].err},
               {"rel_err_second_half", sum[i].err_half},
               {"recall", sum[i].recall},
               {"density", sum[i].density}});
  }

  // Per layer at the primary gamma (0.95 when run, else the first).
  const double g0 =
      std::find(gammas.begin(), gammas.end(), 0.95) != gammas.end() ? 0.95 : gammas[0];
  std::vector<size_t> primary;
  for (size_t i = 0; i < cands.size(); ++i)
    if (cands[i].gamma == g0) primary.push_back(i);
  std::fprintf(report, "\nper layer at gamma %s: rel_err / density\n%5s", g_str(g0).c_str(),
               "layer");
  for (size_t i : primary) std::fprintf(report, " %22s", cands[i].mode.c_str());
  std::fprintf(report, "\n");
  for (int64_t l = 0; l < layers; ++l) {
    std::fprintf(report, "%5lld", (long long)l);
    for (size_t i : primary)
      std::fprintf(report, "      %8.5f / %6.3f", sum[i].layer_err[static_cast<size_t>(l)],
                   sum[i].layer_density[static_cast<size_t>(l)]);
    std::fprintf(report, "\n");
  }

  // Error of each mode at equal density: interpolate over its gamma points (sorted by density).
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> curve;
  for (size_t i = 0; i < cands.size(); ++i) {
    curve[cands[i].mode].first.push_back(sum[i].density);
    curve[cands[i].mode].second.push_back(sum[i].err);
  }
  for (auto& [mode, xy] : curve) {
    std::vector<size_t> idx(xy.first.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(),
              [&](size_t a, size_t b) { return xy.first[a] < xy.first[b]; });
    std::vector<double> xs, ys;
    for (size_t i : idx) {
      xs.push_back(xy.first[i]);
      ys.push_back(xy.second[i]);
    }
    xy = {xs, ys};
  }
  if (curve.count("shareprefill") && curve.size() > 1) {
    std::fprintf(report,
                 "\nerror at shareprefill's densities (interpolated over each mode's gamma "
                 "points; * = outside that mode's density range, clamped)\n%8s",
                 "density");
    for (const auto& [mode, xy] : curve) std::fprintf(report, " %13s", mode.c_str());
    std::fprintf(report, "\n");
    for (double d : curve["shareprefill"].first) {
      std::fprintf(report, "%8.4f", d);
      nlohmann::json row = {{"eval", "attn_equal_density"}, {"length", o.length}, {"density", d}};
      for (const auto& [mode, xy] : curve) {
        const bool outside = d < xy.first.front() || d > xy.first.back();
        const double e = interpolate_at(xy.first, xy.second, d);
        std::fprintf(report, " %12.5f%s", e, outside ? "*" : " ");
        row[mode] = {{"rel_err", e}, {"clamped", outside}};
      }
      std::fprintf(report, "\n");
      out.write(row);
    }
  }

  if (!o.common.png_dir.empty()) {
    line_plot pe{"ATTENTION ERROR PER LAYER G=" + g_str(g0), "LAYER", "REL ERR", {}, true};
    line_plot pd{"TILE DENSITY PER LAYER G=" + g_str(g0), "LAYER", "DENSITY", {}, false};
    for (size_t i : primary) {
      plot_series se{cands[i].mode, {}, {}}, sd{cands[i].mode, {}, {}};
      for (int64_t l = 0; l < layers; ++l) {
        se.x.push_back(double(l));
        se.y.push_back(std::max(sum[i].layer_err[static_cast<size_t>(l)], 1e-6));
        sd.x.push_back(double(l));
        sd.y.push_back(sum[i].layer_density[static_cast<size_t>(l)]);
      }
      pe.series.push_back(se);
      pd.series.push_back(sd);
    }
    plot_save_lines(png_path(o.common.png_dir, "attn_error_per_layer.png"), pe);
    plot_save_lines(png_path(o.common.png_dir, "attn_density_per_layer.png"), pd);
    line_plot pt{"ERROR VS DENSITY ACROSS GAMMA", "DENSITY", "MEAN REL ERR", {}, true};
    for (const auto& [mode, xy] : curve) pt.series.push_back({mode, xy.first, xy.second});
    plot_save_lines(png_path(o.common.png_dir, "attn_tradeoff.png"), pt);
  }
}

void setup_attn(CLI::App& app) {
  auto o = std::make_shared<attn_options>();
  CLI::App* sub = eval_app(app)->add_subcommand("attn", "Per-head attention error vs dense");
  add_eval_common_options(sub, o->common);
  sub->add_option("--text", o->text, "Text file")->required();
  sub->add_option("--length", o->length, "Tokens (a multiple of the block size)")
      ->capture_default_str();
  sub->add_option("--offset", o->offset, "First token of the window")->capture_default_str();
  add_device_option(sub, o->device);
  sub->callback([o] { run_attn(*o); });
}

command_registration reg(setup_attn);

}  // namespace
}  // namespace sp::cli
