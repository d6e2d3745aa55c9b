// Per-head settings under a density budget (issue 17): base gamma, a higher gamma or dense for
// each head, chosen by predicted loss removed per density added (calibrate_heads.h).
#include <algorithm>
#include <cmath>

#include "shareprefill/calibrate_heads.h"
#include "shareprefill/error.h"

namespace sp {
namespace {

double predicted_loss(const head_setting& s) { return s.measure * s.measure; }

struct upgrade_step {
  size_t head = 0;   // index into the input
  size_t from = 0, to = 0;  // setting indices
  int order = 0;     // position among the head's steps
  double cost = 0.0, gain = 0.0, worth = 0.0;
};

// The sparsest setting (ties: the lower loss, then the first).
size_t start_of(const head_settings& h) {
  size_t at = 0;
  for (size_t j = 1; j < h.settings.size(); ++j) {
    const head_setting &s = h.settings[j], &a = h.settings[at];
    if (s.density < a.density || (s.density == a.density && s.measure < a.measure)) at = j;
  }
  return at;
}

// The head's steps along the lower convex hull of (density, loss) from its start: from the current
// setting, the denser (or equally dense) setting that removes the most loss per density added.
// The losses are computed once and stored, so a setting equal to the current one never looks
// like a gain (with FMA contraction, m*m - m*m need not be 0); the loss falls at every step, so
// a head takes at most settings - 1 steps.
std::vector<upgrade_step> hull_steps(const head_settings& h, size_t index) {
  std::vector<double> loss;
  for (const head_setting& s : h.settings) loss.push_back(predicted_loss(s));
  std::vector<upgrade_step> steps;
  size_t at = start_of(h);
  while (steps.size() + 1 < h.settings.size()) {
    const head_setting& cur = h.settings[at];
    size_t best = at;
    double best_worth = 0.0;
    for (size_t j = 0; j < h.settings.size(); ++j) {
      const head_setting& s = h.settings[j];
      if (j == at || s.density < cur.density || !(loss[j] < loss[at])) continue;
      const double cost = s.density - cur.density;
      const double worth = cost > 0.0 ? (loss[at] - loss[j]) / cost : INFINITY;
      if (best == at || worth > best_worth) best = j, best_worth = worth;
    }
    if (best == at) break;
    steps.push_back({index, at, best, static_cast<int>(steps.size()),
                     h.settings[best].density - cur.density, loss[at] - loss[best], best_worth});
    at = best;
  }
  return steps;
}

nlohmann::json setting_json(const head_setting& s) {
  return {{"setting", s.gamma == 0.0 ? nlohmann::json("dense") : nlohmann::json(s.gamma)},
          {"density", s.density},
          {"measure", s.measure}};
}

void check_settings(const std::vector<head_settings>& heads, const char* fn) {
  for (const head_settings& h : heads) {
    check(!h.settings.empty(), fn, "head [", h.head.layer, ", ", h.head.head, "] has no settings");
    for (const head_setting& s : h.settings)
      check(std::isfinite(s.measure) && s.measure >= 0.0 && std::isfinite(s.density) &&
                s.density >= 0.0 && s.density <= 1.0 && s.gamma >= 0.0 && s.gamma <= 1.0,
            fn, "head [", h.head.layer, ", ", h.head.head, "]: setting ", s.gamma, " has measure ",
            s.measure, ", density ", s.density, " (need a finite measure >= 0, density and gamma "
            "in [0, 1])");
  }
}

}  // namespace

double head_settings_budget_for_density(const std::vector<head_settings>& heads, double density) {
  const char* fn = "head_settings_budget_for_density";
  check_settings(heads, fn);
  check(!heads.empty() && std::isfinite(density) && density <= 1.0, fn,
        "target density must be <= 1 for at least one head, got ", density);
  double start = 0.0;
  for (const head_settings& h : heads) start += h.settings[start_of(h)].density;
  const double budget = density * double(heads.size()) - start;
  check(budget >= 0.0, fn, "target density ", density, " is below the sparsest settings' mean ",
        start / double(heads.size()));
  return budget;
}

head_settings_pick pick_head_settings(const std::vector<head_settings>& heads, double budget,
                                      double global_gamma) {
  const char* fn = "pick_head_settings";
  check(std::isfinite(budget) && budget >= 0.0, fn, "budget must be finite and >= 0, got ", budget);
  check_settings(heads, fn);
  std::vector<upgrade_step> steps;
  std::vector<size_t> chosen(heads.size(), 0);
  for (size_t i = 0; i < heads.size(); ++i) {
    chosen[i] = start_of(heads[i]);
    const std::vector<upgrade_step> own = hull_steps(heads[i], i);
    steps.insert(steps.end(), own.begin(), own.end());
  }
  // Descending worth; a head's steps have non-increasing worth, so order breaks the ties.
  std::stable_sort(steps.begin(), steps.end(), [](const upgrade_step& a, const upgrade_step& b) {
    if (a.worth != b.worth) return a.worth > b.worth;
    return a.head != b.head ? a.head < b.head : a.order < b.order;
  });
  head_settings_pick out;
  out.budget = budget;
  std::vector<int> next_order(heads.size(), 0);
  std::vector<uint8_t> stopped(heads.size(), 0);
  nlohmann::json taken = nlohmann::json::array(), left = nlohmann::json::array();
  for (const upgrade_step& s : steps) {
    if (stopped[s.head] || s.order != next_order[s.head]) continue;
    const head_settings& h = heads[s.head];
    nlohmann::json row = {{"layer", h.head.layer},
                          {"head", h.head.head},
                          {"from", setting_json(h.settings[s.from])},
                          {"to", setting_json(h.settings[s.to])},
                          {"cost", s.cost},
                          {"loss_removed", s.gain},
                          {"worth", std::isfinite(s.worth) ? nlohmann::json(s.worth)
                                                           : nlohmann::json("free")}};
    if (out.spent + s.cost <= budget + 1e-12) {
      out.spent += s.cost;
      chosen[s.head] = s.to;
      ++next_order[s.head];
      taken.push_back(row);
    } else {
      stopped[s.head] = 1;
      if (left.size() < 8) left.push_back(row);
    }
  }
  for (size_t i = 0; i < heads.size(); ++i) {
    const head_setting& s = heads[i].settings[chosen[i]];
    if (s.gamma == 0.0)
      out.dense_heads.push_back(heads[i].head);
    else if (s.gamma != global_gamma)
      out.head_gammas.push_back(head_threshold{heads[i].head, s.gamma});
  }
  const auto by_head = [](const head_ref& a, const head_ref& b) {
    return a.layer != b.layer ? a.layer < b.layer : a.head < b.head;
  };
  std::sort(out.dense_heads.begin(), out.dense_heads.end(), by_head);
  std::sort(out.head_gammas.begin(), out.head_gammas.end(),
            [&](const head_threshold& a, const head_threshold& b) { return by_head(a.head, b.head); });
  out.record = {{"rule", "predicted loss = measure^2; every head starts at its sparsest setting, "
                         "its upgrades along the lower convex hull of (density, loss) from there "
                         "are taken in descending loss removed per density added while the "
                         "density fits the budget"},
                {"global_gamma", global_gamma},
                {"budget", budget},
                {"spent", out.spent},
                {"steps_taken", taken},
                {"best_steps_left_out", left}};
  return out;
}

std::string head_settings_report_markdown(const nlohmann::json& record) {
  check(record.is_object() && record.contains("steps_taken"), "head_settings_report_markdown",
        "not a head-settings selection record");
  std::string md = "## Per-head settings (issue 17)\n\nRule: " +
                   record.value("rule", std::string("")) + ". Budget " +
                   str(record.value("budget", 0.0)) + " head-densities";
  if (record.contains("budget_from_layers"))
    md += " (what layers " + record["budget_from_layers"].dump() + " cost dense)";
  if (record.contains("budget_for_density"))
    md += " (mean head density " + record["budget_for_density"].dump() + " on the probe)";
  md += ", spent " + str(record.value("spent", 0.0)) + ".\n";
  if (record.contains("upgrades")) md += "Other settings probed: " + record["upgrades"].dump() + ".\n";
  if (record.contains("windows")) md += "Windows: " + record["windows"].dump() + ".\n";
  md += "\n| layer | head | from | to | density added | loss removed | worth | taken |\n";
  md += "|---|---|---|---|---|---|---|---|\n";
  for (const char* part : {"steps_taken", "best_steps_left_out"})
    for (const auto& r : record.value(part, nlohmann::json::array()))
      md += "| " + r["layer"].dump() + " | " + r["head"].dump() + " | " +
            r["from"]["setting"].dump() + " (" + str(r["from"]["measure"].get<double>()) +
            ") | " + r["to"]["setting"].dump() + " (" + str(r["to"]["measure"].get<double>()) +
            ") | " + str(r["cost"].get<double>()) + " | " + str(r["loss_removed"].get<double>()) +
            " | " + r["worth"].dump() + " | " +
            (std::string(part) == "steps_taken" ? "yes" : "no: does not fit") + " |\n";
  return md;
}

}  // namespace sp
