// GGUF parser: maps the file (or takes a caller's buffer), then reads header, metadata and the
// tensor table through a bounds-checked cursor. Every count and length is checked against the
// bytes that remain before anything is allocated, so a corrupt file yields an sp::error naming
// the problem, never a crash or a huge allocation. Layout (v2/v3, little-endian):
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv | kv* | tensor_info* | pad | data
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "shareprefill/checked_math.h"
#include "shareprefill/error.h"
#include "shareprefill/gguf.h"

namespace sp {
namespace {

constexpr const char* fn_name = "gguf_file";
constexpr uint64_t max_name_length = 65535;  // GGUF spec: keys are at most 2^16-1 bytes
constexpr int64_t max_alignment = int64_t{1} << 30;

// Reads little-endian values from [base, base+size), failing with the file name and the item
// being read when the bytes run out.
class cursor {
 public:
  cursor(const uint8_t* base, size_t size, const std::string& file)
      : base_(base), size_(size), file_(file) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining()) {
      fail(fn_name, file_, ": truncated file while reading ", what, " (needs ", n,
           " bytes at offset ", pos_, ", ", remaining(), " left)");
    }
  }
  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what, uint64_t max_length) {
    const uint64_t n = read<uint64_t>(what + " length");
    if (n > max_length) {
      fail(fn_name, file_, ": ", what, " length ", n, " exceeds the limit of ", max_length);
    }
    need(n, what);
    std::string s(reinterpret_cast<const char*>(base_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  const uint8_t* take(uint64_t n, const std::string& what) {
    need(n, what);
    const uint8_t* p = base_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }

 private:
  const uint8_t* base_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& file_;
};

bool is_value_type(uint32_t id) {
  return id <= static_cast<uint32_t>(gguf_type::f64);
}

// Size in bytes of a fixed-size metadata value type; 0 for string and array.
size_t value_size(gguf_type t) {
  switch (t) {
    case gguf_type::u8:
    case gguf_type::i8:
    case gguf_type::boolean:
      return 1;
    case gguf_type::u16:
    case gguf_type::i16:
      return 2;
    case gguf_type::u32:
    case gguf_type::i32:
    case gguf_type::f32:
      return 4;
    case gguf_type::u64:
    case gguf_type::i64:
    case gguf_type::f64:
      return 8;
    case gguf_type::string:
    case gguf_type::array:
      return 0;
  }
  return 0;
}

void read_scalar(gguf_kv& kv, cursor& c, const std::string& file) {
  const std::string what = "value of key '" + kv.key + "'";
  switch (kv.type) {
    case gguf_type::u8:
      kv.u = c.read<uint8_t>(what);
      break;
    case gguf_type::i8:
      kv.i = c.read<int8_t>(what);
      break;
    case gguf_type::u16:
      kv.u = c.read<uint16_t>(what);
      break;
    case gguf_type::i16:
      kv.i = c.read<int16_t>(what);
      break;
    case gguf_type::u32:
      kv.u = c.read<uint32_t>(what);
      break;
    case gguf_type::i32:
      kv.i = c.read<int32_t>(what);
      break;
    case gguf_type::u64:
      kv.u = c.read<uint64_t>(what);
      break;
    case gguf_type::i64:
      kv.i = c.read<int64_t>(what);
      break;
    case gguf_type::f32:
      kv.f = c.read<float>(what);
      break;
    case gguf_type::f64:
      kv.f = c.read<double>(what);
      break;
    case gguf_type::boolean:
      kv.u = c.read<uint8_t>(what);
      if (kv.u > 1)
        fail(fn_name, file, ": bool value ", kv.u, " of key '", kv.key, "' is not 0 or 1");
      break;
    case gguf_type::string:
      kv.s = c.read_string(what, std::numeric_limits<uint64_t>::max());
      break;
    case gguf_type::array:
      break;
  }
}

void read_array(gguf_kv& kv, cursor& c, const std::string& file) {
  const std::string what = "array of key '" + kv.key + "'";
  const uint32_t elem = c.read<uint32_t>(what + " element type");
  if (!is_value_type(elem)) {
    fail(fn_name, file, ": key '", kv.key, "' has unknown array element type ", elem);
  }
  kv.array_type = static_cast<gguf_type>(elem);
  if (kv.array_type == gguf_type::array) {
    fail(fn_name, file, ": key '", kv.key, "' is a nested array, which is not supported");
  }
  const uint64_t n = c.read<uint64_t>(what + " length");
  // Every element takes at least min_size bytes, which bounds n by the bytes left.
  const size_t elem_size = value_size(kv.array_type);
  const size_t min_size = kv.array_type == gguf_type::string ? sizeof(uint64_t) : elem_size;
  if (n > c.remaining() / min_size) {
    fail(fn_name, file, ": ", what, " claims ", n, " elements of type ",
         gguf_type_name(kv.array_type), " but only ", c.remaining(),
         " bytes are left (truncated file or corrupt count)");
  }
  kv.array_size = static_cast<int64_t>(n);
  if (kv.array_type == gguf_type::string) {
    kv.strings.reserve(static_cast<size_t>(n));
    for (uint64_t i = 0; i < n; ++i) {
      kv.strings.push_back(c.read_string(what + " element " + std::to_string(i),
                                         std::numeric_limits<uint64_t>::max()));
    }
    return;
  }
  const uint8_t* p = c.take(n * elem_size, what);
  kv.raw.assign(p, p + n * elem_size);
  if (kv.array_type == gguf_type::boolean) {
    for (uint64_t i = 0; i < n; ++i) {
      if (p[i] > 1) {
        fail(fn_name, file, ": bool element ", i, " of key '", kv.key, "' is ",
             static_cast<int>(p[i]), ", not 0 or 1");
      }
    }
  }
}

void read_tensor_info(gguf_tensor_info& t, cursor& c, const std::string& file) {
  t.name = c.read_string("tensor name", max_name_length);
  const std::string what = "tensor '" + t.name + "'";
  const uint32_t n_dims = c.read<uint32_t>(what + " dimension count");
  if (n_dims > static_cast<uint32_t>(gguf_max_dims)) {
    fail(fn_name, file, ": ", what, " has ", n_dims, " dimensions (at most ", gguf_max_dims,
         " supported)");
  }
  t.n_dims = static_cast<int>(n_dims);
  for (int d = 0; d < t.n_dims; ++d) {
    const uint64_t ne = c.read<uint64_t>(what + " dimension " + std::to_string(d));
    if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(fn_name, file, ": ", what, " dimension ", d, " is ", ne, " (too large)");
    }
    t.ne[d] = static_cast<int64_t>(ne);
  }
  t.n_elements = checked_product(t.ne, t.n_dims, 1, fn_name, file, ": ", what, " element count");
  const uint32_t type = c.read<uint32_t>(what + " type");
  if (!ggml_type_is_known(type)) fail(fn_name, file, ": ", what, " has unknown type id ", type);
  t.type = static_cast<ggml_type>(type);
  const int64_t block = ggml_block_size(t.type);
  if (t.ne[0] % block != 0) {
    fail(fn_name, file, ": ", what, " row length ", t.ne[0], " is not a multiple of the ",
         ggml_type_name(t.type), " block size ", block);
  }
  // Bytes = (element count / block size) blocks of ggml_block_bytes each.
  t.n_bytes = checked_mul(t.n_elements / block, ggml_block_bytes(t.type), fn_name, file, ": ",
                          what, " byte size");
  t.offset = c.read<uint64_t>(what + " data offset");
}

}  // namespace

void gguf_file::parse() {
  const std::string& file = path_;
  cursor c(base_, size_, file);
  const uint32_t magic = c.read<uint32_t>("magic");
  if (std::memcmp(base_, "GGUF", 4) != 0) {
    fail(fn_name, file, ": bad magic 0x", std::hex, magic, std::dec,
         " (expected the bytes 'GGUF'): not a GGUF file");
  }
  version_ = c.read<uint32_t>("version");
  if (version_ == 1) {
    fail(fn_name, file, ": GGUF version 1 is not supported (only versions 2 and 3)");
  }
  if ((version_ & 0xffffu) == 0 && (version_ >> 16) != 0) {
    fail(fn_name, file, ": version field 0x", std::hex, version_, std::dec,
         " looks byte-swapped: big-endian GGUF files are not supported");
  }
  if (version_ != 2 && version_ != 3) {
    fail(fn_name, file, ": unsupported GGUF version ", version_, " (only versions 2 and 3)");
  }
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Smallest encodings: a kv is key length (8) + type (4) + a 1-byte value; a tensor info is
  // name length (8) + n_dims (4) + type (4) + offset (8).
  if (n_kv > c.remaining() / 13) {
    fail(fn_name, file, ": metadata count ", n_kv, " is impossible for a file of ", size_,
         " bytes (truncated file or corrupt count)");
  }
  if (n_tensors > c.remaining() / 24) {
    fail(fn_name, file, ": tensor count ", n_tensors, " is impossible for a file of ", size_,
         " bytes (truncated file or corrupt count)");
  }

  kvs_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    gguf_kv kv;
    kv.key = c.read_string("key of metadata entry " + std::to_string(k), max_name_length);
    const uint32_t type = c.read<uint32_t>("type of key '" + kv.key + "'");
    if (!is_value_type(type))
      fail(fn_name, file, ": key '", kv.key, "' has unknown value type ", type);
    kv.type = static_cast<gguf_type>(type);
    if (kv.type == gguf_type::array) {
      read_array(kv, c, file);
    } else {
      read_scalar(kv, c, file);
    }
    if (!kv_index_.emplace(kv.key, kvs_.size()).second) {
      fail(fn_name, file, ": duplicate metadata key '", kv.key, "'");
    }
    kvs_.push_back(std::move(kv));
  }

  if (const gguf_kv* a = find("general.alignment")) {
    if (a->type != gguf_type::u32) {
      fail(fn_name, file, ": general.alignment has type ", gguf_type_name(a->type),
           ", expected uint32");
    }
    const int64_t align = static_cast<int64_t>(a->u);
    if (align == 0 || (align & (align - 1)) != 0 || align > max_alignment) {
      fail(fn_name, file, ": general.alignment ", align, " is not a power of two in [1, 2^30]");
    }
    alignment_ = align;
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    gguf_tensor_info t;
    read_tensor_info(t, c, file);
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      fail(fn_name, file, ": duplicate tensor name '", t.name, "'");
    }
    tensors_.push_back(std::move(t));
  }

  const uint64_t header_end = c.pos();
  const uint64_t data_start = (header_end + static_cast<uint64_t>(alignment_) - 1) /
                              static_cast<uint64_t>(alignment_) * static_cast<uint64_t>(alignment_);
  data_offset_ = static_cast<int64_t>(data_start);
  const int64_t data_size =
      data_start <= size_ ? static_cast<int64_t>(size_ - data_start) : int64_t{0};
  for (gguf_tensor_info& t : tensors_) {
    if (t.offset % static_cast<uint64_t>(alignment_) != 0) {
      fail(fn_name, file, ": tensor '", t.name, "' data offset ", t.offset,
           " is not a multiple of the alignment ", alignment_);
    }
    const bool offset_fits = t.offset <= static_cast<uint64_t>(data_size);
    if (!offset_fits || !range_within(static_cast<int64_t>(t.offset), t.n_bytes, data_size)) {
      fail(fn_name, file, ": tensor '", t.name, "' data [", data_start + t.offset, ", ",
           data_start + t.offset + static_cast<uint64_t>(t.n_bytes),
           ") lies past the end of the file (", size_, " bytes)");
    }
    t.data = base_ + data_start + t.offset;
  }
  check_data_ranges_disjoint();
}

void gguf_file::check_data_ranges_disjoint() const {
  // Tensors in offset order; each non-empty one must end before the next non-empty one begins.
  std::vector<const gguf_tensor_info*> order;
  for (const gguf_tensor_info& t : tensors_)
    if (t.n_bytes > 0) order.push_back(&t);
  // Ties keep table order (the pointers are into one vector), so messages are deterministic.
  std::sort(order.begin(), order.end(), [](const gguf_tensor_info* a, const gguf_tensor_info* b) {
    return a->offset != b->offset ? a->offset < b->offset : a < b;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const gguf_tensor_info& prev = *order[i - 1];
    const gguf_tensor_info& next = *order[i];
    // prev lies inside the file, so offset + n_bytes cannot overflow.
    const uint64_t prev_end = prev.offset + static_cast<uint64_t>(prev.n_bytes);
    if (next.offset < prev_end) {
      fail(fn_name, path_, ": tensor '", next.name, "' data at offset ", next.offset,
           " overlaps tensor '", prev.name, "' (data offsets [", prev.offset, ", ", prev_end,
           ")): corrupt tensor table");
    }
  }
}

gguf_file::gguf_file(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(fn_name, "cannot open '", path, "': ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(fn_name, "cannot stat '", path, "': ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(fn_name, "'", path, "' is not a regular file");
  }
  if (st.st_size == 0) {
    ::close(fd);
    fail(fn_name, path, ": truncated file while reading magic (the file is empty)");
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (map == MAP_FAILED) fail(fn_name, "cannot map '", path, "': ", std::strerror(err));
  map_ = map;
  map_size_ = static_cast<size_t>(st.st_size);
  base_ = static_cast<const uint8_t*>(map);
  size_ = map_size_;
  try {
    parse();
  } catch (...) {
    release();
    throw;
  }
}

gguf_file gguf_file::from_memory(const void* data, size_t size) {
  check(data != nullptr || size == 0, "gguf_file::from_memory", "null data with size ", size);
  gguf_file f;
  f.path_ = "<memory>";
  f.base_ = static_cast<const uint8_t*>(data);
  f.size_ = size;
  f.parse();
  return f;
}

gguf_file::gguf_file(gguf_file&& other) noexcept {
  *this = std::move(other);
}

gguf_file& gguf_file::operator=(gguf_file&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    map_ = std::exchange(other.map_, nullptr);
    map_size_ = std::exchange(other.map_size_, 0);
    version_ = other.version_;
    alignment_ = other.alignment_;
    data_offset_ = other.data_offset_;
    kvs_ = std::move(other.kvs_);
    tensors_ = std::move(other.tensors_);
    kv_index_ = std::move(other.kv_index_);
    tensor_index_ = std::move(other.tensor_index_);
  }
  return *this;
}

gguf_file::~gguf_file() {
  release();
}

void gguf_file::release() noexcept {
  if (map_ != nullptr) ::munmap(map_, map_size_);
  map_ = nullptr;
  map_size_ = 0;
  base_ = nullptr;
  size_ = 0;
}

}  // namespace sp
