// --json [FILE], the machine-readable output of every subcommand that has one: one JSON object
// per line, to FILE (truncated once per run), or to stdout when FILE is omitted or "-". The
// human-readable text (tables, summaries) goes to stdout, or to stderr when the JSON takes
// stdout, so stdout is either all text or all JSON.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"

namespace sp::cli {

struct json_option {
  std::string path;                   // FILE; "" or "-" = stdout
  const CLI::Option* flag = nullptr;  // set by add_json_option

  bool given() const { return flag != nullptr && flag->count() > 0; }
  bool to_stdout() const { return given() && (path.empty() || path == "-"); }
  // Where the human-readable text goes: stdout, or stderr when the JSON takes stdout.
  FILE* text_stream() const { return to_stdout() ? stderr : stdout; }
};

// Adds --json [FILE] to `sub`; `rows` says what one JSON object holds (for --help).
void add_json_option(CLI::App* sub, json_option& o, const std::string& rows);

// Writes the JSON lines where --json says; without --json, write() does nothing.
class json_lines {
 public:
  explicit json_lines(const json_option& o);
  ~json_lines();
  json_lines(const json_lines&) = delete;
  json_lines& operator=(const json_lines&) = delete;
  bool enabled() const { return f_ != nullptr; }
  // Throws sp::error when the row cannot be written and flushed (e.g. a full disk).
  void write(const nlohmann::json& row);

 private:
  FILE* f_ = nullptr;
  bool own_ = false;
  std::string path_;  // "" for stdout
};

}  // namespace sp::cli
