// GGUF reader and writer: round trips of every value type, real files from shared/data, the
// corruption classes the reader must reject with a clear message, and the compact array storage
// (a large vocabulary costs about its size in the file).
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "moe/error.h"
#include "moe/gguf.h"

#if defined(__GLIBC__)  // (defined by the C library headers included above)
#include <malloc.h>     // mallinfo2: heap growth of a parse
#endif

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

TEST_CASE("to_ram: the same bytes as the map; a missing or truncated file names the path") {
  const std::string path = write_sample("r.gguf");
  auto mapped = GgufFile::open(path);
  auto copied = GgufFile::open(path, /*to_ram=*/true);
  REQUIRE(copied->bytes().size() == mapped->bytes().size());
  CHECK(std::memcmp(copied->bytes().data(), mapped->bytes().data(), mapped->bytes().size()) == 0);
  CHECK(copied->tensors().size() == mapped->tensors().size());
  try {
    GgufFile::open("/nonexistent/y.gguf", true);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Io);
    CHECK(std::string(e.what()).find("/nonexistent/y.gguf") != std::string::npos);
  }
  const auto good = slurp(path);
  const std::string cut = path + ".cut";
  {
    std::ofstream o(cut, std::ios::binary);
    o.write(reinterpret_cast<const char*>(good.data()), static_cast<std::streamsize>(good.size() / 2));
  }
  try {
    GgufFile::open(cut, true);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Corrupt);
    CHECK(std::string(e.what()).find(cut) != std::string::npos);
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

// --- Compact array storage -------------------------------------------------------------------------

namespace {
// A vocabulary-sized metadata section like a 150k-token BPE model's: tokens, scores, token types
// and merges. Returns the path.
std::string write_big_vocab(const std::string& name, size_t n) {
  Array toks(ValueType::STRING), merges(ValueType::STRING), scores(ValueType::FLOAT32), types(ValueType::INT32);
  toks.reserve(n);
  merges.reserve(n);
  scores.reserve(n);
  types.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    toks.push_string("tok" + std::to_string(i * 7919 % 1000003));
    merges.push_string("t" + std::to_string(i) + " u" + std::to_string(i + 1));
    scores.push_back(Value::make_f32(-float(i) * 0.5f));
    types.push_back(Value::make_i32(int32_t(i % 7)));
  }
  GgufWriter w;
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set("tokenizer.ggml.tokens", Value::make_array(std::move(toks)));
  w.set("tokenizer.ggml.scores", Value::make_array(std::move(scores)));
  w.set("tokenizer.ggml.token_type", Value::make_array(std::move(types)));
  w.set("tokenizer.ggml.merges", Value::make_array(std::move(merges)));
  std::string p = tmp_path(name);
  w.write(p, std::vector<std::vector<uint8_t>>{});
  return p;
}

#if defined(__GLIBC__)
// Bytes the main malloc arena and mmapped chunks hold in use (0 when malloc is replaced, as under
// AddressSanitizer, whose allocator glibc's counters do not see).
size_t heap_in_use() {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}
#else
size_t heap_in_use() { return 0; }
#endif
}  // namespace

TEST_CASE("a 150k-entry vocabulary costs about its size in the file") {
  constexpr size_t n = 150000;
  const std::string p = write_big_vocab("big_vocab.gguf", n);
  const size_t before = heap_in_use();
  auto f = GgufFile::open(p);
  const size_t heap = heap_in_use() - before;
  const double file = double(f->file_size());  // all of it is metadata: no tensors
  MESSAGE("file ", f->file_size(), " B, metadata_bytes ", f->metadata_bytes(), " B, heap growth ", heap, " B");
  // One Value per element (the old layout, ~100 bytes each) would be ~60 MB here, ~15x the file.
  CHECK(f->metadata_bytes() <= size_t(1.25 * file));
  CHECK(f->metadata_bytes() >= size_t(0.9 * file));  // the accounting sees the arrays
  if (before != 0 && heap_in_use() != 0) CHECK(heap <= size_t(1.5 * file));

  const Array* toks = f->get_array("tokenizer.ggml.tokens");
  REQUIRE(toks);
  REQUIRE(toks->size() == n);
  CHECK(toks->elem_type() == ValueType::STRING);
  CHECK(toks->str(0) == "tok0");
  CHECK(toks->str(n - 1) == "tok" + std::to_string((n - 1) * 7919 % 1000003));
  CHECK((*toks)[5].str == "tok" + std::to_string(5 * 7919));
  CHECK(f->get_string_array("tokenizer.ggml.merges")[10] == "t10 u11");
  const auto scores = f->get_float_array("tokenizer.ggml.scores");
  REQUIRE(scores.size() == n);
  CHECK(scores[3] == -1.5f);
  const Array* types = f->get_array("tokenizer.ggml.token_type");
  REQUIRE(types);
  CHECK(types->as_int(13) == 13 % 7);
  CHECK(types->as_double(6) == 6.0);
  CHECK(!types->as_int(n));  // out of range: nullopt, not a read past the end
  CHECK(f->get_int_array("tokenizer.ggml.token_type")[20] == 20 % 7);
  size_t count = 0;
  for (const Value& e : *types) count += e.type == ValueType::INT32;
  CHECK(count == n);
  CHECK_THROWS_AS(f->get_int_array("tokenizer.ggml.scores"), Error);  // floats are not integers

  // Copies are deep and survive the file (the model generator copies vocabulary metadata).
  Value copy = *f->find("tokenizer.ggml.tokens");
  f.reset();
  CHECK(copy.arr.str(1) == "tok7919");
  copy.arr.push_back(Value::make_string("extra"));
  CHECK(copy.arr.size() == n + 1);
  CHECK(copy.arr.str(n) == "extra");
}

TEST_CASE("real vocabulary files parse compactly") {
  for (const char* name : {"deepseek-llm", "gpt-2", "llama-spm"}) {
    auto f = GgufFile::open(std::string(MOE_SHARED_DATA) + "/tokenizers/ggml-vocab-" + name + ".gguf");
    CAPTURE(name);
    CHECK(f->metadata_bytes() <= size_t(1.25 * double(f->file_size())) + 4096);
    const Array* toks = f->get_array("tokenizer.ggml.tokens");
    REQUIRE(toks);
    CHECK(toks->size() > 30000);
  }
}

TEST_CASE("arrays check element types") {
  Array a(ValueType::UINT16);
  a.push_back([] { Value v; v.type = ValueType::UINT16; v.num.u64 = 65535; return v; }());
  CHECK(a.as_uint(0) == 65535u);
  CHECK(a.raw().size() == 2);
  CHECK_THROWS_AS(a.push_back(Value::make_u32(1)), Error);
  CHECK_THROWS_AS(a.push_string("x"), Error);
  CHECK_THROWS_AS(Value::make_array(ValueType::INT32, {Value::make_i32(1), Value::make_f32(2)}), Error);
  Value bad = Value::make_array(ValueType::UINT32, {Value::make_u32(1)});
  bad.elem_type = ValueType::INT32;  // out of step with the storage: the writer refuses it
  GgufWriter w;
  w.set("bad", bad);
  CHECK_THROWS_AS(w.write(tmp_path("bad_array.gguf"), std::vector<std::vector<uint8_t>>{}), Error);
}

namespace {
// A header with one metadata key whose value bytes (type + payload) are given.
std::vector<uint8_t> one_kv(uint32_t type, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> b;
  auto pod = [&](auto v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof v);
  };
  pod(kMagic);
  pod(uint32_t{3});
  pod(uint64_t{0});
  pod(uint64_t{1});
  pod(uint64_t{1});
  b.push_back('k');
  pod(type);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}
template <typename... T>
std::vector<uint8_t> le(T... v) {
  std::vector<uint8_t> b;
  auto add = [&](auto x) {
    const auto* p = reinterpret_cast<const uint8_t*>(&x);
    b.insert(b.end(), p, p + sizeof x);
  };
  (add(v), ...);
  return b;
}
void expect_kv_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  try {
    GgufFile::parse_memory(bytes, "kv.gguf");
    FAIL("expected an error containing: " << needle);
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::Corrupt);
    CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, e.what());
    CHECK(std::string(e.what()).find("kv.gguf") != std::string::npos);
  }
}
}  // namespace

TEST_CASE("array validation survives the compact layout") {
  const uint32_t ARR = uint32_t(ValueType::ARRAY);
  // bool arrays: every element 0 or 1.
  auto ok = GgufFile::parse_memory(one_kv(ARR, le(uint32_t(ValueType::BOOL), uint64_t{2}, uint8_t{1}, uint8_t{0})),
                                   "kv.gguf");
  CHECK((*ok->get_array("k"))[0].as_bool() == true);
  CHECK((*ok->get_array("k"))[1].as_bool() == false);
  expect_kv_error(one_kv(ARR, le(uint32_t(ValueType::BOOL), uint64_t{2}, uint8_t{1}, uint8_t{2})), "neither 0 nor 1");
  // Counts beyond the file, string lengths beyond the file, unknown element types.
  expect_kv_error(one_kv(ARR, le(uint32_t(ValueType::UINT32), uint64_t{1} << 40, uint32_t{1})), "cannot fit");
  expect_kv_error(one_kv(ARR, le(uint32_t(ValueType::STRING), uint64_t{2}, uint64_t{1}, 'a', uint64_t{99}, 'b')),
                  "claims 99 bytes");
  expect_kv_error(one_kv(ARR, le(uint32_t{13}, uint64_t{0})), "unknown array element type 13");
  // Nesting depth.
  std::vector<uint8_t> deep;
  for (int d = 0; d < 6; ++d) {
    auto x = le(uint32_t(ValueType::ARRAY), uint64_t{1});
    deep.insert(deep.end(), x.begin(), x.end());
  }
  auto tail = le(uint32_t(ValueType::UINT8), uint64_t{0});
  deep.insert(deep.end(), tail.begin(), tail.end());
  expect_kv_error(one_kv(ARR, deep), "nested deeper");
  // Arrays of arrays cost a Value per element: more than 2^20 of them in one file are refused.
  std::vector<uint8_t> many = le(uint32_t(ValueType::ARRAY), (uint64_t{1} << 20) + 1);
  auto empty = le(uint32_t(ValueType::UINT8), uint64_t{0});
  many.reserve(many.size() + ((size_t{1} << 20) + 1) * empty.size());
  for (size_t i = 0; i < (size_t{1} << 20) + 1; ++i) many.insert(many.end(), empty.begin(), empty.end());
  expect_kv_error(one_kv(ARR, many), "elements in nested arrays");
}
