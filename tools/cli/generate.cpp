// `shareprefill generate`: prefill a prompt file through the chosen attention mode, then decode a
// continuation (dense attention), printing the text and a summary of the prefill. --device cuda
// runs the forward on the GPU (the device planner plans the sparse modes).
#include <chrono>
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
#include "shareprefill/sampling.h"

namespace sp::cli {
namespace {

struct generate_options {
  std::string model, prompt_file, device;
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
  const std::string device = resolve_device(o.device);
  o.sampling.validate();
  thread_pool pool(o.threads);
  const std::string text = read_text_file(o.prompt_file);
  loaded_model m = load_model(o.model, pool);
  const llama_config& c = m.weights.config;
  const std::vector<int32_t> ids = m.tok->encode(text, /*add_bos=*/false);
  check(!ids.empty(), "generate", "the prompt '", o.prompt_file, "' encodes to no tokens");
  // The prompt and the continuation must fit the (rope-scaled) context: decoding past it would
  // run positions the model never saw. Compared without adding (max_new is at most 2^30).
  const rope_scaling_options rope{o.rope_scaling, o.rope_factor};
  const int64_t context = llama_usable_context(c, rope), prompt = static_cast<int64_t>(ids.size());
  const std::string kind = o.rope_scaling == "none" ? "trained" : "rope-scaled";
  const std::string or_rope =
      o.rope_scaling == "none" ? " (or pass --rope-scaling with --rope-factor)" : "";
  check(prompt <= context, "generate", "the prompt's ", prompt, " tokens exceed the model's ",
        kind, " context of ", context, " tokens: shorten it", or_rope);
  check(o.max_new <= context - prompt, "generate", "the prompt's ", prompt,
        " tokens plus --max-new ", o.max_new, " exceed the model's ", kind, " context of ",
        context, " tokens: use --max-new ", context - prompt, " or less", or_rope);
  attention_setup att = make_attention(o.attention, o.attention.mode, c, m.path, prompt);

  prefill_options po;
  po.on_layer = layer_progress("prefill [" + att.mode + "]");
  po.rope = rope;
  // The session of the chosen device; decode(token) continues it.
  std::unique_ptr<llama_session> cpu;
  std::unique_ptr<cuda_llama_weights> gpu_weights;
  std::unique_ptr<device_planner> gpu_planner;
  std::unique_ptr<cuda_llama_session> gpu;
  prefill_result r;
  if (device == "cuda") {
    gpu_weights = std::make_unique<cuda_llama_weights>(load_cuda_weights(m.path));
    gpu_planner = make_device_planner(att, c);
    gpu = std::make_unique<cuda_llama_session>(*gpu_weights, prompt + o.max_new);
    r = gpu->prefill(ids, po, gpu_planner.get());
  } else {
    cpu = std::make_unique<llama_session>(m.weights, pool, prompt + o.max_new);
    po.attention = att.attention.get();
    r = cpu->prefill(ids, po);
  }
  sampler pick(o.sampling);
  // The next token after `t`: greedy on the GPU takes the argmax there and downloads one id
  // (the same choice as the sampler's, first index on ties); otherwise the logits come back.
  const auto next_after = [&](int32_t t) {
    if (gpu && o.sampling.temperature == 0.0) return gpu->decode_greedy(t);
    const std::vector<float> logits = gpu ? gpu->decode(t) : cpu->decode(t);
    return pick.next(logits.data(), c.vocab_size);
  };
  std::vector<int32_t> out;
  int32_t next = pick.next(r.logits.data(), c.vocab_size);
  const auto t0 = std::chrono::steady_clock::now();
  while (static_cast<int64_t>(out.size()) < o.max_new) {
    out.push_back(next);
    if (next == m.tok->eos() || static_cast<int64_t>(out.size()) == o.max_new) break;
    next = next_after(next);
  }
  const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double decode_tps = out.size() > 1 ? double(out.size() - 1) / decode_s : 0.0;

  nlohmann::json summary = prefill_summary(r, att.mode, static_cast<int64_t>(ids.size()));
  summary["clusters"] = att.cluster_source;
  summary["params"] = att.plan ? att.plan->params().to_json() : nlohmann::json(nullptr);
  summary["device"] = device;
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
  std::fprintf(report, "decode: %zu tokens, %.1f tok/s (dense attention) on %s; peak RSS %.0f MiB\n",
               out.size(), decode_tps, device.c_str(), peak_rss_mib());
}

void setup_generate(CLI::App& app) {
  auto o = std::make_shared<generate_options>();
  auto* sub = app.add_subcommand("generate", "Prefill a prompt (dense or sparse) and continue it");
  sub->add_option("--model", o->model, "GGUF model (default: the cached SmolLM2-135M-Instruct)");
  sub->add_option("--prompt-file", o->prompt_file, "Prompt text file")->required();
  add_device_option(sub, o->device);
  add_attention_options(sub, o->attention);
  sub->add_option("--max-new", o->max_new,
                  "Tokens to generate (the prompt and these must fit the context)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  sub->add_option("--temperature", o->sampling.temperature, "0 = greedy")->capture_default_str();
  sub->add_option("--top-p", o->sampling.top_p, "Nucleus sampling mass")->capture_default_str();
  add_seed_option(sub, o->sampling.seed, "Sampling seed");
  add_rope_options(sub, o->rope_scaling, o->rope_factor);
  add_threads_option(sub, o->threads);
  sub->add_flag("--per-layer", o->per_layer, "Print density and times per layer");
  add_json_option(sub, o->json, "one object: the prefill summary and the continuation");
  sub->callback([o, sub] {
    if (o->attention.mode == "dense") warn_ignored_in_dense(sub, "with --mode dense");
    run_generate(*o);
  });
}

command_registration reg(setup_generate);

}  // namespace
}  // namespace sp::cli
