// moe/gguf.h — GGUF files: a validating reader (versions 2 and 3) and a streaming writer.
//
// Reader: GgufFile::open() maps the file read-only and parses the header; every count, length,
// offset and size is checked against the file size before it is used, so a corrupt or hostile file
// gives moe::Error (Corrupt / Unsupported / Io, message naming the file and cause) and never an
// allocation sized by an unchecked number. Tensor data is reachable as a mapped view (data()) and as
// an absolute (offset, size) pair for direct IO. A GgufFile is immutable after open(): concurrent
// readers are safe.
//
// Writer: GgufWriter collects metadata and tensor descriptions, then write() streams the header and
// each tensor's bytes (produced on demand by a callback) to disk in bounded memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moe/kernels/types.h"

namespace moe::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
inline constexpr uint32_t kDefaultAlignment = 32;
inline constexpr int kMaxDims = 4;

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t) noexcept;

struct Value;

// A metadata array in compact storage, so a 150k-entry vocabulary costs about what the file spends
// on it rather than a full Value per element:
//  - fixed-size elements (numbers, bools): their little-endian file encoding packed back to back,
//    count x element size bytes;
//  - strings: their bytes packed in one buffer plus an end-offset table (8 bytes per string, the
//    same as the length prefix the file stores);
//  - arrays of arrays: a Value per element (rare; the reader bounds their total count).
// Elements are read with the typed accessors (no allocation) or materialised as a Value copy by
// operator[] / iteration. An Array is a plain value (deep copy); not synchronised.
class Array {
 public:
  // Defined below, after Value is complete (std::vector<Value> needs it; clang instantiates eagerly).
  Array();
  explicit Array(ValueType elem) noexcept;

  ValueType elem_type() const noexcept { return elem_; }
  size_t size() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }

  // Element i (i < size(), asserted) as a standalone Value: a copy for strings and nested arrays.
  Value operator[](size_t i) const;
  // Typed element reads; i < size() is asserted. str(): STRING arrays (asserted). The numeric
  // readers follow Value::as_int/as_uint/as_double (nullopt for an incompatible element type or an
  // out-of-range value). nested(): ARRAY arrays (asserted).
  std::string_view str(size_t i) const;
  std::optional<int64_t> as_int(size_t i) const noexcept;
  std::optional<uint64_t> as_uint(size_t i) const noexcept;
  std::optional<double> as_double(size_t i) const noexcept;
  const Value& nested(size_t i) const;
  // Fixed-size element types: the packed little-endian encoding (size() x element size bytes).
  std::span<const uint8_t> raw() const noexcept {
    if (elem_ == ValueType::STRING || elem_ == ValueType::ARRAY) return {};
    return {bytes_.data(), bytes_.size()};
  }

  // Appends a copy of v; throws moe::Error (InvalidArgument) when v.type != elem_type().
  void push_back(const Value& v);
  void push_string(std::string_view s);  // STRING arrays only (InvalidArgument otherwise)
  void reserve(size_t n);
  // Heap bytes this array holds (buffer capacities, nested values included).
  size_t bytes_used() const noexcept;

  // Forward iteration yielding elements as Values (see operator[]).
  class const_iterator {
   public:
    using value_type = Value;
    using difference_type = std::ptrdiff_t;
    const_iterator() = default;
    const_iterator(const Array* a, size_t i) : a_(a), i_(i) {}
    Value operator*() const;
    const_iterator& operator++() { ++i_; return *this; }
    const_iterator operator++(int) { auto t = *this; ++i_; return t; }
    bool operator==(const const_iterator& o) const noexcept { return i_ == o.i_; }
   private:
    const Array* a_ = nullptr;
    size_t i_ = 0;
  };
  const_iterator begin() const noexcept { return {this, 0}; }
  const_iterator end() const noexcept { return {this, n_}; }

 private:
  friend struct ArrayAccess;  // the reader fills arrays in bulk (gguf_reader.cpp)
  ValueType elem_ = ValueType::UINT8;
  size_t n_ = 0;
  std::vector<uint8_t> bytes_;  // fixed-size: packed elements; STRING: the strings' bytes
  std::vector<uint64_t> ends_;  // STRING: ends_[i] = end offset of string i in bytes_
  std::vector<Value> nested_;   // ARRAY: the elements
};

// One metadata value. Scalars live in the union; strings in `str`; arrays in `arr` (elements all of
// `elem_type`, possibly arrays themselves; `elem_type` always equals arr.elem_type(): make_array and
// the reader keep them in step, the writer checks).
struct Value {
  ValueType type = ValueType::UINT8;
  ValueType elem_type = ValueType::UINT8;  // arrays only
  union {
    uint64_t u64;
    int64_t i64;
    double f64;
    bool b;
  } num{};
  std::string str;
  Array arr;

  bool is_integer() const noexcept;
  bool is_float() const noexcept;
  // Converting accessors: nullopt when the value is not of a compatible kind or out of range.
  std::optional<int64_t> as_int() const noexcept;
  std::optional<uint64_t> as_uint() const noexcept;
  std::optional<double> as_double() const noexcept;
  std::optional<bool> as_bool() const noexcept;
  const std::string* as_string() const noexcept;
  // Heap bytes held beyond sizeof(Value) (string and array buffers).
  size_t bytes_used() const noexcept;

  static Value make_u32(uint32_t v);
  static Value make_i32(int32_t v);
  static Value make_u64(uint64_t v);
  static Value make_f32(float v);
  static Value make_bool(bool v);
  static Value make_string(std::string v);
  // Throws moe::Error (InvalidArgument) when an element's type is not `elem`.
  static Value make_array(ValueType elem, std::vector<Value> v);
  static Value make_array(Array a);
};

inline Array::Array() = default;
inline Array::Array(ValueType elem) noexcept : elem_(elem) {}

struct TensorInfo {
  std::string name;
  TensorType type = TensorType::F32;
  uint32_t n_dims = 0;
  uint64_t ne[kMaxDims] = {1, 1, 1, 1};  // ne[0] is the innermost (contiguous) dimension
  uint64_t rel_offset = 0;               // as stored: relative to the start of the data section
  uint64_t offset = 0;                   // absolute file offset of the first byte
  uint64_t nbytes = 0;                   // size in bytes (validated, no overflow)

  uint64_t n_elements() const noexcept { return ne[0] * ne[1] * ne[2] * ne[3]; }
  uint64_t row_bytes() const noexcept { return nbytes / (n_elements() / ne[0]); }
};

class GgufFile {
 public:
  // Opens and validates. Throws moe::Error naming `path` and the cause.
  // to_ram: instead of mapping the file, copies it into anonymous memory advised for transparent huge
  // pages (fewer TLB misses while the weights stream: about 4% faster decode here), reading it in
  // chunks and dropping each chunk from the page cache. The OS cannot reclaim that memory as it can a
  // mapping's clean pages. A read error or a file that shrinks while loading throws moe::Error(Io).
  static std::unique_ptr<GgufFile> open(const std::string& path, bool to_ram = false);
  // Parses an in-memory image (fuzzing, tests). `name` is used in messages. The bytes must outlive
  // the object.
  static std::unique_ptr<GgufFile> parse_memory(std::span<const uint8_t> bytes, const std::string& name);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const noexcept { return path_; }
  uint32_t version() const noexcept { return version_; }
  uint64_t file_size() const noexcept { return bytes_.size(); }
  uint32_t alignment() const noexcept { return alignment_; }
  uint64_t data_offset() const noexcept { return data_offset_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const noexcept { return kv_; }
  const Value* find(std::string_view key) const noexcept;
  // Typed lookups: nullopt when absent; moe::Error (Corrupt) when present with an incompatible type.
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<uint64_t> get_uint(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  // Array of strings / numbers; moe::Error (Corrupt) when the element type is not compatible.
  const Array* get_array(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<float> get_float_array(std::string_view key) const;
  std::vector<int64_t> get_int_array(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const noexcept;
  // Mapped view of a tensor's bytes (valid while the GgufFile lives).
  std::span<const uint8_t> data(const TensorInfo& t) const noexcept {
    return bytes_.subspan(t.offset, t.nbytes);
  }
  std::span<const uint8_t> bytes() const noexcept { return bytes_; }
  // Heap bytes held by the parsed header (metadata keys and values, tensor infos, lookup indexes;
  // approximate for the hash tables), not counting the mapped file. A vocabulary's arrays cost
  // about their size in the file (see Array).
  size_t metadata_bytes() const noexcept;

 private:
  GgufFile() = default;
  void parse();

  std::string path_;
  void* map_ = nullptr;
  size_t map_len_ = 0;
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// Streaming writer. Typical use: set metadata, add tensors (name, type, shape), then write() with a
// callback that produces each tensor's bytes in order. Memory stays bounded by the largest chunk the
// callback hands over.
class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = kDefaultAlignment);
  void set(std::string key, Value v);  // replaces an existing key, keeps first position
  void set_u32(std::string key, uint32_t v) { set(std::move(key), Value::make_u32(v)); }
  void set_f32(std::string key, float v) { set(std::move(key), Value::make_f32(v)); }
  void set_bool(std::string key, bool v) { set(std::move(key), Value::make_bool(v)); }
  void set_string(std::string key, std::string v) { set(std::move(key), Value::make_string(std::move(v))); }
  // ne[0] innermost. Returns the tensor's index. Throws InvalidArgument for a bad shape.
  size_t add_tensor(std::string name, TensorType type, std::vector<uint64_t> ne);
  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }

  // `emit(i, sink)` must call sink(ptr, len) with exactly tensors()[i].nbytes bytes in total, in as
  // many pieces as it likes. Throws moe::Error (Io) naming `path`.
  using Sink = std::function<void(const void*, size_t)>;
  void write(const std::string& path, const std::function<void(size_t, const Sink&)>& emit);
  // Convenience for small files: tensors' bytes given up front.
  void write(const std::string& path, const std::vector<std::vector<uint8_t>>& data);

 private:
  uint32_t alignment_;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<TensorInfo> tensors_;
  uint64_t data_size_ = 0;
};

}  // namespace moe::gguf
