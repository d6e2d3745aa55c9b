// Names of the pivot_publishing choices and the default choice (pivot_publishing.h).
#include "shareprefill/pivot_publishing.h"

#include "shareprefill/error.h"

namespace sp {

const char* pivot_publishing_name(pivot_publishing p) {
  switch (p) {
    case pivot_publishing::all:
      return "all";
    case pivot_publishing::used:
      return "used";
    case pivot_publishing::deferred:
      return "deferred";
  }
  return "?";
}

pivot_publishing default_pivot_publishing(int64_t n_tokens, bool chunks_carry,
                                          bool from_first_token) {
  if (chunks_carry) return pivot_publishing::all;
  return from_first_token && n_tokens >= cuda_defer_pivots_from ? pivot_publishing::deferred
                                                                : pivot_publishing::used;
}

pivot_publishing parse_pivot_publishing(const std::string& name) {
  for (pivot_publishing p :
       {pivot_publishing::all, pivot_publishing::used, pivot_publishing::deferred})
    if (name == pivot_publishing_name(p)) return p;
  fail("parse_pivot_publishing", "unknown pivot publishing '", name,
       "' (expected all, used or deferred)");
}

}  // namespace sp
