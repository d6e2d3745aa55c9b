// Reading a whole input file (and writing a whole output file) with the checks every reader needs first: the path exists, is a
// regular file (a directory or a device gets "is not a regular file", not a misleading parse or
// allocation error) and is read completely. Errors are sp::error("[fn] ...") naming the path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sp {

// The size in bytes of the regular file at path; throws naming fn and the path otherwise.
int64_t regular_file_size(const std::string& path, const char* fn);

// The whole regular file at path.
std::vector<uint8_t> read_file_bytes(const std::string& path, const char* fn);
std::string read_file_text(const std::string& path, const char* fn);

// Writes `text` to path, replacing the file; throws naming fn and the path when it cannot be
// opened or the write fails.
void write_file_text(const std::string& path, const std::string& text, const char* fn);

}  // namespace sp
