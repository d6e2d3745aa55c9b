// Layer lists written as comma-separated indices and inclusive ranges ("0-2,11-29"), as the
// --dense-layers option takes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sp {

// True when `spec` is empty or only spaces: no list was given (unlike "none", an explicit empty
// list).
bool layer_list_blank(const std::string& spec);

// The sorted, duplicate-free layers of `spec` for a model of n_layers layers; a blank spec and
// "none" = none. Items are trimmed of spaces; overlapping items are merged. Throws sp::error
// tagged with `what` (e.g. "--dense-layers") naming the bad item: empty item, not an index or
// range, reversed range, or a layer >= n_layers.
std::vector<int64_t> parse_layer_list(const std::string& spec, int64_t n_layers,
                                      const char* what = "parse_layer_list");

// The shortest spec of sorted, duplicate-free layers: {0, 1, 2, 5} -> "0-2,5"; {} -> "".
std::string format_layer_list(const std::vector<int64_t>& layers);

}  // namespace sp
