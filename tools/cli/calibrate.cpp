// `shareprefill calibrate`: the offline phase (DESIGN.md section 3). Runs the model densely over
// each calibration text x length (the first `length` tokens of the text), captures every head's
// exact block attention, clusters the heads and writes the cluster map; --report DIR adds the
// markdown report with the paper's two observations and figures. --save-capture / --capture keep
// and reuse the captured tensors so clustering settings can be explored without the model.
// --dense-layers-pick K then chooses the layers the sparse modes should leave dense by a
// single-layer perplexity ablation on the texts (shareprefill/dense_layer_choice.h) and stores
// them in the map. --device cuda (the default when a GPU is usable) captures on the GPU: the CUDA
// forward with the weights on the device, cuda_capture on each layer's q, k, v; the ablation runs
// on the CPU either way.
#include "shareprefill/calibrate.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "command.h"
#include "cuda_model.h"
#include "device_option.h"
#include "model_loading.h"
#include "option_checks.h"
#include "prefill_report.h"
#include "shareprefill/dense_layer_choice.h"
#include "shareprefill/error.h"
#include "shareprefill/layer_list.h"

namespace sp::cli {
namespace {

struct calibrate_options {
  std::string model, out, report, metric = "js", save_capture, capture;
  std::vector<std::string> texts;
  std::vector<int64_t> lengths{8192};
  rope_scaling_options rope;  // --rope-scaling, --rope-factor (lengths beyond the trained context)
  calibration_settings settings;
  int64_t dense_pick = 0;  // --dense-layers-pick: 0 = no ablation
  std::string dense_candidates, dense_mode = "shareprefill";
  std::string device;  // --device as given ("" = the default); resolved in run_calibrate
  std::string capture_device;  // where the capture runs: "cpu" or "cuda" ("" = no capture)
  double dense_min_gain = 0.1;
  bool allow_evaluation = false;
  int threads = 0;
  std::string command_line;
};

std::string text_name(const std::string& path) {
  return std::filesystem::path(path).stem().string();
}

// The split ("calibration", "evaluation", ...) data/corpora.json gives a text, or "unlisted".
std::string split_of(const std::string& name) {
  std::ifstream f(std::string(SP_SOURCE_DIR) + "/data/corpora.json");
  if (!f.good()) return "unlisted";
  const nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded() || !j.contains("split")) return "unlisted";
  for (const auto& [split, names] : j["split"].items())
    for (const auto& n : names)
      if (n == name) return split;
  return "unlisted";
}

// The first `length` tokens of a text: a prefix of the text is encoded (whole lines, a generous
// 12 bytes per token), the whole text only when the prefix is too short.
std::vector<int32_t> first_tokens(const tokenizer& tok, const std::string& text, int64_t length,
                                  const std::string& path) {
  size_t cut = std::min(text.size(), static_cast<size_t>(length) * 12);
  if (cut < text.size())
    cut = text.rfind('\n', cut) == std::string::npos ? cut : text.rfind('\n', cut);
  std::vector<int32_t> ids = tok.encode(text.substr(0, cut), /*add_bos=*/false);
  if (static_cast<int64_t>(ids.size()) < length && cut < text.size()) ids = tok.encode(text, false);
  check(static_cast<int64_t>(ids.size()) >= length, "calibrate", "'", path, "' has ", ids.size(),
        " tokens, fewer than the requested length ", length,
        " (use a longer text or a shorter --lengths)");
  ids.resize(static_cast<size_t>(length));
  return ids;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// The calibration texts, checked against the evaluation split.
std::vector<std::string> read_calibration_texts(const calibrate_options& o) {
  std::vector<std::string> contents;
  for (const auto& path : o.texts) {
    const std::string name = text_name(path), split = split_of(name);
    check(split != "evaluation" || o.allow_evaluation, "calibrate", "'", path, "' (", name,
          ") is in the evaluation split of data/corpora.json; calibrating on it would leak into "
          "the evaluation (pass --allow-evaluation-texts to do it anyway)");
    contents.push_back(read_text_file(path));
  }
  return contents;
}

// Every text x length captured: on the CPU (the capture strategy in the CPU forward) or, with
// gpu, on the GPU (cuda_capture on the CUDA forward's q, k, v).
std::vector<calibration_input> capture_inputs(const calibrate_options& o,
                                              const std::vector<std::string>& contents,
                                              const loaded_model& m,
                                              const cuda_llama_weights* gpu, thread_pool& pool) {
  const char* fn = "calibrate";
  const int64_t bs = 128;
  for (int64_t len : o.lengths)
    check(len >= bs, fn, "--lengths: ", len, " is shorter than one block (", bs, " tokens)");
  const llama_config& c = m.weights.config;
  std::vector<calibration_input> inputs;
  for (size_t t = 0; t < o.texts.size(); ++t)
    for (int64_t len : o.lengths) {
      calibration_input in;
      in.text = text_name(o.texts[t]);
      const std::vector<int32_t> ids = first_tokens(*m.tok, contents[t], len, o.texts[t]);
      std::fprintf(stderr, "calibrate: input %zu/%zu: %s, %lld tokens\n", inputs.size() + 1,
                   o.texts.size() * o.lengths.size(), in.text.c_str(), (long long)len);
      prefill_options po;
      po.rope = o.rope;
      po.on_layer = layer_progress(str("calibrate ", in.text, "@", len));
      const auto t0 = std::chrono::steady_clock::now();
      if (gpu != nullptr) {
        cuda_capture capture(&in, c.n_layers, pool, o.settings.gamma);
        cuda_llama_session session(*gpu, len);
        po.on_attention_inputs = capture.hook();
        session.prefill(ids, po);
      } else {
        auto capture = make_capture_attention(&in, c.n_layers, bs, o.settings.gamma);
        llama_session session(m.weights, pool, len);
        po.attention = capture.get();
        session.prefill(ids, po);
      }
      std::fprintf(stderr, "calibrate: %s captured on the %s in %.1f s\n", in.label().c_str(),
                   gpu != nullptr ? "GPU (cuda)" : "CPU",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      inputs.push_back(std::move(in));
    }
  return inputs;
}

// --dense-layers-pick: the ablation on the first max(--lengths) tokens of each text, in
// --dense-mode with the map just made; the chosen layers and the record go into the map.
void choose_map_dense_layers(const calibrate_options& o, const std::vector<std::string>& contents,
                             const loaded_model& m, thread_pool& pool, const planner_params& params,
                             cluster_map& map) {
  const int64_t length = *std::max_element(o.lengths.begin(), o.lengths.end());
  std::vector<std::vector<int32_t>> windows;
  for (size_t t = 0; t < o.texts.size(); ++t)
    windows.push_back(first_tokens(*m.tok, contents[t], length, o.texts[t]));
  dense_layer_settings settings;
  settings.candidates =
      parse_layer_list(o.dense_candidates, m.weights.config.n_layers, "--dense-candidates");
  settings.count = o.dense_pick;
  settings.min_gain_pct = o.dense_min_gain;
  settings.rope = o.rope;
  const int64_t runs =
      static_cast<int64_t>(settings.layers_to_try(m.weights.config.n_layers).size()) + 1;
  std::fprintf(stderr,
               "calibrate: dense-layer ablation on the CPU, %s mode, %zu windows of %lld tokens, "
               "%lld runs\n",
               plan_mode_name(params.mode), windows.size(), (long long)length, (long long)runs);
  const auto t0 = std::chrono::steady_clock::now();
  const dense_layer_choice choice = choose_dense_layers(
      m.weights, pool, windows, params, &map, settings,
      [&](int64_t done, int64_t total, const std::string& label) {
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr,
                     "calibrate: ablation %lld/%lld (%s) done, %.0f s elapsed, ~%.0f s left\n",
                     (long long)done, (long long)total, label.c_str(), s,
                     s / double(done) * double(total - done));
      });
  map.dense_layers = choice.chosen;
  map.calibration["dense_layer_selection"] =
      choice.to_json(settings, params, static_cast<int64_t>(windows.size()), length);
  std::printf("calibrate: every layer sparse: ppl %.4f; dense layers chosen: %s\n",
              choice.sparse_ppl,
              choice.chosen.empty() ? "none" : format_layer_list(choice.chosen).c_str());
  for (const auto& g : choice.gains)
    std::printf("  layer %2lld dense: ppl %.4f (%+.3f%%)\n", (long long)g.layer, g.ppl,
                -g.gain_pct);
}

// The effective command (defaults filled in), recorded in the map and the report.
std::string command_line_of(const calibrate_options& o) {
  std::ostringstream cmd;
  cmd << "shareprefill calibrate";
  if (!o.model.empty()) cmd << " --model " << o.model;
  if (!o.texts.empty()) {
    cmd << " --texts ";
    for (size_t i = 0; i < o.texts.size(); ++i) cmd << (i ? "," : "") << o.texts[i];
    cmd << " --lengths ";
    for (size_t i = 0; i < o.lengths.size(); ++i) cmd << (i ? "," : "") << o.lengths[i];
    if (o.rope.type != "none")
      cmd << " --rope-scaling " << o.rope.type << " --rope-factor " << o.rope.factor;
  }
  if (!o.capture.empty()) cmd << " --capture " << o.capture;
  if (!o.capture_device.empty()) cmd << " --device " << o.capture_device;
  cmd << " --metric " << o.metric << " --cut " << o.settings.cut;
  if (o.settings.clusters > 0) cmd << " --cluster-count " << o.settings.clusters;
  if (o.dense_pick > 0) {
    cmd << " --dense-layers-pick " << o.dense_pick << " --dense-mode " << o.dense_mode
        << " --dense-min-gain " << o.dense_min_gain;
    if (!o.dense_candidates.empty()) cmd << " --dense-candidates " << o.dense_candidates;
  }
  cmd << " --out " << o.out;
  if (!o.report.empty()) cmd << " --report " << o.report;
  return cmd.str();
}

void run_calibrate(calibrate_options& o) {
  const char* fn = "calibrate";
  const auto t0 = std::chrono::steady_clock::now();
  o.settings.metric = calib_metric_from_name(o.metric);
  check(o.settings.cut > 0.0 && o.settings.cut <= 1.0, fn, "--cut must be in (0, 1], got ",
        o.settings.cut);
  check(o.settings.clusters >= 0, fn, "--cluster-count must be >= 1, got ", o.settings.clusters);
  check(!o.texts.empty() || !o.capture.empty(), fn, "give --texts (or --capture)");
  check(o.dense_pick >= 0, fn, "--dense-layers-pick must be >= 0, got ", o.dense_pick);
  check(o.dense_pick == 0 || !o.texts.empty(), fn,
        "--dense-layers-pick runs the model on the calibration texts: give --texts");
  check(o.capture.empty() || o.texts.empty() || o.dense_pick > 0, fn,
        "--texts and --capture both given: --capture clusters the saved inputs and the texts "
        "would be ignored (with --capture, --texts only feeds --dense-layers-pick)");
  planner_params dense_params;
  dense_params.mode = plan_mode_from_name(o.dense_mode);
  check(o.dense_pick == 0 || dense_params.mode != plan_mode::dense, fn,
        "--dense-mode must be a sparse mode (vslash, flexprefill or shareprefill)");
  // Where the capture runs, resolved (and a cuda request without a GPU refused) before any work.
  if (o.capture.empty()) o.capture_device = resolve_device(o.device);
  o.command_line = command_line_of(o);
  thread_pool pool(o.threads);
  const std::vector<std::string> contents = read_calibration_texts(o);
  // The model: to capture, to run the dense-layer ablation, or just for its name with --capture.
  std::unique_ptr<loaded_model> m;
  if (o.capture.empty() || o.dense_pick > 0 || !o.model.empty())
    m = std::make_unique<loaded_model>(load_model(o.model, pool));
  // The model runs on the texts (capture, ablation): every length must fit its context, or
  // the usable context under --rope-scaling.
  if (o.capture.empty() || o.dense_pick > 0)
    for (int64_t len : o.lengths) check_rope_length(o.rope, m->weights.config, len, fn);
  cluster_model_info info;
  if (m) {
    const llama_config& c = m->weights.config;
    info = {c.name, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim};
  }
  std::unique_ptr<cuda_llama_weights> gpu;
  if (o.capture_device == "cuda")
    gpu = std::make_unique<cuda_llama_weights>(load_cuda_weights(m->path));
  if (!o.capture_device.empty())
    std::fprintf(stderr, "calibrate: capturing on the %s (--device %s)\n",
                 gpu ? "GPU" : "CPU", o.capture_device.c_str());
  std::vector<calibration_input> inputs = o.capture.empty()
                                              ? capture_inputs(o, contents, *m, gpu.get(), pool)
                                              : load_calibration_inputs(o.capture);
  gpu.reset();  // the device memory is not needed past the capture
  if (!m) info = {"", inputs[0].layers, inputs[0].heads, 0, 0};
  if (!o.save_capture.empty()) save_calibration_inputs(o.save_capture, inputs);

  calibration_result r = calibrate_from_inputs(inputs, o.settings, info);
  if (o.dense_pick > 0) choose_map_dense_layers(o, contents, *m, pool, dense_params, r.map);
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json splits = nlohmann::json::object();
  for (const auto& in : inputs) splits[in.text] = split_of(in.text);
  r.map.calibration["splits"] = splits;
  r.map.calibration["tool"] = "shareprefill calibrate 0.1.0";
  r.map.calibration["date"] = utc_now();
  r.map.calibration["wall_s"] = std::round(wall_s * 10.0) / 10.0;
  r.map.calibration["shared_rule"] =
      "size >= 2, mean pairwise distance <= cut on every input, mean vs coverage < tau_fb";
  r.map.calibration["command"] = o.command_line;
  if (!o.capture_device.empty()) r.map.calibration["capture_device"] = o.capture_device;
  cluster_map_save(o.out, r.map);

  int64_t shared = 0, shared_heads = 0;
  for (const auto& v : r.verdicts)
    if (v.shared) {
      ++shared;
      shared_heads += static_cast<int64_t>(v.members.size());
    }
  std::printf(
      "calibrate: %zu inputs, metric %s, %zu clusters, %lld shared (%lld heads) -> %s "
      "(%.1f s)\n",
      inputs.size(), o.metric.c_str(), r.verdicts.size(), (long long)shared,
      (long long)shared_heads, o.out.c_str(), wall_s);
  if (!o.report.empty()) {
    const std::vector<metric_report> obs = observation_report(inputs, o.settings);
    report_context ctx{
        o.command_line, utc_now(), wall_s,
        str(pool.size(), " threads, ", std::thread::hardware_concurrency(), " hardware threads")};
    for (const auto& f : write_calibration_report(o.report, r, inputs, obs, o.settings, ctx))
      std::printf("wrote %s\n", f.c_str());
  }
}

void setup_calibrate(CLI::App& app) {
  auto o = std::make_shared<calibrate_options>();
  auto* sub = app.add_subcommand("calibrate", "Cluster the model's heads offline (cluster map)");
  sub->add_option("--model", o->model, "GGUF model (default: the cached SmolLM2-135M-Instruct)");
  sub->add_option("--texts", o->texts, "Calibration text files")->delimiter(',');
  sub->add_option("--lengths", o->lengths, "Token lengths (first N tokens of each text)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--out", o->out, "Cluster map JSON to write")->required();
  sub->add_option("--metric", o->metric, "jaccard | js")->capture_default_str();
  sub->add_option("--cut", o->settings.cut,
                  "Distance cut in (0, 1]; also the per-input similarity bar for sharing")
      ->capture_default_str();
  sub->add_option("--cluster-count", o->settings.clusters, "Cut the tree into K clusters instead");
  sub->add_option("--gamma", o->settings.gamma, "gamma-pattern threshold")->capture_default_str();
  sub->add_option("--tau-fb", o->settings.tau_fb, "Vertical-slash coverage bar for sharing")
      ->capture_default_str();
  sub->add_option("--report", o->report, "Write report.md and figures to this directory");
  sub->add_option("--save-capture", o->save_capture, "Save the captured block attention");
  sub->add_option("--capture", o->capture, "Cluster a saved capture instead of running the model");
  sub->add_option("--dense-layers-pick", o->dense_pick,
                  "Choose up to K layers for the sparse modes to run dense, by single-layer "
                  "perplexity ablation on the texts (1 + layers model runs, on the CPU whatever "
                  "--device says; 0 = skip)")
      ->capture_default_str();
  sub->add_option("--dense-candidates", o->dense_candidates,
                  "Layers the ablation tries, e.g. 11-29 (default: every layer)");
  sub->add_option("--dense-mode", o->dense_mode, "Sparse mode the ablation runs in")
      ->capture_default_str();
  sub->add_option("--dense-min-gain", o->dense_min_gain,
                  "Perplexity cut (percent) a chosen layer must bring at least")
      ->capture_default_str();
  sub->add_flag("--allow-evaluation-texts", o->allow_evaluation,
                "Allow texts of the evaluation split");
  add_rope_options(sub, o->rope.type, o->rope.factor);
  add_device_option(sub, o->device);
  add_threads_option(sub, o->threads);
  sub->callback([o] { run_calibrate(*o); });
}

command_registration reg(setup_calibrate);

}  // namespace
}  // namespace sp::cli
