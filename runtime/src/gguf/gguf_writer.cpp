// GGUF writer (version 3, little-endian; layout described in gguf_reader.cpp). Streams tensor data
// through a caller-supplied callback so multi-gigabyte files are written in bounded memory.
// Not thread-safe: one writer per thread.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "moe/error.h"
#include "moe/gguf.h"

namespace moe::gguf {
namespace {

class Out {
 public:
  Out(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "wb");
    if (!f_) fail(ErrorCode::Io, "{}: cannot create: {}", path, std::strerror(errno));
    std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
  }
  ~Out() {
    if (f_) std::fclose(f_);
  }
  void bytes(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) fail(ErrorCode::Io, "{}: write failed: {}", path_, std::strerror(errno));
    written_ += n;
  }
  template <typename T>
  void pod(T v) { bytes(&v, sizeof v); }
  void str(std::string_view s) {
    pod<uint64_t>(s.size());
    bytes(s.data(), s.size());
  }
  void pad_to(uint64_t alignment) {
    static const uint8_t zeros[256] = {};
    uint64_t pad = (alignment - written_ % alignment) % alignment;
    while (pad) {
      size_t n = pad < sizeof zeros ? pad : sizeof zeros;
      bytes(zeros, n);
      pad -= n;
    }
  }
  uint64_t written() const { return written_; }
  void close() {
    if (std::fclose(f_) != 0) {
      f_ = nullptr;
      fail(ErrorCode::Io, "{}: close failed: {}", path_, std::strerror(errno));
    }
    f_ = nullptr;
  }

 private:
  const std::string& path_;
  std::FILE* f_ = nullptr;
  uint64_t written_ = 0;
};

void write_value(Out& o, const Value& v) {
  switch (v.type) {
    case ValueType::UINT8: o.pod<uint8_t>(static_cast<uint8_t>(v.num.u64)); break;
    case ValueType::INT8: o.pod<int8_t>(static_cast<int8_t>(v.num.i64)); break;
    case ValueType::UINT16: o.pod<uint16_t>(static_cast<uint16_t>(v.num.u64)); break;
    case ValueType::INT16: o.pod<int16_t>(static_cast<int16_t>(v.num.i64)); break;
    case ValueType::UINT32: o.pod<uint32_t>(static_cast<uint32_t>(v.num.u64)); break;
    case ValueType::INT32: o.pod<int32_t>(static_cast<int32_t>(v.num.i64)); break;
    case ValueType::UINT64: o.pod<uint64_t>(v.num.u64); break;
    case ValueType::INT64: o.pod<int64_t>(v.num.i64); break;
    case ValueType::FLOAT32: o.pod<float>(static_cast<float>(v.num.f64)); break;
    case ValueType::FLOAT64: o.pod<double>(v.num.f64); break;
    case ValueType::BOOL: o.pod<uint8_t>(v.num.b ? 1 : 0); break;
    case ValueType::STRING: o.str(v.str); break;
    case ValueType::ARRAY: {
      const Array& a = v.arr;
      if (a.elem_type() != v.elem_type)
        fail(ErrorCode::InvalidArgument, "GGUF array value says {} elements but holds {}", value_type_name(v.elem_type),
             value_type_name(a.elem_type()));
      o.pod<uint32_t>(static_cast<uint32_t>(a.elem_type()));
      o.pod<uint64_t>(a.size());
      if (a.elem_type() == ValueType::STRING) {
        for (size_t i = 0; i < a.size(); ++i) o.str(a.str(i));
      } else if (a.elem_type() == ValueType::ARRAY) {
        for (size_t i = 0; i < a.size(); ++i) write_value(o, a.nested(i));
      } else {
        o.bytes(a.raw().data(), a.raw().size());  // already the packed little-endian file encoding
      }
      break;
    }
  }
}

}  // namespace

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  MOE_ASSERT(alignment && (alignment & (alignment - 1)) == 0, "alignment must be a power of two");
  if (alignment != kDefaultAlignment) set_u32("general.alignment", alignment);
}

void GgufWriter::set(std::string key, Value v) {
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  kv_.emplace_back(std::move(key), std::move(v));
}

size_t GgufWriter::add_tensor(std::string name, TensorType type, std::vector<uint64_t> ne) {
  if (ne.empty() || ne.size() > kMaxDims)
    fail(ErrorCode::InvalidArgument, "tensor '{}': {} dimensions (1 to {} allowed)", name, ne.size(), kMaxDims);
  for (const auto& t : tensors_)
    if (t.name == name) fail(ErrorCode::InvalidArgument, "duplicate tensor name '{}'", name);
  TensorInfo ti;
  ti.name = std::move(name);
  ti.type = type;
  ti.n_dims = static_cast<uint32_t>(ne.size());
  uint64_t elems = 1;
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] == 0 || __builtin_mul_overflow(elems, ne[d], &elems))
      fail(ErrorCode::InvalidArgument, "tensor '{}': bad dimension {}", ti.name, ne[d]);
    ti.ne[d] = ne[d];
  }
  if (ne[0] % traits(type).block_elems != 0)
    fail(ErrorCode::InvalidArgument, "tensor '{}': row of {} is not a multiple of the {} block size {}", ti.name,
         ne[0], type_name(type), traits(type).block_elems);
  ti.nbytes = *row_bytes(type, elems);
  ti.rel_offset = (data_size_ + alignment_ - 1) / alignment_ * alignment_;
  data_size_ = ti.rel_offset + ti.nbytes;
  tensors_.push_back(std::move(ti));
  return tensors_.size() - 1;
}

void GgufWriter::write(const std::string& path, const std::function<void(size_t, const Sink&)>& emit) {
  Out o(path);
  o.pod<uint32_t>(kMagic);
  o.pod<uint32_t>(3);
  o.pod<uint64_t>(tensors_.size());
  o.pod<uint64_t>(kv_.size());
  for (const auto& [k, v] : kv_) {
    o.str(k);
    o.pod<uint32_t>(static_cast<uint32_t>(v.type));
    write_value(o, v);
  }
  for (const auto& t : tensors_) {
    o.str(t.name);
    o.pod<uint32_t>(t.n_dims);
    for (uint32_t d = 0; d < t.n_dims; ++d) o.pod<uint64_t>(t.ne[d]);
    o.pod<uint32_t>(static_cast<uint32_t>(t.type));
    o.pod<uint64_t>(t.rel_offset);
  }
  o.pad_to(alignment_);
  const uint64_t data_start = o.written();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    o.pad_to(alignment_);
    MOE_ASSERT(o.written() - data_start == t.rel_offset, "tensor offset bookkeeping");
    uint64_t got = 0;
    emit(i, [&](const void* p, size_t n) {
      got += n;
      MOE_ASSERT(got <= t.nbytes, "tensor callback wrote too many bytes");
      o.bytes(p, n);
    });
    if (got != t.nbytes)
      fail(ErrorCode::Internal, "{}: tensor '{}' produced {} of its {} bytes", path, t.name, got, t.nbytes);
  }
  o.pad_to(alignment_);  // ggml's reader sizes the data section as the sum of padded tensor sizes
  o.close();
}

void GgufWriter::write(const std::string& path, const std::vector<std::vector<uint8_t>>& data) {
  MOE_ASSERT(data.size() == tensors_.size(), "one data buffer per tensor");
  write(path, [&](size_t i, const Sink& sink) { sink(data[i].data(), data[i].size()); });
}

}  // namespace moe::gguf
