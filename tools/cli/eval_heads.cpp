// `shareprefill eval heads` (issue 17): per-head accuracy of one sparse mode. A probe prefill on
// the dense model's activations gives every head's relative attention error and its error after
// the output projection (relative to the residual stream); with --ablate LAYERS each head of those
// layers is then made sparse alone (every other head dense) and the perplexity change measured,
// and the Spearman rank correlation of each measure with that change is printed.
#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <map>
#include <sstream>

#include "eval_common.h"
#include "eval_windows.h"
#include "option_checks.h"
#include "prefill_report.h"
#include "shareprefill/calibrate_heads.h"
#include "shareprefill/error.h"
#include "shareprefill/file_bytes.h"
#include "shareprefill/eval.h"
#include "shareprefill/eval_heads.h"
#include "shareprefill/layer_list.h"

namespace sp::cli {
namespace {

struct heads_options {
  eval_common_options common;
  std::vector<std::string> texts;
  int64_t length = 8192;
  int64_t windows = 2;
  std::string ablate;  // layer list; empty = probe only
  // Per-head dense choice: a budget equal to the cost of making these layers dense, and the
  // cluster map to write with the picked heads (format 2).
  std::string pick_like_layers;
  std::string map_out;
  // Measures from earlier --json outputs of this command (averaged over the files) instead of a
  // probe: the pick alone, for calibration sets combined from separate runs.
  std::vector<std::string> measures;
  // GAMMA:FILE, probes of the same windows at other gammas: with --map-out, each head is picked
  // between the base gamma, these gammas and dense (format 3).
  std::vector<std::string> upgrade_measures;
  // With --upgrade-measures: the budget that brings the probe's mean head density to this.
  double pick_density = 0.0;
};

struct head_measures {
  head_kind kind = head_kind::dense;
  double density = 0, rel_err = 0, out_err = 0;  // means over the windows
};

// One --json output of an earlier probe: every head's row (all must be there).
std::vector<head_measures> read_measures(const std::string& path, const llama_config& c,
                                         nlohmann::json& sources) {
  const char* fn = "eval heads";
  std::vector<head_measures> meas(static_cast<size_t>(c.n_layers * c.n_heads));
  std::vector<uint8_t> seen(meas.size(), 0);
  std::istringstream lines(read_text_file(path));
  for (std::string line; std::getline(lines, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json r;
    try {
      r = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(fn, path, ": not JSON lines: ", e.what());
    }
    if (r.value("eval", "") != "heads" || !r.contains("head") || r["head"].is_null()) continue;
    const int64_t l = r["layer"].get<int64_t>(), h = r["head"].get<int64_t>();
    check(l >= 0 && l < c.n_layers && h >= 0 && h < c.n_heads, fn, path, ": head ", l, ":", h,
          " is outside the model");
    const size_t i = static_cast<size_t>(l * c.n_heads + h);
    for (int kind = 0; kind < head_kind_count; ++kind)
      if (r["kind"] == head_kind_name(static_cast<head_kind>(kind)))
        meas[i].kind = static_cast<head_kind>(kind);
    meas[i].density = r["density"].get<double>();
    meas[i].rel_err = r["rel_err"].get<double>();
    meas[i].out_err = r["out_err"].get<double>();
    seen[i] = 1;
    if (r.contains("windows"))
      for (const auto& s : r["windows"])
        if (std::find(sources.begin(), sources.end(), s) == sources.end()) sources.push_back(s);
  }
  check(std::all_of(seen.begin(), seen.end(), [](uint8_t x) { return x != 0; }), fn, path,
        ": does not hold a row for every head (", c.n_layers, " x ", c.n_heads, ")");
  return meas;
}

bool plans_own_budget(head_kind k) {
  return k == head_kind::vertical_slash || k == head_kind::query_aware;
}

// Per head: the base setting (the probe's gamma), each --upgrade-measures gamma (lower or higher)
// where the head plans from its own budgets in both probes, and dense.
std::vector<head_settings> settings_of(const std::vector<head_measures>& base, double base_gamma,
                                       const std::vector<std::pair<double, std::vector<head_measures>>>& upgrades,
                                       int64_t heads) {
  std::vector<head_settings> out;
  for (size_t i = 0; i < base.size(); ++i) {
    head_settings h;
    h.head = {static_cast<int32_t>(int64_t(i) / heads), static_cast<int32_t>(int64_t(i) % heads)};
    h.settings.push_back({base_gamma, base[i].density, base[i].out_err});
    if (base[i].kind == head_kind::pivot || base[i].kind == head_kind::dense) {
      out.push_back(h);  // dense already: nothing to upgrade
      continue;
    }
    for (const auto& [gamma, m] : upgrades)
      if (plans_own_budget(base[i].kind) && plans_own_budget(m[i].kind))
        h.settings.push_back({gamma, m[i].density, m[i].out_err});
    h.settings.push_back({0.0, 1.0, 0.0});
    out.push_back(h);
  }
  return out;
}

void run_heads(const heads_options& o) {
  const char* fn = "eval heads";
  check(o.windows > 0, fn, "--windows must be > 0, got ", o.windows);
  check(o.map_out.empty() == (o.pick_like_layers.empty() && o.pick_density == 0.0), fn,
        "--map-out goes with one of --pick-budget-layers and --pick-density");
  check(o.pick_like_layers.empty() || o.pick_density == 0.0, fn,
        "--pick-budget-layers and --pick-density are two budgets: give one");
  check(o.pick_density == 0.0 || !o.upgrade_measures.empty(), fn,
        "--pick-density picks per-head settings: it needs --upgrade-measures");
  check(!o.texts.empty() || !o.measures.empty(), fn, "give --texts (probe) or --measures");
  check(o.measures.empty() || (!o.map_out.empty() && o.ablate.empty()), fn,
        "--measures only picks dense heads: it needs --map-out and no --ablate");
  check(o.upgrade_measures.empty() || !o.map_out.empty(), fn,
        "--upgrade-measures is for picking per-head settings: it needs --map-out");
  std::vector<std::string> modes = eval_parse_modes(o.common.modes);
  modes.erase(std::remove(modes.begin(), modes.end(), "dense"), modes.end());
  check(modes.size() == 1, fn, "--modes must name exactly one sparse mode, got '", o.common.modes,
        "'");
  thread_pool pool(o.common.threads);
  loaded_model m = load_model(o.common.model, pool);
  const llama_config& c = m.weights.config;
  check_rope_length(o.common.rope, c, o.length, fn);
  const std::vector<int64_t> ablate_layers =
      o.ablate.empty() ? std::vector<int64_t>{} : parse_layer_list(o.ablate, c.n_layers, "--ablate");

  // Windows: round-robin over the files, non-overlapping from each file's start (none when the
  // measures come from --measures).
  std::vector<std::vector<int32_t>> windows;
  nlohmann::json sources = nlohmann::json::array();
  if (!o.texts.empty()) {
    const std::vector<text_tokens> texts = tokenize_texts(o.texts, *m.tok);
    const auto picked = pick_windows(texts, o.length, o.windows, fn);
    windows = windows_tokens(texts, picked, o.length);
    sources = window_sources(texts, picked);
  }

  attention_setup att = make_attention(o.common.attention, modes[0], c, m.path, o.length);
  json_lines out(o.common.json);
  FILE* const report = o.common.json.text_stream();
  std::fprintf(report, "mode %s, gamma %.3f, %zu window(s) of %lld tokens, dense layers: %s\n",
               modes[0].c_str(), o.common.attention.params.gamma, windows.size(),
               (long long)o.length, describe_dense_layers(att).c_str());

  // Probe: every head's measures on the dense activations, averaged over the windows.
  std::vector<head_measures> meas(static_cast<size_t>(c.n_layers * c.n_heads));
  if (!o.measures.empty()) {
    sources = nlohmann::json::array();
    for (const std::string& path : o.measures) {
      const std::vector<head_measures> file = read_measures(path, c, sources);
      const double k = 1.0 / double(o.measures.size());
      for (size_t i = 0; i < meas.size(); ++i) {
        meas[i].kind = file[i].kind;
        meas[i].density += k * file[i].density;
        meas[i].rel_err += k * file[i].rel_err;
        meas[i].out_err += k * file[i].out_err;
      }
    }
  }
  for (size_t w = 0; o.measures.empty() && w < windows.size(); ++w) {
    head_error_probe probe(*att.plan, m.weights);
    prefill_options po;
    po.attention = &probe;
    po.rope = o.common.rope;
    po.on_hidden = [&probe](int64_t l, const float* x) { probe.observe_residual(l, x); };
    po.on_layer = layer_progress("[probe window " + std::to_string(w + 1) + "]");
    llama_session session(m.weights, pool, o.length);
    session.prefill(windows[w], po);
    for (const head_error_row& r : probe.rows()) {
      head_measures& h = meas[static_cast<size_t>(r.layer * c.n_heads + r.head)];
      const double k = 1.0 / double(windows.size());
      h.kind = r.kind;
      h.density += k * r.density;
      h.rel_err += k * r.rel_err;
      h.out_err += k * r.out_err;
    }
  }

  dense_prefix_cache cache;
  if (!o.map_out.empty()) {
    std::vector<head_cost> costs;
    for (int64_t l = 0; l < c.n_layers; ++l)
      for (int64_t h = 0; h < c.n_heads; ++h) {
        const head_measures& hm = meas[static_cast<size_t>(l * c.n_heads + h)];
        costs.push_back({{int32_t(l), int32_t(h)}, hm.out_err, hm.rel_err, hm.density});
      }
    const std::vector<int64_t> like =
        o.pick_like_layers.empty()
            ? std::vector<int64_t>{}
            : parse_layer_list(o.pick_like_layers, c.n_layers, "--pick-budget-layers");
    double budget = dense_layers_cost(costs, like);
    const std::string map_path = o.common.attention.clusters.empty()
                                     ? default_cluster_map_path(m.path)
                                     : o.common.attention.clusters;
    check(!map_path.empty(), fn, "--map-out needs a cluster map to start from: pass --clusters");
    cluster_map map = cluster_map_load(map_path);
    map.validate(c.n_layers, c.n_heads);
    map.dense_layers.clear();
    nlohmann::json rec;
    std::string key;
    if (o.upgrade_measures.empty()) {
      const dense_head_pick pick = pick_dense_heads(costs, budget, "out_err");
      map.dense_heads = pick.heads;
      map.head_gammas.clear();
      rec = pick.record;
      key = "dense_head_selection";
    } else {
      std::vector<std::pair<double, std::vector<head_measures>>> upgrades;
      nlohmann::json files = nlohmann::json::array();
      for (const std::string& spec : o.upgrade_measures) {
        const size_t colon = spec.find(':');
        check(colon != std::string::npos && colon > 0, fn,
              "--upgrade-measures: expected GAMMA:FILE, got '", spec, "'");
        double gamma = 0.0;
        try {
          gamma = std::stod(spec.substr(0, colon));
        } catch (const std::exception&) {
          fail(fn, "--upgrade-measures: '", spec.substr(0, colon), "' is not a number");
        }
        check(gamma > 0.0 && gamma <= 1.0 && gamma != o.common.attention.params.gamma, fn,
              "--upgrade-measures: gamma ", gamma, " must be in (0, 1] and differ from --gamma ",
              o.common.attention.params.gamma);
        nlohmann::json upgrade_sources = nlohmann::json::array();
        upgrades.emplace_back(gamma, read_measures(spec.substr(colon + 1), c, upgrade_sources));
        check(upgrade_sources == sources, fn, "--upgrade-measures: ", spec.substr(colon + 1),
              " was probed on other windows than the base measures");
        files.push_back({{"gamma", gamma}, {"measures", spec.substr(colon + 1)}});
      }
      const std::vector<head_settings> settings =
          settings_of(meas, o.common.attention.params.gamma, upgrades, c.n_heads);
      if (o.pick_density > 0.0) budget = head_settings_budget_for_density(settings, o.pick_density);
      const head_settings_pick pick =
          pick_head_settings(settings, budget, o.common.attention.params.gamma);
      map.dense_heads = pick.dense_heads;
      map.head_gammas = pick.head_gammas;
      rec = pick.record;
      rec["upgrades"] = files;
      key = "head_settings_selection";
    }
    if (o.pick_density > 0.0)
      rec["budget_for_density"] = o.pick_density;
    else
      rec["budget_from_layers"] = like;
    rec["mode"] = modes[0];
    rec["gamma"] = o.common.attention.params.gamma;
    rec["length"] = o.length;
    rec["windows"] = sources;
    rec["started_from"] = map_path;
    if (!map.calibration.is_object()) map.calibration = nlohmann::json::object();
    map.calibration[key] = rec;
    cluster_map_save(o.map_out, map);
    const std::string md_path = o.map_out + ".md";
    write_file_text(md_path,
                    o.upgrade_measures.empty() ? dense_head_report_markdown(rec)
                                               : head_settings_report_markdown(rec),
                    fn);
    std::fprintf(report, "picked %zu dense heads", map.dense_heads.size());
    for (const head_ref& h : map.dense_heads) std::fprintf(report, " %d:%d", h.layer, h.head);
    std::fprintf(report, " and %zu heads with their own gamma", map.head_gammas.size());
    for (const head_threshold& g : map.head_gammas)
      std::fprintf(report, " %d:%d@%g", g.head.layer, g.head.head, g.gamma);
    std::fprintf(report, " (budget %.3f head-densities)\nwrote %s (reasons in calibration.%s "
                 "and %s)\n", budget, o.map_out.c_str(), key.c_str(), md_path.c_str());
    std::fflush(report);
  }

  auto window_ppl = [&](prefill_attention* a, const std::string& label) {
    std::vector<double> logprobs;
    double density = 0.0;
    for (size_t w = 0; w < windows.size(); ++w) {
      prefill_options po;
      cache.prompt_key = static_cast<int64_t>(w);
      po.attention = a;
      po.rope = o.common.rope;
      po.on_layer = layer_progress("[" + label + " window " + std::to_string(w + 1) + "]");
      const window_score s = score_window(m.weights, pool, windows[w], po);
      logprobs.insert(logprobs.end(), s.logprobs.begin(), s.logprobs.end());
      density += prefill_density(s.prefill) / double(windows.size());
    }
    return std::make_pair(perplexity_from_logprobs(logprobs), density);
  };

  std::map<std::pair<int64_t, int64_t>, double> ablation;  // (layer, head) -> ppl change %
  double dense_ppl = 0.0;
  if (!ablate_layers.empty()) {
    head_subset_attention dense_all(*att.plan, {}, &cache);  // fills the cache
    dense_ppl = window_ppl(&dense_all, "dense").first;
    std::fprintf(report, "dense ppl %.4f\n", dense_ppl);
    std::fflush(report);
    for (int64_t l : ablate_layers) {
      std::vector<head_ref> all;
      for (int64_t h = 0; h < c.n_heads; ++h) all.push_back({int32_t(l), int32_t(h)});
      head_subset_attention layer_sparse(*att.plan, all, &cache);
      const auto [lp, ld] = window_ppl(&layer_sparse, "layer " + std::to_string(l));
      const double d = 100.0 * (lp / dense_ppl - 1.0);
      std::fprintf(report, "layer %lld sparse alone: ppl %.4f (%+.3f%%), density %.4f\n",
                   (long long)l, lp, d, ld);
      std::fflush(report);
      out.write({{"eval", "heads"}, {"layer", l}, {"head", nullptr}, {"ppl", lp},
                 {"delta_vs_dense_pct", d}, {"density", ld}, {"windows", sources}});
      for (int64_t h = 0; h < c.n_heads; ++h) {
        head_subset_attention one(*att.plan, {{int32_t(l), int32_t(h)}}, &cache);
        const auto [p, dens] =
            window_ppl(&one, "head " + std::to_string(l) + ":" + std::to_string(h));
        ablation[{l, h}] = 100.0 * (p / dense_ppl - 1.0);
        std::fprintf(report, "head %lld:%lld sparse alone: ppl %.4f (%+.3f%%), density %.4f\n",
                     (long long)l, (long long)h, p, ablation[{l, h}], dens);
        std::fflush(report);
      }
    }
  }

  std::fprintf(report, "%5s %4s %-14s %8s %8s %8s %9s\n", "layer", "head", "kind", "density",
               "rel_err", "out_err", "d_ppl%");
  std::vector<double> xs_rel, xs_out, ys;
  for (int64_t l = 0; l < c.n_layers; ++l)
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const head_measures& hm = meas[static_cast<size_t>(l * c.n_heads + h)];
      const auto it = ablation.find({l, h});
      const bool ablated = it != ablation.end();
      if (!ablate_layers.empty() && !ablated) {
        out.write({{"eval", "heads"}, {"layer", l}, {"head", h}, {"kind", head_kind_name(hm.kind)},
                   {"density", hm.density}, {"rel_err", hm.rel_err}, {"out_err", hm.out_err}});
        continue;
      }
      std::fprintf(report, "%5lld %4lld %-14s %8.4f %8.4f %8.5f %9s\n", (long long)l,
                   (long long)h, head_kind_name(hm.kind), hm.density, hm.rel_err, hm.out_err,
                   ablated ? str(std::showpos, std::fixed, std::setprecision(3), it->second).c_str()
                           : "-");
      nlohmann::json row = {{"eval", "heads"},     {"layer", l},
                            {"head", h},           {"kind", head_kind_name(hm.kind)},
                            {"density", hm.density}, {"rel_err", hm.rel_err},
                            {"out_err", hm.out_err}, {"windows", sources}};
      row["delta_vs_dense_pct"] = ablated ? nlohmann::json(it->second) : nlohmann::json(nullptr);
      out.write(row);
      if (ablated) {
        xs_rel.push_back(hm.rel_err);
        xs_out.push_back(hm.out_err);
        ys.push_back(it->second);
      }
    }
  if (ys.size() >= 2) {
    const double r_rel = spearman_rank_correlation(xs_rel, ys);
    const double r_out = spearman_rank_correlation(xs_out, ys);
    std::fprintf(report, "Spearman rank correlation with the ablation over %zu heads: rel_err %.3f, "
                 "out_err %.3f\n", ys.size(), r_rel, r_out);
    out.write({{"eval", "heads_correlation"}, {"heads", ys.size()}, {"spearman_rel_err", r_rel},
               {"spearman_out_err", r_out}, {"dense_ppl", dense_ppl}});
  }
}

void setup_heads(CLI::App& app) {
  auto o = std::make_shared<heads_options>();
  o->common.modes = "flexprefill";
  o->common.attention.dense_layers = "none";
  CLI::App* sub = eval_app(app)->add_subcommand(
      "heads", "Per-head error measures of one sparse mode, and single-head ablation");
  add_eval_common_options(sub, o->common);
  auto* texts =
      sub->add_option("--texts", o->texts, "Comma-separated text files; windows are taken round-robin")
          ->delimiter(',');
  sub->add_option("--measures", o->measures,
                  "Comma-separated --json outputs of earlier eval heads runs: pick from their "
                  "per-head measures (averaged) instead of probing")
      ->delimiter(',')
      ->excludes(texts);
  sub->add_option("--upgrade-measures", o->upgrade_measures,
                  "Comma-separated GAMMA:FILE, --json outputs of eval heads probes of the same "
                  "windows at other gammas: with --map-out, pick per head between --gamma, "
                  "these gammas and dense (format 3; predicted loss out_err^2)")
      ->delimiter(',');
  sub->add_option("--pick-density", o->pick_density,
                  "With --upgrade-measures and --map-out: the budget that brings the probes' mean "
                  "head density to this (instead of --pick-budget-layers)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--length", o->length, "Window length in tokens")->capture_default_str();
  sub->add_option("--windows", o->windows, "Windows (over all files)")->capture_default_str();
  sub->add_option("--ablate", o->ablate,
                  "Layers whose heads are made sparse one at a time (e.g. 18,23); default: probe only");
  sub->add_option("--pick-budget-layers", o->pick_like_layers,
                  "With --map-out: pick dense heads by out_err within the density these layers "
                  "would cost dense (e.g. 18,23)")
      ->capture_default_str();
  sub->add_option("--map-out", o->map_out,
                  "Write the cluster map (--clusters or the shipped one) with the picked dense "
                  "heads instead of its dense layers (format 2)");
  sub->callback([o] { run_heads(*o); });
}

command_registration reg(setup_heads);

}  // namespace
}  // namespace sp::cli
