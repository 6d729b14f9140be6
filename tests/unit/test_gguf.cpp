// GGUF reader and writer: round trips of every value type, real files from shared/data, and the
// corruption classes the reader must reject with a clear message.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "moe/error.h"
#include "moe/gguf.h"

using namespace moe;
using namespace moe::gguf;

namespace {

std::string tmp_path(const std::string& name) { return std::string(MOE_TEST_TMP) + "/" + name; }

std::vector<uint8_t> slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

// A small file with every value type, a nested array and two tensors.
std::string write_sample(const std::string& name, uint32_t alignment = 32) {
  GgufWriter w(alignment);
  w.set_string("general.architecture", "test");
  w.set("u8", [] { Value v; v.type = ValueType::UINT8; v.num.u64 = 200; return v; }());
  w.set("i8", [] { Value v; v.type = ValueType::INT8; v.num.i64 = -100; return v; }());
  w.set("u16", [] { Value v; v.type = ValueType::UINT16; v.num.u64 = 60000; return v; }());
  w.set("i16", [] { Value v; v.type = ValueType::INT16; v.num.i64 = -30000; return v; }());
  w.set_u32("u32", 4000000000u);
  w.set("i32", Value::make_i32(-2000000000));
  w.set_f32("f32", 1.5f);
  w.set_bool("bool", true);
  w.set("u64", Value::make_u64(1ull << 60));
  w.set("i64", [] { Value v; v.type = ValueType::INT64; v.num.i64 = -(1ll << 60); return v; }());
  w.set("f64", [] { Value v; v.type = ValueType::FLOAT64; v.num.f64 = 0.125; return v; }());
  w.set("strs", Value::make_array(ValueType::STRING, {Value::make_string("a"), Value::make_string(""),
                                                       Value::make_string("héllo")}));
  w.set("nested", Value::make_array(ValueType::ARRAY,
                                    {Value::make_array(ValueType::UINT32, {Value::make_u32(1), Value::make_u32(2)}),
                                     Value::make_array(ValueType::UINT32, {})}));
  w.add_tensor("a", TensorType::F32, {4, 3});
  w.add_tensor("b", TensorType::Q8_0, {64});
  std::vector<uint8_t> a(48), b(68);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(255 - i);
  std::string p = tmp_path(name);
  w.write(p, {a, b});
  return p;
}

void expect_error(const std::vector<uint8_t>& bytes, const char* needle, ErrorCode code = ErrorCode::Corrupt) {
  try {
    GgufFile::parse_memory(bytes, "bad.gguf");
    FAIL("no error, expected: " << needle);
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
    CHECK(std::string(e.what()).find("bad.gguf") != std::string::npos);
    CHECK(e.code() == code);
  }
}

template <typename T>
void put(std::vector<uint8_t>& b, size_t at, T v) { std::memcpy(b.data() + at, &v, sizeof v); }

}  // namespace

TEST_CASE("round trip of every metadata value type") {
  auto f = GgufFile::open(write_sample("sample.gguf"));
  CHECK(f->version() == 3);
  CHECK(f->get_string("general.architecture") == "test");
  CHECK(f->get_uint("u8") == 200u);
  CHECK(f->get_int("i8") == -100);
  CHECK(f->get_uint("u16") == 60000u);
  CHECK(f->get_int("i16") == -30000);
  CHECK(f->get_uint("u32") == 4000000000u);
  CHECK(f->get_int("i32") == -2000000000);
  CHECK(f->get_float("f32") == 1.5);
  CHECK(f->get_bool("bool") == true);
  CHECK(f->get_uint("u64") == (1ull << 60));
  CHECK(f->get_int("i64") == -(1ll << 60));
  CHECK(f->get_float("f64") == 0.125);
  CHECK(f->get_string_array("strs") == std::vector<std::string>{"a", "", "héllo"});
  const auto* nested = f->get_array("nested");
  REQUIRE(nested);
  REQUIRE(nested->size() == 2);
  CHECK((*nested)[0].arr.size() == 2);
  CHECK((*nested)[0].arr[1].as_uint() == 2u);
  CHECK((*nested)[1].arr.empty());
  CHECK(!f->get_uint("absent"));
  CHECK_THROWS_AS(f->get_string("u32"), Error);
  CHECK_THROWS_AS(f->get_uint("i8"), Error);  // negative
  REQUIRE(f->tensors().size() == 2);
  const TensorInfo* a = f->find_tensor("a");
  REQUIRE(a);
  CHECK(a->ne[0] == 4);
  CHECK(a->ne[1] == 3);
  CHECK(a->nbytes == 48);
  CHECK(a->offset % 32 == 0);
  CHECK(f->data(*a)[5] == 5);
  const TensorInfo* b = f->find_tensor("b");
  REQUIRE(b);
  CHECK(b->type == TensorType::Q8_0);
  CHECK(b->nbytes == 68);
  CHECK(b->rel_offset == 64);
  CHECK(f->data(*b)[0] == 255);
  CHECK(f->file_size() % 32 == 0);
}

TEST_CASE("general.alignment is honoured") {
  auto f = GgufFile::open(write_sample("aligned.gguf", 64));
  CHECK(f->alignment() == 64);
  CHECK(f->data_offset() % 64 == 0);
  for (const auto& t : f->tensors()) CHECK(t.offset % 64 == 0);
}

TEST_CASE("real files from shared/data") {
  for (const char* name : {"Q4_K", "MXFP4", "BF16"}) {
    auto f = GgufFile::open(std::string(MOE_SHARED_DATA) + "/quant-vectors/" + name + ".gguf");
    const TensorInfo* q = f->find_tensor("q");
    const TensorInfo* e = f->find_tensor("expected");
    REQUIRE(q);
    REQUIRE(e);
    CHECK(e->type == TensorType::F32);
    CHECK(q->n_elements() == e->n_elements());
    CHECK(f->get_string("quant_vectors.source").has_value());
  }
  auto v = GgufFile::open(std::string(MOE_SHARED_DATA) + "/tokenizers/ggml-vocab-llama-spm.gguf");
  CHECK(v->get_string("tokenizer.ggml.model") == "llama");
  CHECK(v->get_string_array("tokenizer.ggml.tokens").size() == 32000);
  CHECK(v->get_float_array("tokenizer.ggml.scores").size() == 32000);
}

TEST_CASE("missing file names the path") {
  try {
    GgufFile::open("/nonexistent/x.gguf");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Io);
    CHECK(std::string(e.what()).find("/nonexistent/x.gguf") != std::string::npos);
  }
}

TEST_CASE("header corruption gives clear errors") {
  const auto good = slurp(write_sample("c.gguf"));
  GgufFile::parse_memory(good, "good.gguf");  // sanity

  auto b = good;
  b[0] = 'X';
  expect_error(b, "bad magic");
  b = good;
  put<uint32_t>(b, 0, __builtin_bswap32(kMagic));
  expect_error(b, "big-endian", ErrorCode::Unsupported);
  b = good;
  put<uint32_t>(b, 4, 1);
  expect_error(b, "unsupported GGUF version 1", ErrorCode::Unsupported);
  b = good;
  put<uint32_t>(b, 4, 0x03000000);
  expect_error(b, "big-endian", ErrorCode::Unsupported);
  b = good;
  put<uint64_t>(b, 8, 1ull << 62);
  expect_error(b, "tensor count");
  b = good;
  put<uint64_t>(b, 16, 1ull << 40);
  expect_error(b, "metadata count");
  b = good;
  put<uint64_t>(b, 24, ~0ull);  // first key's length
  expect_error(b, "claims");
  expect_error({}, "not a GGUF file");
}

TEST_CASE("truncation at every offset is an error, never a crash") {
  const auto good = slurp(write_sample("t.gguf"));
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> b(good.begin(), good.begin() + static_cast<long>(n));
    bool threw = false;
    try {
      GgufFile::parse_memory(b, "bad.gguf");
    } catch (const Error& e) {
      threw = true;
      CHECK(std::string(e.what()).find("bad.gguf") != std::string::npos);
    }
    // Only cutting trailing padding after the last tensor's bytes may still parse.
    if (!threw) CHECK(n >= good.size() - 32);
  }
}

namespace {
// Hand-built file: one tensor info with the given fields, no metadata.
std::vector<uint8_t> one_tensor(const std::vector<std::pair<std::string, std::vector<uint64_t>>>& ts,
                                uint32_t type, const std::vector<uint64_t>& offsets, size_t data_bytes) {
  std::vector<uint8_t> b;
  auto pod = [&](auto v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof v);
  };
  pod(kMagic);
  pod(uint32_t{3});
  pod(uint64_t{ts.size()});
  pod(uint64_t{0});
  for (size_t i = 0; i < ts.size(); ++i) {
    pod(uint64_t{ts[i].first.size()});
    b.insert(b.end(), ts[i].first.begin(), ts[i].first.end());
    pod(uint32_t(ts[i].second.size()));
    for (auto d : ts[i].second) pod(d);
    pod(type);
    pod(offsets[i]);
  }
  while (b.size() % 32) b.push_back(0);
  b.resize(b.size() + data_bytes);
  return b;
}
}  // namespace

TEST_CASE("tensor table corruption") {
  GgufFile::parse_memory(one_tensor({{"x", {8}}}, 0, {0}, 32), "ok.gguf");
  expect_error(one_tensor({{"x", {8}}, {"x", {8}}}, 0, {0, 32}, 64), "duplicate tensor name");
  expect_error(one_tensor({{"x", {8}}}, 0, {0}, 16), "outside the file");
  expect_error(one_tensor({{"x", {8}}}, 0, {1ull << 63}, 32), "outside the file");
  expect_error(one_tensor({{"x", {8}}, {"y", {8}}}, 0, {0, 0}, 64), "overlap");
  expect_error(one_tensor({{"x", {8}}}, 0, {3}, 64), "alignment");
  expect_error(one_tensor({{"x", {8}}}, 31, {0}, 64), "unknown tensor type 31", ErrorCode::Unsupported);
  expect_error(one_tensor({{"x", {8}}}, 1000, {0}, 64), "unknown tensor type", ErrorCode::Unsupported);
  expect_error(one_tensor({{"x", {1ull << 62, 1ull << 62}}}, 0, {0}, 64), "overflows");
  expect_error(one_tensor({{"x", {1ull << 61, 4}}}, 0, {0}, 64), "overflows");  // bytes wrap
  expect_error(one_tensor({{"x", {0}}}, 0, {0}, 64), "dimension 0 is 0");
  expect_error(one_tensor({{"x", {1, 1, 1, 1, 1}}}, 0, {0}, 64), "5 dimensions");
  expect_error(one_tensor({{"x", {33}}}, 8, {0}, 64), "block size");
}
