// Parsing of the comma-separated option lists of the eval subcommands (modes, lengths, depths,
// gammas), with errors that name the bad value.
#include <cstdlib>
#include <sstream>

#include "shareprefill/error.h"
#include "shareprefill/eval.h"

namespace sp {
namespace {

std::vector<std::string> split_commas(const std::string& list, const char* fn) {
  std::vector<std::string> items;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    check(b != std::string::npos, fn, "empty item in the list '", list, "'");
    items.push_back(item.substr(b, e - b + 1));
  }
  check(!items.empty(), fn, "empty list");
  return items;
}

}  // namespace

std::vector<std::string> eval_parse_modes(const std::string& list) {
  std::vector<std::string> modes = split_commas(list, "eval_parse_modes");
  for (const std::string& m : modes)
    check(m == "dense" || m == "vslash" || m == "flexprefill" || m == "shareprefill",
          "eval_parse_modes", "unknown mode '", m,
          "' (expected dense, vslash, flexprefill or shareprefill)");
  return modes;
}

std::vector<int64_t> eval_parse_lengths(const std::string& list, int64_t multiple_of) {
  std::vector<int64_t> out;
  for (const std::string& s : split_commas(list, "eval_parse_lengths")) {
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    check(end && *end == '\0' && v > 0, "eval_parse_lengths", "length '", s,
          "' is not a positive integer");
    check(multiple_of <= 0 || v % multiple_of == 0, "eval_parse_lengths", "length ", v,
          " is not a multiple of the block size ", multiple_of);
    out.push_back(v);
  }
  return out;
}

std::vector<double> eval_parse_numbers(const std::string& list, double lo, double hi,
                                       const char* what) {
  std::vector<double> out;
  for (const std::string& s : split_commas(list, "eval_parse_numbers")) {
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    check(end && *end == '\0', "eval_parse_numbers", what, " '", s, "' is not a number");
    check(v >= lo && v <= hi, "eval_parse_numbers", what, " ", v, " is outside [", lo, ", ", hi,
          "]");
    out.push_back(v);
  }
  return out;
}

double interpolate_at(const std::vector<double>& xs, const std::vector<double>& ys, double x) {
  check(!xs.empty() && xs.size() == ys.size(), "interpolate_at", "need matching non-empty points (",
        xs.size(), " x, ", ys.size(), " y)");
  if (x <= xs.front()) return ys.front();
  for (size_t i = 1; i < xs.size(); ++i) {
    if (x > xs[i]) continue;
    const double span = xs[i] - xs[i - 1];
    const double t = span > 0 ? (x - xs[i - 1]) / span : 1.0;
    return ys[i - 1] + t * (ys[i] - ys[i - 1]);
  }
  return ys.back();
}

}  // namespace sp
