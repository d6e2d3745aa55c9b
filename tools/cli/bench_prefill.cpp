// `shareprefill bench prefill`: end-to-end prefill of the real model on the GPU (issue 14 item 5).
// For each length (the first N tokens of a text, default Emma; beyond the trained context with
// YaRN at factor ceil(N / context)) and each mode: one untimed prefill that also scores the
// window's second half (perplexity, computed on the device), then --repeats timed prefills; the
// median one is reported. One JSON line per (length, mode): n, mode, tokens_per_s, ttft_ms (the
// whole prefill with the last position's logits on the host), attention_share and plan_share
// (CUDA-event times over ttft; attention includes planning), density (visited / causal tiles over
// all layers and heads), peak_bytes (weights + the session's activations, KV cache and planner
// memory), device_used_bytes (cudaMemGetInfo after the mode: every allocation of the process
// and the CUDA context), ppl, ppl_ratio (to dense at that length). With --decode K, after the
// dense prefill of each length: K greedy decode steps, one "decode" line with tokens_per_s.
// --save-tokens writes the longest window's ids (JSON) for scripts/bench_prefill_hf.py.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "attention_options.h"
#include "command.h"
#include "cuda_model.h"
#include "device_option.h"
#include "json_output.h"
#include "model_loading.h"
#include "option_checks.h"
#include "prefill_report.h"
#include "shareprefill/cuda_events.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/model_cache.h"
#include "shareprefill/sampling.h"

namespace sp::cli {
namespace {

struct prefill_bench_options {
  std::string model, text, device = "cuda", save_tokens;
  std::vector<int64_t> lengths{8192, 32768, 131072};
  std::vector<std::string> modes{"dense", "vslash", "flexprefill", "shareprefill"};
  attention_options attention;
  int repeats = 3;
  int64_t decode = 64;
  int threads = 0;
  json_option json;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// YaRN at factor ceil(n / context) beyond the trained context, none within it.
rope_scaling_options rope_for(int64_t n, const llama_config& c) {
  if (n <= c.context_length) return {};
  return {"yarn", std::ceil(double(n) / double(c.context_length))};
}

void run_prefill_bench(prefill_bench_options o) {
  const char* fn = "bench prefill";
  check(resolve_device(o.device) == "cuda", fn, "runs on the GPU only (--device cuda); "
        "`eval ppl --device cpu` measures the CPU forward");
  check(o.repeats >= 1, fn, "--repeats must be >= 1, got ", o.repeats);
  check(!o.lengths.empty() && !o.modes.empty(), fn, "--lengths and --modes must not be empty");
  for (const std::string& m : o.modes) plan_mode_from_name(m);  // names checked before the work
  std::sort(o.lengths.begin(), o.lengths.end());
  thread_pool pool(o.threads);
  if (o.text.empty()) o.text = cache_dir() + "/corpora/austen/emma.txt";
  const std::string text = read_text_file(o.text);
  loaded_model m = load_model(o.model, pool);
  const llama_config& c = m.weights.config;
  const std::vector<int32_t> all = m.tok->encode(text, /*add_bos=*/false);
  const int64_t longest = o.lengths.back();
  check(static_cast<int64_t>(all.size()) >= longest, fn, "'", o.text, "' has ", all.size(),
        " tokens, fewer than the longest length ", longest);
  for (int64_t n : o.lengths) check(n >= 2, fn, "lengths must be >= 2, got ", n);
  if (!o.save_tokens.empty()) {
    std::ofstream f(o.save_tokens);
    f << nlohmann::json{{"text", o.text},
                        {"tokens", std::vector<int32_t>(all.begin(), all.begin() + longest)}};
    check(f.good(), fn, "cannot write --save-tokens '", o.save_tokens, "'");
  }
  const cuda_llama_weights weights = load_cuda_weights(m.path);
  json_lines out(o.json);
  FILE* const report = o.json.text_stream();
  std::fprintf(report, "%-13s %7s %9s %10s %7s %7s %8s %9s %9s %8s\n", "mode", "n", "ttft_ms",
               "tok/s", "attn%", "plan%", "density", "peak_MiB", "ppl", "ppl/dense");
  for (int64_t n : o.lengths) {
    const std::vector<int32_t> tokens(all.begin(), all.begin() + n);
    const rope_scaling_options rope = rope_for(n, c);
    const int64_t first = ppl_logit_positions(n).front();
    const std::vector<int32_t> targets(tokens.begin() + first + 1, tokens.end());
    cuda_llama_session session(weights, n + o.decode);
    double dense_ppl = 0.0;
    for (const std::string& mode : o.modes) {
      const attention_setup att = make_attention(o.attention, mode, c, m.path);
      const std::unique_ptr<device_planner> planner = make_device_planner(att, c);
      prefill_options po;
      po.rope = rope;
      session.reset();
      session.prefill(tokens, po, planner.get());  // warm-up, and the scored window
      const std::vector<float> lp = session.token_logprobs(first, targets);
      const double ppl = perplexity_from_logprobs(std::vector<double>(lp.begin(), lp.end()));
      if (mode == "dense") dense_ppl = ppl;
      std::vector<prefill_result> runs;
      std::vector<double> ttft;
      for (int r = 0; r < o.repeats; ++r) {
        session.reset();
        runs.push_back(session.prefill(tokens, po, planner.get()));
        ttft.push_back(runs.back().total_ms);
      }
      const double mid = median(ttft);
      const prefill_result& res =
          *std::find_if(runs.begin(), runs.end(), [&](const prefill_result& x) { return x.total_ms == mid; });
      const int64_t peak = static_cast<int64_t>(weights.bytes()) + session.device_bytes();
      nlohmann::json row = {
          {"bench", "prefill"}, {"device", "cuda"}, {"mode", mode}, {"n", n},
          {"rope", {{"type", rope.type}, {"factor", rope.factor}}},
          {"ttft_ms", mid}, {"ttft_ms_all", ttft}, {"tokens_per_s", double(n) / (mid * 1e-3)},
          {"attention_ms", res.attention_ms}, {"plan_ms", res.plan_ms},
          {"attention_share", res.attention_ms / mid}, {"plan_share", res.plan_ms / mid},
          {"density", prefill_density(res)}, {"peak_bytes", peak},
          {"device_used_bytes", static_cast<int64_t>(cuda_memory().used())},
          {"ppl", ppl}, {"scored_tokens", targets.size()},
          {"ppl_ratio", dense_ppl > 0 ? nlohmann::json(ppl / dense_ppl) : nlohmann::json(nullptr)},
          {"dense_layers", att.dense_layers}, {"clusters", att.cluster_source},
          {"summary", prefill_summary(res, mode, n)}};
      out.write(row);
      std::fprintf(report, "%-13s %7lld %9.2f %10.0f %6.1f%% %6.1f%% %8.3f %9.0f %9.4f %8s\n",
                   mode.c_str(), (long long)n, mid, double(n) / (mid * 1e-3),
                   100 * res.attention_ms / mid, 100 * res.plan_ms / mid, prefill_density(res),
                   double(peak) / (1 << 20), ppl,
                   dense_ppl > 0 ? str(ppl / dense_ppl).substr(0, 6).c_str() : "-");
      std::fflush(report);
      if (mode != "dense" || o.decode == 0) continue;
      // Greedy decode after the dense prefill: the first step's logits come from the prefill.
      std::vector<float> logits = res.logits;
      int32_t next = argmax(logits.data(), c.vocab_size);
      logits = session.decode(next);  // warm-up step (not timed)
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 1; i < o.decode; ++i) {
        next = argmax(logits.data(), c.vocab_size);
        logits = session.decode(next);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double tps = double(o.decode - 1) / s;
      out.write({{"bench", "decode"}, {"device", "cuda"}, {"after_prompt", n},
                 {"steps", o.decode - 1}, {"tokens_per_s", tps}, {"ms_per_token", 1e3 / tps}});
      std::fprintf(report, "%-13s %7lld   decode after the prompt: %.0f tok/s (%.3f ms/token)\n",
                   "decode", (long long)n, tps, 1e3 / tps);
    }
  }
}

}  // namespace

// Registered under `bench` by bench_attention.cpp's setup.
void setup_bench_prefill(CLI::App& bench) {
  auto* sub = bench.add_subcommand("prefill", "End-to-end prefill of the real model on the GPU");
  auto o = std::make_shared<prefill_bench_options>();
  sub->add_option("--device", o->device, "cuda (the only device of this bench)")
      ->check(CLI::IsMember({"cuda"}))->capture_default_str();
  sub->add_option("--model", o->model, "GGUF model (default: the cached SmolLM2-135M-Instruct)");
  sub->add_option("--text", o->text, "Text file (default: Emma from the cached Austen corpus)");
  sub->add_option("--lengths", o->lengths, "Prompt lengths in tokens (comma separated)")
      ->delimiter(',')->check(CLI::Range(int64_t{2}, int64_t{1} << 24))->capture_default_str();
  sub->add_option("--modes", o->modes, "Attention modes (comma separated)")->delimiter(',')
      ->capture_default_str();
  add_planner_options(sub, o->attention.params);
  sub->add_option("--clusters", o->attention.clusters, "Cluster map (default: the model's shipped one)");
  add_dense_layers_option(sub, o->attention.dense_layers);
  sub->add_option("--repeats", o->repeats, "Timed prefills per mode (median reported)")
      ->check(CLI::Range(1, 100))->capture_default_str();
  sub->add_option("--decode", o->decode, "Greedy decode steps after each dense prefill (0: none)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20))->capture_default_str();
  sub->add_option("--save-tokens", o->save_tokens, "Write the longest window's token ids (JSON)");
  add_threads_option(sub, o->threads);
  add_json_option(sub, o->json, "one object per (length, mode), and one per decode run");
  sub->callback([o] { run_prefill_bench(*o); });
}

}  // namespace sp::cli
