// Errors: every library function validates its inputs once at the API boundary and throws
// sp::error with a message that starts with "[function_name]" and names the offending value.
// Library code never aborts; the CLI catches sp::error, prints the message and exits non-zero.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sp {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates any streamable values: sp::str("n=", n, " heads=", h).
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// Throws sp::error("[fn] " + message parts). The parts are only formatted on failure.
template <class... Args>
[[noreturn]] void fail(const char* fn, const Args&... args) {
  throw error(str("[", fn, "] ", args...));
}

template <class... Args>
void check(bool ok, const char* fn, const Args&... args) {
  if (!ok) fail(fn, args...);
}

}  // namespace sp
