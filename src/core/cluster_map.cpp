// Cluster map load/validate/save (DESIGN.md section 3). The reader accepts our versioned format
// (1-7) and the reference implementation's bare {"clusters", "shared_clusters"} file; structural
// checks happen while parsing, shape checks in validate(). Every message starts with the
// function name and names the file, the JSON key and the offending value.
#include "shareprefill/cluster_map.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <utility>

#include "shareprefill/error.h"
#include "shareprefill/file_bytes.h"
#include "shareprefill/json_excerpt.h"

namespace sp {
namespace {

// Format 2 (issue 17) adds "dense_heads", format 3 "head_gammas", format 4 "thresholds", format 5
// "pivot_is_medoid" in a thresholds entry, format 6 "dense_heads" in a thresholds entry, format 7
// "exact_last_row" and "last_row_gamma" in a thresholds entry; a map is written in the lowest
// format that holds it, so older readers keep loading what they can.
constexpr const char* format_name = "shareprefill.clusters/1";
constexpr const char* format_name_2 = "shareprefill.clusters/2";
constexpr const char* format_name_3 = "shareprefill.clusters/3";
constexpr const char* format_name_4 = "shareprefill.clusters/4";
constexpr const char* format_name_5 = "shareprefill.clusters/5";
constexpr const char* format_name_6 = "shareprefill.clusters/6";
constexpr const char* format_name_7 = "shareprefill.clusters/7";
// Our maps nest 4 deep (clusters -> id -> pairs -> index), calibration records a little more;
// anything far deeper is hostile and would overflow the stack when copied or dumped.
constexpr int max_nesting = 64;

head_ref parse_pair(const nlohmann::json& p, const std::string& source, const std::string& key) {
  const char* fn = "cluster_map_from_json";
  if (!(p.is_array() && p.size() == 2 && p[0].is_number_integer() && p[1].is_number_integer()))
    fail(fn, source, ": ", key, ": expected a [layer, head] pair of integers, got ",
         json_excerpt(p));
  const int64_t layer = p[0].get<int64_t>(), head = p[1].get<int64_t>();
  if (!(layer >= 0 && layer < (int64_t{1} << 31) && head >= 0 && head < (int64_t{1} << 31)))
    fail(fn, source, ": ", key, ": negative or too large index in ", json_excerpt(p));
  return head_ref{static_cast<int32_t>(layer), static_cast<int32_t>(head)};
}

std::string id_of(const nlohmann::json& v, const std::string& source, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  fail("cluster_map_from_json", source, ": ", key, ": cluster id must be a string or integer, got ",
       json_excerpt(v));
}

const char* format_of(int format) {
  const char* const names[] = {format_name,   format_name_2, format_name_3, format_name_4,
                               format_name_5, format_name_6, format_name_7};
  return names[format - 1];
}

// The value of a thresholds entry's key that needs format `since`, or nullptr when the entry lacks
// it.
const nlohmann::json* key_since(const nlohmann::json& e, const char* key, int since, int format,
                                const std::string& source) {
  if (!e.contains(key)) return nullptr;
  check(format >= since, "cluster_map_from_json", source, ": thresholds: \"", key,
        "\" needs \"format\": \"", format_of(since), "\"");
  return &e[key];
}

// A boolean key of a thresholds entry that needs format `since`; nullopt when the entry lacks it.
std::optional<bool> parse_switch(const nlohmann::json& e, const char* key, int since, int format,
                                 const std::string& source) {
  const nlohmann::json* v = key_since(e, key, since, format, source);
  if (v == nullptr) return std::nullopt;
  check(v->is_boolean(), "cluster_map_from_json", source, ": thresholds: \"", key,
        "\" must be true or false, got ", json_excerpt(*v), " in ", json_excerpt(e));
  return v->get<bool>();
}

// A number in (0, 1] of a thresholds entry (tau_sim, tau_qa: format 4; last_row_gamma: format 7);
// nullopt when the entry lacks it.
std::optional<double> parse_fraction(const nlohmann::json& e, const char* key, int since,
                                     int format, const std::string& source) {
  const nlohmann::json* v = key_since(e, key, since, format, source);
  if (v == nullptr) return std::nullopt;
  check(v->is_number() && v->get<double>() > 0.0 && v->get<double>() <= 1.0,
        "cluster_map_from_json", source, ": thresholds: \"", key,
        "\" must be a number in (0, 1], got ", json_excerpt(*v), " in ", json_excerpt(e));
  return v->get<double>();
}

// One entry of "thresholds": {"from_tokens": int >= 0, and at least one of "tau_sim", "tau_qa"
// (in (0, 1], as planner_params::validate), "min_budget" (integer >= 1), from format 5
// "pivot_is_medoid" (bool), from format 6 "dense_heads" ([layer, head] pairs, ascending) and from
// format 7 "exact_last_row" (bool) and "last_row_gamma" (in (0, 1])}.
length_thresholds parse_thresholds(const nlohmann::json& e, const std::string& source, int format) {
  const char* fn = "cluster_map_from_json";
  check(e.is_object(), fn, source, ": thresholds: expected an object, got ", json_excerpt(e));
  for (const auto& [key, value] : e.items())
    check(key == "from_tokens" || key == "tau_sim" || key == "tau_qa" || key == "min_budget" ||
              key == "pivot_is_medoid" || key == "dense_heads" || key == "exact_last_row" ||
              key == "last_row_gamma",
          fn, source, ": thresholds: unknown key \"", key,
          "\" (expected from_tokens, tau_sim, tau_qa, min_budget, pivot_is_medoid, dense_heads, "
          "exact_last_row, last_row_gamma) in ",
          json_excerpt(e));
  check(e.contains("from_tokens") && e["from_tokens"].is_number_integer() &&
            e["from_tokens"].get<int64_t>() >= 0,
        fn, source, ": thresholds: \"from_tokens\" must be a non-negative integer in ",
        json_excerpt(e));
  length_thresholds t;
  t.from_tokens = e["from_tokens"].get<int64_t>();
  t.tau_sim = parse_fraction(e, "tau_sim", 4, format, source);
  t.tau_qa = parse_fraction(e, "tau_qa", 4, format, source);
  if (e.contains("min_budget")) {
    const nlohmann::json& v = e["min_budget"];
    check(v.is_number_integer() && v.get<int64_t>() >= 1, fn, source,
          ": thresholds: \"min_budget\" must be an integer >= 1 (tokens), got ", json_excerpt(v),
          " in ", json_excerpt(e));
    t.min_budget = v.get<int64_t>();
  }
  t.pivot_is_medoid = parse_switch(e, "pivot_is_medoid", 5, format, source);
  t.exact_last_row = parse_switch(e, "exact_last_row", 7, format, source);
  t.last_row_gamma = parse_fraction(e, "last_row_gamma", 7, format, source);
  if (const nlohmann::json* heads = key_since(e, "dense_heads", 6, format, source)) {
    const nlohmann::json& v = *heads;
    check(v.is_array() && !v.empty(), fn, source,
          ": thresholds: \"dense_heads\" must be a non-empty list of [layer, head] pairs, got ",
          json_excerpt(v));
    for (const auto& p : v) {
      const head_ref r = parse_pair(p, source, "thresholds: dense_heads");
      const std::pair<int64_t, int64_t> h{r.layer, r.head};
      check(t.dense_heads.empty() || h > t.dense_heads.back(), fn, source,
            ": thresholds: dense_heads: must be ascending without repeats, got ", json_excerpt(v));
      t.dense_heads.push_back(h);
    }
  }
  check(t.tau_sim || t.tau_qa || t.min_budget || t.pivot_is_medoid || !t.dense_heads.empty() ||
            t.exact_last_row || t.last_row_gamma,
        fn, source,
        ": thresholds: an entry must set tau_sim, tau_qa, min_budget, pivot_is_medoid, "
        "dense_heads, exact_last_row or last_row_gamma, got ",
        json_excerpt(e));
  return t;
}

}  // namespace

cluster_map cluster_map_from_json(const nlohmann::json& j, const std::string& source) {
  const char* fn = "cluster_map_from_json";
  check(json_nesting_depth(j, max_nesting) <= max_nesting, fn, source, ": JSON nested more than ",
        max_nesting, " levels deep: not a cluster map");
  check(j.is_object(), fn, source, ": top level must be an object");
  cluster_map map;
  map.source = source;
  int format = 1;
  if (j.contains("format")) {
    for (int f = 1; f <= 7; ++f)
      if (j["format"] == format_of(f)) format = f;
    check(j["format"] == format_of(format), fn, source, ": \"format\": expected \"", format_name,
          "\", \"", format_name_2, "\", \"", format_name_3, "\", \"", format_name_4, "\", \"",
          format_name_5, "\", \"", format_name_6, "\" or \"", format_name_7, "\", got ",
          json_excerpt(j["format"]));
  }
  if (j.contains("model")) {
    const auto& m = j["model"];
    check(m.is_object(), fn, source, ": \"model\" must be an object, got ", json_excerpt(m));
    cluster_model_info info;
    for (const char* key : {"layers", "heads"})
      check(m.contains(key) && m[key].is_number_integer() && m[key].get<int64_t>() > 0, fn, source,
            ": \"model.", key, "\" must be a positive integer, got ",
            m.contains(key) ? json_excerpt(m[key]) : "nothing");
    info.layers = m["layers"].get<int64_t>();
    info.heads = m["heads"].get<int64_t>();
    // Optional fields, type-checked here: json::value() throws its own type_error otherwise
    // (found by fuzz_cluster_map: "kv_heads": [] ended in std::terminate).
    check(!m.contains("name") || m["name"].is_string(), fn, source,
          ": \"model.name\" must be a string, got ",
          m.contains("name") ? json_excerpt(m["name"]) : "nothing");
    info.name = m.value("name", "");
    for (const char* key : {"kv_heads", "head_dim"})
      check(!m.contains(key) || (m[key].is_number_integer() && m[key].get<int64_t>() >= 0), fn,
            source, ": \"model.", key, "\" must be a non-negative integer, got ",
            m.contains(key) ? json_excerpt(m[key]) : "nothing");
    info.kv_heads = m.value("kv_heads", int64_t{0});
    info.head_dim = m.value("head_dim", int64_t{0});
    map.model = info;
  }
  if (j.contains("calibration")) map.calibration = j["calibration"];

  check(j.contains("clusters") && j["clusters"].is_object(), fn, source,
        ": \"clusters\" must be an object of id -> [[layer, head], ...]");
  std::set<std::pair<int32_t, int32_t>> seen;
  for (const auto& [id, members] : j["clusters"].items()) {
    const std::string key = "clusters." + id;
    check(members.is_array(), fn, source, ": ", key, ": expected a list of pairs, got ",
          json_excerpt(members));
    check(!members.empty(), fn, source, ": ", key, ": cluster is empty");
    head_cluster c;
    c.id = id;
    for (const auto& p : members) {
      const head_ref r = parse_pair(p, source, key);
      check(seen.insert({r.layer, r.head}).second, fn, source, ": ", key, ": head [", r.layer, ", ",
            r.head, "] appears more than once in the map");
      c.members.push_back(r);
    }
    map.clusters.push_back(std::move(c));
  }
  check(!map.clusters.empty(), fn, source, ": \"clusters\" is empty");

  check(j.contains("shared_clusters") && j["shared_clusters"].is_array(), fn, source,
        ": \"shared_clusters\" must be a list of cluster ids");
  for (const auto& v : j["shared_clusters"]) {
    const std::string id = id_of(v, source, "shared_clusters");
    bool found = false;
    for (auto& c : map.clusters)
      if (c.id == id) c.shared = found = true;
    check(found, fn, source, ": shared_clusters: id \"", id, "\" is not a key of \"clusters\"");
  }

  if (j.contains("dense_layers")) {
    const auto& d = j["dense_layers"];
    check(d.is_array(), fn, source, ": \"dense_layers\" must be a list of layer indices, got ",
          json_excerpt(d));
    for (const auto& v : d) {
      check(v.is_number_integer() && v.get<int64_t>() >= 0, fn, source,
            ": dense_layers: expected a non-negative layer index, got ", json_excerpt(v));
      const int64_t layer = v.get<int64_t>();
      check(map.dense_layers.empty() || layer > map.dense_layers.back(), fn, source,
            ": dense_layers: must be ascending without repeats, got ", json_excerpt(d));
      map.dense_layers.push_back(layer);
    }
  }

  if (j.contains("dense_heads")) {
    check(format >= 2, fn, source, ": \"dense_heads\" needs \"format\": \"", format_name_2,
          "\" or later");
    const auto& d = j["dense_heads"];
    check(d.is_array(), fn, source, ": \"dense_heads\" must be a list of [layer, head] pairs, got ",
          json_excerpt(d));
    for (const auto& p : d) {
      const head_ref r = parse_pair(p, source, "dense_heads");
      check(map.dense_heads.empty() ||
                std::make_pair(r.layer, r.head) >
                    std::make_pair(map.dense_heads.back().layer, map.dense_heads.back().head),
            fn, source, ": dense_heads: must be ascending without repeats, got ", json_excerpt(d));
      map.dense_heads.push_back(r);
    }
  }

  if (j.contains("head_gammas")) {
    check(format >= 3, fn, source, ": \"head_gammas\" needs \"format\": \"", format_name_3,
          "\" or later");
    const auto& d = j["head_gammas"];
    check(d.is_array(), fn, source,
          ": \"head_gammas\" must be a list of [layer, head, gamma] triples, got ",
          json_excerpt(d));
    for (const auto& t : d) {
      check(t.is_array() && t.size() == 3 && t[2].is_number(), fn, source,
            ": head_gammas: expected a [layer, head, gamma] triple, got ", json_excerpt(t));
      const head_ref r = parse_pair(nlohmann::json::array({t[0], t[1]}), source, "head_gammas");
      const double gamma = t[2].get<double>();
      check(gamma > 0.0 && gamma <= 1.0, fn, source, ": head_gammas: gamma must be in (0, 1], got ",
            json_excerpt(t));
      check(map.head_gammas.empty() ||
                std::make_pair(r.layer, r.head) > std::make_pair(map.head_gammas.back().head.layer,
                                                                 map.head_gammas.back().head.head),
            fn, source, ": head_gammas: must be ascending in (layer, head) without repeats, got ",
            json_excerpt(d));
      map.head_gammas.push_back(head_threshold{r, gamma});
    }
  }

  if (j.contains("thresholds")) {
    check(format >= 4, fn, source, ": \"thresholds\" needs \"format\": \"", format_name_4, "\"");
    const auto& d = j["thresholds"];
    check(d.is_array() && !d.empty(), fn, source,
          ": \"thresholds\" must be a non-empty list of {\"from_tokens\": ...} objects, got ",
          json_excerpt(d));
    for (const auto& e : d) {
      const length_thresholds t = parse_thresholds(e, source, format);
      if (map.thresholds.empty())
        check(t.from_tokens == 0, fn, source,
              ": thresholds: the first entry must have \"from_tokens\": 0, got ", t.from_tokens);
      else
        check(t.from_tokens > map.thresholds.back().from_tokens, fn, source,
              ": thresholds: \"from_tokens\" must be strictly ascending, got ", t.from_tokens,
              " after ", map.thresholds.back().from_tokens);
      map.thresholds.push_back(t);
    }
  }

  if (j.contains("medoids")) {
    check(j["medoids"].is_object(), fn, source, ": \"medoids\" must be an object id -> pair");
    for (const auto& [id, p] : j["medoids"].items()) {
      const std::string key = "medoids." + id;
      const head_ref r = parse_pair(p, source, key);
      head_cluster* target = nullptr;
      for (auto& c : map.clusters)
        if (c.id == id) target = &c;
      check(target != nullptr, fn, source, ": ", key, ": no cluster with id \"", id, "\"");
      bool member = false;
      for (const auto& m : target->members) member = member || m == r;
      check(member, fn, source, ": ", key, ": [", r.layer, ", ", r.head,
            "] is not a member of cluster \"", id, "\"");
      target->medoid = r;
    }
  }
  return map;
}

cluster_map cluster_map_load(const std::string& path) {
  return cluster_map_from_text(read_file_text(path, "cluster_map_load"), path);
}

cluster_map cluster_map_from_text(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);  // the whole text: trailing bytes are an error
  } catch (const nlohmann::json::exception& e) {
    fail("cluster_map_load", source, ": not valid JSON: ", e.what());
  }
  return cluster_map_from_json(j, source);
}

void cluster_map::validate(int64_t layers, int64_t heads) const {
  const char* fn = "cluster_map::validate";
  check(layers > 0 && heads > 0, fn, source, ": model shape must be positive, got ", layers,
        " layers x ", heads, " heads");
  if (model) {
    check(model->layers == layers, fn, source, ": \"model.layers\" is ", model->layers,
          " but the model has ", layers, " layers");
    check(model->heads == heads, fn, source, ": \"model.heads\" is ", model->heads,
          " but the model has ", heads, " heads");
  }
  std::vector<uint8_t> covered(static_cast<size_t>(layers * heads), 0);
  for (const auto& c : clusters) {
    check(!c.members.empty(), fn, source, ": clusters.", c.id, ": cluster is empty");
    for (const auto& m : c.members) {
      check(m.layer < layers, fn, source, ": clusters.", c.id, ": layer ", m.layer,
            " out of range [0, ", layers, ")");
      check(m.head < heads, fn, source, ": clusters.", c.id, ": head ", m.head,
            " out of range [0, ", heads, ")");
      uint8_t& slot = covered[static_cast<size_t>(m.layer * heads + m.head)];
      check(slot == 0, fn, source, ": clusters.", c.id, ": head [", m.layer, ", ", m.head,
            "] appears more than once");
      slot = 1;
    }
  }
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t h = 0; h < heads; ++h)
      check(covered[static_cast<size_t>(l * heads + h)] != 0, fn, source, ": head [", l, ", ", h,
            "] is in no cluster (", layers, " layers x ", heads, " heads expected)");
  for (int64_t l : dense_layers)
    check(l < layers, fn, source, ": dense_layers: layer ", l, " out of range [0, ", layers, ")");
  for (const head_ref& h : dense_heads)
    check(h.layer < layers && h.head < heads, fn, source, ": dense_heads: [", h.layer, ", ", h.head,
          "] out of range (", layers, " layers x ", heads, " heads)");
  for (const head_threshold& g : head_gammas)
    check(g.head.layer < layers && g.head.head < heads, fn, source, ": head_gammas: [",
          g.head.layer, ", ", g.head.head, "] out of range (", layers, " layers x ", heads,
          " heads)");
  for (const length_thresholds& t : thresholds)
    for (const auto& [layer, head] : t.dense_heads)
      check(layer < layers && head < heads, fn, source, ": thresholds from ", t.from_tokens,
            " tokens: dense_heads: [", layer, ", ", head, "] out of range (", layers, " layers x ",
            heads, " heads)");
}

std::vector<int32_t> cluster_map::head_table(int64_t layers, int64_t heads) const {
  validate(layers, heads);
  std::vector<int32_t> table(static_cast<size_t>(layers * heads), -1);
  for (size_t c = 0; c < clusters.size(); ++c)
    for (const auto& m : clusters[c].members)
      table[static_cast<size_t>(m.layer * heads + m.head)] = static_cast<int32_t>(c);
  return table;
}

bool cluster_map::any_medoid() const {
  for (const auto& c : clusters)
    if (c.medoid) return true;
  return false;
}

nlohmann::json cluster_map_to_json(const cluster_map& map) {
  nlohmann::json j;
  const bool medoid_entries =
      std::any_of(map.thresholds.begin(), map.thresholds.end(),
                  [](const length_thresholds& t) { return t.pivot_is_medoid.has_value(); });
  const bool dense_head_entries =
      std::any_of(map.thresholds.begin(), map.thresholds.end(),
                  [](const length_thresholds& t) { return !t.dense_heads.empty(); });
  const bool last_row_entries =
      std::any_of(map.thresholds.begin(), map.thresholds.end(), [](const length_thresholds& t) {
        return t.exact_last_row.has_value() || t.last_row_gamma.has_value();
      });
  j["format"] = last_row_entries           ? format_name_7
                : dense_head_entries       ? format_name_6
                : medoid_entries           ? format_name_5
                : !map.thresholds.empty()  ? format_name_4
                : !map.head_gammas.empty() ? format_name_3
                : !map.dense_heads.empty() ? format_name_2
                                           : format_name;
  if (map.model) {
    j["model"] = {{"name", map.model->name},
                  {"layers", map.model->layers},
                  {"heads", map.model->heads},
                  {"kv_heads", map.model->kv_heads},
                  {"head_dim", map.model->head_dim}};
  }
  if (!map.calibration.is_null()) j["calibration"] = map.calibration;
  nlohmann::json clusters = nlohmann::json::object();
  nlohmann::json shared = nlohmann::json::array();
  nlohmann::json medoids = nlohmann::json::object();
  for (const auto& c : map.clusters) {
    nlohmann::json members = nlohmann::json::array();
    for (const auto& m : c.members) members.push_back({m.layer, m.head});
    clusters[c.id] = members;
    if (c.shared) shared.push_back(c.id);
    if (c.medoid) medoids[c.id] = {c.medoid->layer, c.medoid->head};
  }
  j["clusters"] = clusters;
  j["shared_clusters"] = shared;
  if (!medoids.empty()) j["medoids"] = medoids;
  if (!map.dense_layers.empty()) j["dense_layers"] = map.dense_layers;
  if (!map.dense_heads.empty()) {
    nlohmann::json d = nlohmann::json::array();
    for (const head_ref& h : map.dense_heads) d.push_back({h.layer, h.head});
    j["dense_heads"] = d;
  }
  if (!map.head_gammas.empty()) {
    nlohmann::json d = nlohmann::json::array();
    for (const head_threshold& g : map.head_gammas)
      d.push_back({g.head.layer, g.head.head, g.gamma});
    j["head_gammas"] = d;
  }
  if (!map.thresholds.empty()) {
    nlohmann::json d = nlohmann::json::array();
    for (const length_thresholds& t : map.thresholds) {
      nlohmann::json e = {{"from_tokens", t.from_tokens}};
      if (t.tau_sim) e["tau_sim"] = *t.tau_sim;
      if (t.tau_qa) e["tau_qa"] = *t.tau_qa;
      if (t.min_budget) e["min_budget"] = *t.min_budget;
      if (t.pivot_is_medoid) e["pivot_is_medoid"] = *t.pivot_is_medoid;
      if (!t.dense_heads.empty()) {
        nlohmann::json heads = nlohmann::json::array();
        for (const auto& [layer, head] : t.dense_heads) heads.push_back({layer, head});
        e["dense_heads"] = heads;
      }
      if (t.exact_last_row) e["exact_last_row"] = *t.exact_last_row;
      if (t.last_row_gamma) e["last_row_gamma"] = *t.last_row_gamma;
      d.push_back(e);
    }
    j["thresholds"] = d;
  }
  return j;
}

void cluster_map_save(const std::string& path, const cluster_map& map) {
  std::ofstream out(path);
  check(out.good(), "cluster_map_save", "cannot write cluster map file '", path, "'");
  out << cluster_map_to_json(map).dump(1) << "\n";
  out.flush();
  check(out.good(), "cluster_map_save", "write to '", path, "' failed");
}

}  // namespace sp
