// Per-head dense choice under a density budget (issue 17), ranked by an error measure taken on
// calibration texts.
#include <algorithm>
#include <cmath>

#include "shareprefill/calibrate_heads.h"
#include "shareprefill/error.h"

namespace sp {

dense_head_pick pick_dense_heads(std::vector<head_cost> heads, double budget,
                                 const std::string& measure_name) {
  const char* fn = "pick_dense_heads";
  check(std::isfinite(budget) && budget >= 0.0, fn, "budget must be finite and >= 0, got ", budget);
  for (const head_cost& h : heads)
    check(std::isfinite(h.measure) && std::isfinite(h.density) && h.density >= 0.0 &&
              h.density <= 1.0 && !std::isinf(h.cost),
          fn, "head [", h.head.layer, ", ", h.head.head, "]: measure ", h.measure, ", density ",
          h.density, ", cost ", h.cost, " (need finite values, density in [0, 1])");
  std::sort(heads.begin(), heads.end(), [](const head_cost& a, const head_cost& b) {
    if (a.measure != b.measure) return a.measure > b.measure;
    if (a.head.layer != b.head.layer) return a.head.layer < b.head.layer;
    return a.head.head < b.head.head;
  });
  dense_head_pick out;
  out.budget = budget;
  nlohmann::json picked = nlohmann::json::array(), left = nlohmann::json::array();
  for (size_t rank = 0; rank < heads.size(); ++rank) {
    const head_cost& h = heads[rank];
    if (h.measure <= 0.0) break;  // no error to remove (e.g. a pivot, dense already)
    const double cost = std::isnan(h.cost) ? 1.0 - h.density : h.cost;
    nlohmann::json row = {{"layer", h.head.layer},   {"head", h.head.head},  {"rank", rank + 1},
                          {measure_name, h.measure}, {"density", h.density}, {"cost", cost}};
    if (std::isfinite(h.rel_err)) row["rel_err"] = h.rel_err;
    if (out.spent + cost <= budget + 1e-12) {
      out.spent += cost;
      out.heads.push_back(h.head);
      row["reason"] =
          "rank " + std::to_string(rank + 1) + " by " + measure_name + ", fits the budget";
      picked.push_back(row);
    } else if (left.size() < 5) {
      row["reason"] = "does not fit the budget left";
      left.push_back(row);
    }
  }
  std::sort(out.heads.begin(), out.heads.end(), [](const head_ref& a, const head_ref& b) {
    return a.layer != b.layer ? a.layer < b.layer : a.head < b.head;
  });
  out.record = {
      {"measure", measure_name},
      {"budget", budget},
      {"spent", out.spent},
      {"rule",
       "descending measure; a head is taken when its cost (1 - its sparse density, or the "
       "density it was measured to add) fits the budget left"},
      {"picked", picked},
      {"best_left_out", left}};
  return out;
}

std::string dense_head_report_markdown(const nlohmann::json& record) {
  check(record.is_object() && record.contains("picked") && record.contains("measure"),
        "dense_head_report_markdown", "not a dense-head selection record");
  const std::string measure = record["measure"].get<std::string>();
  std::string md = "## Dense heads chosen per head (issue 17)\n\n";
  md += "Rule: " + record.value("rule", std::string("")) + ". Budget " +
        str(record.value("budget", 0.0)) + " head-densities";
  if (record.contains("budget_from_layers"))
    md += " (what layers " + record["budget_from_layers"].dump() + " cost dense)";
  md += ", spent " + str(record.value("spent", 0.0)) + ".\n";
  if (record.contains("windows")) md += "Windows: " + record["windows"].dump() + ".\n";
  md += "\n| layer | head | rank | " + measure + " | rel_err | sparse density | cost | reason |\n";
  md += "|---|---|---|---|---|---|---|---|\n";
  for (const char* part : {"picked", "best_left_out"})
    for (const auto& r : record.value(part, nlohmann::json::array()))
      md += "| " + r["layer"].dump() + " | " + r["head"].dump() + " | " + r["rank"].dump() + " | " +
            str(r[measure].get<double>()) + " | " +
            (r.contains("rel_err") ? str(r["rel_err"].get<double>()) : std::string("-")) + " | " +
            str(r["density"].get<double>()) + " | " + str(r["cost"].get<double>()) + " | " +
            r["reason"].get<std::string>() + " |\n";
  return md;
}

double dense_layers_cost(const std::vector<head_cost>& heads, const std::vector<int64_t>& layers) {
  double c = 0.0;
  for (const head_cost& h : heads)
    if (std::find(layers.begin(), layers.end(), int64_t{h.head.layer}) != layers.end())
      c += 1.0 - h.density;
  return c;
}

}  // namespace sp
