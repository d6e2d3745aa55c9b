// `shareprefill eval dense-gain` (issue 17): what running one head dense buys, measured. The
// sparse mode plans as configured (cluster map, its dense heads and settings for the length);
// then each candidate head is made dense alone on top of that, and the perplexity it recovers
// (points of change vs dense) and the density it costs are measured on the same windows. The
// ranking needs many windows, which the GPU affords (--device cuda). Split-half agreement (the
// rank correlation of the gains on the first and on the second half of the windows) says how
// far the ranking is above the windows' noise. With --pick-density and --map-out, the heads with
// the largest gains are added to the map's dense heads (to its settings entry for --length when
// it has settings per length, format 6) until the overall density reaches the target, and the
// map so written is loaded back and measured on the same windows.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "cuda_model.h"
#include "device_option.h"
#include "eval_common.h"
#include "eval_windows.h"
#include "option_checks.h"
#include "shareprefill/calibrate_heads.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/eval_heads.h"
#include "shareprefill/file_bytes.h"
#include "shareprefill/layer_list.h"

namespace sp::cli {
namespace {

struct dense_gain_options {
  eval_common_options common;
  std::vector<std::string> texts;
  int64_t length = 8192;
  int64_t windows = 24;
  std::string device;
  std::string layers;         // candidate heads: every head of these layers ("" = all layers)
  double pick_density = 0.0;  // with map_out: overall density to fill with dense heads
  std::string map_out;
};

// Log-probability sums per window of one configuration, and its mean density.
struct scored_run {
  std::vector<double> logprob_sum;  // [windows]
  std::vector<int64_t> scored;      // [windows] scored tokens
  double density = 0.0;

  // Perplexity over windows [begin, end).
  double ppl(size_t begin, size_t end) const {
    double s = 0.0;
    int64_t n = 0;
    for (size_t w = begin; w < end; ++w) {
      s += logprob_sum[w];
      n += scored[w];
    }
    return std::exp(-s / double(n));
  }
};

// params with head (layer, head) dense: listed in dense_heads, dropped from head_gammas.
planner_params with_dense_head(planner_params params, int64_t layer, int64_t head) {
  const std::pair<int64_t, int64_t> key{layer, head};
  auto& d = params.dense_heads;
  d.insert(std::lower_bound(d.begin(), d.end(), key), key);
  auto& g = params.head_gammas;
  g.erase(std::remove_if(g.begin(), g.end(),
                         [&](const head_gamma& x) { return x.layer == layer && x.head == head; }),
          g.end());
  return params;
}

bool runs_dense(const planner_params& p, int64_t layer, int64_t head) {
  return std::binary_search(p.dense_layers.begin(), p.dense_layers.end(), layer) ||
         std::binary_search(p.dense_heads.begin(), p.dense_heads.end(),
                            std::make_pair(layer, head));
}

// The window sets of the split-half check: [0, W/2) and [W/2, W).
struct half_gains {
  std::vector<double> a, b;
};

void run_dense_gain(const dense_gain_options& o) {
  const char* fn = "eval dense-gain";
  const std::string device = resolve_device(o.device);
  check(o.windows >= 2, fn, "--windows must be >= 2 (the split-half check needs two), got ",
        o.windows);
  check(o.map_out.empty() == (o.pick_density == 0.0), fn,
        "--pick-density and --map-out go together");
  // The written map must plan as measured: its own dense layers and settings per length.
  check(o.map_out.empty() ||
            (o.common.attention.dense_layers.empty() && !thresholds_given(o.common.attention)),
        fn,
        "--map-out writes the map's own dense layers and thresholds: leave out "
        "--dense-layers, --tau-sim, --tau-qa, --min-budget, --pivot-medoid and --pivot-dense");
  std::vector<std::string> modes = eval_parse_modes(o.common.modes);
  modes.erase(std::remove(modes.begin(), modes.end(), "dense"), modes.end());
  check(modes.size() == 1, fn, "--modes must name exactly one sparse mode, got '", o.common.modes,
        "'");
  check(o.common.gammas.empty(), fn, "--gammas: this command measures at one gamma (--gamma)");
  thread_pool pool(o.common.threads);
  loaded_model m = load_model(o.common.model, pool);
  const llama_config& c = m.weights.config;
  check_rope_length(o.common.rope, c, o.length, fn);
  const std::vector<int64_t> layers =
      o.layers.empty() ? parse_layer_list("0-" + std::to_string(c.n_layers - 1), c.n_layers)
                       : parse_layer_list(o.layers, c.n_layers, "--layers");
  std::vector<text_tokens> texts;
  for (const std::string& path : o.texts)
    texts.push_back({path, m.tok->encode(read_text_file(path), false)});
  const auto windows = pick_windows(texts, o.length, o.windows, fn);
  check(windows.size() >= 2, fn, "the texts hold only one window of ", o.length, " tokens");
  const attention_setup att = make_attention(o.common.attention, modes[0], c, m.path, o.length);
  const planner_params base = att.plan->params();

  std::unique_ptr<cuda_llama_weights> gpu_weights;
  std::unique_ptr<cuda_llama_session> gpu;
  if (device == "cuda") {
    gpu_weights = std::make_unique<cuda_llama_weights>(load_cuda_weights(m.path));
    gpu = std::make_unique<cuda_llama_session>(*gpu_weights, o.length);
  }
  // One configuration over every window; params null = dense attention.
  auto score = [&](const planner_params* params) {
    std::unique_ptr<device_planner> dp;
    std::unique_ptr<planner> hp;
    std::unique_ptr<prefill_attention> attention;
    if (params && gpu) {
      dp = std::make_unique<device_planner>(*params, c.n_layers, c.n_heads, att.clusters.get());
    } else if (params) {
      hp = std::make_unique<planner>(*params, c.n_layers, c.n_heads, att.clusters.get());
      attention = make_planned_attention(*hp);
    } else if (!gpu) {
      attention = make_dense_attention(base.block_size);
    }
    scored_run r;
    for (const auto& win : windows) {
      const std::vector<int32_t> tokens = window_tokens(texts, win, o.length);
      prefill_options po;
      po.attention = attention.get();
      po.rope = o.common.rope;
      const window_score s = gpu ? score_window_cuda(*gpu, tokens, po, dp.get())
                                 : score_window(m.weights, pool, tokens, po);
      double sum = 0.0;
      for (double l : s.logprobs) sum += l;
      r.logprob_sum.push_back(sum);
      r.scored.push_back(static_cast<int64_t>(s.logprobs.size()));
      r.density += prefill_density(s.prefill) / double(windows.size());
    }
    return r;
  };

  json_lines out(o.common.json);
  FILE* const report = o.common.json.text_stream();
  const nlohmann::json sources = window_sources(texts, windows);
  const size_t w_all = windows.size(), w_half = w_all / 2;
  std::fprintf(report, "mode %s, gamma %.3f, %zu windows of %lld tokens on %s; %s\n",
               modes[0].c_str(), base.gamma, w_all, (long long)o.length, device.c_str(),
               describe_dense_layers(att).c_str());
  std::fflush(report);
  const scored_run dense = score(nullptr);
  const scored_run sparse = score(&base);
  const double dense_ppl = dense.ppl(0, w_all);
  auto change = [&](const scored_run& r, size_t b, size_t e) {
    return 100.0 * (r.ppl(b, e) / dense.ppl(b, e) - 1.0);
  };
  std::fprintf(report, "dense ppl %.4f; %s as configured: ppl %.4f (%+.3f%%), density %.4f\n",
               dense_ppl, modes[0].c_str(), sparse.ppl(0, w_all), change(sparse, 0, w_all),
               sparse.density);
  out.write({{"eval", "dense_gain_base"},
             {"mode", modes[0]},
             {"length", o.length},
             {"dense_ppl", dense_ppl},
             {"ppl", sparse.ppl(0, w_all)},
             {"delta_vs_dense_pct", change(sparse, 0, w_all)},
             {"density", sparse.density},
             {"thresholds", thresholds_record(att)},
             {"windows", sources}});

  // Each candidate head dense alone on top of the configured plan.
  struct gain_row {
    head_ref head;
    double gain = 0.0, gain_a = 0.0, gain_b = 0.0, cost = 0.0;
  };
  std::vector<gain_row> rows;
  std::vector<std::pair<int64_t, int64_t>> candidates;
  for (int64_t l : layers)
    for (int64_t h = 0; h < c.n_heads; ++h)
      if (!runs_dense(base, l, h)) candidates.emplace_back(l, h);
  check(!candidates.empty(), fn, "every head of --layers runs dense already: nothing to measure");
  half_gains halves;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto [l, h] = candidates[i];
    const planner_params p = with_dense_head(base, l, h);
    const scored_run r = score(&p);
    gain_row g;
    g.head = {int32_t(l), int32_t(h)};
    g.gain = change(sparse, 0, w_all) - change(r, 0, w_all);
    g.gain_a = change(sparse, 0, w_half) - change(r, 0, w_half);
    g.gain_b = change(sparse, w_half, w_all) - change(r, w_half, w_all);
    g.cost = r.density - sparse.density;
    rows.push_back(g);
    halves.a.push_back(g.gain_a);
    halves.b.push_back(g.gain_b);
    std::fprintf(stderr, "[%zu/%zu] head %lld:%lld dense: gain %+.4f points, density %+.5f\n",
                 i + 1, candidates.size(), (long long)l, (long long)h, g.gain, g.cost);
    out.write({{"eval", "dense_gain"},
               {"layer", l},
               {"head", h},
               {"ppl", r.ppl(0, w_all)},
               {"delta_vs_dense_pct", change(r, 0, w_all)},
               {"density", r.density},
               {"gain_points", g.gain},
               {"gain_points_halves", {g.gain_a, g.gain_b}},
               {"cost_density", g.cost}});
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const gain_row& x, const gain_row& y) { return x.gain > y.gain; });
  std::fprintf(report, "%5s %4s %10s %10s %10s %11s %12s\n", "layer", "head", "gain_pts",
               "first_half", "second_half", "cost_dens", "gain/density");
  for (const gain_row& g : rows)
    std::fprintf(report, "%5d %4d %+10.4f %+10.4f %+10.4f %11.5f %12.1f\n", g.head.layer,
                 g.head.head, g.gain, g.gain_a, g.gain_b, g.cost,
                 g.cost > 0 ? g.gain / g.cost : 0.0);
  const double agreement =
      halves.a.size() >= 2 ? spearman_rank_correlation(halves.a, halves.b) : 0.0;
  std::fprintf(report,
               "split-half agreement: Spearman %.3f between the gains on windows 1-%zu and "
               "%zu-%zu (%zu heads)\n",
               agreement, w_half, w_half + 1, w_all, halves.a.size());
  out.write({{"eval", "dense_gain_agreement"},
             {"heads", halves.a.size()},
             {"spearman_halves", agreement}});
  std::fflush(report);
  if (o.map_out.empty()) return;

  // The pick: descending gain while the measured costs fit the density left to the target.
  const double head_count = double(c.n_layers * c.n_heads);
  check(o.pick_density > sparse.density, fn, "--pick-density ", o.pick_density,
        " is not above the density the configuration already plans (", sparse.density, ")");
  std::vector<head_cost> costs;
  for (const gain_row& g : rows)
    costs.push_back({g.head, g.gain, NAN, std::clamp(1.0 - g.cost * head_count, 0.0, 1.0)});
  const dense_head_pick pick =
      pick_dense_heads(costs, (o.pick_density - sparse.density) * head_count, "gain_points");
  check(!att.cluster_source.empty() || !att.dense_layers_source.empty(), fn,
        "--map-out needs a cluster map to start from: pass --clusters");
  const std::string map_path =
      att.cluster_source.empty() ? att.dense_layers_source : att.cluster_source;
  // Into the map's settings entry for this length when it has entries (a head's worth dense
  // depends on the length: the 8K and 32K rankings differ), else into its dense heads.
  cluster_map map = cluster_map_load(map_path);
  length_thresholds* entry = nullptr;
  for (length_thresholds& t : map.thresholds)
    if (t.from_tokens <= o.length) entry = &t;
  for (const head_ref& h : pick.heads) {
    if (entry) {
      entry->dense_heads.emplace_back(h.layer, h.head);
      continue;
    }
    map.dense_heads.push_back(h);
    auto& g = map.head_gammas;
    g.erase(
        std::remove_if(g.begin(), g.end(), [&](const head_threshold& x) { return x.head == h; }),
        g.end());
  }
  if (entry) std::sort(entry->dense_heads.begin(), entry->dense_heads.end());
  std::sort(map.dense_heads.begin(), map.dense_heads.end(),
            [](const head_ref& a, const head_ref& b) {
              return a.layer != b.layer ? a.layer < b.layer : a.head < b.head;
            });
  nlohmann::json rec = pick.record;
  rec["mode"] = modes[0];
  rec["gamma"] = base.gamma;
  rec["length"] = o.length;
  rec["windows"] = sources;
  rec["started_from"] = map_path;
  rec["written_to"] = entry ? "thresholds entry from " + std::to_string(entry->from_tokens) +
                                  " tokens (dense_heads)"
                            : std::string("dense_heads");
  rec["budget_for_density"] = o.pick_density;
  rec["split_half_spearman"] = agreement;
  if (!map.calibration.is_object()) map.calibration = nlohmann::json::object();
  map.calibration["dense_gain_selection"] = rec;
  cluster_map_save(o.map_out, map);
  // The written map measured as a user gets it (loaded back, its entry for this length).
  attention_options written = o.common.attention;
  written.clusters = o.map_out;
  const attention_setup att_written = make_attention(written, modes[0], c, m.path, o.length);
  const scored_run after = score(&att_written.plan->params());
  rec["measured_with_picks"] = {
      {"dense_ppl", dense_ppl},
      {"before", {{"delta_vs_dense_pct", change(sparse, 0, w_all)}, {"density", sparse.density}}},
      {"after", {{"delta_vs_dense_pct", change(after, 0, w_all)}, {"density", after.density}}}};
  map.calibration["dense_gain_selection"] = rec;
  cluster_map_save(o.map_out, map);
  write_file_text(o.map_out + ".md", dense_head_report_markdown(rec), fn);
  std::fprintf(report, "picked %zu dense heads:", pick.heads.size());
  for (const head_ref& h : pick.heads) std::fprintf(report, " %d:%d", h.layer, h.head);
  std::fprintf(
      report,
      "\nwritten to %s's %s\nthe written map on the same windows: ppl %.4f (%+.3f%%), density "
      "%.4f (before: %+.3f%% at %.4f)\nreasons in calibration.dense_gain_selection and %s.md\n",
      o.map_out.c_str(), rec["written_to"].get<std::string>().c_str(), after.ppl(0, w_all),
      change(after, 0, w_all), after.density, change(sparse, 0, w_all), sparse.density,
      o.map_out.c_str());
  out.write({{"eval", "dense_gain_pick"},
             {"heads", rec["picked"]},
             {"delta_vs_dense_pct", change(after, 0, w_all)},
             {"density", after.density},
             {"map", o.map_out}});
}

void setup_dense_gain(CLI::App& app) {
  auto o = std::make_shared<dense_gain_options>();
  o->common.modes = "shareprefill";
  CLI::App* sub = eval_app(app)->add_subcommand(
      "dense-gain",
      "Perplexity each head recovers when run dense on top of a sparse mode, "
      "measured one head at a time; optionally pick the best into a cluster map");
  add_eval_common_options(sub, o->common);
  sub->add_option("--texts", o->texts, "Comma-separated text files; windows are taken round-robin")
      ->delimiter(',')
      ->required();
  sub->add_option("--length", o->length, "Window length in tokens")->capture_default_str();
  sub->add_option("--windows", o->windows, "Windows (over all files; at least 2)")
      ->capture_default_str();
  add_device_option(sub, o->device);
  sub->add_option("--layers", o->layers,
                  "Candidate heads: every head of these layers not dense already (e.g. 8-11; "
                  "default: all layers)");
  sub->add_option("--pick-density", o->pick_density,
                  "With --map-out: add the heads with the largest gains to the map's dense heads "
                  "while the overall density stays at or below this")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--map-out", o->map_out,
                  "Write the cluster map (--clusters or the shipped one) with the picked heads "
                  "dense, and a Markdown report beside it (PATH.md)");
  sub->callback([o] { run_dense_gain(*o); });
}

command_registration reg(setup_dense_gain);

}  // namespace
}  // namespace sp::cli
