// Whole-file reads through POSIX open/fstat/read, refusing anything but a regular file; whole-file
// writes.
#include "shareprefill/file_bytes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "shareprefill/error.h"

namespace sp {
namespace {

class file_descriptor {
 public:
  file_descriptor(const std::string& path, const char* fn)
      : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) fail(fn, "cannot open '", path, "': ", std::strerror(errno));
  }
  ~file_descriptor() { ::close(fd_); }
  file_descriptor(const file_descriptor&) = delete;
  file_descriptor& operator=(const file_descriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int64_t size_of_open_file(const file_descriptor& fd, const std::string& path, const char* fn) {
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) fail(fn, "cannot stat '", path, "': ", std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail(fn, "'", path, "' is a directory, not a file");
  check(S_ISREG(st.st_mode), fn, "'", path, "' is not a regular file");
  return static_cast<int64_t>(st.st_size);
}

template <class Bytes>
Bytes read_whole(const std::string& path, const char* fn) {
  const file_descriptor fd(path, fn);
  const int64_t size = size_of_open_file(fd, path, fn);
  Bytes out;
  out.resize(static_cast<size_t>(size));
  int64_t done = 0;
  while (done < size) {
    const ssize_t got = ::read(fd.get(), reinterpret_cast<char*>(out.data()) + done,
                               static_cast<size_t>(size - done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(fn, "cannot read '", path, "': ", std::strerror(errno));
    check(got > 0, fn, "'", path, "' shrank while being read (", done, " of ", size, " bytes)");
    done += got;
  }
  return out;
}

}  // namespace

int64_t regular_file_size(const std::string& path, const char* fn) {
  const file_descriptor fd(path, fn);
  return size_of_open_file(fd, path, fn);
}

std::vector<uint8_t> read_file_bytes(const std::string& path, const char* fn) {
  return read_whole<std::vector<uint8_t>>(path, fn);
}

std::string read_file_text(const std::string& path, const char* fn) {
  return read_whole<std::string>(path, fn);
}

void write_file_text(const std::string& path, const std::string& text, const char* fn) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  check(out.good(), fn, "cannot write '", path, "'");
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  check(!out.fail(), fn, "writing '", path, "' failed");
}

}  // namespace sp
