// `shareprefill eval needle`: a needle sentence inserted at each depth of a haystack window of
// each length, asked back through the chat template; per mode, the greedy answer (dense decode
// after the mode's prefill) is checked for the expected string, with the margin of each greedy
// choice (the "margin" column: the least), and the answer's teacher-forced log-probability is
// measured. --device cuda runs it on the GPU (cuda_llama_session with the
// device planner; the teacher-forced branch is decoded and then truncated away).
#include <algorithm>
#include <cstdio>
#include <map>

#include "cuda_model.h"
#include "device_option.h"
#include "eval_common.h"
#include "option_checks.h"
#include "prefill_report.h"
#include "shareprefill/error.h"
#include "shareprefill/eval.h"
#include "shareprefill/plot.h"

namespace sp::cli {
namespace {

struct needle_options {
  eval_common_options common;
  std::string haystack, needles_file;
  std::string lengths = "2048";
  std::string depths = "0,0.25,0.5,0.75,1";
  int64_t per_cell = 1;
  int64_t max_new = 24;
  int64_t haystack_offset = 0;
  std::string device;
};

std::string short_number(double v) {
  char b[32];
  std::snprintf(b, sizeof(b), "%g", v);
  return b;
}

// One prompt through one mode: the prefill, the answer's teacher-forced log-probability and the
// greedy answer (dense decode after the prefill, at most max_new tokens, up to a stop token)
// with the margin of each of its choices.
struct needle_run {
  prefill_result prefill;
  double answer_logp = 0.0;
  greedy_answer generated;
};

// The answer's log-probability given the prompt: its first token from the prefill's logits, the
// others from decode(previous answer token) -> [vocab] logits.
template <class Decode>
double forced_answer_logp(const std::vector<float>& prefill_logits, int64_t vocab,
                          const std::vector<int32_t>& answer, Decode&& decode) {
  double logp = token_logprob(prefill_logits.data(), vocab, answer[0]);
  for (size_t i = 1; i < answer.size(); ++i) {
    const std::vector<float> lg = decode(answer[i - 1]);
    logp += token_logprob(lg.data(), vocab, answer[i]);
  }
  return logp;
}

needle_run run_cpu(const llama_weights& weights, thread_pool& pool,
                   const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer,
                   prefill_options po, const attention_setup& att,
                   const std::vector<int32_t>& stops, int64_t max_new) {
  const int64_t vocab = weights.config.vocab_size;
  const int64_t n = static_cast<int64_t>(prompt.size());
  llama_session session(weights, pool, n + std::max<int64_t>(max_new, int64_t(answer.size())));
  po.attention = att.attention.get();
  needle_run run;
  run.prefill = session.prefill(prompt, po);
  llama_session forced = session;  // teacher forcing on a copy, greedy on the original
  run.answer_logp = forced_answer_logp(run.prefill.logits, vocab, answer,
                                       [&](int32_t t) { return forced.decode(t); });
  run.generated = decode_greedy_answer(run.prefill.logits, vocab, stops, max_new,
                                       [&](int32_t t) { return session.decode(t); });
  return run;
}

needle_run run_cuda(const cuda_llama_weights& weights, const std::vector<int32_t>& prompt,
                    const std::vector<int32_t>& answer, const prefill_options& po,
                    const attention_setup& att, const std::vector<int32_t>& stops,
                    int64_t max_new) {
  const llama_config& c = weights.config;
  const int64_t n = static_cast<int64_t>(prompt.size());
  cuda_llama_session session(weights, n + std::max<int64_t>(max_new, int64_t(answer.size())));
  const std::unique_ptr<device_planner> planner = make_device_planner(att, c);
  needle_run run;
  run.prefill = session.prefill(prompt, po, planner.get());
  run.answer_logp = forced_answer_logp(run.prefill.logits, c.vocab_size, answer,
                                       [&](int32_t t) { return session.decode(t); });
  session.truncate(n);  // back to the prompt: the greedy answer continues from there
  run.generated = decode_greedy_answer(run.prefill.logits, c.vocab_size, stops, max_new,
                                       [&](int32_t t) { return session.decode(t); });
  return run;
}

void run_needle(const needle_options& o) {
  const char* fn = "eval needle";
  const std::string device = resolve_device(o.device);
  check(o.per_cell > 0, fn, "--per-cell must be > 0, got ", o.per_cell);
  check(o.max_new > 0, fn, "--max-new must be > 0, got ", o.max_new);
  check(o.haystack_offset >= 0, fn, "--haystack-offset must be >= 0");
  const std::vector<std::string> modes = eval_parse_modes(o.common.modes);
  const std::vector<int64_t> lengths = eval_parse_lengths(o.lengths, 0);
  const std::vector<double> depths = eval_parse_numbers(o.depths, 0.0, 1.0, "depth");
  const std::vector<double> gammas = eval_gammas(o.common);
  const std::vector<needle_item> needles =
      parse_needles(read_text_file(o.needles_file), o.needles_file);
  thread_pool pool(o.common.threads);
  loaded_model m = load_model(o.common.model, pool);
  std::unique_ptr<cuda_llama_weights> gpu_weights;
  if (device == "cuda") gpu_weights = std::make_unique<cuda_llama_weights>(load_cuda_weights(m.path));
  const llama_config& c = m.weights.config;
  const int64_t context = llama_usable_context(c, o.common.rope);
  for (int64_t len : lengths) {
    check_rope_length(o.common.rope, c, len, fn);
    if (len > context - o.max_new)
      std::fprintf(stderr,
                   "shareprefill: warning: eval needle: %lld prompt tokens plus up to %lld answer "
                   "tokens run past the model's context of %lld tokens (the answer is decoded at "
                   "positions it was not trained on)\n",
                   (long long)len, (long long)o.max_new, (long long)context);
  }
  std::vector<int32_t> haystack = m.tok->encode(read_text_file(o.haystack), false);
  check(o.haystack_offset < static_cast<int64_t>(haystack.size()), fn, "--haystack-offset ",
        o.haystack_offset, " is beyond the haystack's ", haystack.size(), " tokens");
  haystack.erase(haystack.begin(), haystack.begin() + o.haystack_offset);
  const int32_t im_end = m.tok->encode("<|im_end|>", false).front();

  json_lines out(o.common.json);
  FILE* const report = o.common.json.text_stream();
  // label -> [depth, length] mean correctness
  std::map<std::string, std::vector<double>> grid;
  std::fprintf(report, "%-13s %6s %7s %6s %7s %8s %12s %8s %7s  answer\n", "mode", "gamma",
               "length", "depth", "needle", "correct", "answer_logp", "density", "margin");
  for (size_t li = 0; li < lengths.size(); ++li) {
    for (size_t di = 0; di < depths.size(); ++di) {
      for (int64_t k = 0; k < o.per_cell; ++k) {
        const size_t ni = (li * depths.size() + di + static_cast<size_t>(k)) % needles.size();
        const needle_item& item = needles[ni];
        const needle_prompt p =
            build_needle_prompt(*m.tok, haystack, item, lengths[li], depths[di]);
        const std::vector<int32_t> answer = m.tok->encode(item.answer, false);
        for (const std::string& mode : modes) {
          const std::vector<double> gs = mode == "dense" ? std::vector<double>{0.0} : gammas;
          for (double gamma : gs) {
            attention_options ao = o.common.attention;
            if (mode != "dense") ao.params.gamma = gamma;
            attention_setup att =
                make_attention(ao, mode, c, m.path, static_cast<int64_t>(p.tokens.size()));
            prefill_options po;
            po.rope = o.common.rope;
            po.on_layer = layer_progress("[" + mode + " " + std::to_string(lengths[li]) + " @" +
                                         short_number(depths[di]) + "]");
            const std::vector<int32_t> stops = {m.tok->eos(), im_end};
            const needle_run run =
                gpu_weights ? run_cuda(*gpu_weights, p.tokens, answer, po, att, stops, o.max_new)
                            : run_cpu(m.weights, pool, p.tokens, answer, po, att, stops, o.max_new);
            const prefill_result& r = run.prefill;
            const double logp = run.answer_logp;
            const std::vector<int32_t>& gen = run.generated.tokens;
            const std::vector<double>& margins = run.generated.margins;
            const double least_margin = *std::min_element(margins.begin(), margins.end());
            const std::string text = m.tok->decode(gen);
            const bool correct = answer_matches(text, item.answer);
            const double density = prefill_density(r);
            std::string shown = text;
            for (char& ch : shown)
              if (ch == '\n') ch = ' ';
            std::fprintf(report, "%-13s %6s %7lld %6.2f %7zu %8s %12.3f %8.3f %7.3f  %s\n",
                         mode.c_str(), mode == "dense" ? "-" : short_number(gamma).c_str(),
                         (long long)lengths[li], p.actual_depth, ni, correct ? "yes" : "no", logp,
                         density, least_margin, shown.c_str());
            std::fflush(stdout);
            nlohmann::json row = {{"eval", "needle"},
                                  {"mode", mode},
                                  {"length", lengths[li]},
                                  {"depth", depths[di]},
                                  {"actual_depth", p.actual_depth},
                                  {"needle_index", ni},
                                  {"correct", correct},
                                  {"answer_logprob", logp},
                                  {"answer_tokens", answer.size()},
                                  {"density", density},
                                  {"prefill_s", r.total_ms * 1e-3},
                                  {"device", device},
                                  {"generated", text},
                                  {"generated_tokens", gen},
                                  {"margins", margins}};
            row["gamma"] = mode == "dense" ? nlohmann::json(nullptr) : nlohmann::json(gamma);
            row["dense_layers"] =
                mode == "dense" ? nlohmann::json(nullptr) : nlohmann::json(att.dense_layers);
            row["thresholds"] = thresholds_record(att);
            out.write(row);
            const std::string label =
                mode == "dense" || gammas.size() == 1 ? mode : mode + "_g" + short_number(gamma);
            auto& g = grid[label];
            g.resize(depths.size() * lengths.size(), 0.0);
            g[di * lengths.size() + li] += (correct ? 1.0 : 0.0) / double(o.per_cell);
          }
        }
      }
    }
  }
  if (!o.common.png_dir.empty()) {
    for (const auto& [label, values] : grid) {
      heatmap_plot h;
      h.title = "NEEDLE RETRIEVAL " + label;
      h.x_label = "LENGTH";
      h.y_label = "DEPTH";
      for (int64_t len : lengths) h.x_ticks.push_back(std::to_string(len));
      for (double d : depths) h.y_ticks.push_back(short_number(d));
      h.values = values;
      plot_save_heatmap(png_path(o.common.png_dir, "needle_" + label + ".png"), h);
    }
  }
}

void setup_needle(CLI::App& app) {
  auto o = std::make_shared<needle_options>();
  CLI::App* sub =
      eval_app(app)->add_subcommand("needle", "Needle-in-a-haystack retrieval per mode");
  add_eval_common_options(sub, o->common);
  sub->add_option("--haystack", o->haystack, "Haystack text file")->required();
  sub->add_option("--needles", o->needles_file, "Needles, JSON lines {needle, question, answer}")
      ->required();
  sub->add_option("--lengths", o->lengths, "Comma-separated prompt lengths in tokens")
      ->capture_default_str();
  sub->add_option("--depths", o->depths, "Comma-separated depths in [0, 1]")->capture_default_str();
  sub->add_option("--per-cell", o->per_cell, "Needles per (length, depth) cell, rotating")
      ->capture_default_str();
  sub->add_option("--max-new", o->max_new, "Greedy answer tokens at most")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  sub->add_option("--haystack-offset", o->haystack_offset, "Skip this many haystack tokens")
      ->capture_default_str();
  add_device_option(sub, o->device);
  sub->callback([o] { run_needle(*o); });
}

command_registration reg(setup_needle);

}  // namespace
}  // namespace sp::cli
