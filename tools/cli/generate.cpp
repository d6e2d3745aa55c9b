// `shareprefill generate`: prefill a prompt file through the chosen attention mode, then decode a
// continuation (dense attention), printing the text and a summary of the prefill.
#include <chrono>
#include <cstdio>

#include "attention_options.h"
#include "command.h"
#include "json_output.h"
#include "model_loading.h"
#include "prefill_report.h"
#include "shareprefill/error.h"
#include "shareprefill/sampling.h"

namespace sp::cli {
namespace {

struct generate_options {
  std::string model, prompt_file;
  attention_options attention;
  int64_t max_new = 32;
  sampling_params sampling;
  std::string rope_scaling = "none";
  double rope_factor = 1.0;
  int threads = 0;
  json_option json;
  bool per_layer = false;
};

void run_generate(const generate_options& o) {
  o.sampling.validate();
  check(o.max_new >= 0, "generate", "--max-new must be >= 0, got ", o.max_new);
  thread_pool pool(o.threads);
  const std::string text = read_text_file(o.prompt_file);
  loaded_model m = load_model(o.model, pool);
  const llama_config& c = m.weights.config;
  const std::vector<int32_t> ids = m.tok->encode(text, /*add_bos=*/false);
  check(!ids.empty(), "generate", "the prompt '", o.prompt_file, "' encodes to no tokens");
  attention_setup att = make_attention(o.attention, o.attention.mode, c, m.path);

  llama_session session(m.weights, pool, static_cast<int64_t>(ids.size()) + o.max_new);
  prefill_options po;
  po.attention = att.attention.get();
  po.on_layer = layer_progress("prefill [" + att.mode + "]");
  po.rope = {o.rope_scaling, o.rope_factor};
  const prefill_result r = session.prefill(ids, po);

  sampler pick(o.sampling);
  std::vector<int32_t> out;
  int32_t next = pick.next(r.logits.data(), c.vocab_size);
  const auto t0 = std::chrono::steady_clock::now();
  while (static_cast<int64_t>(out.size()) < o.max_new) {
    out.push_back(next);
    if (next == m.tok->eos() || static_cast<int64_t>(out.size()) == o.max_new) break;
    const std::vector<float> logits = session.decode(next);
    next = pick.next(logits.data(), c.vocab_size);
  }
  const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double decode_tps = out.size() > 1 ? double(out.size() - 1) / decode_s : 0.0;

  nlohmann::json summary = prefill_summary(r, att.mode, static_cast<int64_t>(ids.size()));
  summary["clusters"] = att.cluster_source;
  summary["params"] = att.plan ? att.plan->params().to_json() : nlohmann::json(nullptr);
  summary["new_tokens"] = out.size();
  summary["decode_tokens_per_s"] = decode_tps;
  summary["peak_rss_mib"] = peak_rss_mib();
  summary["continuation"] = m.tok->decode(out);
  json_lines(o.json).write(summary);
  FILE* const report = o.json.text_stream();
  std::fprintf(report, "%s\n----\n", m.tok->decode(out).c_str());
  print_prefill_summary(report, summary, o.per_layer);
  if (att.mode != "dense")
    std::fprintf(report, "dense layers: %s\n", describe_dense_layers(att).c_str());
  std::fprintf(report, "decode: %zu tokens, %.1f tok/s (dense attention); peak RSS %.0f MiB\n",
               out.size(), decode_tps, peak_rss_mib());
}

void setup_generate(CLI::App& app) {
  auto o = std::make_shared<generate_options>();
  auto* sub = app.add_subcommand("generate", "Prefill a prompt (dense or sparse) and continue it");
  sub->add_option("--model", o->model, "GGUF model (default: the cached SmolLM2-135M-Instruct)");
  sub->add_option("--prompt-file", o->prompt_file, "Prompt text file")->required();
  add_attention_options(sub, o->attention);
  sub->add_option("--max-new", o->max_new, "Tokens to generate")->capture_default_str();
  sub->add_option("--temperature", o->sampling.temperature, "0 = greedy")->capture_default_str();
  sub->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass")->capture_default_str();
  sub->add_option("--seed", o->sampling.seed, "Sampling seed")->capture_default_str();
  sub->add_option("--rope-scaling", o->rope_scaling, "none | linear | ntk | yarn")
      ->capture_default_str();
  sub->add_option("--rope-factor", o->rope_factor, "RoPE scaling factor")->capture_default_str();
  sub->add_option("--threads", o->threads, "Worker threads (0 = all cores)");
  sub->add_flag("--per-layer", o->per_layer, "Print density and times per layer");
  add_json_option(sub, o->json, "one object: the prefill summary and the continuation");
  sub->callback([o] { run_generate(*o); });
}

command_registration reg(setup_generate);

}  // namespace
}  // namespace sp::cli
