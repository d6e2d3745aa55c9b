// `shareprefill inspect`: draws one head's exact block attention on a prompt as a heatmap (log
// colour scale) with the sparse tiles the planner chose for that head outlined in red and the
// causal tiles it skips faded. The prompt
// runs through the chosen mode (so the planner's state at the layer is the real one); at the
// inspected layer the head's exact block attention is computed densely on the side.
#include <algorithm>
#include <cstdio>
#include <string>

#include "attention_options.h"
#include "command.h"
#include "model_loading.h"
#include "option_checks.h"
#include "prefill_report.h"
#include "shareprefill/attention.h"
#include "shareprefill/error.h"
#include "shareprefill/planned_layer.h"
#include "shareprefill/png_image.h"

namespace sp::cli {
namespace {

struct inspect_options {
  std::string model, prompt_file, png;
  attention_options attention;
  int64_t layer = 0, head = 0;
  int64_t tokens = 0;  // the prompt's first tokens only; 0 = all of it
  int threads = 0;
};

// Runs the planned (or dense) attention and, at one layer, records a head's exact block
// attention and its planned tiles.
class inspect_attention final : public prefill_attention {
 public:
  inspect_attention(const planner* pl, int64_t layer, int64_t head)
      : pl_(pl), layer_(layer), head_(head) {}

  void begin_prompt(int64_t) override { state_.reset(); }

  layer_attention_report attend(int64_t layer, const tensor_view& out, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v,
                                thread_pool& pool) override {
    const int64_t n = q.shape[0], heads = q.shape[1], d = q.shape[2];
    const int64_t bs = pl_ ? pl_->params().block_size : 128;
    nb_ = (n + bs - 1) / bs;
    layer_attention_report r;
    r.layer = layer;
    r.causal_tiles = heads * causal_tile_count(nb_);
    if (layer == layer_) {
      exact_.assign(static_cast<size_t>(nb_ * nb_), 0.0f);
      scratch_.resize(static_cast<size_t>(n * heads * d));
      const block_attention_output ba{{static_cast<int32_t>(head_)}, exact_.data()};
      attention_block_sparse(tensor_view::contiguous(scratch_.data(), dtype::f32, {n, heads, d}),
                             {}, &ba, q, k, v, block_mask::dense_causal(n, bs, heads), pool);
    }
    if (!pl_) {
      const block_mask dense = block_mask::dense_causal(n, bs, heads);
      attention_block_sparse(out, {}, nullptr, q, k, v, dense, pool);
      if (layer == layer_) {
        tiles_ = dense.tiles_of(head_);
        kind_ = "dense";
      }
      r.tiles = dense.total_tiles();
      return r;
    }
    const planned_layer p = attend_planned_layer(*pl_, state_, layer, out, q, k, v, pool);
    r.tiles = p.tiles();
    if (layer == layer_) {
      tiles_ = p.mask_of(static_cast<int32_t>(head_)).tiles_of(head_);
      kind_ = head_kind_name(p.kind_of(static_cast<int32_t>(head_)));
      if (p.kind_of(static_cast<int32_t>(head_)) == head_kind::shared) {
        const cluster_slot& slot =
            state_.clusters[static_cast<size_t>(pl_->cluster_of(layer, head_))];
        kind_ += " (pivot " + std::to_string(slot.pivot_layer) + ":" +
                 std::to_string(slot.pivot_head) + ")";
      }
    }
    return r;
  }

  const char* name() const override { return "inspect"; }

  int64_t n_blocks() const { return nb_; }
  const std::vector<float>& exact() const { return exact_; }  // [nb, nb]
  const std::vector<tile>& tiles() const { return tiles_; }
  const std::string& kind() const { return kind_; }

 private:
  const planner* pl_;
  int64_t layer_, head_, nb_ = 0;
  plan_state state_;
  std::vector<float> exact_, scratch_;
  std::vector<tile> tiles_;
  std::string kind_;
};

void run_inspect(const inspect_options& o) {
  const char* fn = "inspect";
  thread_pool pool(o.threads);
  const std::string text = read_text_file(o.prompt_file);
  loaded_model m = load_model(o.model, pool);
  const llama_config& c = m.weights.config;
  check(o.layer >= 0 && o.layer < c.n_layers, fn, "--layer ", o.layer, " out of range [0, ",
        c.n_layers, ")");
  check(o.head >= 0 && o.head < c.n_heads, fn, "--head ", o.head, " out of range [0, ",
        c.n_heads, ")");
  std::string mode = o.attention.mode;
  if (mode.empty())
    mode = !o.attention.clusters.empty() || !default_cluster_map_path(m.path).empty()
               ? "shareprefill"
               : "flexprefill";
  std::vector<int32_t> ids = m.tok->encode(text, /*add_bos=*/false);
  check(!ids.empty(), fn, "the prompt '", o.prompt_file, "' encodes to no tokens");
  if (o.tokens > 0) {
    check(static_cast<int64_t>(ids.size()) >= o.tokens, fn, "'", o.prompt_file, "' has only ",
          ids.size(), " tokens, fewer than --tokens ", o.tokens);
    ids.resize(static_cast<size_t>(o.tokens));
  }
  attention_setup att =
      make_attention(o.attention, mode, c, m.path, static_cast<int64_t>(ids.size()));
  inspect_attention strategy(att.plan.get(), o.layer, o.head);
  llama_session session(m.weights, pool, static_cast<int64_t>(ids.size()));
  prefill_options po;
  po.attention = &strategy;
  po.on_layer = layer_progress("inspect [" + mode + "]");
  session.prefill(ids, po);

  const int64_t nb = strategy.n_blocks(), scale = std::max<int64_t>(2, 640 / nb);
  rgb_image img = heatmap_to_rgb(strategy.exact().data(), nb, nb, 1e-4, 1.0, scale,
                                 colour_map::viridis, /*log_scale=*/true);
  // Causal tiles the plan skips are faded toward white; planned tiles get a red outline.
  std::vector<uint8_t> planned(static_cast<size_t>(nb * nb), 0);
  for (const tile& t : strategy.tiles()) planned[static_cast<size_t>(t.first * nb + t.second)] = 1;
  for (int64_t r = 0; r < nb; ++r)
    for (int64_t col = 0; col <= r; ++col) {
      if (planned[static_cast<size_t>(r * nb + col)]) {
        img.outline_rect(col * scale, r * scale, scale, scale, {255, 40, 40});
        if (scale >= 6)
          img.outline_rect(col * scale + 1, r * scale + 1, scale - 2, scale - 2, {255, 40, 40});
        continue;
      }
      for (int64_t y = r * scale; y < (r + 1) * scale; ++y)
        for (int64_t x = col * scale; x < (col + 1) * scale; ++x) {
          const rgb p = img.at(x, y);
          img.set(x, y, {static_cast<uint8_t>((p[0] + 3 * 255) / 4),
                         static_cast<uint8_t>((p[1] + 3 * 255) / 4),
                         static_cast<uint8_t>((p[2] + 3 * 255) / 4)});
        }
    }
  save_png(o.png, img);
  const double covered = tile_coverage_ratio(strategy.exact().data(), nb, strategy.tiles());
  std::printf("layer %lld head %lld, %zu tokens (%lld blocks), mode %s: kind %s, %zu of %lld "
              "causal tiles (%.3f), covering %.4f of the exact block attention mass -> %s\n",
              (long long)o.layer, (long long)o.head, ids.size(), (long long)nb, mode.c_str(),
              strategy.kind().c_str(), strategy.tiles().size(), (long long)causal_tile_count(nb),
              double(strategy.tiles().size()) / double(causal_tile_count(nb)),
              covered, o.png.c_str());
}

void setup_inspect(CLI::App& app) {
  auto o = std::make_shared<inspect_options>();
  o->attention.mode = "";
  auto* sub = app.add_subcommand("inspect",
                                 "Draw a head's exact block attention with its planned tiles");
  sub->add_option("--model", o->model, "GGUF model (default: the cached SmolLM2-135M-Instruct)");
  sub->add_option("--prompt-file", o->prompt_file, "Prompt text file")->required();
  sub->add_option("--layer", o->layer, "Layer")->required();
  sub->add_option("--head", o->head, "Query head")->required();
  sub->add_option("--png", o->png, "PNG file to write")->required();
  sub->add_option("--tokens", o->tokens, "Use only the prompt's first N tokens (0 = all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  add_attention_options(sub, o->attention);
  add_threads_option(sub, o->threads);
  sub->callback([o, sub] {
    check(png_supported(), "inspect", "this build has no libpng (install libpng-dev, reconfigure)");
    if (o->attention.mode == "dense") warn_ignored_in_dense(sub, "with --mode dense");
    run_inspect(*o);
  });
}

command_registration reg(setup_inspect);

}  // namespace
}  // namespace sp::cli
