// `shareprefill bench prefill`: end-to-end prefill of the real model on the GPU (issue 14 item 5).
// For each length (the first N tokens of a text, default Emma; beyond the trained context with
// YaRN at factor ceil(N / context)) and each mode: one untimed prefill that also scores the
// window's second half (perplexity, computed on the device), then --repeats timed prefills; the
// median one is reported. One JSON line per (length, mode): n, mode, tokens_per_s, ttft_ms (the
// whole prefill with the last position's logits on the host), attention_share and plan_share
// (CUDA-event times over ttft; attention includes planning), density (visited / causal tiles over
// all layers and heads), peak_bytes (weights + the session's activations, KV cache and planner
// memory), device_used_bytes (cudaMemGetInfo after the mode: every allocation of the process
// and the CUDA context), ppl, ppl_ratio (to dense at that length), summary (prefill_summary:
// per layer, or chunk and layer, plan and attention ms, density, head kinds, sharing gates).
// With --decode K, after the dense prefill of each length, one "decode" line: K greedy decode
// steps eight ways, each after its own prefill (the first step untimed: it tunes the GEMMs and
// captures the step's CUDA graph).
// With the session's defaults (the fused GEMVs and Programmatic Dependent Launch, where the
// model's shapes take the GEMVs): tokens_per_s (decode(): the graph, the [vocab] logits
// downloaded, argmax on the host: the public API), greedy_tokens_per_s (decode_greedy(): argmax
// on the device, one id downloaded), eager_tokens_per_s (graphs off: the kernels launched one by
// one). With the products and launches chosen, as tokens_per_s: fused_gemv_tokens_per_s and
// fused_gemv_programmatic_tokens_per_s (the fused GEMVs of set_decode_fused_gemv, without and
// with set_decode_programmatic_launch), cublaslt_gemm_tokens_per_s and programmatic_tokens_per_s
// (RMSNorm / SwiGLU launches and the timed cuBLASLt GEMMs, without and with programmatic
// launch), heuristic_gemm_tokens_per_s (the same with cuBLASLt's heuristic algorithms); the
// tuning per GEMM shape (gemm_tuning: heuristic_us vs chosen_us, cuda_gemm::tune); and parts of
// the step, each replayed in a graph of its own (decode_parts_ms; CUDA events, median of 20):
// attention_ms, the split-K decode attention over every layer's cache of that length, with the
// bandwidth it reached on the K and V bytes (attention_ms_by_chunk: the same with fixed keys per
// chunk beside the automatic size), and gemm_ms / gemm_tuned_ms, the m = 1 GEMMs of every layer
// and the output head with the heuristic's and with the timed algorithms.
// --chunk C prefills every window in chunks of C tokens (a multiple of 128; --chunk-state fresh or
// carried, as `eval ppl --chunk`), the timed prefills and the scored one alike; the rows say so.
// --pivots all|used|deferred|auto: when the pivots compute their A (pivot_publishing.h; the same
// outputs), to compare the choices; auto is the forward's own.
// --save-tokens writes the longest window's ids (JSON) for scripts/bench_prefill_hf.py.
// --save-inputs FILE (one length, dense among the modes) writes every layer's attention inputs of
// the dense scored prefill (shareprefill/attention_inputs_file.h) for `bench layer --inputs FILE`.
// --random-weights: no model file; random weights of SmolLM2-135M's shape and random token ids,
// dense mode only (speed depends on the shape alone; no perplexity: it would mean nothing).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "attention_options.h"
#include "command.h"
#include "cuda_model.h"
#include "decode_parts.h"
#include "device_option.h"
#include "json_output.h"
#include "model_loading.h"
#include "option_checks.h"
#include "prefill_report.h"
#include "shareprefill/attention_inputs_file.h"
#include "shareprefill/cuda_events.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/model_cache.h"
#include "shareprefill/sampling.h"

namespace sp::cli {
namespace {

struct prefill_bench_options {
  std::string model, text, device = "cuda", save_tokens, save_inputs;
  std::vector<int64_t> lengths{8192, 32768, 131072};
  std::vector<std::string> modes{"dense", "vslash", "flexprefill", "shareprefill"};
  attention_options attention;
  int repeats = 3;
  int64_t decode = 64;
  int64_t chunk = 0;                  // --chunk: tokens per prefill chunk (0: whole prompts)
  std::string chunk_state = "fresh";  // --chunk-state
  std::string pivots = "auto";        // --pivots
  int threads = 0;
  bool random_weights = false;
  json_option json;
};

// SmolLM2-135M's shape (30 layers, 9/3 heads of 64, dim 576, FFN 1536, vocab 49152, tied).
llama_config smollm2_135m_shape() {
  llama_config c;
  c.name = "random weights, SmolLM2-135M shape";
  c.n_layers = 30;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.head_dim = 64;
  c.dim = 576;
  c.ffn_dim = 1536;
  c.vocab_size = 49152;
  c.context_length = 8192;
  c.rope_dim = 64;
  c.rms_eps = 1e-5;
  c.rope_theta = 100000.0;
  c.tied_embeddings = true;
  return c;
}

// Uniform weights scaled by sqrt(3 / fan-in) (activations keep their size), norms 1.
llama_weights random_weights(const llama_config& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto fill = [&](int64_t count, int64_t fan_in) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const float scale = std::sqrt(3.0f / float(fan_in));
    std::vector<float> v(static_cast<size_t>(count));
    for (float& x : v) x = scale * u(rng);
    return v;
  };
  llama_weights w;
  w.config = c;
  const int64_t qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
  w.token_embd = fill(c.vocab_size * c.dim, 3);
  w.output_norm.assign(static_cast<size_t>(c.dim), 1.0f);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    llama_layer_weights L;
    L.attn_norm.assign(static_cast<size_t>(c.dim), 1.0f);
    L.ffn_norm.assign(static_cast<size_t>(c.dim), 1.0f);
    L.wq = fill(qd * c.dim, c.dim);
    L.wk = fill(kvd * c.dim, c.dim);
    L.wv = fill(kvd * c.dim, c.dim);
    L.wo = fill(c.dim * qd, qd);
    L.w_gate = fill(c.ffn_dim * c.dim, c.dim);
    L.w_up = fill(c.ffn_dim * c.dim, c.dim);
    L.w_down = fill(c.dim * c.ffn_dim, c.ffn_dim);
    w.layers.push_back(std::move(L));
  }
  return w;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// YaRN at factor ceil(n / context) beyond the trained context, none within it.
// Throws sp::error naming `path` when the folder it goes to has less free space than `bytes`.
void check_space_for(const std::string& path, int64_t bytes) {
  namespace fs = std::filesystem;
  const fs::path parent = fs::absolute(path).parent_path();
  std::error_code ec;
  const fs::space_info space = fs::space(parent, ec);
  check(!ec, "--save-inputs", "cannot reach the folder of '", path, "': ", ec.message());
  check(space.available >= static_cast<uintmax_t>(bytes), "--save-inputs", "'", path, "' needs ",
        bytes >> 20, " MiB, but its folder has ", space.available >> 20, " MiB free");
}

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
  for (int64_t n : o.lengths) check(n >= 2, fn, "lengths must be >= 2, got ", n);
  check(o.chunk >= 0 && o.chunk % 128 == 0, fn, "--chunk must be a multiple of 128 (0: whole ",
        "prompts), got ", o.chunk);
  check(o.save_inputs.empty() ||
            (o.lengths.size() == 1 && o.chunk == 0 &&
             std::find(o.modes.begin(), o.modes.end(), "dense") != o.modes.end()),
        fn,
        "--save-inputs records the dense prefill of one length: give one --lengths value, "
        "dense among --modes and no --chunk");
  const int64_t longest = o.lengths.back();
  thread_pool pool(o.threads);
  // The model on the device and the longest window's tokens.
  std::string model_path;
  std::vector<int32_t> all;
  std::unique_ptr<cuda_llama_weights> device_weights;
  if (o.random_weights) {
    for (const std::string& m : o.modes)
      check(m == "dense", fn, "--random-weights measures dense speed only (got mode '", m, "')");
    const llama_weights host = random_weights(smollm2_135m_shape(), 1);
    device_weights = std::make_unique<cuda_llama_weights>(cuda_llama_weights_upload(host));
    std::mt19937_64 rng(2);
    all.resize(static_cast<size_t>(longest));
    for (int32_t& t : all) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(host.config.vocab_size));
    o.text = "(random token ids)";
  } else {
    if (o.text.empty()) o.text = cache_dir() + "/corpora/austen/emma.txt";
    const std::string text = read_text_file(o.text);
    loaded_model m = load_model(o.model, pool);
    model_path = m.path;
    all = m.tok->encode(text, /*add_bos=*/false);
    check(static_cast<int64_t>(all.size()) >= longest, fn, "'", o.text, "' has ", all.size(),
          " tokens, fewer than the longest length ", longest);
    all.resize(static_cast<size_t>(longest));
    device_weights = std::make_unique<cuda_llama_weights>(load_cuda_weights(m.path));
  }
  const cuda_llama_weights& weights = *device_weights;
  const llama_config& c = weights.config;
  if (!o.save_tokens.empty()) {
    std::ofstream f(o.save_tokens);
    f << nlohmann::json{{"text", o.text}, {"tokens", all}};
    check(f.good(), fn, "cannot write --save-tokens '", o.save_tokens, "'");
  }
  if (!o.save_inputs.empty()) {
    const int64_t bytes = attention_inputs_bytes(c, o.lengths.front());
    check_space_for(o.save_inputs, bytes);
    std::fprintf(stderr,
                 "--save-inputs: %lld layers of q, k and v, %.1f MiB (held on the host, "
                 "then written to %s)\n",
                 static_cast<long long>(c.n_layers), double(bytes) / (1 << 20),
                 o.save_inputs.c_str());
  }
  json_lines out(o.json);
  FILE* const report = o.json.text_stream();
  if (o.chunk > 0)
    std::fprintf(report, "prefill in chunks of %lld tokens, %s sharing state per chunk\n",
                 static_cast<long long>(o.chunk),
                 o.chunk_state == "carried" ? "a carried" : "a fresh");
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
      const attention_setup att = make_attention(o.attention, mode, c, model_path, n);
      const std::unique_ptr<device_planner> planner = make_device_planner(att, c);
      prefill_options po;
      po.rope = rope;
      po.chunk = o.chunk;
      po.chunk_carried = o.chunk_state == "carried";
      if (o.pivots != "auto") po.pivots = parse_pivot_publishing(o.pivots);
      attention_inputs_recorder recorder;
      const bool record = mode == "dense" && !o.save_inputs.empty();
      if (record) po.on_attention_inputs = recorder.hook();
      session.reset();
      session.prefill(tokens, po, planner.get());  // warm-up, and the scored window
      if (record) {
        recorder.save(o.save_inputs);
        std::fprintf(stderr, "wrote the attention inputs of %lld layers to %s\n",
                     static_cast<long long>(recorder.layers()), o.save_inputs.c_str());
        po.on_attention_inputs = {};
        recorder = attention_inputs_recorder();  // the host copies are not needed any more
      }
      const std::vector<float> lp =
          o.random_weights ? std::vector<float>{} : session.token_logprobs(first, targets);
      const double ppl =
          lp.empty() ? 0.0 : perplexity_from_logprobs(std::vector<double>(lp.begin(), lp.end()));
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
          {"bench", "prefill"},
          {"device", "cuda"},
          {"mode", mode},
          {"n", n},
          {"rope", {{"type", rope.type}, {"factor", rope.factor}}},
          {"chunk", o.chunk},
          {"pivots", o.pivots},
          {"chunk_state", o.chunk > 0 ? nlohmann::json(o.chunk_state) : nlohmann::json(nullptr)},
          {"ttft_ms", mid},
          {"ttft_ms_all", ttft},
          {"tokens_per_s", double(n) / (mid * 1e-3)},
          {"attention_ms", res.attention_ms},
          {"plan_ms", res.plan_ms},
          {"attention_share", res.attention_ms / mid},
          {"plan_share", res.plan_ms / mid},
          {"density", prefill_density(res)},
          {"peak_bytes", peak},
          {"device_used_bytes", static_cast<int64_t>(cuda_memory().used())},
          {"ppl", ppl > 0 ? nlohmann::json(ppl) : nlohmann::json(nullptr)},
          {"scored_tokens", lp.size()},
          {"weights", o.random_weights ? "random" : "model"},
          {"ppl_ratio", dense_ppl > 0 ? nlohmann::json(ppl / dense_ppl) : nlohmann::json(nullptr)},
          {"dense_layers", att.dense_layers},
          {"clusters", att.cluster_source},
          {"thresholds", thresholds_record(att)},
          {"summary", prefill_summary(res, mode, n)}};
      out.write(row);
      std::fprintf(report, "%-13s %7lld %9.2f %10.0f %6.1f%% %6.1f%% %8.3f %9.0f %9.4f %8s\n",
                   mode.c_str(), (long long)n, mid, double(n) / (mid * 1e-3),
                   100 * res.attention_ms / mid, 100 * res.plan_ms / mid, prefill_density(res),
                   double(peak) / (1 << 20), ppl,
                   dense_ppl > 0 ? str(ppl / dense_ppl).substr(0, 6).c_str() : "-");
      std::fflush(report);
      if (mode != "dense" || o.decode == 0) continue;
      // Greedy decode after the dense prefill, several ways (the header says which); each after
      // its own prefill, its first step untimed. The first token comes from the prefill.
      const int32_t first_token = argmax(res.logits.data(), c.vocab_size);
      // Each way's products and launches: the session's defaults (graph, greedy, eager), or
      // chosen (fused GEMVs or cuBLASLt, with or without programmatic launch).
      struct decode_way {
        bool fused, programmatic, tuned = true, graphs = true, greedy = false;
      };
      const decode_way defaults{session.decode_fused_gemv(), session.decode_programmatic_launch()};
      const auto apply = [&](const decode_way& way) {
        session.set_decode_graphs(way.graphs);
        session.set_decode_gemm_tuning(way.tuned);
        session.set_decode_programmatic_launch(way.programmatic);
        session.set_decode_fused_gemv(way.fused);
      };
      const auto decode_rate = [&](const decode_way& way) {
        session.reset();
        session.prefill(tokens, po, planner.get());
        apply(way);
        const auto step = [&](int32_t t) {
          return way.greedy ? session.decode_greedy(t)
                            : argmax(session.decode(t).data(), c.vocab_size);
        };
        int32_t next = step(first_token);
        const auto t0 = std::chrono::steady_clock::now();
        for (int64_t i = 1; i < o.decode; ++i) next = step(next);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return double(o.decode - 1) / s;
      };
      decode_way greedy = defaults, eager = defaults;
      greedy.greedy = true;
      eager.graphs = false;
      const double tps = decode_rate(defaults), greedy_tps = decode_rate(greedy),
                   eager_tps = decode_rate(eager), fused_tps = decode_rate({true, false}),
                   fused_programmatic_tps = decode_rate({true, true}),
                   cublaslt_tps = decode_rate({false, false});
      const std::vector<gemm_tuning> tuning = session.decode_gemm_tuning();  // that way's choice
      const double heuristic_tps = decode_rate({false, false, false}),
                   programmatic_tps = decode_rate({false, true});
      apply(defaults);  // the session's settings as they were
      const decode_parts parts = decode_parts_ms(c, n);
      nlohmann::json chunk_rows = nlohmann::json::array();
      std::string chunk_text;
      for (const auto& [chunk, ms] : parts.attention_by_chunk) {
        chunk_rows.push_back({{"chunk", chunk}, {"ms", ms}});
        chunk_text += str(chunk_text.empty() ? "" : ", ", chunk,
                          chunk_rows.size() == 1 ? " (automatic) " : " ", ms);
      }
      nlohmann::json tuning_rows = nlohmann::json::array();
      for (const gemm_tuning& t : tuning)
        tuning_rows.push_back({{"m", t.m}, {"n", t.n}, {"k", t.k}, {"y", t.y_f32 ? "f32" : "bf16"},
                               {"accumulate", t.accumulate}, {"heuristic_us", t.heuristic_us},
                               {"chosen_us", t.chosen_us}, {"candidates", t.candidates},
                               {"chosen", t.chosen}, {"swapped", t.swapped},
                               {"algo_id", t.algo_id}, {"split_k", t.split_k}});
      const double kv_bytes = 2.0 * double(c.n_layers * n * c.n_kv_heads * c.head_dim) * 2.0;
      out.write({{"bench", "decode"}, {"device", "cuda"}, {"after_prompt", n},
                 {"steps", o.decode - 1}, {"tokens_per_s", tps}, {"ms_per_token", 1e3 / tps},
                 {"greedy_tokens_per_s", greedy_tps}, {"eager_tokens_per_s", eager_tps},
                 {"heuristic_gemm_tokens_per_s", heuristic_tps},
                 {"programmatic_tokens_per_s", programmatic_tps},
                 {"default_fused_gemv", defaults.fused},
                 {"default_programmatic_launch", defaults.programmatic},
                 {"fused_gemv_tokens_per_s", fused_tps},
                 {"cublaslt_gemm_tokens_per_s", cublaslt_tps},
                 {"fused_gemv_programmatic_tokens_per_s", fused_programmatic_tps},
                 {"attention_ms", parts.attention_ms},
                 {"attention_gb_per_s", kv_bytes / (parts.attention_ms * 1e6)},
                 {"attention_ms_by_chunk", chunk_rows},
                 {"gemm_ms", parts.gemm_ms}, {"gemm_tuned_ms", parts.gemm_tuned_ms},
                 {"gemm_tuning", tuning_rows}});
      std::fprintf(report,
                   "%-13s %7lld   decode after the prompt: %.0f tok/s (%.3f ms/token; %s%s); greedy "
                   "on the device %.0f tok/s; no graph %.0f tok/s; in graphs of their own: "
                   "attention %.3f ms/token (%.0f GB/s), cuBLASLt GEMMs %.3f ms/token (heuristic) / "
                   "%.3f (timed)\n",
                   "decode", (long long)n, tps, 1e3 / tps,
                   defaults.fused ? "fused GEMVs" : "cuBLASLt GEMMs",
                   defaults.programmatic ? " + programmatic launch" : "", greedy_tps, eager_tps,
                   parts.attention_ms, kv_bytes / (parts.attention_ms * 1e6), parts.gemm_ms,
                   parts.gemm_tuned_ms);
      std::fprintf(report,
                   "%-13s %7s   products: fused GEMVs %.0f tok/s (%.3f ms/token), + programmatic "
                   "launch %.0f; cuBLASLt GEMMs (timed) %.0f tok/s (%.3f ms/token), + programmatic "
                   "launch %.0f, heuristic algorithms %.0f\n",
                   "", "", fused_tps, 1e3 / fused_tps, fused_programmatic_tps, cublaslt_tps,
                   1e3 / cublaslt_tps, programmatic_tps, heuristic_tps);
      std::fprintf(report, "%-13s %7s   attention ms/token by keys per chunk: %s\n", "", "",
                   chunk_text.c_str());
      for (const gemm_tuning& t : tuning)
        std::fprintf(report,
                     "%-13s %7s   gemm m=%lld n=%lld k=%lld %s%s: heuristic %.2f us, chosen %.2f us "
                     "(candidate %d of %d%s, algo %d, split-k %d)\n",
                     "", "", (long long)t.m, (long long)t.n, (long long)t.k, t.y_f32 ? "f32" : "bf16",
                     t.accumulate ? " beta=1" : "", t.heuristic_us, t.chosen_us, t.chosen,
                     t.candidates, t.swapped ? ", swapped" : "", t.algo_id, t.split_k);
      std::fflush(report);
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
  o->attention.given = add_planner_options(sub, o->attention.params);
  sub->add_option("--clusters", o->attention.clusters, "Cluster map (default: the model's shipped one)");
  add_dense_layers_option(sub, o->attention.dense_layers);
  sub->add_option("--repeats", o->repeats, "Timed prefills per mode (median reported)")
      ->check(CLI::Range(1, 100))->capture_default_str();
  sub->add_option("--decode", o->decode, "Greedy decode steps after each dense prefill (0: none)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20))->capture_default_str();
  sub->add_option("--chunk", o->chunk,
                  "prefill in chunks of this many tokens (a multiple of 128; 0: whole prompts)")
      ->capture_default_str();
  add_chunk_state_option(sub, o->chunk_state);
  sub->add_option("--pivots", o->pivots,
                  "When pivots compute their block attention (the same outputs): all (at their "
                  "layer), used (not those nobody can share with), deferred (also the others "
                  "only when a member needs it), auto (deferred from 32768 tokens, else used)")
      ->check(CLI::IsMember({"auto", "all", "used", "deferred"}))
      ->capture_default_str();
  sub->add_option("--save-tokens", o->save_tokens, "Write the longest window's token ids (JSON)");
  sub->add_option("--save-inputs", o->save_inputs,
                  "Write every layer's attention inputs of the dense prefill (safetensors, for "
                  "`bench layer --inputs`; one length)");
  sub->add_flag("--random-weights", o->random_weights,
                "No model: random weights of SmolLM2-135M's shape, random ids, dense only");
  add_threads_option(sub, o->threads);
  add_json_option(sub, o->json, "one object per (length, mode), and one per decode run");
  sub->callback([o] { run_prefill_bench(*o); });
}

}  // namespace sp::cli
