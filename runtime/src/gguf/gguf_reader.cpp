// GGUF reader. Owns parsing and validation of the header; GgufFile is immutable afterwards.
//
// File layout (all little-endian), versions 2 and 3:
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x { str key | u32 value_type | value }
//   n_tensors x { str name | u32 n_dims | u64 ne[n_dims] | u32 tensor_type | u64 offset }
//   zero padding up to a multiple of general.alignment (u32, default 32; a power of two)
//   tensor data: each tensor at data_start + offset, offset a multiple of the alignment
// where str = { u64 len | len bytes, UTF-8, no terminator } and a value is
//   u8/i8/u16/i16/u32/i32/f32/bool(u8)/u64/i64/f64 as stored, str, or
//   array = { u32 elem_type | u64 count | count values of elem_type } (arrays may nest).
// Version 1 (u32 counts) is rejected as unsupported; a byte-swapped version field means a
// big-endian file, which is rejected by name.
//
// Arrays are stored compactly (moe::gguf::Array): fixed-size elements as their packed file encoding,
// strings packed into one buffer with an end-offset table, so the parsed metadata costs about its
// size in the file (GgufFile::metadata_bytes()). Limits: array counts and string lengths are checked
// against the bytes left before anything is allocated; arrays nest at most kMaxNesting deep and a
// file holds at most kMaxNestedValues elements of arrays-of-arrays (each of which costs a Value).
// Also defines Value and Array (the writer uses them too). Thread-safety: see moe/gguf.h.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "moe/error.h"
#include "moe/gguf.h"

namespace moe::gguf {
namespace {

constexpr int kMaxNesting = 4;  // nested arrays deeper than this are refused (stack bound)

uint32_t bswap32(uint32_t v) { return __builtin_bswap32(v); }

// Size in bytes of a fixed-size value type, 0 for string/array.
uint64_t fixed_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
    case ValueType::UINT16: case ValueType::INT16: return 2;
    case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
    case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
    default: return 0;
  }
}

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::FLOAT64); }

// The smallest number of bytes one element of this type can occupy in the file.
uint64_t min_encoded_size(ValueType t) {
  if (t == ValueType::STRING) return 8;
  if (t == ValueType::ARRAY) return 12;
  return fixed_size(t);
}

class Cursor {
 public:
  Cursor(std::span<const uint8_t> b, const std::string& name) : b_(b), name_(name) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return b_.size() - pos_; }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail(ErrorCode::Corrupt, "{}: truncated file: {} needs {} bytes at offset {} but the file has {} bytes",
           name_, what, n, pos_, b_.size());
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  // Returns a pointer to the next n bytes (checked) and advances past them.
  const uint8_t* take(uint64_t n, const char* what) {
    need(n, what);
    const uint8_t* p = b_.data() + pos_;
    pos_ += n;
    return p;
  }
  // A length-prefixed string as a view into the bytes (valid while they are).
  std::string_view read_string_view(const char* what) {
    uint64_t len = read<uint64_t>(what);
    if (len > remaining())
      fail(ErrorCode::Corrupt, "{}: {} at offset {} claims {} bytes but only {} remain in the file", name_, what,
           pos_ - 8, len, remaining());
    std::string_view s(reinterpret_cast<const char*>(b_.data() + pos_), len);
    pos_ += len;
    return s;
  }
  std::string read_string(const char* what) { return std::string(read_string_view(what)); }

 private:
  std::span<const uint8_t> b_;
  const std::string& name_;
  uint64_t pos_ = 0;
};

constexpr uint64_t kMaxNestedValues = uint64_t{1} << 20;  // elements of arrays-of-arrays per file

struct ParseCtx {
  const std::string& name;
  uint64_t nested_values = 0;  // elements of arrays-of-arrays read so far (budget kMaxNestedValues)
};

Value read_value(Cursor& c, ValueType t, ParseCtx& ctx, const std::string& key, int depth);

}  // namespace

// Bulk fill of an Array by the reader (friend of Array).
struct ArrayAccess {
  // Reads n elements of a.elem_type() at the cursor into `a` (empty). The caller has checked that n
  // minimal-size elements fit in the bytes left.
  static void fill(Cursor& c, Array& a, uint64_t n, ParseCtx& ctx, const std::string& key, int depth) {
    const ValueType et = a.elem_;
    if (const uint64_t esz = fixed_size(et)) {
      const uint8_t* p = c.take(n * esz, "array elements");  // n * esz <= bytes left: no wrap
      if (et == ValueType::BOOL)
        for (uint64_t i = 0; i < n; ++i)
          if (p[i] > 1)
            fail(ErrorCode::Corrupt, "{}: key '{}': bool value {} at offset {} is neither 0 nor 1", ctx.name, key,
                 p[i], c.pos() - n + i);
      a.bytes_.assign(p, p + n * esz);
    } else if (et == ValueType::STRING) {
      // Two passes so the packed buffer is allocated once at its exact size: the first validates
      // every length against the file (on a copy of the cursor), the second copies.
      Cursor probe = c;
      uint64_t total = 0;
      for (uint64_t i = 0; i < n; ++i) total += probe.read_string_view("string array element").size();
      a.bytes_.reserve(total);  // total <= file size
      a.ends_.reserve(n);
      for (uint64_t i = 0; i < n; ++i) {
        std::string_view s = c.read_string_view("string array element");
        a.bytes_.insert(a.bytes_.end(), s.begin(), s.end());
        a.ends_.push_back(a.bytes_.size());
      }
    } else {  // arrays of arrays: one Value each, under a per-file budget
      if (n > kMaxNestedValues - ctx.nested_values)
        fail(ErrorCode::Corrupt, "{}: key '{}': more than {} elements in nested arrays", ctx.name, key,
             kMaxNestedValues);
      ctx.nested_values += n;
      a.nested_.reserve(n);
      for (uint64_t i = 0; i < n; ++i) a.nested_.push_back(read_value(c, et, ctx, key, depth + 1));
    }
    a.n_ = n;
  }
};

namespace {

Value read_value(Cursor& c, ValueType t, ParseCtx& ctx, const std::string& key, int depth) {
  const std::string& name = ctx.name;
  Value v;
  v.type = t;
  switch (t) {
    case ValueType::UINT8: v.num.u64 = c.read<uint8_t>("u8 value"); break;
    case ValueType::INT8: v.num.i64 = c.read<int8_t>("i8 value"); break;
    case ValueType::UINT16: v.num.u64 = c.read<uint16_t>("u16 value"); break;
    case ValueType::INT16: v.num.i64 = c.read<int16_t>("i16 value"); break;
    case ValueType::UINT32: v.num.u64 = c.read<uint32_t>("u32 value"); break;
    case ValueType::INT32: v.num.i64 = c.read<int32_t>("i32 value"); break;
    case ValueType::UINT64: v.num.u64 = c.read<uint64_t>("u64 value"); break;
    case ValueType::INT64: v.num.i64 = c.read<int64_t>("i64 value"); break;
    case ValueType::FLOAT32: v.num.f64 = c.read<float>("f32 value"); break;
    case ValueType::FLOAT64: v.num.f64 = c.read<double>("f64 value"); break;
    case ValueType::BOOL: {
      uint8_t b = c.read<uint8_t>("bool value");
      if (b > 1) fail(ErrorCode::Corrupt, "{}: key '{}': bool value {} at offset {} is neither 0 nor 1", name, key, b, c.pos() - 1);
      v.num.b = b != 0;
      break;
    }
    case ValueType::STRING: v.str = c.read_string("string value"); break;
    case ValueType::ARRAY: {
      if (depth >= kMaxNesting)
        fail(ErrorCode::Corrupt, "{}: key '{}': arrays nested deeper than {} levels", name, key, kMaxNesting);
      uint32_t et = c.read<uint32_t>("array element type");
      if (!valid_value_type(et))
        fail(ErrorCode::Corrupt, "{}: key '{}': unknown array element type {} at offset {}", name, key, et, c.pos() - 4);
      v.elem_type = static_cast<ValueType>(et);
      uint64_t n = c.read<uint64_t>("array length");
      uint64_t min = min_encoded_size(v.elem_type);
      if (n > c.remaining() / min)
        fail(ErrorCode::Corrupt, "{}: key '{}': array of {} {} elements at offset {} cannot fit in the {} bytes left",
             name, key, n, value_type_name(v.elem_type), c.pos() - 8, c.remaining());
      v.arr = Array(v.elem_type);
      ArrayAccess::fill(c, v.arr, n, ctx, key, depth);
      break;
    }
  }
  return v;
}

using Num = decltype(Value::num);

bool is_unsigned(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 || t == ValueType::UINT64;
}
bool is_integer_type(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::UINT16: case ValueType::INT16:
    case ValueType::UINT32: case ValueType::INT32: case ValueType::UINT64: case ValueType::INT64: return true;
    default: return false;
  }
}
bool is_float_type(ValueType t) { return t == ValueType::FLOAT32 || t == ValueType::FLOAT64; }

std::optional<int64_t> num_as_int(ValueType t, const Num& num) noexcept {
  if (!is_integer_type(t)) return std::nullopt;
  if (is_unsigned(t)) {
    if (num.u64 > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(num.u64);
  }
  return num.i64;
}
std::optional<uint64_t> num_as_uint(ValueType t, const Num& num) noexcept {
  if (!is_integer_type(t)) return std::nullopt;
  if (is_unsigned(t)) return num.u64;
  if (num.i64 < 0) return std::nullopt;
  return static_cast<uint64_t>(num.i64);
}
std::optional<double> num_as_double(ValueType t, const Num& num) noexcept {
  if (is_float_type(t)) return num.f64;
  if (is_integer_type(t)) return is_unsigned(t) ? static_cast<double>(num.u64) : static_cast<double>(num.i64);
  return std::nullopt;
}

// The file encoding of a fixed-size value <-> the Value conventions (unsigned in u64, signed in
// i64, floats in f64, bools in b).
template <typename T>
T load(const uint8_t* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
Num decode_fixed(ValueType t, const uint8_t* p) noexcept {
  Num n{};
  switch (t) {
    case ValueType::UINT8: n.u64 = p[0]; break;
    case ValueType::INT8: n.i64 = load<int8_t>(p); break;
    case ValueType::UINT16: n.u64 = load<uint16_t>(p); break;
    case ValueType::INT16: n.i64 = load<int16_t>(p); break;
    case ValueType::UINT32: n.u64 = load<uint32_t>(p); break;
    case ValueType::INT32: n.i64 = load<int32_t>(p); break;
    case ValueType::UINT64: n.u64 = load<uint64_t>(p); break;
    case ValueType::INT64: n.i64 = load<int64_t>(p); break;
    case ValueType::FLOAT32: n.f64 = load<float>(p); break;
    case ValueType::FLOAT64: n.f64 = load<double>(p); break;
    case ValueType::BOOL: n.b = p[0] != 0; break;
    default: break;
  }
  return n;
}
template <typename T>
void store(uint8_t* p, T v) noexcept { std::memcpy(p, &v, sizeof v); }
void encode_fixed(ValueType t, const Num& n, uint8_t* p) noexcept {
  switch (t) {
    case ValueType::UINT8: store(p, static_cast<uint8_t>(n.u64)); break;
    case ValueType::INT8: store(p, static_cast<int8_t>(n.i64)); break;
    case ValueType::UINT16: store(p, static_cast<uint16_t>(n.u64)); break;
    case ValueType::INT16: store(p, static_cast<int16_t>(n.i64)); break;
    case ValueType::UINT32: store(p, static_cast<uint32_t>(n.u64)); break;
    case ValueType::INT32: store(p, static_cast<int32_t>(n.i64)); break;
    case ValueType::UINT64: store(p, n.u64); break;
    case ValueType::INT64: store(p, n.i64); break;
    case ValueType::FLOAT32: store(p, static_cast<float>(n.f64)); break;
    case ValueType::FLOAT64: store(p, n.f64); break;
    case ValueType::BOOL: store(p, static_cast<uint8_t>(n.b ? 1 : 0)); break;
    default: break;
  }
}

size_t string_heap(const std::string& s) noexcept {
  static const size_t kInline = std::string().capacity();  // small strings live inside the object
  return s.capacity() > kInline ? s.capacity() + 1 : 0;
}

}  // namespace

const char* value_type_name(ValueType t) noexcept {
  static const char* kNames[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                 "string", "array", "u64", "i64", "f64"};
  auto i = static_cast<uint32_t>(t);
  return i < 13 ? kNames[i] : "invalid";
}

// --- Value ---------------------------------------------------------------------------------------

bool Value::is_integer() const noexcept { return is_integer_type(type); }
bool Value::is_float() const noexcept { return is_float_type(type); }
std::optional<int64_t> Value::as_int() const noexcept { return num_as_int(type, num); }
std::optional<uint64_t> Value::as_uint() const noexcept { return num_as_uint(type, num); }
std::optional<double> Value::as_double() const noexcept { return num_as_double(type, num); }
std::optional<bool> Value::as_bool() const noexcept {
  if (type == ValueType::BOOL) return num.b;
  return std::nullopt;
}
const std::string* Value::as_string() const noexcept { return type == ValueType::STRING ? &str : nullptr; }
size_t Value::bytes_used() const noexcept { return string_heap(str) + arr.bytes_used(); }

Value Value::make_u32(uint32_t x) { Value v; v.type = ValueType::UINT32; v.num.u64 = x; return v; }
Value Value::make_i32(int32_t x) { Value v; v.type = ValueType::INT32; v.num.i64 = x; return v; }
Value Value::make_u64(uint64_t x) { Value v; v.type = ValueType::UINT64; v.num.u64 = x; return v; }
Value Value::make_f32(float x) { Value v; v.type = ValueType::FLOAT32; v.num.f64 = x; return v; }
Value Value::make_bool(bool x) { Value v; v.type = ValueType::BOOL; v.num.b = x; return v; }
Value Value::make_string(std::string x) { Value v; v.type = ValueType::STRING; v.str = std::move(x); return v; }
Value Value::make_array(ValueType elem, std::vector<Value> x) {
  Array a(elem);
  a.reserve(x.size());
  for (const auto& e : x) a.push_back(e);
  return make_array(std::move(a));
}
Value Value::make_array(Array a) {
  Value v;
  v.type = ValueType::ARRAY;
  v.elem_type = a.elem_type();
  v.arr = std::move(a);
  return v;
}

// --- Array ---------------------------------------------------------------------------------------

Value Array::operator[](size_t i) const {
  MOE_ASSERT(i < n_, "GGUF array index out of range");
  if (elem_ == ValueType::STRING) return Value::make_string(std::string(str(i)));
  if (elem_ == ValueType::ARRAY) return nested_[i];
  Value v;
  v.type = elem_;
  v.num = decode_fixed(elem_, bytes_.data() + i * fixed_size(elem_));
  return v;
}
Value Array::const_iterator::operator*() const { return (*a_)[i_]; }

std::string_view Array::str(size_t i) const {
  MOE_ASSERT(elem_ == ValueType::STRING && i < n_, "GGUF string array access out of range or on a non-string array");
  const uint64_t b = i ? ends_[i - 1] : 0;
  return {reinterpret_cast<const char*>(bytes_.data()) + b, static_cast<size_t>(ends_[i] - b)};
}
std::optional<int64_t> Array::as_int(size_t i) const noexcept {
  if (i >= n_ || !fixed_size(elem_)) return std::nullopt;
  return num_as_int(elem_, decode_fixed(elem_, bytes_.data() + i * fixed_size(elem_)));
}
std::optional<uint64_t> Array::as_uint(size_t i) const noexcept {
  if (i >= n_ || !fixed_size(elem_)) return std::nullopt;
  return num_as_uint(elem_, decode_fixed(elem_, bytes_.data() + i * fixed_size(elem_)));
}
std::optional<double> Array::as_double(size_t i) const noexcept {
  if (i >= n_ || !fixed_size(elem_)) return std::nullopt;
  return num_as_double(elem_, decode_fixed(elem_, bytes_.data() + i * fixed_size(elem_)));
}
const Value& Array::nested(size_t i) const {
  MOE_ASSERT(elem_ == ValueType::ARRAY && i < n_, "GGUF nested array access out of range or on a flat array");
  return nested_[i];
}

void Array::push_back(const Value& v) {
  if (v.type != elem_)
    fail(ErrorCode::InvalidArgument, "GGUF array of {} cannot hold a {} element", value_type_name(elem_),
         value_type_name(v.type));
  if (elem_ == ValueType::STRING) return push_string(v.str);
  if (elem_ == ValueType::ARRAY) {
    nested_.push_back(v);
  } else {
    const uint64_t esz = fixed_size(elem_);
    bytes_.resize(bytes_.size() + esz);
    encode_fixed(elem_, v.num, bytes_.data() + bytes_.size() - esz);
  }
  ++n_;
}
void Array::push_string(std::string_view s) {
  if (elem_ != ValueType::STRING)
    fail(ErrorCode::InvalidArgument, "GGUF array of {} cannot hold a string element", value_type_name(elem_));
  bytes_.insert(bytes_.end(), s.begin(), s.end());
  ends_.push_back(bytes_.size());
  ++n_;
}
void Array::reserve(size_t n) {
  if (elem_ == ValueType::STRING) ends_.reserve(n);
  else if (elem_ == ValueType::ARRAY) nested_.reserve(n);
  else bytes_.reserve(n * fixed_size(elem_));
}
size_t Array::bytes_used() const noexcept {
  size_t b = bytes_.capacity() + ends_.capacity() * sizeof(uint64_t) + nested_.capacity() * sizeof(Value);
  for (const auto& v : nested_) b += v.bytes_used();
  return b;
}

// --- GgufFile ------------------------------------------------------------------------------------

namespace {

// Copies the file (len bytes) into anonymous memory advised for huge pages; see GgufFile::open.
void* load_to_ram(int fd, size_t len, const std::string& path) {
  void* a = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED)
    fail(ErrorCode::Io, "{}: cannot allocate {} bytes to load it into RAM: {}", path, len, std::strerror(errno));
#ifdef MADV_HUGEPAGE
  ::madvise(a, len, MADV_HUGEPAGE);
#endif
  constexpr size_t kChunk = size_t(64) << 20;
  uint8_t* dst = static_cast<uint8_t*>(a);
  for (size_t off = 0; off < len;) {
    const size_t want = std::min(kChunk, len - off);
    size_t got = 0;
    while (got < want) {
      const ssize_t r = ::pread(fd, dst + off + got, want - got, static_cast<off_t>(off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        const int e = errno;
        ::munmap(a, len);
        if (r == 0)
          fail(ErrorCode::Io, "{}: file ended at byte {} while loading {} bytes (changed on disk?)", path, off + got,
               len);
        fail(ErrorCode::Io, "{}: read failed at byte {}: {}", path, off + got, std::strerror(e));
      }
      got += static_cast<size_t>(r);
    }
    // why: the copy is what is used; keeping the file in the page cache too would hold the model twice.
    ::posix_fadvise(fd, static_cast<off_t>(off), static_cast<off_t>(want), POSIX_FADV_DONTNEED);
    off += want;
  }
  ::mprotect(a, len, PROT_READ);
  return a;
}

}  // namespace

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path, bool to_ram) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::Io, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(ErrorCode::Io, "{}: cannot stat: {}", path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorCode::Io, "{}: not a regular file", path);
  }
  auto f = std::unique_ptr<GgufFile>(new GgufFile());
  f->path_ = path;
  size_t len = static_cast<size_t>(st.st_size);
  if (len > 0 && to_ram) {
    try {
      f->map_ = load_to_ram(fd, len, path);
    } catch (...) {
      ::close(fd);
      throw;
    }
    f->map_len_ = len;
    f->bytes_ = {static_cast<const uint8_t*>(f->map_), len};
  } else if (len > 0) {
    void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail(ErrorCode::Io, "{}: cannot map {} bytes: {}", path, len, std::strerror(e));
    }
    f->map_ = m;
    f->map_len_ = len;
    f->bytes_ = {static_cast<const uint8_t*>(m), len};
  }
  ::close(fd);
  f->parse();
  return f;
}

std::unique_ptr<GgufFile> GgufFile::parse_memory(std::span<const uint8_t> bytes, const std::string& name) {
  auto f = std::unique_ptr<GgufFile>(new GgufFile());
  f->path_ = name;
  f->bytes_ = bytes;
  f->parse();
  return f;
}

GgufFile::~GgufFile() {
  if (map_) ::munmap(map_, map_len_);
}

void GgufFile::parse() {
  const std::string& name = path_;
  Cursor c(bytes_, name);
  if (bytes_.size() < 4) fail(ErrorCode::Corrupt, "{}: not a GGUF file: only {} bytes", name, bytes_.size());
  uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kMagic) {
    if (magic == bswap32(kMagic))
      fail(ErrorCode::Unsupported, "{}: big-endian GGUF files are not supported", name);
    fail(ErrorCode::Corrupt, "{}: not a GGUF file: bad magic 0x{:08x}", name, magic);
  }
  uint32_t version = c.read<uint32_t>("version");
  if (version != 2 && version != 3) {
    if ((version & 0xffffu) == 0 && (bswap32(version) == 2 || bswap32(version) == 3))
      fail(ErrorCode::Unsupported, "{}: big-endian GGUF files are not supported (version field {:#x})", name, version);
    fail(ErrorCode::Unsupported, "{}: unsupported GGUF version {} (supported: 2 and 3)", name, version);
  }
  version_ = version;
  uint64_t n_tensors = c.read<uint64_t>("tensor count");
  uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Each key-value takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least
  // 8 + 4 + 4 + 8 bytes: a count that cannot fit is corrupt before anything is allocated.
  if (n_kv > c.remaining() / 13)
    fail(ErrorCode::Corrupt, "{}: metadata count {} cannot fit in a {}-byte file", name, n_kv, bytes_.size());
  if (n_tensors > c.remaining() / 24)
    fail(ErrorCode::Corrupt, "{}: tensor count {} cannot fit in a {}-byte file", name, n_tensors, bytes_.size());

  kv_.reserve(n_kv);
  ParseCtx ctx{name};
  for (uint64_t i = 0; i < n_kv; ++i) {
    uint64_t at = c.pos();
    std::string key = c.read_string("metadata key");
    uint32_t t = c.read<uint32_t>("metadata value type");
    if (!valid_value_type(t))
      fail(ErrorCode::Corrupt, "{}: key '{}' at offset {} has unknown value type {}", name, key, at, t);
    Value v = read_value(c, static_cast<ValueType>(t), ctx, key, 0);
    if (kv_index_.count(key)) fail(ErrorCode::Corrupt, "{}: duplicate metadata key '{}'", name, key);
    kv_index_.emplace(key, kv_.size());
    kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const Value* a = find("general.alignment")) {
    auto al = a->as_uint();
    if (a->type != ValueType::UINT32 || !al || *al == 0 || (*al & (*al - 1)) != 0 || *al > (1u << 20))
      fail(ErrorCode::Corrupt, "{}: general.alignment must be a u32 power of two up to 1 MiB", name);
    alignment_ = static_cast<uint32_t>(*al);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo ti;
    ti.name = c.read_string("tensor name");
    ti.n_dims = c.read<uint32_t>("tensor dimension count");
    if (ti.n_dims == 0 || ti.n_dims > kMaxDims)
      fail(ErrorCode::Corrupt, "{}: tensor '{}' has {} dimensions (1 to {} allowed)", name, ti.name, ti.n_dims, kMaxDims);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < ti.n_dims; ++d) {
      uint64_t n = c.read<uint64_t>("tensor dimension");
      if (n == 0 || n > static_cast<uint64_t>(INT64_MAX))
        fail(ErrorCode::Corrupt, "{}: tensor '{}' dimension {} is {} (must be 1 to 2^63-1)", name, ti.name, d, n);
      if (__builtin_mul_overflow(elems, n, &elems) || elems > static_cast<uint64_t>(INT64_MAX))
        fail(ErrorCode::Corrupt, "{}: tensor '{}' element count overflows 64 bits", name, ti.name);
      ti.ne[d] = n;
    }
    uint32_t raw_type = c.read<uint32_t>("tensor type");
    const TypeTraits* tr = type_traits(raw_type);
    if (!tr) fail(ErrorCode::Unsupported, "{}: tensor '{}' has unknown tensor type {}", name, ti.name, raw_type);
    ti.type = tr->type;
    if (ti.ne[0] % tr->block_elems != 0)
      fail(ErrorCode::Corrupt, "{}: tensor '{}' row of {} elements is not a multiple of the {} block size {}", name,
           ti.name, ti.ne[0], tr->name, tr->block_elems);
    auto nb = row_bytes(ti.type, elems);
    if (!nb) fail(ErrorCode::Corrupt, "{}: tensor '{}' byte size overflows 64 bits", name, ti.name);
    ti.nbytes = *nb;
    ti.rel_offset = c.read<uint64_t>("tensor offset");
    if (ti.rel_offset % alignment_ != 0)
      fail(ErrorCode::Corrupt, "{}: tensor '{}' offset {} is not a multiple of the alignment {}", name, ti.name,
           ti.rel_offset, alignment_);
    if (tensor_index_.count(ti.name)) fail(ErrorCode::Corrupt, "{}: duplicate tensor name '{}'", name, ti.name);
    tensor_index_.emplace(ti.name, tensors_.size());
    tensors_.push_back(std::move(ti));
  }

  // The data section starts at the next multiple of the alignment (no wrap: pos <= file size).
  uint64_t pos = c.pos();
  data_offset_ = (pos + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t fsize = bytes_.size();
  if (tensors_.empty()) return;  // vocabulary-only files need not carry the padding
  if (data_offset_ > fsize)
    fail(ErrorCode::Corrupt, "{}: truncated file: the tensor data section would start at {} past the end ({})", name,
         data_offset_, fsize);
  const uint64_t data_size = fsize - data_offset_;
  for (auto& t : tensors_) {
    if (t.rel_offset > data_size || t.nbytes > data_size - t.rel_offset)
      fail(ErrorCode::Corrupt,
           "{}: tensor '{}' ({} bytes at data offset {}) lies outside the file (data section has {} bytes): "
           "the file is truncated or corrupt",
           name, t.name, t.nbytes, t.rel_offset, data_size);
    t.offset = data_offset_ + t.rel_offset;
  }
  std::vector<const TensorInfo*> order;
  order.reserve(tensors_.size());
  for (auto& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset)
      fail(ErrorCode::Corrupt, "{}: tensors '{}' and '{}' overlap", name, order[i - 1]->name, order[i]->name);
}

const Value* GgufFile::find(std::string_view key) const noexcept {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const noexcept {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, std::string_view key, const Value& v, const char* want) {
  fail(ErrorCode::Corrupt, "{}: metadata key '{}' is a {} but {} was expected", path, key, value_type_name(v.type), want);
}
}  // namespace

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  auto r = v->as_int();
  if (!r) wrong_type(path_, key, *v, "an integer");
  return r;
}
std::optional<uint64_t> GgufFile::get_uint(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  auto r = v->as_uint();
  if (!r) wrong_type(path_, key, *v, "a non-negative integer");
  return r;
}
std::optional<double> GgufFile::get_float(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  auto r = v->as_double();
  if (!r) wrong_type(path_, key, *v, "a number");
  return r;
}
std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  auto r = v->as_bool();
  if (!r) wrong_type(path_, key, *v, "a bool");
  return r;
}
std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (!v->as_string()) wrong_type(path_, key, *v, "a string");
  return v->str;
}
const Array* GgufFile::get_array(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return nullptr;
  if (v->type != ValueType::ARRAY) wrong_type(path_, key, *v, "an array");
  return &v->arr;
}
std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  std::vector<std::string> out;
  const Value* v = find(key);
  if (!v) return out;
  if (v->type != ValueType::ARRAY || v->elem_type != ValueType::STRING)
    fail(ErrorCode::Corrupt, "{}: metadata key '{}' must be an array of strings", path_, key);
  out.reserve(v->arr.size());
  for (size_t i = 0; i < v->arr.size(); ++i) out.emplace_back(v->arr.str(i));
  return out;
}
std::vector<float> GgufFile::get_float_array(std::string_view key) const {
  std::vector<float> out;
  const Value* v = find(key);
  if (!v) return out;
  if (v->type != ValueType::ARRAY || (v->elem_type != ValueType::FLOAT32 && v->elem_type != ValueType::FLOAT64))
    fail(ErrorCode::Corrupt, "{}: metadata key '{}' must be an array of floats (found {} of {})", path_, key,
         value_type_name(v->type), value_type_name(v->elem_type));
  out.reserve(v->arr.size());
  for (size_t i = 0; i < v->arr.size(); ++i) out.push_back(static_cast<float>(*v->arr.as_double(i)));
  return out;
}
std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  std::vector<int64_t> out;
  const Value* v = find(key);
  if (!v) return out;
  if (v->type != ValueType::ARRAY)
    fail(ErrorCode::Corrupt, "{}: metadata key '{}' must be an array of integers", path_, key);
  out.reserve(v->arr.size());
  for (size_t i = 0; i < v->arr.size(); ++i) {
    auto x = v->arr.as_int(i);
    if (!x) fail(ErrorCode::Corrupt, "{}: metadata key '{}' must be an array of integers (found {})", path_, key,
                 value_type_name(v->elem_type));
    out.push_back(*x);
  }
  return out;
}

size_t GgufFile::metadata_bytes() const noexcept {
  // Hash-table nodes: the stored pair plus a next pointer and cached hash (libstdc++), and the
  // bucket array.
  auto index_bytes = [](const std::unordered_map<std::string, size_t>& m) {
    size_t b = m.bucket_count() * sizeof(void*) + m.size() * (sizeof(std::pair<const std::string, size_t>) + 16);
    for (const auto& [k, _] : m) b += string_heap(k);
    return b;
  };
  size_t b = kv_.capacity() * sizeof(kv_[0]) + tensors_.capacity() * sizeof(TensorInfo);
  for (const auto& [k, v] : kv_) b += string_heap(k) + v.bytes_used();
  for (const auto& t : tensors_) b += string_heap(t.name);
  return b + index_bytes(kv_index_) + index_bytes(tensor_index_);
}

}  // namespace moe::gguf
