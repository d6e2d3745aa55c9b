// The --json [FILE] option and its JSON-lines writer.
#include "json_output.h"

#include <cerrno>
#include <cstring>

#include "shareprefill/error.h"

namespace sp::cli {

void add_json_option(CLI::App* sub, json_option& o, const std::string& rows) {
  o.flag = sub->add_option("--json", o.path,
                           "Write JSON lines (" + rows +
                               ") to FILE, or to stdout without FILE or with -; "
                               "the text then goes to stderr")
               ->expected(0, 1)
               ->type_name("[FILE]");
}

json_lines::json_lines(const json_option& o) {
  if (!o.given()) return;
  if (o.to_stdout()) {
    f_ = stdout;
    return;
  }
  f_ = std::fopen(o.path.c_str(), "w");
  check(f_ != nullptr, "--json", "cannot open '", o.path, "' for writing: ", std::strerror(errno));
  own_ = true;
  path_ = o.path;
}

json_lines::~json_lines() {
  if (own_) std::fclose(f_);
}

void json_lines::write(const nlohmann::json& row) {
  if (!f_) return;
  // Each row is flushed and checked: a full disk or a closed pipe is an error, not lost output.
  const bool written = std::fprintf(f_, "%s\n", row.dump().c_str()) >= 0;
  if (!written || std::fflush(f_) != 0 || std::ferror(f_))
    fail("--json", "writing to ", path_.empty() ? "standard output" : "'" + path_ + "'",
         " failed: ", std::strerror(errno));
}

}  // namespace sp::cli
