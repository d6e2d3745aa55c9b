// Parsing and formatting of layer lists ("0-2,11-29").
#include "shareprefill/layer_list.h"

#include <algorithm>
#include <cctype>

#include "shareprefill/error.h"

namespace sp {
namespace {

std::string trimmed(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// A non-negative decimal index, or -1 if `s` is not one.
int64_t index_or_invalid(const std::string& s) {
  if (s.empty() || s.size() > 9) return -1;
  for (char ch : s)
    if (!std::isdigit(static_cast<unsigned char>(ch))) return -1;
  return std::stoll(s);
}

}  // namespace

bool layer_list_blank(const std::string& spec) {
  return trimmed(spec).empty();
}

std::vector<int64_t> parse_layer_list(const std::string& spec, int64_t n_layers, const char* what) {
  std::vector<int64_t> out;
  if (layer_list_blank(spec) || trimmed(spec) == "none") return out;
  size_t begin = 0;
  while (begin <= spec.size()) {
    const size_t comma = std::min(spec.find(',', begin), spec.size());
    const std::string item = trimmed(spec.substr(begin, comma - begin));
    begin = comma + 1;
    check(!item.empty(), what, "empty item in '", spec, "'");
    const size_t dash = item.find('-');
    const int64_t first = index_or_invalid(trimmed(item.substr(0, dash)));
    const int64_t last =
        dash == std::string::npos ? first : index_or_invalid(trimmed(item.substr(dash + 1)));
    check(first >= 0 && last >= 0, what, "'", item, "' in '", spec,
          "' is not a layer index or a range FIRST-LAST of non-negative integers");
    check(first <= last, what, "range '", item, "' in '", spec, "' is reversed (", first, " > ",
          last, ")");
    check(last < n_layers, what, "layer ", last, " in '", spec, "' is out of range: the model has ",
          n_layers, " layers (0-", n_layers - 1, ")");
    for (int64_t l = first; l <= last; ++l) out.push_back(l);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string format_layer_list(const std::vector<int64_t>& layers) {
  std::string out;
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(layers[i]);
    if (j > i) out += "-" + std::to_string(layers[j]);
    i = j + 1;
  }
  return out;
}

}  // namespace sp
