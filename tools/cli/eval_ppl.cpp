// `shareprefill eval ppl`: perplexity per attention mode over non-overlapping windows of one or
// more text files, scoring the second half of each window, with tile density and prefill time.
// Lengths above the model's trained context need --rope-scaling and are marked "extended".
// --device cuda scores the windows on the GPU (cuda_llama_session: the device planner plans the
// sparse modes; the scored positions' log-probabilities are computed on the device).
// --chunk C prefills each window in chunks of C tokens (on either device), each chunk's queries
// over the keys so far, with a fresh or (--chunk-state carried) a carried sharing state (issue 16).
#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <map>

#include "cuda_model.h"
#include "device_option.h"
#include "eval_common.h"
#include "eval_windows.h"
#include "option_checks.h"
#include "prefill_report.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/plot.h"

namespace sp::cli {
namespace {

struct ppl_options {
  eval_common_options common;
  std::vector<std::string> texts;
  std::string lengths = "2048";
  int64_t windows = 2;
  std::string device;
  int64_t chunk = 0;                  // --chunk: tokens per prefill chunk (0: whole windows)
  std::string chunk_state = "fresh";  // --chunk-state: fresh or carried
};

void run_ppl(const ppl_options& o) {
  const char* fn = "eval ppl";
  const std::string device = resolve_device(o.device);
  check(o.windows > 0, fn, "--windows must be > 0, got ", o.windows);
  check(o.chunk >= 0 && o.chunk % 128 == 0, fn, "--chunk must be a multiple of 128 (0: whole ",
        "windows), got ", o.chunk);
  // Dense first, so every sparse row has its delta.
  std::vector<std::string> modes = eval_parse_modes(o.common.modes);
  std::stable_partition(modes.begin(), modes.end(), [](const std::string& m) { return m == "dense"; });
  const std::vector<int64_t> lengths = eval_parse_lengths(o.lengths, 0);
  const std::vector<double> gammas = eval_gammas(o.common);
  thread_pool pool(o.common.threads);
  loaded_model m = load_model(o.common.model, pool);
  const llama_config& c = m.weights.config;
  for (int64_t len : lengths)
    check_rope_length(o.common.rope, c, len, fn);
  const std::vector<text_tokens> texts = tokenize_texts(o.texts, *m.tok);

  std::unique_ptr<cuda_llama_weights> gpu_weights;
  if (device == "cuda") gpu_weights = std::make_unique<cuda_llama_weights>(load_cuda_weights(m.path));
  json_lines out(o.common.json);
  FILE* const report = o.common.json.text_stream();
  std::string said_dense_layers;
  std::map<std::string, plot_series> curves;  // label -> ppl over length
  if (o.chunk > 0)
    std::fprintf(report, "prefill in chunks of %lld tokens, %s sharing state per chunk\n",
                 static_cast<long long>(o.chunk),
                 o.chunk_state == "carried" ? "a carried" : "a fresh");
  std::fprintf(report, "%-13s %6s %7s %8s %9s %9s %8s %11s\n", "mode", "gamma", "length", "windows",
               "ppl", "d_dense", "density", "prefill_s");
  for (int64_t len : lengths) {
    const auto windows = pick_windows(texts, len, o.windows, fn);
    std::unique_ptr<cuda_llama_session> gpu;
    if (gpu_weights) gpu = std::make_unique<cuda_llama_session>(*gpu_weights, len);
    const bool extended = len > c.context_length;
    double dense_ppl = 0.0;
    for (const std::string& mode : modes) {
      const std::vector<double> gs = mode == "dense" ? std::vector<double>{0.0} : gammas;
      for (double gamma : gs) {
        attention_options ao = o.common.attention;
        if (mode != "dense") ao.params.gamma = gamma;
        attention_setup att = make_attention(ao, mode, c, m.path, len);
        const std::unique_ptr<device_planner> planner = gpu ? make_device_planner(att, c) : nullptr;
        // Said again when it changes: the map's thresholds can differ per length.
        if (mode != "dense" && describe_dense_layers(att) != said_dense_layers) {
          said_dense_layers = describe_dense_layers(att);
          std::fprintf(report, "dense layers in the sparse modes (density counts them): %s\n",
                       said_dense_layers.c_str());
        }
        std::vector<double> logprobs;
        double density = 0.0, seconds = 0.0;
        for (size_t w = 0; w < windows.size(); ++w) {
          const std::vector<int32_t> tokens = window_tokens(texts, windows[w], len);
          prefill_options po;
          po.attention = gpu ? nullptr : att.attention.get();
          po.rope = o.common.rope;
          po.chunk = o.chunk;
          po.chunk_carried = o.chunk_state == "carried";
          po.on_layer =
              layer_progress("[" + mode + " " + std::to_string(len) + " window " +
                             std::to_string(w + 1) + "/" + std::to_string(windows.size()) + "]");
          const window_score s = gpu ? score_window_cuda(*gpu, tokens, po, planner.get())
                                     : score_window(m.weights, pool, tokens, po);
          logprobs.insert(logprobs.end(), s.logprobs.begin(), s.logprobs.end());
          density += prefill_density(s.prefill) / double(windows.size());
          seconds += s.prefill.total_ms * 1e-3 / double(windows.size());
        }
        const double ppl = perplexity_from_logprobs(logprobs);
        if (mode == "dense") dense_ppl = ppl;
        // Without a dense run in --modes there is nothing to compare with: "-" and null.
        const bool has_delta = dense_ppl > 0;
        const double delta = has_delta ? 100.0 * (ppl / dense_ppl - 1.0) : 0.0;
        const std::string delta_text = has_delta ? str(std::fixed, std::setprecision(2), delta, "%") : "-";
        const std::string mark = extended ? "  (extended: rope " + o.common.rope.type + " x" +
                                                std::to_string(o.common.rope.factor) + ")"
                                          : "";
        std::fprintf(report, "%-13s %6s %7lld %8zu %9.4f %9s %8.3f %11.1f%s\n", mode.c_str(),
                     mode == "dense" ? "-" : std::to_string(gamma).substr(0, 4).c_str(),
                     (long long)len, windows.size(), ppl, delta_text.c_str(), density, seconds,
                     mark.c_str());
        std::fflush(stdout);
        nlohmann::json row = {{"eval", "ppl"},        {"mode", mode},
                              {"length", len},        {"ppl", ppl},
                              {"density", density},   {"prefill_s", seconds},
                              {"windows", window_sources(texts, windows)},   {"scored_tokens", logprobs.size()},
                              {"extended", extended},         {"device", device},
                              {"delta_vs_dense_pct", has_delta ? nlohmann::json(delta) : nlohmann::json(nullptr)}};
        row["gamma"] = mode == "dense" ? nlohmann::json(nullptr) : nlohmann::json(gamma);
        row["dense_layers"] =
            mode == "dense" ? nlohmann::json(nullptr) : nlohmann::json(att.dense_layers);
        row["thresholds"] = thresholds_record(att);
        row["chunk"] = o.chunk;
        if (o.chunk > 0) row["chunk_state"] = o.chunk_state;
        if (extended)
          row["rope"] = {{"type", o.common.rope.type}, {"factor", o.common.rope.factor}};
        out.write(row);
        const std::string label = mode == "dense" || gammas.size() == 1
                                      ? mode
                                      : mode + " g" + std::to_string(gamma).substr(0, 4);
        curves[label].label = label;
        curves[label].x.push_back(double(len));
        curves[label].y.push_back(ppl);
      }
    }
  }
  if (!o.common.png_dir.empty()) {
    line_plot p{"PERPLEXITY BY LENGTH", "TOKENS", "PPL", {}, false};
    for (auto& [label, s] : curves) p.series.push_back(s);
    plot_save_lines(png_path(o.common.png_dir, "ppl_by_length.png"), p);
  }
}

void setup_ppl(CLI::App& app) {
  auto o = std::make_shared<ppl_options>();
  CLI::App* sub = eval_app(app)->add_subcommand("ppl", "Perplexity per attention mode");
  add_eval_common_options(sub, o->common);
  sub->add_option("--texts", o->texts, "Comma-separated text files; windows are taken round-robin")
      ->delimiter(',')
      ->required();
  sub->add_option("--lengths", o->lengths, "Comma-separated window lengths in tokens")
      ->capture_default_str();
  sub->add_option("--windows", o->windows, "Windows per length (over all files)")
      ->capture_default_str();
  add_device_option(sub, o->device);
  sub->add_option("--chunk", o->chunk,
                  "prefill each window in chunks of this many tokens (a multiple of 128; 0: "
                  "whole windows), each chunk's queries over the keys so far")
      ->capture_default_str();
  add_chunk_state_option(sub, o->chunk_state);
  sub->callback([o] { run_ppl(*o); });
}

command_registration reg(setup_ppl);

}  // namespace
}  // namespace sp::cli
