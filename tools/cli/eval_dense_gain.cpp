// `shareprefill eval dense-gain` (issue 17): what running one head dense buys, measured. The
// sparse mode plans as configured (cluster map, its dense heads and settings for the length);
// then each candidate head is made dense alone on top of that, and the perplexity it recovers
// (points of change vs dense) and the density it costs are measured on the same windows. The
// ranking needs many windows, which the GPU affords (--device cuda). Split-half agreement (the
// rank correlation of the gains on the first and on the second half of the windows) says how
// far the ranking is above the windows' noise. With --pick-density and --map-out, the heads with
// the largest gains are added to the map's dense heads (to its settings entry for --length when
// it has settings per length, format 6) until the overall density reaches the target, and the
// map so written is loaded back and measured on the same windows. With --unshare-clusters
// (shareprefill), each shared cluster is first unshared alone; a cluster whose perplexity loss
// per density saved is below what the pick's last head buys per density is unshared, and the
// heads are measured again on the map without it.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "cuda_model.h"
#include "dense_gain_runs.h"
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
  bool unshare = false;  // --unshare-clusters
};

// Prints the ranking (descending gain) and returns the split-half agreement.
double report_ranking(FILE* report, std::vector<head_gain> gains, size_t windows) {
  std::stable_sort(gains.begin(), gains.end(), [](const head_gain& x, const head_gain& y) {
    return x.change.gain > y.change.gain;
  });
  std::fprintf(report, "%5s %4s %10s %10s %10s %11s %12s\n", "layer", "head", "gain_pts",
               "first_half", "second_half", "cost_dens", "gain/density");
  std::vector<double> first, second;
  for (const head_gain& g : gains) {
    const measured_change& m = g.change;
    std::fprintf(report, "%5d %4d %+10.4f %+10.4f %+10.4f %11.5f %12.1f\n", g.head.layer,
                 g.head.head, m.gain, m.gain_first_half, m.gain_second_half, m.cost,
                 m.cost > 0 ? m.gain / m.cost : 0.0);
    first.push_back(m.gain_first_half);
    second.push_back(m.gain_second_half);
  }
  const double agreement = first.size() >= 2 ? spearman_rank_correlation(first, second) : 0.0;
  std::fprintf(report,
               "split-half agreement: Spearman %.3f between the gains on windows 1-%zu and "
               "%zu-%zu (%zu heads)\n",
               agreement, windows / 2, windows / 2 + 1, windows, first.size());
  std::fflush(report);
  return agreement;
}

// The heads with the largest gains while their measured costs fit `budget_density` (overall
// density); costs are turned into head-densities for pick_dense_heads. A head's measured cost
// can exceed one head's worth (later layers plan from its output; 8:0 at 32K adds 2.8 heads'
// worth), so the pick spends what was measured; the record's sparse density is 1 - cost, clamped.
dense_head_pick pick_by_gain(const std::vector<head_gain>& gains, double budget_density,
                             double head_count) {
  std::vector<head_cost> costs;
  for (const head_gain& g : gains) {
    const double cost = g.change.cost * head_count;
    costs.push_back({g.head, g.change.gain, NAN, std::clamp(1.0 - cost, 0.0, 1.0), cost});
  }
  return pick_dense_heads(costs, budget_density * head_count, "gain_points");
}

// calibration.dense_gain_selection keeps one record per place a pick was written to (its
// "written_to": the global dense heads or one length's entry), so a 32K pick keeps the 8K pick's
// record. A map written when the key held one record has it moved under its own place.
void keep_selection_record(nlohmann::json& calibration, const nlohmann::json& rec) {
  nlohmann::json& all = calibration["dense_gain_selection"];
  if (all.is_object() && all.contains("written_to")) {
    nlohmann::json one = all;
    all = {{one["written_to"].get<std::string>(), one}};
  }
  if (!all.is_object()) all = nlohmann::json::object();
  all[rec["written_to"].get<std::string>()] = rec;
}

// Perplexity per density of the pick's last (cheapest-rate) head: what density buys in heads.
double marginal_rate(const dense_head_pick& pick, const std::vector<head_gain>& gains) {
  double rate = 0.0;
  bool any = false;
  for (const head_ref& h : pick.heads)
    for (const head_gain& g : gains)
      if (g.head == h && g.change.cost > 0) {
        const double r = g.change.gain / g.change.cost;
        rate = any ? std::min(rate, r) : r;
        any = true;
      }
  return rate;
}

// The unsharing record as a Markdown section: the rule, the rate, one row per shared cluster.
std::string unsharing_markdown(const nlohmann::json& u) {
  std::string md =
      "\n## Shared clusters weighed for unsharing\n\nRule: " + u["rule"].get<std::string>() +
      ". Rate " + str(u["rate_points_per_density"].get<double>()) + " points per density.\n\n";
  md += "| cluster | loss (points) | density saved | decision |\n|---|---|---|---|\n";
  for (const auto& c : u["clusters"])
    md += "| " + c["cluster"].get<std::string>() + " | " + str(c["loss_points"].get<double>()) +
          " | " + str(c["density_saved"].get<double>()) + " | " +
          (c["unshared"].get<bool>() ? "unshared" : "kept") + " |\n";
  if (u.contains("without_them"))
    md += "\nWithout the unshared clusters, before the pick: " +
          str(u["without_them"]["delta_vs_dense_pct"].get<double>()) + "% at density " +
          str(u["without_them"]["density"].get<double>()) + ".\n";
  return md;
}

void run_dense_gain(const dense_gain_options& o) {
  const char* fn = "eval dense-gain";
  const std::string device = resolve_device(o.device);
  check(o.windows >= 2, fn, "--windows must be >= 2 (the split-half check needs two), got ",
        o.windows);
  check(o.map_out.empty() == (o.pick_density == 0.0), fn,
        "--pick-density and --map-out go together");
  check(!o.unshare || !o.map_out.empty(), fn,
        "--unshare-clusters weighs unsharing against the pick: it needs --pick-density and "
        "--map-out");
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
  check(!o.unshare || modes[0] == "shareprefill", fn,
        "--unshare-clusters needs --modes shareprefill (the other modes share nothing)");
  check(o.common.gammas.empty(), fn, "--gammas: this command measures at one gamma (--gamma)");
  thread_pool pool(o.common.threads);
  loaded_model m = load_model(o.common.model, pool);
  const llama_config& c = m.weights.config;
  check_rope_length(o.common.rope, c, o.length, fn);
  const std::vector<int64_t> layers =
      o.layers.empty() ? parse_layer_list("0-" + std::to_string(c.n_layers - 1), c.n_layers)
                       : parse_layer_list(o.layers, c.n_layers, "--layers");
  const std::vector<text_tokens> texts = tokenize_texts(o.texts, *m.tok);
  const auto windows = pick_windows(texts, o.length, o.windows, fn);
  check(windows.size() >= 2, fn, "the texts hold only one window of ", o.length, " tokens");
  const attention_setup att = make_attention(o.common.attention, modes[0], c, m.path, o.length);
  const planner_params base = att.plan->params();
  std::unique_ptr<cuda_llama_weights> gpu_weights;
  if (device == "cuda")
    gpu_weights = std::make_unique<cuda_llama_weights>(load_cuda_weights(m.path));
  window_scorer scorer(m, pool, gpu_weights.get(), windows_tokens(texts, windows, o.length),
                       o.common.rope, base.block_size);

  json_lines out(o.common.json);
  FILE* const report = o.common.json.text_stream();
  const nlohmann::json sources = window_sources(texts, windows);
  const size_t w_all = windows.size();
  std::fprintf(report, "mode %s, gamma %.3f, %zu windows of %lld tokens on %s; %s\n",
               modes[0].c_str(), base.gamma, w_all, (long long)o.length, device.c_str(),
               describe_dense_layers(att).c_str());
  std::fflush(report);
  const scored_run dense = scorer.score(nullptr, nullptr);
  const scored_run sparse = scorer.score(&base, att.clusters.get());
  const double dense_ppl = dense.ppl(0, w_all);
  std::fprintf(report, "dense ppl %.4f; %s as configured: ppl %.4f (%+.3f%%), density %.4f\n",
               dense_ppl, modes[0].c_str(), sparse.ppl(0, w_all), scorer.change(sparse, 0, w_all),
               sparse.density);
  out.write({{"eval", "dense_gain_base"},
             {"mode", modes[0]},
             {"length", o.length},
             {"dense_ppl", dense_ppl},
             {"ppl", sparse.ppl(0, w_all)},
             {"delta_vs_dense_pct", scorer.change(sparse, 0, w_all)},
             {"density", sparse.density},
             {"thresholds", thresholds_record(att)},
             {"windows", sources}});
  std::vector<cluster_unsharing> unsharing;
  if (o.unshare) unsharing = measure_unsharing(scorer, base, *att.clusters, sparse, out);

  // Each candidate head dense alone on top of the configured plan.
  std::vector<head_gain> gains =
      measure_head_gains(scorer, base, att.clusters.get(), sparse, layers, c.n_heads, out);
  double agreement = report_ranking(report, gains, w_all);
  out.write(
      {{"eval", "dense_gain_agreement"}, {"heads", gains.size()}, {"spearman_halves", agreement}});
  if (o.map_out.empty()) return;

  // The pick: descending gain while the measured costs fit the density left to the target.
  const double head_count = double(c.n_layers * c.n_heads);
  check(o.pick_density > sparse.density, fn, "--pick-density ", o.pick_density,
        " is not above the density the configuration already plans (", sparse.density, ")");
  dense_head_pick pick = pick_by_gain(gains, o.pick_density - sparse.density, head_count);
  check(!att.cluster_source.empty() || !att.dense_layers_source.empty(), fn,
        "--map-out needs a cluster map to start from: pass --clusters");
  const std::string map_path =
      att.cluster_source.empty() ? att.dense_layers_source : att.cluster_source;
  cluster_map map = cluster_map_load(map_path);

  // Unsharing: a cluster goes when what it loses per density saved is below what the pick's last
  // head buys per density; then the heads are measured again without those clusters (which
  // heads sharing served changes: the gains are not the same).
  nlohmann::json unshare_record;
  if (o.unshare) {
    const double rate = marginal_rate(pick, gains);
    std::vector<std::string> dropped;
    nlohmann::json rows = nlohmann::json::array();
    for (const cluster_unsharing& u : unsharing) {
      const double loss = -u.change.gain, saving = -u.change.cost;
      const bool drop = saving > 0 && loss < rate * saving;
      if (drop) dropped.push_back(u.id);
      rows.push_back({{"cluster", u.id},
                      {"loss_points", loss},
                      {"density_saved", saving},
                      {"unshared", drop}});
      std::fprintf(report, "cluster %s: unsharing loses %+.4f points, saves %.5f density: %s\n",
                   u.id.c_str(), loss, saving, drop ? "unshared" : "kept");
    }
    unshare_record = {{"rule",
                       "a shared cluster is unshared when its loss (points) per density saved, "
                       "measured alone, is below the gain per density of the pick's last head"},
                      {"rate_points_per_density", rate},
                      {"clusters", rows}};
    if (!dropped.empty()) {
      map = without_sharing(map, dropped);
      const cluster_map measured = without_sharing(*att.clusters, dropped);
      const scored_run unshared = scorer.score(&base, &measured);
      std::fprintf(report, "without clusters");
      for (const std::string& id : dropped) std::fprintf(report, " %s", id.c_str());
      std::fprintf(report, ": ppl %.4f (%+.3f%%), density %.4f; the heads again:\n",
                   unshared.ppl(0, w_all), scorer.change(unshared, 0, w_all), unshared.density);
      unshare_record["without_them"] = {{"delta_vs_dense_pct", scorer.change(unshared, 0, w_all)},
                                        {"density", unshared.density}};
      gains = measure_head_gains(scorer, base, &measured, unshared, layers, c.n_heads, out);
      agreement = report_ranking(report, gains, w_all);
      pick = pick_by_gain(gains, o.pick_density - unshared.density, head_count);
    }
  }

  // Into the map's settings entry for this length when it has entries (a head's worth dense
  // depends on the length: the 8K and 32K rankings differ), else into its dense heads.
  const length_thresholds* found = thresholds_for_length(map.thresholds, o.length);
  length_thresholds* entry =
      found ? &map.thresholds[static_cast<size_t>(found - map.thresholds.data())] : nullptr;
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
  if (o.unshare) rec["unsharing"] = unshare_record;
  if (!map.calibration.is_object()) map.calibration = nlohmann::json::object();
  keep_selection_record(map.calibration, rec);
  cluster_map_save(o.map_out, map);
  // The written map measured as a user gets it (loaded back, its entry for this length).
  attention_options written = o.common.attention;
  written.clusters = o.map_out;
  const attention_setup att_written = make_attention(written, modes[0], c, m.path, o.length);
  const scored_run after = scorer.score(&att_written.plan->params(), att_written.clusters.get());
  rec["measured_with_picks"] = {
      {"dense_ppl", dense_ppl},
      {"before",
       {{"delta_vs_dense_pct", scorer.change(sparse, 0, w_all)}, {"density", sparse.density}}},
      {"after",
       {{"delta_vs_dense_pct", scorer.change(after, 0, w_all)}, {"density", after.density}}}};
  keep_selection_record(map.calibration, rec);
  cluster_map_save(o.map_out, map);
  write_file_text(o.map_out + ".md",
                  dense_head_report_markdown(rec) +
                      (o.unshare ? unsharing_markdown(unshare_record) : std::string()),
                  fn);
  std::fprintf(report, "picked %zu dense heads:", pick.heads.size());
  for (const head_ref& h : pick.heads) std::fprintf(report, " %d:%d", h.layer, h.head);
  std::fprintf(
      report,
      "\nwritten to %s's %s\nthe written map on the same windows: ppl %.4f (%+.3f%%), density "
      "%.4f (before: %+.3f%% at %.4f)\nreasons in calibration.dense_gain_selection[\"%s\"] and "
      "%s.md\n",
      o.map_out.c_str(), rec["written_to"].get<std::string>().c_str(), after.ppl(0, w_all),
      scorer.change(after, 0, w_all), after.density, scorer.change(sparse, 0, w_all),
      sparse.density, rec["written_to"].get<std::string>().c_str(), o.map_out.c_str());
  out.write({{"eval", "dense_gain_pick"},
             {"heads", rec["picked"]},
             {"delta_vs_dense_pct", scorer.change(after, 0, w_all)},
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
  sub->add_flag("--unshare-clusters", o->unshare,
                "shareprefill with --map-out: unshare each shared cluster alone first, and keep "
                "unshared those whose loss per density saved is below what the pick's last head "
                "buys; the heads are then measured again");
  sub->add_option("--map-out", o->map_out,
                  "Write the cluster map (--clusters or the shipped one) with the picked heads "
                  "dense, and a Markdown report beside it (PATH.md)");
  sub->callback([o] { run_dense_gain(*o); });
}

command_registration reg(setup_dense_gain);

}  // namespace
}  // namespace sp::cli
