// `shareprefill demo`: the README's main job. Prefills a long passage of a novel (default: the
// first 8K tokens of Emma, an evaluation novel) densely and with sparse attention, prints both
// summaries, the speedup of the attention part and of the whole prefill, and how well the
// sparse next-token distributions agree with the dense ones (top-1 and top-5 over the last
// positions). --device cuda runs both on the GPU; the report says where it ran.
#include <algorithm>
#include <cstdio>

#include "attention_options.h"
#include "command.h"
#include "cuda_model.h"
#include "device_option.h"
#include "json_output.h"
#include "model_loading.h"
#include "option_checks.h"
#include "prefill_report.h"
#include "shareprefill/error.h"
#include "shareprefill/model_cache.h"
#include "shareprefill/sampling.h"

namespace sp::cli {
namespace {

struct demo_options {
  std::string model, text, device;
  int64_t tokens = 8192;
  int64_t compare_positions = 64;
  attention_options attention;
  int threads = 0;
  json_option json;
};

struct agreement {
  double top1 = 0.0;  // share of positions whose argmax agrees
  double top5 = 0.0;  // mean |top5(dense) ∩ top5(sparse)| / 5
  bool last_top1 = false;  // the argmax agrees at the prompt's last position
};

agreement compare_logits(const std::vector<float>& dense, const std::vector<float>& sparse,
                         int64_t positions, int64_t vocab) {
  check(positions >= 1 && static_cast<int64_t>(dense.size()) >= positions * vocab &&
            static_cast<int64_t>(sparse.size()) >= positions * vocab,
        "compare_logits", "need logits of at least one position, got ", positions);
  agreement a;
  for (int64_t p = 0; p < positions; ++p) {
    const float* d = dense.data() + p * vocab;
    const float* s = sparse.data() + p * vocab;
    a.top1 += argmax(d, vocab) == argmax(s, vocab);
    const auto td = top_k_indices(d, vocab, 5), ts = top_k_indices(s, vocab, 5);
    int64_t common = 0;
    for (int32_t t : td) common += std::count(ts.begin(), ts.end(), t);
    a.top5 += double(common) / 5.0;
  }
  a.last_top1 = argmax(dense.data() + (positions - 1) * vocab, vocab) ==
                argmax(sparse.data() + (positions - 1) * vocab, vocab);
  a.top1 /= double(positions);
  a.top5 /= double(positions);
  return a;
}

void run_demo(demo_options o) {
  check(o.tokens > 0, "demo", "--tokens must be positive, got ", o.tokens);
  const std::string device = resolve_device(o.device);
  thread_pool pool(o.threads);
  if (o.text.empty()) o.text = cache_dir() + "/corpora/austen/emma.txt";
  const std::string text = read_text_file(o.text);
  loaded_model m = load_model(o.model, pool);
  const llama_config& c = m.weights.config;
  std::vector<int32_t> ids = m.tok->encode(text, /*add_bos=*/false);
  check(static_cast<int64_t>(ids.size()) >= o.tokens, "demo", "'", o.text, "' has only ",
        ids.size(), " tokens, fewer than --tokens ", o.tokens);
  ids.resize(static_cast<size_t>(o.tokens));
  if (o.attention.mode == "dense") o.attention.mode = "shareprefill";
  if (o.attention.mode == "shareprefill" && o.attention.clusters.empty() &&
      default_cluster_map_path(m.path).empty()) {
    std::fprintf(stderr, "no shipped cluster map for this model: using flexprefill instead\n");
    o.attention.mode = "flexprefill";
  }
  const int64_t n_cmp = std::min(o.compare_positions, o.tokens);
  prefill_options po;
  for (int64_t p = o.tokens - n_cmp; p < o.tokens; ++p) po.logit_positions.push_back(p);

  FILE* const report = o.json.text_stream();
  std::unique_ptr<cuda_llama_weights> gpu_weights;
  if (device == "cuda") gpu_weights = std::make_unique<cuda_llama_weights>(load_cuda_weights(m.path));
  std::vector<nlohmann::json> summaries;
  std::vector<std::vector<float>> logits;
  for (const std::string& mode : {std::string("dense"), o.attention.mode}) {
    attention_setup att = make_attention(o.attention, mode, c, m.path, o.tokens);
    po.on_layer = layer_progress("prefill [" + mode + "]");
    prefill_result r;
    if (gpu_weights) {
      const std::unique_ptr<device_planner> planner = make_device_planner(att, c);
      cuda_llama_session session(*gpu_weights, o.tokens);
      po.attention = nullptr;
      r = session.prefill(ids, po, planner.get());
    } else {
      llama_session session(m.weights, pool, o.tokens);
      po.attention = att.attention.get();
      r = session.prefill(ids, po);
    }
    nlohmann::json s = prefill_summary(r, mode, o.tokens);
    s["device"] = device;
    s["clusters"] = att.cluster_source;
    if (att.plan) s["params"] = att.plan->params().to_json();
    print_prefill_summary(report, s, /*per_layer=*/false);
    if (mode != "dense")
      std::fprintf(report, "[%s] dense layers: %s\n", mode.c_str(),
                   describe_dense_layers(att).c_str());
    summaries.push_back(std::move(s));
    logits.push_back(std::move(r.logits));
  }
  const agreement a = compare_logits(logits[0], logits[1], n_cmp, c.vocab_size);
  const auto& d = summaries[0];
  const auto& s = summaries[1];
  const double attn_speedup = d.at("attention_ms").get<double>() / s.at("attention_ms").get<double>();
  const double prefill_speedup = d.at("prefill_ms").get<double>() / s.at("prefill_ms").get<double>();
  json_lines(o.json).write({{"text", o.text},
                            {"device", device},
                            {"dense", d},
                            {"sparse", s},
                            {"attention_speedup", attn_speedup},
                            {"prefill_speedup", prefill_speedup},
                            {"compared_positions", n_cmp},
                            {"top1_agreement", a.top1},
                            {"top5_agreement", a.top5},
                            {"last_top1_equal", a.last_top1},
                            {"peak_rss_mib", peak_rss_mib()}});
  std::fprintf(report, "\n%s vs dense on %lld tokens of %s, on the %s:\n",
               o.attention.mode.c_str(), (long long)o.tokens, o.text.c_str(),
               device == "cuda" ? "GPU (cuda)" : "CPU");
  std::fprintf(report, "  attention %.2fx faster, whole prefill %.2fx faster, density %.3f\n",
               attn_speedup, prefill_speedup, s.at("density").get<double>());
  std::fprintf(report, "  next token after the prompt: top-1 %s\n",
               a.last_top1 ? "equal to dense" : "DIFFERS from dense");
  std::fprintf(
      report,
      "  next-token agreement over the last %lld positions: top-1 %.1f%%, top-5 overlap %.1f%%\n",
      (long long)n_cmp, 100 * a.top1, 100 * a.top5);
  std::fprintf(report, "  peak RSS %.0f MiB\n", peak_rss_mib());
}

void setup_demo(CLI::App& app) {
  auto o = std::make_shared<demo_options>();
  auto* sub = app.add_subcommand("demo", "Dense vs sparse prefill of a long passage, side by side");
  sub->add_option("--model", o->model, "GGUF model (default: the cached SmolLM2-135M-Instruct)");
  sub->add_option("--text", o->text, "Text file (default: Emma from the cached Austen corpus)");
  sub->add_option("--tokens", o->tokens, "Prompt length in tokens")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  sub->add_option("--compare-positions", o->compare_positions,
                  "Last positions whose next-token distributions are compared (>= 1)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  add_device_option(sub, o->device);
  o->attention.mode = "shareprefill";
  add_attention_options(sub, o->attention);
  add_threads_option(sub, o->threads);
  add_json_option(sub, o->json, "one object: both summaries, speedups and agreement");
  sub->callback([o] { run_demo(*o); });
}

command_registration reg(setup_demo);

}  // namespace
}  // namespace sp::cli
