// The calibration report: DIR/report.md with the settings, the cluster summary, the paper's two
// observations for both metrics (similarity histogram and pairs above 0.5; correlation,
// nearest-neighbour agreement and ARI across inputs) and the shared clusters, plus PNG figures
// when libpng is available: the mean head-similarity heatmap ordered by cluster with a cluster
// bar, the layer x head grid coloured by cluster, and block-attention thumbnails of a few clusters.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "shareprefill/calibrate.h"
#include "shareprefill/error.h"
#include "shareprefill/layer_list.h"
#include "shareprefill/png_image.h"

namespace sp {
namespace {

std::string f3(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

std::string head_name(int32_t h, int64_t heads) {
  return str("L", h / heads, "H", h % heads);
}

// Clusters in display order: shared first, then other multi-member clusters, then singletons,
// each group by size (largest first), ties by index.
std::vector<size_t> display_order(const std::vector<cluster_verdict>& v) {
  std::vector<size_t> order(v.size());
  for (size_t i = 0; i < v.size(); ++i) order[i] = i;
  auto group = [&](size_t c) { return v[c].shared ? 0 : v[c].members.size() > 1 ? 1 : 2; };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (group(a) != group(b)) return group(a) < group(b);
    return v[a].members.size() > v[b].members.size();
  });
  return order;
}

rgb cluster_colour(const cluster_verdict& v, size_t rank) {
  if (v.shared) return category_colour(static_cast<int64_t>(rank));
  return v.members.size() > 1 ? rgb{190, 190, 190} : rgb{245, 245, 245};
}

void similarity_heatmap(const std::string& path, const calibration_result& r,
                        const std::vector<size_t>& order) {
  std::vector<int32_t> heads;
  std::vector<rgb> colours;
  for (size_t rank = 0; rank < order.size(); ++rank)
    for (int32_t h : r.verdicts[order[rank]].members) {
      heads.push_back(h);
      colours.push_back(cluster_colour(r.verdicts[order[rank]], rank));
    }
  const int64_t n = static_cast<int64_t>(heads.size()), scale = 2, bar = 10;
  std::vector<float> sim(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      sim[static_cast<size_t>(i * n + j)] = static_cast<float>(
          1.0 - r.mean.at(heads[static_cast<size_t>(i)], heads[static_cast<size_t>(j)]));
  const rgb_image map = heatmap_to_rgb(sim.data(), n, n, 0.0, 1.0, scale, colour_map::viridis);
  rgb_image img(n * scale + bar + 2, n * scale + bar + 2);
  img.paste(map, bar + 2, bar + 2);
  for (int64_t i = 0; i < n; ++i) {
    img.fill_rect(bar + 2 + i * scale, 0, scale, bar, colours[static_cast<size_t>(i)]);
    img.fill_rect(0, bar + 2 + i * scale, bar, scale, colours[static_cast<size_t>(i)]);
  }
  save_png(path, img);
}

void cluster_grid(const std::string& path, const calibration_result& r,
                  const std::vector<size_t>& order, int64_t layers, int64_t heads) {
  const int64_t cell = 14;
  rgb_image img(heads * cell + 1, layers * cell + 1, {255, 255, 255});
  for (size_t rank = 0; rank < order.size(); ++rank) {
    const cluster_verdict& v = r.verdicts[order[rank]];
    for (int32_t h : v.members) {
      const int64_t x = (h % heads) * cell, y = (h / heads) * cell;
      img.fill_rect(x + 1, y + 1, cell - 1, cell - 1, cluster_colour(v, rank));
      if (h == v.medoid) img.outline_rect(x + 4, y + 4, cell - 7, cell - 7, {0, 0, 0});
    }
  }
  save_png(path, img);
}

void thumbnails(const std::string& path, const calibration_result& r,
                const std::vector<size_t>& order, const calibration_input& in) {
  const int64_t per_row = 6, rows = 4, nb = in.n_blocks;
  const int64_t scale = std::max<int64_t>(1, 128 / nb), side = nb * scale, gap = 6;
  std::vector<size_t> picked;
  for (size_t c : order)
    if (r.verdicts[c].members.size() > 1 && static_cast<int64_t>(picked.size()) < rows)
      picked.push_back(c);
  if (picked.empty()) return;
  rgb_image img(per_row * (side + gap) + gap + 8,
                static_cast<int64_t>(picked.size()) * (side + gap) + gap);
  for (size_t row = 0; row < picked.size(); ++row) {
    const cluster_verdict& v = r.verdicts[picked[row]];
    const int64_t y = gap + static_cast<int64_t>(row) * (side + gap);
    img.fill_rect(
        0, y, 6, side,
        cluster_colour(v, std::find(order.begin(), order.end(), picked[row]) - order.begin()));
    for (int64_t k = 0; k < per_row && k < static_cast<int64_t>(v.members.size()); ++k) {
      const float* a = in.block_attention.data() + v.members[static_cast<size_t>(k)] * nb * nb;
      img.paste(heatmap_to_rgb(a, nb, nb, 1e-4, 1.0, scale, colour_map::viridis, true),
                8 + gap + k * (side + gap), y);
    }
  }
  save_png(path, img);
}

// The --dense-layers-pick ablation recorded in the map, if it ran.
void dense_layer_table(std::ofstream& md, const cluster_map& map) {
  if (!map.calibration.is_object() || !map.calibration.contains("dense_layer_selection")) return;
  const nlohmann::json& sel = map.calibration["dense_layer_selection"];
  md << "## Dense layers\n\nSingle-layer perplexity ablation (" << sel.value("mode", "?")
     << " mode, gamma " << sel.value("gamma", 0.0) << ", " << sel.value("windows", 0)
     << " windows of " << sel.value("window_tokens", 0) << " tokens, second half scored): "
     << "perplexity " << sel.value("sparse_ppl", 0.0)
     << " with every layer sparse; gain = perplexity cut with only that layer dense. Chosen (at "
     << "most " << sel.value("count", 0) << ", gain >= " << sel.value("min_gain_pct", 0.0)
     << "%): **" << (map.dense_layers.empty() ? "none" : format_layer_list(map.dense_layers))
     << "**.\n\n| layer | perplexity | gain % |\n|---|---|---|\n";
  for (const auto& g : sel["gains"]) {
    const int64_t l = g["layer"].get<int64_t>();
    const bool chosen =
        std::find(map.dense_layers.begin(), map.dense_layers.end(), l) != map.dense_layers.end();
    md << "| " << (chosen ? "**" : "") << l << (chosen ? "**" : "") << " | "
       << g["ppl"].get<double>() << " | " << g["gain_pct"].get<double>() << " |\n";
  }
  md << "\n";
}

void observation_tables(std::ofstream& md, const std::vector<metric_report>& obs,
                        const std::vector<calibration_input>& inputs, int64_t n_heads) {
  md << "## Observation (a): how similar are heads to each other?\n\n"
     << "Similarity = 1 - distance for each of the " << obs.front().pairs
     << " head pairs of each input.\n\n"
     << "| metric | input | pairs > 0.5 | fraction | histogram of similarity (deciles 0-0.1 ... "
        "0.9-1) |\n"
     << "|---|---|---|---|---|\n";
  for (const auto& m : obs)
    for (size_t x = 0; x < inputs.size(); ++x) {
      md << "| " << calib_metric_name(m.metric) << " | " << inputs[x].label() << " | "
         << m.pairs_above_half[x] << " | " << f3(double(m.pairs_above_half[x]) / double(m.pairs))
         << " |";
      for (int64_t c : m.histogram[x]) md << " " << c;
      md << " |\n";
    }
  md << "\n## Observation (b): is head similarity stable across inputs?\n\n"
     << "Per pair of inputs: Pearson correlation of the two head-similarity matrices "
        "(off-diagonal), "
     << "the fraction of heads whose nearest other head is the same on both (chance: "
     << f3(1.0 / double(n_heads - 1)) << "), and the adjusted Rand index of the clusterings each "
     << "input gives on its own at the same cut.\n\n"
     << "| metric | input A | input B | correlation | same nearest neighbour | cluster ARI |\n"
     << "|---|---|---|---|---|---|\n";
  for (const auto& m : obs) {
    for (const auto& c : m.comparisons)
      md << "| " << calib_metric_name(m.metric) << " | " << inputs[static_cast<size_t>(c.a)].label()
         << " | " << inputs[static_cast<size_t>(c.b)].label() << " | "
         << f3(c.similarity_correlation) << " | " << f3(c.nearest_neighbour_agreement) << " | "
         << f3(c.cluster_ari) << " |\n";
    md << "| " << calib_metric_name(m.metric) << " | **mean** | | **" << f3(m.mean_correlation)
       << "** | **" << f3(m.mean_nn_agreement) << "** | **" << f3(m.mean_ari) << "** |\n";
  }
  md << "\n";
}

}  // namespace

std::vector<std::string> write_calibration_report(const std::string& dir,
                                                  const calibration_result& result,
                                                  const std::vector<calibration_input>& inputs,
                                                  const std::vector<metric_report>& observations,
                                                  const calibration_settings& settings,
                                                  const report_context& context) {
  const char* fn = "write_calibration_report";
  check(!inputs.empty() && !observations.empty() && result.map.model, fn,
        "needs inputs, observations and a map with a model block");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  check(!ec, fn, "cannot create report directory '", dir, "': ", ec.message());
  const int64_t layers = result.map.model->layers, heads = result.map.model->heads;
  const std::vector<size_t> order = display_order(result.verdicts);
  std::vector<std::string> files;

  const std::string md_path = dir + "/report.md";
  std::ofstream md(md_path);
  check(md.good(), fn, "cannot write '", md_path, "'");
  md << "# Calibration report: " << result.map.model->name << "\n\n"
     << "- command: `" << context.command << "`\n- date: " << context.date
     << "\n- wall time: " << f3(context.wall_s) << " s on " << context.machine
     << "\n- metric: " << calib_metric_name(settings.metric) << ", cut " << settings.cut
     << (settings.clusters > 0 ? str(", cut to ", settings.clusters, " clusters") : std::string())
     << ", gamma " << settings.gamma << ", tau_fb " << settings.tau_fb << "\n- inputs:";
  for (const auto& in : inputs) md << " " << in.label() << " (" << in.n_blocks << " blocks);";
  md << "\n\n";

  int64_t shared = 0, shared_heads = 0, singletons = 0, multi = 0;
  std::map<std::string, int64_t> reasons;
  for (const auto& v : result.verdicts) {
    if (v.shared) {
      ++shared;
      shared_heads += static_cast<int64_t>(v.members.size());
    } else {
      reasons[v.reason.substr(0, v.reason.find(" ("))]++;
    }
    if (v.members.size() == 1)
      ++singletons;
    else
      ++multi;
  }
  md << "## Clusters\n\n"
     << result.verdicts.size() << " clusters over " << layers * heads << " heads: " << multi
     << " with >= 2 members, " << singletons << " singletons; " << shared
     << " shared clusters covering " << shared_heads << " heads.\n\nNot shared, by reason:\n\n";
  for (const auto& [reason, count] : reasons) md << "- " << reason << ": " << count << "\n";
  md << "\n| cluster | size | shared | medoid | max mean distance over inputs | vs coverage | "
        "members |\n"
     << "|---|---|---|---|---|---|---|\n";
  for (size_t c : order) {
    const cluster_verdict& v = result.verdicts[c];
    if (v.members.size() < 2) continue;
    md << "| " << result.map.clusters[c].id << " | " << v.members.size() << " | "
       << (v.shared ? "yes" : "no") << " | " << head_name(v.medoid, heads) << " | "
       << f3(*std::max_element(v.mean_distance.begin(), v.mean_distance.end())) << " | "
       << f3(v.mean_vs_coverage) << " |";
    for (size_t k = 0; k < v.members.size() && k < 12; ++k)
      md << " " << head_name(v.members[k], heads);
    if (v.members.size() > 12) md << " ...";
    md << " |\n";
  }
  md << "\n";
  dense_layer_table(md, result.map);
  observation_tables(md, observations, inputs, layers * heads);

  md << "## Figures\n\n";
  if (!png_supported()) {
    md << "No PNG figures: this build has no libpng (install libpng-dev and reconfigure).\n";
  } else {
    size_t largest = 0;
    for (size_t x = 1; x < inputs.size(); ++x)
      if (inputs[x].n_blocks > inputs[largest].n_blocks) largest = x;
    similarity_heatmap(dir + "/similarity_heatmap.png", result, order);
    cluster_grid(dir + "/cluster_grid.png", result, order, layers, heads);
    thumbnails(dir + "/thumbnails.png", result, order, inputs[largest]);
    for (const char* name : {"similarity_heatmap.png", "cluster_grid.png", "thumbnails.png"})
      files.push_back(dir + "/" + name);
    md << "- `similarity_heatmap.png`: mean head similarity (1 - "
       << calib_metric_name(settings.metric)
       << " distance, viridis 0..1), heads ordered by cluster (shared clusters first, largest "
          "first); the bars on top and left give the cluster (colour = shared cluster, grey = "
          "not shared, white = singleton).\n\n![](similarity_heatmap.png)\n\n"
       << "- `cluster_grid.png`: layer (rows, 0 at top) x head (columns) coloured the same way; "
          "a black square marks each cluster's medoid.\n\n![](cluster_grid.png)\n\n"
       << "- `thumbnails.png`: exact block attention (log colour scale 1e-4..1) on "
       << inputs[largest].label() << " of up to 6 members of the first 4 multi-member clusters, "
       << "one cluster per row.\n\n![](thumbnails.png)\n";
  }
  md.flush();  // a full disk shows only when the buffer is written
  check(md.good(), fn, "write to '", md_path, "' failed");
  files.insert(files.begin(), md_path);
  return files;
}

}  // namespace sp
