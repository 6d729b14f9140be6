// tests/unit/test_corruption.cpp — the corruption table: malformed model and vocabulary files give a
// moe::Error naming the file, never a crash, a hang, another exception type or a huge allocation.
//
// Inputs: tiny generated models (moe::generate_model: qwen3moe without a vocabulary, llama/Mixtral with
// the llama-spm vocabulary) and the vocabulary GGUFs in MOE_SHARED_DATA/tokenizers. Each is mutated
// (byte-level patches located by an independent header walker, or a rewrite of its metadata/tensor
// table with GgufWriter) and loaded through the path the `moe` tool takes:
//   GgufFile::open -> load_model_spec -> ExpertTable::build -> Model::load -> Tokenizer::from_gguf
// and, when that succeeds, one decode step and a tokenize/detokenize/streaming round trip.
// Every table runs in a forked child under a guard: RLIMIT_AS of 2 GiB (not under sanitizers, which
// reserve terabytes of shadow address space), an alarm (a hang kills the child with SIGALRM), and a
// peak-RSS bound checked by the parent with wait4(). The child reports each case over a pipe; the parent
// turns every failure into a doctest failure naming the case. Under LeakSanitizer the child also runs a
// leak check before it exits (error paths must not leak).
// Last: the `moe` binary (MOE_TOOL_PATH) is run on corrupt files and must exit 1 with "moe: error:" and
// the file name on stderr, not die from a signal.
// Single-threaded test bodies (the children are forked before any thread exists).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "moe/engine.h"
#include "moe/error.h"
#include "moe/gen.h"
#include "moe/gguf.h"
#include "moe/model.h"
#include "moe/tokenizer.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MOE_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define MOE_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MOE_TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOE_TEST_LSAN 1
#endif
#endif
#ifdef MOE_TEST_LSAN
extern "C" int __lsan_do_recoverable_leak_check();
#endif

using namespace moe;
using gguf::GgufFile;
using gguf::Value;
using gguf::ValueType;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint64_t kMaxRssBytes = 1ull << 30;  // peak resident set of a child running a whole table
constexpr unsigned kCaseSeconds = 30;  // one case still running after this is a hang (SIGALRM kills the child)

Bytes read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE(f.good());
  return Bytes{std::istreambuf_iterator<char>(f), {}};
}

void write_file(const std::string& p, const uint8_t* d, size_t n) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(d), std::streamsize(n));
  if (!f.good()) throw std::runtime_error("cannot write " + p);
}
void write_file(const std::string& p, const Bytes& b) { write_file(p, b.data(), b.size()); }

template <typename T>
void poke(Bytes& b, uint64_t off, T v) {
  if (off + sizeof(T) > b.size()) throw std::runtime_error("poke past the end");
  std::memcpy(b.data() + off, &v, sizeof(T));
}
template <typename T>
T peek(const Bytes& b, uint64_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

// ---- An independent walker over a well-formed GGUF header: where every field is ---------------------

struct Field {
  uint64_t off;
  uint32_t size;
  std::string what;
};
struct KvRec {
  std::string key;
  uint64_t key_len_off = 0, type_off = 0, value_off = 0;
  uint32_t type = 0, elem_type = 0;
  uint64_t count = 0;  // arrays
  uint64_t count_off = 0;
  std::vector<uint64_t> elem_offs;  // arrays: offsets of the first few elements
};
struct TensorRec {
  std::string name;
  uint64_t name_len_off = 0, ndims_off = 0, dims_off = 0, type_off = 0, offset_off = 0;
  uint32_t n_dims = 0, type = 0;
  uint64_t ne[4] = {1, 1, 1, 1};
  uint64_t rel_offset = 0;
};
struct Layout {
  uint64_t n_tensors = 0, n_kv = 0;
  std::vector<Field> fields;
  std::vector<KvRec> kvs;
  std::vector<TensorRec> tensors;
  uint64_t header_end = 0;  // after the last tensor info
  const KvRec* kv(const std::string& k) const {
    for (const auto& r : kvs)
      if (r.key == k) return &r;
    return nullptr;
  }
  const TensorRec* tensor(const std::string& n) const {
    for (const auto& t : tensors)
      if (t.name == n) return &t;
    return nullptr;
  }
};

class Walker {
 public:
  explicit Walker(const Bytes& b) : b_(b) {}
  Layout walk() {
    Layout l;
    field(4, "magic");
    field(4, "version");
    l.n_tensors = u64(field(8, "tensor count"));
    l.n_kv = u64(field(8, "metadata count"));
    for (uint64_t i = 0; i < l.n_kv; ++i) {
      KvRec r;
      r.key_len_off = pos_;
      r.key = str("key");
      r.type_off = field(4, "value type of " + r.key);
      r.type = u32(r.type_off);
      r.value_off = pos_;
      value(r.type, r, 0);
      l.kvs.push_back(std::move(r));
    }
    for (uint64_t i = 0; i < l.n_tensors; ++i) {
      TensorRec t;
      t.name_len_off = pos_;
      t.name = str("tensor name");
      t.ndims_off = field(4, "n_dims of " + t.name);
      t.n_dims = u32(t.ndims_off);
      t.dims_off = pos_;
      for (uint32_t d = 0; d < t.n_dims; ++d) t.ne[d] = u64(field(8, "dim of " + t.name));
      t.type_off = field(4, "type of " + t.name);
      t.type = u32(t.type_off);
      t.offset_off = field(8, "offset of " + t.name);
      t.rel_offset = u64(t.offset_off);
      l.tensors.push_back(std::move(t));
    }
    l.header_end = pos_;
    l.fields = std::move(fields_);
    return l;
  }

 private:
  uint64_t field(uint32_t n, std::string what) {
    if (pos_ + n > b_.size()) throw std::runtime_error("walker: truncated");
    fields_.push_back({pos_, n, std::move(what)});
    pos_ += n;
    return pos_ - n;
  }
  uint64_t u64(uint64_t off) const { return peek<uint64_t>(b_, off); }
  uint32_t u32(uint64_t off) const { return peek<uint32_t>(b_, off); }
  std::string str(const std::string& what, bool record = true) {
    const uint64_t at = record ? field(8, what + " length") : (pos_ += 8) - 8;
    const uint64_t n = u64(at);
    if (pos_ + n > b_.size()) throw std::runtime_error("walker: bad string");
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  void value(uint32_t t, KvRec& r, int depth) {
    const bool rec = depth == 0;  // fields of the first few elements only
    switch (static_cast<ValueType>(t)) {
      case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: rec ? (void)field(1, r.key) : (void)(pos_ += 1); break;
      case ValueType::UINT16: case ValueType::INT16: rec ? (void)field(2, r.key) : (void)(pos_ += 2); break;
      case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: rec ? (void)field(4, r.key) : (void)(pos_ += 4); break;
      case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: rec ? (void)field(8, r.key) : (void)(pos_ += 8); break;
      case ValueType::STRING: str(r.key, rec); break;
      case ValueType::ARRAY: {
        const uint64_t et_off = rec ? field(4, r.key + " element type") : (pos_ += 4) - 4;
        const uint32_t et = u32(et_off);
        const uint64_t c_off = rec ? field(8, r.key + " count") : (pos_ += 8) - 8;
        const uint64_t n = u64(c_off);
        if (rec) r.elem_type = et, r.count = n, r.count_off = c_off;
        for (uint64_t i = 0; i < n; ++i) {
          if (rec && i < 4) r.elem_offs.push_back(pos_);
          value(et, r, depth + (rec && i < 4 ? 0 : 1));
        }
        break;
      }
      default: throw std::runtime_error("walker: bad type");
    }
  }
  const Bytes& b_;
  uint64_t pos_ = 0;
  std::vector<Field> fields_;
};

// ---- Rewriting a file's metadata and tensor table -----------------------------------------------------

struct TensorEdit {
  std::optional<TensorType> type;
  std::optional<std::vector<uint64_t>> ne;
  bool drop = false;
};
struct Rewrite {
  std::vector<std::pair<std::string, std::optional<Value>>> kv;  // set (replaces in place) or remove
  std::map<std::string, TensorEdit> tensors;
  uint32_t alignment = gguf::kDefaultAlignment;
};

void rewrite(const GgufFile& f, const Rewrite& r, const std::string& out) {
  gguf::GgufWriter w(r.alignment);
  std::set<std::string> removed;
  for (const auto& [k, v] : r.kv)
    if (!v) removed.insert(k);
  for (const auto& [k, v] : f.metadata()) {
    if (removed.count(k) || (k == "general.alignment" && r.alignment != gguf::kDefaultAlignment)) continue;
    w.set(k, v);
  }
  for (const auto& [k, v] : r.kv)
    if (v) w.set(k, *v);
  std::vector<const gguf::TensorInfo*> src;  // per written tensor: the original (nullptr: edited)
  for (const auto& t : f.tensors()) {
    auto it = r.tensors.find(t.name);
    if (it == r.tensors.end()) {
      w.add_tensor(t.name, t.type, std::vector<uint64_t>(t.ne, t.ne + t.n_dims));
      src.push_back(&t);
      continue;
    }
    if (it->second.drop) continue;
    w.add_tensor(t.name, it->second.type.value_or(t.type),
                 it->second.ne.value_or(std::vector<uint64_t>(t.ne, t.ne + t.n_dims)));
    src.push_back(nullptr);
  }
  w.write(out, [&](size_t i, const gguf::GgufWriter::Sink& sink) {
    if (src[i]) {
      auto d = f.data(*src[i]);
      sink(d.data(), d.size());
      return;
    }
    // A re-typed or re-shaped tensor: a deterministic pattern (0x3c bytes: f16 ~1.06, small scales).
    std::vector<uint8_t> chunk(64 << 10, 0x3c);
    uint64_t left = w.tensors()[i].nbytes;
    while (left) {
      const size_t n = size_t(std::min<uint64_t>(left, chunk.size()));
      sink(chunk.data(), n);
      left -= n;
    }
  });
}

Value u8_array(size_t n, uint8_t x) {
  std::vector<Value> v(n);
  for (auto& e : v) e.type = ValueType::UINT8, e.num.u64 = x;
  return Value::make_array(ValueType::UINT8, std::move(v));
}
Value str_array(std::vector<std::string> s) {
  std::vector<Value> v;
  for (auto& x : s) v.push_back(Value::make_string(std::move(x)));
  return Value::make_array(ValueType::STRING, std::move(v));
}
Value i32(int32_t x) { return Value::make_i32(x); }
Value u32v(uint32_t x) { return Value::make_u32(x); }
Value u64v(uint64_t x) { return Value::make_u64(x); }
Value strv(std::string s) { return Value::make_string(std::move(s)); }

// ---- Loading like the tool ----------------------------------------------------------------------------

// Loads `path` as `moe run` / `moe inspect` do and, when that works, exercises what was loaded. Returns
// "" on success or the moe::Error message. Any other exception propagates (a failure of the case).
std::string load_like_tool(const std::string& path, bool is_model) {
  try {
    std::unique_ptr<Tokenizer> tok;
    if (is_model) {
      auto f = GgufFile::open(path);
      const ModelSpec spec = load_model_spec(*f);
      (void)ExpertTable::build(*f, spec);
      auto m = Model::load(path);
      if (m->file().find("tokenizer.ggml.tokens") && m->file().get_string("tokenizer.ggml.model") != "none")
        tok = Tokenizer::from_gguf(m->file());
      // One prefill of two tokens and one decode step.
      MmapExpertSource src(*m);
      SessionOptions so;
      so.n_ctx = 8;
      so.n_batch = 4;
      so.n_threads = 1;
      Session s(*m, src, so);
      const int32_t nv = int32_t(m->spec().n_vocab);
      const int32_t p[2] = {1 % nv, 2 % nv};
      auto logits = s.eval(p);
      const int32_t t = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      (void)s.eval(std::span<const int32_t>(&t, 1));
    } else {
      auto f = GgufFile::open(path);
      tok = Tokenizer::from_gguf(*f);
    }
    if (tok) {
      const std::string text = "Hello world! 123 \xc3\xa9\xe2\x82\xac \xf0\x9f\x98\x80 <s>\n\t  x\xff";
      auto ids = tok->tokenize(text, true, true);
      (void)tok->detokenize(ids, true, true);
      StreamingDecoder dec(*tok);
      for (int32_t id : ids) (void)dec.push(id);
      (void)dec.flush();
      for (int32_t id = 0; id < std::min(tok->n_vocab(), 300); ++id) (void)tok->token_to_piece(id, true);
    }
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

enum class Expect { Fail, Either };

// ---- The child side: runs cases, reports over a pipe --------------------------------------------------

class Table {
 public:
  Table(int fd, std::string path, bool is_model) : fd_(fd), path_(std::move(path)), is_model_(is_model) {}

  // Writes `bytes` to the case file and checks the outcome.
  void run(const std::string& name, const Bytes& bytes, Expect e) {
    write_file(path_, bytes);
    check(name, e);
  }
  // The case file already holds the input.
  void check(const std::string& name, Expect e) {
    say("CASE " + name);
    ::alarm(kCaseSeconds);
    ++cases_;
    std::string msg;
    try {
      msg = load_like_tool(path_, is_model_);
    } catch (const std::exception& x) {
      fail(name, std::string("threw a non-moe exception: ") + x.what());
      return;
    } catch (...) {
      fail(name, "threw a non-std exception");
      return;
    }
    if (msg.empty()) {
      ++loaded_;
      if (e == Expect::Fail) fail(name, "loaded without an error");
      return;
    }
    if (msg.find(path_) == std::string::npos) fail(name, "error does not name the file: " + msg);
    if (msg.size() > 4096) fail(name, "error message of " + std::to_string(msg.size()) + " bytes");
    if (verbose_) say("MSG " + name + ": " + msg);
  }
  void fail(const std::string& name, const std::string& why) {
    ++failed_;
    say("FAIL " + name + ": " + why);
  }
  void say(std::string line) {
    for (auto& c : line)
      if (c == '\n') c = ' ';
    line += '\n';
    size_t off = 0;
    while (off < line.size()) {
      ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        break;
      }
      off += size_t(n);
    }
  }
  const std::string& path() const { return path_; }
  void set_verbose(bool v) { verbose_ = v; }
  size_t cases() const { return cases_; }
  size_t loaded() const { return loaded_; }

 private:
  int fd_;
  std::string path_;
  bool is_model_;
  bool verbose_ = false;
  size_t cases_ = 0, loaded_ = 0, failed_ = 0;
};

// Runs body(Table&) in a forked child under the guard; turns its report into doctest checks.
void guarded(const std::string& label, const std::string& path, bool is_model,
             const std::function<void(Table&)>& body) {
  int pfd[2];
  REQUIRE(::pipe(pfd) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pfd[0]);
#ifndef MOE_TEST_SANITIZED
    rlimit rl{2ull << 30, 2ull << 30};
    ::setrlimit(RLIMIT_AS, &rl);
#endif
    int rc = 0;
    {
      Table t(pfd[1], path, is_model);
      try {
        body(t);
      } catch (const std::exception& x) {
        t.say(std::string("FAIL table setup: ") + x.what());
        rc = 3;
      }
      ::alarm(0);
      t.say("DONE " + std::to_string(t.cases()) + " cases, " + std::to_string(t.loaded()) + " loaded");
    }
    std::error_code ec;
    fs::remove(path, ec);
#ifdef MOE_TEST_LSAN
    if (__lsan_do_recoverable_leak_check() != 0) rc = 4;
#endif
    ::close(pfd[1]);
    ::_exit(rc);
  }
  ::close(pfd[1]);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pfd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  ::close(pfd[0]);
  int status = 0;
  rusage ru{};
  REQUIRE(::wait4(pid, &status, 0, &ru) == pid);
  // The report: FAIL lines become failures; the last CASE names what was running at a crash or hang.
  std::string last_case, done;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t e = out.find('\n', pos);
    if (e == std::string::npos) e = out.size();
    std::string line = out.substr(pos, e - pos);
    pos = e + 1;
    if (line.rfind("CASE ", 0) == 0) last_case = line.substr(5);
    else if (line.rfind("FAIL ", 0) == 0) FAIL_CHECK(label << ": " << line.substr(5));
    else if (line.rfind("DONE ", 0) == 0) done = line.substr(5);
    else if (line.rfind("MSG ", 0) == 0) MESSAGE(line.substr(4));
  }
  INFO(label << ": last case started: " << last_case);
  if (WIFSIGNALED(status)) {
    FAIL_CHECK(label << ": the child died from signal " << WTERMSIG(status) << " (" << strsignal(WTERMSIG(status))
                     << ") during case '" << last_case << "'");
  } else {
    CHECK_MESSAGE(WEXITSTATUS(status) == 0, label << ": child exit status " << WEXITSTATUS(status)
                                                  << " (3: setup error, 4: leak, other: sanitizer)");
  }
  CHECK_MESSAGE(!done.empty(), label << ": the table did not finish");
  const uint64_t rss = uint64_t(ru.ru_maxrss) * 1024;
  CHECK_MESSAGE(rss < kMaxRssBytes, label << ": peak RSS " << (rss >> 20) << " MiB");
  MESSAGE(label << ": " << done << ", peak RSS " << (rss >> 20) << " MiB");
}

// ---- Inputs -----------------------------------------------------------------------------------------

std::string tmp(const std::string& name) { return std::string(MOE_TEST_TMP) + "/" + name; }

// qwen3moe, no vocabulary, f32 weights (n_embd 64 so q4_0/q8_0 rows fit).
const std::string& plain_model() {
  static const std::string p = [] {
    GenOptions o;
    o.arch = "qwen3moe";
    o.out = tmp("corrupt_base_qwen3.gguf");
    o.n_layer = 2;
    o.n_embd = 64;
    o.n_ff = 32;
    o.n_expert = 4;
    o.n_expert_used = 2;
    o.n_head = 2;
    o.n_head_kv = 1;
    o.head_dim = 32;
    o.n_ctx = 64;
    o.vocab = "none";
    o.n_vocab = 64;
    o.type = "f32";
    o.seed = 3;
    generate_model(o);
    return o.out;
  }();
  return p;
}

// llama (Mixtral layout) with the llama-spm vocabulary, q8_0 weights.
const std::string& vocab_model() {
  static const std::string p = [] {
    GenOptions o;
    o.arch = "llama";
    o.out = tmp("corrupt_base_mixtral.gguf");
    o.n_layer = 1;
    o.n_embd = 32;
    o.n_ff = 32;
    o.n_expert = 2;
    o.n_expert_used = 1;
    o.n_head = 1;
    o.n_head_kv = 1;
    o.head_dim = 32;
    o.n_ctx = 64;
    o.vocab = "llama-spm";
    o.data_dir = MOE_SHARED_DATA;
    o.type = "q8_0";
    o.seed = 4;
    generate_model(o);
    return o.out;
  }();
  return p;
}

std::string vocab_file(const std::string& name) {
  return std::string(MOE_SHARED_DATA) + "/tokenizers/ggml-vocab-" + name + ".gguf";
}

// ---- Byte-level tables ----------------------------------------------------------------------------------

// The end of the last tensor's bytes (a cut at or after it may leave a valid file).
uint64_t data_end(const std::string& base) {
  auto f = GgufFile::open(base);
  uint64_t end = f->tensors().empty() ? f->file_size() : 0;
  for (const auto& t : f->tensors()) end = std::max(end, t.offset + t.nbytes);
  return end;
}

// Truncations at every 1/64 of the file, at every header field start and one byte into it.
void truncations(Table& t, const Bytes& orig, const Layout& l, uint64_t must_fail_below, size_t max_field_cuts) {
  std::set<uint64_t> cuts;
  for (int k = 0; k < 64; ++k) cuts.insert(orig.size() * uint64_t(k) / 64);
  const size_t step = std::max<size_t>(1, l.fields.size() / std::max<size_t>(1, max_field_cuts));
  for (size_t i = 0; i < l.fields.size(); i += step) {
    cuts.insert(l.fields[i].off);
    cuts.insert(l.fields[i].off + 1);
  }
  cuts.insert(l.header_end);
  cuts.insert(orig.size() - 1);
  for (uint64_t c : cuts) {
    if (c >= orig.size()) continue;
    write_file(t.path(), orig.data(), size_t(c));
    t.check("truncate at " + std::to_string(c) + " of " + std::to_string(orig.size()),
            c < must_fail_below ? Expect::Fail : Expect::Either);
  }
}

// Each byte of [0, limit) flipped (xor 0xff), at most max_flips of them (evenly spaced), the file
// restored in place between cases.
void flips(Table& t, const Bytes& orig, uint64_t limit, size_t max_flips) {
  write_file(t.path(), orig);
  limit = std::min<uint64_t>(limit, orig.size());
  const uint64_t step = std::max<uint64_t>(1, limit / max_flips);
  int fd = ::open(t.path().c_str(), O_WRONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + t.path());
  for (uint64_t off = 0; off < limit; off += step) {
    const uint8_t flipped = orig[off] ^ 0xff;
    if (::pwrite(fd, &flipped, 1, off_t(off)) != 1) throw std::runtime_error("pwrite");
    t.check("flip byte " + std::to_string(off), Expect::Either);
    if (::pwrite(fd, &orig[off], 1, off_t(off)) != 1) throw std::runtime_error("pwrite");
  }
  ::close(fd);
}

// Length, count and size fields set to values far beyond the file.
void huge_fields(Table& t, const Bytes& orig, const Layout& l) {
  const uint64_t huge[] = {~0ull, 1ull << 63, 1ull << 40, uint64_t(orig.size()) + 1};
  for (uint64_t h : huge) {
    const std::string hs = std::to_string(h);
    Bytes b = orig;
    poke<uint64_t>(b, 8, h);
    t.run("tensor count " + hs, b, Expect::Fail);
    b = orig;
    poke<uint64_t>(b, 16, h);
    t.run("metadata count " + hs, b, Expect::Fail);
    b = orig;
    poke<uint64_t>(b, l.kvs.front().key_len_off, h);
    t.run("first key length " + hs, b, Expect::Fail);
    for (const auto& kv : l.kvs) {
      if (kv.type == uint32_t(ValueType::STRING)) {
        b = orig;
        poke<uint64_t>(b, kv.value_off, h);
        t.run("string length of " + kv.key + " = " + hs, b, Expect::Fail);
        break;
      }
    }
    for (const auto& kv : l.kvs) {
      if (kv.type != uint32_t(ValueType::ARRAY)) continue;
      b = orig;
      poke<uint64_t>(b, kv.count_off, h);
      t.run("array count of " + kv.key + " = " + hs, b, Expect::Fail);
      if (kv.elem_type == uint32_t(ValueType::STRING) && !kv.elem_offs.empty()) {
        b = orig;
        poke<uint64_t>(b, kv.elem_offs[0], h);
        t.run("first string length in " + kv.key + " = " + hs, b, Expect::Fail);
      }
    }
    if (!l.tensors.empty()) {
      b = orig;
      poke<uint64_t>(b, l.tensors.back().name_len_off, h);
      t.run("last tensor name length " + hs, b, Expect::Fail);
    }
  }
  // A metadata count one too high reads tensor infos as metadata; one too low the reverse.
  Bytes b = orig;
  poke<uint64_t>(b, 16, l.n_kv + 1);
  t.run("metadata count + 1", b, Expect::Fail);
  if (!l.tensors.empty()) {
    b = orig;
    poke<uint64_t>(b, 8, l.n_tensors + 1);
    t.run("tensor count + 1", b, Expect::Fail);
  }
  // Array element types that do not exist, arrays typed as something else.
  for (const auto& kv : l.kvs) {
    if (kv.type != uint32_t(ValueType::ARRAY)) continue;
    b = orig;
    poke<uint32_t>(b, kv.count_off - 4, 13);
    t.run("array element type 13 in " + kv.key, b, Expect::Fail);
    b = orig;
    poke<uint32_t>(b, kv.count_off - 4, uint32_t(ValueType::ARRAY));
    t.run("array of arrays in " + kv.key, b, Expect::Fail);
    b = orig;
    poke<uint32_t>(b, kv.count_off - 4, uint32_t(ValueType::UINT64));
    t.run("element type reinterpreted as u64 in " + kv.key, b, Expect::Either);
  }
  b = orig;
  poke<uint32_t>(b, l.kvs.front().type_off, 0xffffffffu);
  t.run("value type 0xffffffff", b, Expect::Fail);
  b = orig;
  poke<uint32_t>(b, 4, 1);
  t.run("version 1", b, Expect::Fail);
  b = orig;
  poke<uint32_t>(b, 4, 0x03000000);
  t.run("big-endian version", b, Expect::Fail);
  b = orig;
  poke<uint32_t>(b, 0, 0x46554746);
  t.run("bad magic", b, Expect::Fail);
}

// Tensor-table fields: dimension counts, absurd dims, products that wrap, types, offsets.
void tensor_fields(Table& t, const Bytes& orig, const Layout& l) {
  const uint64_t data_offset = (l.header_end + 31) / 32 * 32;
  const uint64_t data_size = orig.size() - data_offset;
  // A 2-D f32 tensor to play with (ne0 a power of two) and the last tensor.
  const TensorRec* two_d = nullptr;
  for (const auto& tr : l.tensors)
    if (tr.n_dims == 2 && tr.type == uint32_t(TensorType::F32) && (tr.ne[0] & (tr.ne[0] - 1)) == 0) {
      two_d = &tr;
      break;
    }
  REQUIRE(two_d);
  const TensorRec& last = l.tensors.back();
  for (const TensorRec* tr : {two_d, &last, &l.tensors.front()}) {
    const std::string& n = tr->name;
    for (uint32_t nd : {0u, 5u, 0xffffffffu}) {
      Bytes b = orig;
      poke<uint32_t>(b, tr->ndims_off, nd);
      t.run(n + ": n_dims " + std::to_string(nd), b, Expect::Fail);
    }
    for (uint64_t d : {uint64_t(0), uint64_t(1) << 63, ~uint64_t(0), uint64_t(1) << 32}) {
      Bytes b = orig;
      poke<uint64_t>(b, tr->dims_off, d);
      t.run(n + ": ne[0] = " + std::to_string(d), b, Expect::Fail);
    }
    for (uint32_t ty : {4u, 5u, 31u, 99u, 0xffffffffu}) {  // removed/unknown type numbers
      Bytes b = orig;
      poke<uint32_t>(b, tr->type_off, ty);
      t.run(n + ": type " + std::to_string(ty), b, Expect::Fail);
    }
    const uint64_t a = 32;
    const uint64_t offs[] = {tr->rel_offset + 1, (data_size + a - 1) / a * a, data_size / a * a,
                             ~uint64_t(0) & ~(a - 1), uint64_t(1) << 63, ~uint64_t(0)};
    for (uint64_t off : offs) {
      Bytes b = orig;
      poke<uint64_t>(b, tr->offset_off, off);
      t.run(n + ": offset " + std::to_string(off), b, Expect::Fail);
    }
  }
  // Overlap: the last tensor placed on the first.
  {
    Bytes b = orig;
    poke<uint64_t>(b, last.offset_off, l.tensors.front().rel_offset);
    t.run("tensors overlap", b, Expect::Fail);
  }
  // Dims whose element count overflows, and whose byte size (elements x 4) wraps 64 bits: to 0, and
  // to exactly the original size (so only overflow checking can notice).
  const uint64_t ne0 = two_d->ne[0], ne1 = two_d->ne[1];
  auto dims = [&](const std::string& what, uint64_t a0, uint64_t a1) {
    Bytes b = orig;
    poke<uint64_t>(b, two_d->dims_off, a0);
    poke<uint64_t>(b, two_d->dims_off + 8, a1);
    t.run(two_d->name + ": " + what, b, Expect::Fail);
  };
  dims("elements overflow", 1ull << 32, 1ull << 32);
  dims("bytes wrap to 0", ne0, (1ull << 62) / ne0);
  dims("bytes wrap to the original size", ne0, ne1 + (1ull << 62) / ne0);
  dims("ne0 x 4 wraps", 1ull << 62, 1);
  dims("ne1 doubled", ne0, ne1 * 2);
  dims("ne0 / 2 (shape mismatch)", ne0 / 2, ne1 * 2);
  // A q8_0 tensor (34 bytes per 32 elements) of 2^62 elements: no wrap is possible below the reader's
  // 2^63 element cap, but the size is absurd.
  for (const auto& tr : l.tensors)
    if (tr.type == uint32_t(TensorType::Q8_0) && tr.n_dims >= 2) {
      Bytes b = orig;
      poke<uint64_t>(b, tr.dims_off, 1ull << 10);
      poke<uint64_t>(b, tr.dims_off + 8, 1ull << 52);
      t.run(tr.name + ": q8_0 of 2^62 elements", b, Expect::Fail);
      break;
    }
}

// ---- Metadata/tensor-table rewrites of a model --------------------------------------------------------

void model_rewrites(Table& t, const std::string& base) {
  auto f = GgufFile::open(base);
  const std::string arch = *f->get_string("general.architecture");
  const ModelSpec spec = load_model_spec(*f);
  auto k = [&](const std::string& s) { return arch + "." + s; };
  auto case_ = [&](const std::string& name, const Rewrite& r, Expect e = Expect::Fail) {
    rewrite(*f, r, t.path());
    t.check(name, e);
  };
  auto kv = [&](const std::string& key, std::optional<Value> v) {
    Rewrite r;
    r.kv.push_back({key, std::move(v)});
    return r;
  };
  // Sanity: an unchanged rewrite loads.
  case_("rewrite unchanged", Rewrite{}, Expect::Either);
  {
    rewrite(*f, Rewrite{}, t.path());
    if (!load_like_tool(t.path(), true).empty()) t.fail("rewrite unchanged", "the unchanged rewrite does not load");
  }
  // Alignment: not a power of two, zero, huge, wrong type.
  for (uint64_t a : {0ull, 3ull, 48ull, 0xffffffffull, 1ull << 31}) {
    auto r = kv("general.alignment", u32v(uint32_t(a)));
    case_("general.alignment " + std::to_string(a), r);
  }
  case_("general.alignment as u64 2^63", kv("general.alignment", u64v(1ull << 63)));
  case_("general.alignment as string", kv("general.alignment", strv("32")));
  {
    Rewrite r;  // a valid, large alignment: everything moves, still loads
    r.alignment = 4096;
    case_("general.alignment 4096 (valid)", r, Expect::Either);
  }
  // Architecture.
  case_("architecture missing", kv("general.architecture", std::nullopt));
  case_("architecture unknown", kv("general.architecture", strv("bogus-moe")));
  case_("architecture as u32", kv("general.architecture", u32v(7)));
  case_("architecture empty", kv("general.architecture", strv("")));
  // Absurd counts and dims in metadata.
  for (uint64_t v : {0ull, 3ull, 1000000ull, 0xffffffffull}) {
    const std::string vs = std::to_string(v);
    case_("block_count " + vs, kv(k("block_count"), u32v(uint32_t(v))));
    case_("expert_count " + vs, kv(k("expert_count"), u32v(uint32_t(v))));
    if (v != 3) case_("expert_used_count " + vs, kv(k("expert_used_count"), u32v(uint32_t(v))));
    case_("head_count " + vs, kv(k("attention.head_count"), u32v(uint32_t(v))));
    case_("head_count_kv " + vs, kv(k("attention.head_count_kv"), u32v(uint32_t(v))));
    case_("embedding_length " + vs, kv(k("embedding_length"), u32v(uint32_t(v))));
    case_("expert_feed_forward_length " + vs, kv(k("expert_feed_forward_length"), u32v(uint32_t(v))),
          Expect::Either);  // absent in llama files (ignored there)
  }
  case_("context_length 2^64-1 (u64)", kv(k("context_length"), u64v(~0ull)), Expect::Either);
  case_("expert_used_count = expert_count + 1", kv(k("expert_used_count"), u32v(spec.n_expert + 1)));
  case_("block_count 2^40 (u64)", kv(k("block_count"), u64v(1ull << 40)));
  case_("block_count as string", kv(k("block_count"), strv("2")));
  case_("block_count as f32", kv(k("block_count"), Value::make_f32(2.0f)));
  case_("block_count -1 (i32)", kv(k("block_count"), i32(-1)));
  case_("block_count as u8 array", kv(k("block_count"), u8_array(2, 2)), Expect::Either);  // per-layer form
  case_("expert_count as string", kv(k("expert_count"), strv("4")));
  case_("rope.dimension_count odd", kv(k("rope.dimension_count"), u32v(7)));
  case_("rope.dimension_count 2^32-1", kv(k("rope.dimension_count"), u32v(0xffffffffu)));
  case_("key_length 0", kv(k("attention.key_length"), u32v(0)));
  case_("key_length 2^31", kv(k("attention.key_length"), u32v(1u << 31)));
  case_("rms epsilon NaN", kv(k("attention.layer_norm_rms_epsilon"), Value::make_f32(__builtin_nanf(""))));
  case_("rms epsilon -1", kv(k("attention.layer_norm_rms_epsilon"), Value::make_f32(-1.0f)));
  case_("rope.freq_base as string", kv(k("rope.freq_base"), strv("10000")));
  case_("rope.scaling.type bogus", kv(k("rope.scaling.type"), strv("bogus")));
  case_("bos id = 2^32-1", kv("tokenizer.ggml.bos_token_id", u32v(0xffffffffu)));
  case_("eos id -1", kv("tokenizer.ggml.eos_token_id", i32(-1)));
  case_("bos id as string", kv("tokenizer.ggml.bos_token_id", strv("1")));
  // Nested arrays deeper than the reader allows, and a huge-but-honest array of arrays.
  {
    Value v = Value::make_u32(1);
    for (int d = 0; d < 6; ++d) v = Value::make_array(v.type, {v});
    case_("arrays nested 6 deep", kv("general.nested", v));
  }
  // Tensors: missing, wrong types for the architecture, wrong shapes.
  auto te = [&](const std::string& name, TensorEdit e) {
    Rewrite r;
    r.tensors[name] = std::move(e);
    return r;
  };
  const uint64_t E = spec.n_expert, D = spec.n_embd, F = spec.n_ff_expert;
  case_("token_embd missing", te("token_embd.weight", {.drop = true}));
  case_("output_norm missing", te("output_norm.weight", {.drop = true}));
  case_("blk.0.ffn_gate_inp missing", te("blk.0.ffn_gate_inp.weight", {.drop = true}));
  case_("blk.0.ffn_down_exps missing", te("blk.0.ffn_down_exps.weight", {.drop = true}));
  case_("blk.0.attn_q missing", te("blk.0.attn_q.weight", {.drop = true}));
  // A quantized norm is dequantized at load (accepted on purpose, see the README).
  case_("attn_norm as q4_0", te("blk.0.attn_norm.weight", {.type = TensorType::Q4_0}), Expect::Either);
  case_("attn_norm as q8_0", te("blk.0.attn_norm.weight", {.type = TensorType::Q8_0}), Expect::Either);
  case_("output_norm as i32", te("output_norm.weight", {.type = TensorType::I32}));
  case_("output_norm as f16", te("output_norm.weight", {.type = TensorType::F16}), Expect::Either);
  case_("attn_norm 2-D", te("blk.0.attn_norm.weight", {.ne = std::vector<uint64_t>{D, 2}}));
  case_("attn_norm too short", te("blk.0.attn_norm.weight", {.ne = std::vector<uint64_t>{D / 2}}));
  case_("router with E-1 rows", te("blk.0.ffn_gate_inp.weight", {.ne = std::vector<uint64_t>{D, E - 1}}));
  case_("router with E+1 rows", te("blk.0.ffn_gate_inp.weight", {.ne = std::vector<uint64_t>{D, E + 1}}));
  case_("router with 2*D cols", te("blk.0.ffn_gate_inp.weight", {.ne = std::vector<uint64_t>{2 * D, E}}));
  case_("router transposed", te("blk.0.ffn_gate_inp.weight", {.ne = std::vector<uint64_t>{E, D}}));
  case_("router as i8", te("blk.0.ffn_gate_inp.weight", {.type = TensorType::I8}));
  case_("router as iq2_xxs", te("blk.0.ffn_gate_inp.weight", {.type = TensorType::IQ2_XXS,
                                                                .ne = std::vector<uint64_t>{256, E}}));
  case_("gate_exps with E-1 experts", te("blk.0.ffn_gate_exps.weight", {.ne = std::vector<uint64_t>{D, F, E - 1}}));
  case_("gate_exps with E+1 experts", te("blk.0.ffn_gate_exps.weight", {.ne = std::vector<uint64_t>{D, F, E + 1}}));
  case_("up_exps wider than gate_exps", te("blk.0.ffn_up_exps.weight", {.ne = std::vector<uint64_t>{D, 2 * F, E}}));
  case_("down_exps transposed", te("blk.0.ffn_down_exps.weight", {.ne = std::vector<uint64_t>{D, F, E}}),
        D == F ? Expect::Either : Expect::Fail);
  case_("down_exps 2-D", te("blk.0.ffn_down_exps.weight", {.ne = std::vector<uint64_t>{F, D * E}}));
  case_("gate_exps as i32", te("blk.0.ffn_gate_exps.weight", {.type = TensorType::I32}));
  case_("gate_exps as iq1_s", te("blk.0.ffn_gate_exps.weight", {.type = TensorType::IQ1_S,
                                                                 .ne = std::vector<uint64_t>{256, F, E}}));
  case_("token_embd as i16", te("token_embd.weight", {.type = TensorType::I16}));
  case_("token_embd with one row less", te("token_embd.weight", {.ne = std::vector<uint64_t>{D, spec.n_vocab - 1}}));
  case_("attn_q as i32", te("blk.0.attn_q.weight", {.type = TensorType::I32}));
  case_("attn_q rows halved", te("blk.0.attn_q.weight",
                                 {.ne = std::vector<uint64_t>{D, uint64_t(spec.n_head) * spec.head_dim_k / 2}}));
  case_("attn_k 3-D", te("blk.0.attn_k.weight",
                         {.ne = std::vector<uint64_t>{D, uint64_t(spec.n_head_kv) * spec.head_dim_k, 2}}));
  if (f->find_tensor("output.weight"))
    case_("output with one row less", te("output.weight", {.ne = std::vector<uint64_t>{D, spec.n_vocab - 1}}));
  if (f->find_tensor("blk.0.attn_q_norm.weight"))
    case_("q_norm of the wrong size", te("blk.0.attn_q_norm.weight", {.ne = std::vector<uint64_t>{spec.head_dim_k / 2}}));
  // The vocabulary inside a model.
  if (f->find("tokenizer.ggml.tokens")) {
    auto toks = f->get_string_array("tokenizer.ggml.tokens");
    toks.pop_back();
    case_("fewer tokens than token_embd rows", kv("tokenizer.ggml.tokens", str_array(toks)));
    case_("scores as u8", kv("tokenizer.ggml.scores", u8_array(size_t(spec.n_vocab), 1)));
  }
}

// ---- Metadata rewrites of a vocabulary ----------------------------------------------------------------

void vocab_rewrites(Table& t, const std::string& base) {
  auto f = GgufFile::open(base);
  const auto tokens = f->get_string_array("tokenizer.ggml.tokens");
  const size_t n = tokens.size();
  const bool spm = *f->get_string("tokenizer.ggml.model") == "llama";
  auto case_ = [&](const std::string& name, const Rewrite& r, Expect e = Expect::Fail) {
    rewrite(*f, r, t.path());
    t.check(name, e);
  };
  auto kv = [&](const std::string& key, std::optional<Value> v) {
    Rewrite r;
    r.kv.push_back({key, std::move(v)});
    return r;
  };
  auto with_token = [&](size_t id, const std::string& text) {
    auto tk = tokens;
    tk[id] = text;
    return kv("tokenizer.ggml.tokens", str_array(std::move(tk)));
  };
  auto type_array = [&](const std::function<int32_t(size_t)>& ty) {
    std::vector<Value> v;
    for (size_t i = 0; i < n; ++i) v.push_back(i32(ty(i)));
    return Value::make_array(ValueType::INT32, std::move(v));
  };
  const auto* types = f->get_array("tokenizer.ggml.token_type");
  auto orig_type = [&](size_t i) { return types ? int32_t(*(*types)[i].as_int()) : 1; };

  case_("rewrite unchanged", Rewrite{}, Expect::Either);
  case_("model missing", kv("tokenizer.ggml.model", std::nullopt));
  case_("model unknown", kv("tokenizer.ggml.model", strv("bogus")));
  case_("model as u32", kv("tokenizer.ggml.model", u32v(1)));
  case_("tokens missing", kv("tokenizer.ggml.tokens", std::nullopt));
  case_("tokens empty", kv("tokenizer.ggml.tokens", Value::make_array(ValueType::STRING, {})));
  case_("tokens as u32", kv("tokenizer.ggml.tokens", Value::make_array(ValueType::UINT32, {u32v(1), u32v(2)})));
  case_("tokens as a string", kv("tokenizer.ggml.tokens", strv("hello")));
  {
    auto tk = tokens;
    tk.pop_back();
    case_("tokens one short of scores/types", kv("tokenizer.ggml.tokens", str_array(std::move(tk))));
  }
  case_("duplicate token", with_token(n - 1, tokens[n / 2]));
  case_("empty token text", with_token(n / 2, ""), Expect::Either);
  case_("invalid UTF-8 token", with_token(n / 2, "\xff\xfe\xc0\x80"), Expect::Either);
  case_("token of 64 KiB", with_token(n / 2, std::string(65536, 'a')), Expect::Either);
  // Scores / types of the wrong element type or length.
  case_("scores as u8", kv("tokenizer.ggml.scores", u8_array(n, 1)), spm ? Expect::Fail : Expect::Either);
  case_("scores as strings", kv("tokenizer.ggml.scores", str_array(std::vector<std::string>(n, "0.5"))),
        spm ? Expect::Fail : Expect::Either);
  case_("scores too short", kv("tokenizer.ggml.scores", Value::make_array(ValueType::FLOAT32, {Value::make_f32(0)})),
        spm ? Expect::Fail : Expect::Either);
  case_("token_type as strings", kv("tokenizer.ggml.token_type", str_array(std::vector<std::string>(n, "1"))));
  case_("token_type as f32", kv("tokenizer.ggml.token_type",
                                Value::make_array(ValueType::FLOAT32, std::vector<Value>(n, Value::make_f32(1)))));
  case_("token_type too short", kv("tokenizer.ggml.token_type", Value::make_array(ValueType::INT32, {i32(1)})));
  case_("token_type 99", kv("tokenizer.ggml.token_type", type_array([&](size_t i) { return i == n / 2 ? 99 : orig_type(i); })),
        Expect::Either);
  case_("token_type -1", kv("tokenizer.ggml.token_type", type_array([&](size_t i) { return i == 7 ? -1 : orig_type(i); })),
        Expect::Either);
  case_("every token a control token", kv("tokenizer.ggml.token_type", type_array([](size_t) { return 3; })),
        Expect::Either);
  case_("every token unused", kv("tokenizer.ggml.token_type", type_array([](size_t) { return 5; })), Expect::Either);
  case_("every token user-defined", kv("tokenizer.ggml.token_type", type_array([](size_t) { return 4; })),
        Expect::Either);
  // Byte tokens: malformed names, out of range, a normal token typed as a byte.
  const size_t byte_id = spm ? 3 : n / 3;  // llama-spm: id 3 is <0x00>
  auto byte_typed = [&](const std::string& text) {
    Rewrite r = with_token(byte_id, text);
    r.kv.push_back({"tokenizer.ggml.token_type",
                    type_array([&](size_t i) { return i == byte_id ? 6 : orig_type(i); })});
    return r;
  };
  for (const char* bad : {"<0x-1>", "<0xZZ>", "<0x100>", "<0x>", "<0x0>", "<0x0A", "0x0A>", "<0x+1>", "hello"})
    case_(std::string("byte token '") + bad + "'", byte_typed(bad));
  if (spm) {
    // Two byte tokens for the same byte, and the byte tokens missing (types set normal).
    case_("byte token duplicated", byte_typed("<0x05>"));
    case_("no byte tokens", kv("tokenizer.ggml.token_type",
                               type_array([&](size_t i) { return orig_type(i) == 6 ? 1 : orig_type(i); })),
          Expect::Either);
  }
  // Special ids.
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"}) {
    case_(std::string(key) + " = n_vocab", kv(key, u32v(uint32_t(n))));
    case_(std::string(key) + " = 2^32-1", kv(key, u32v(0xffffffffu)));
    case_(std::string(key) + " = -2 (i32)", kv(key, i32(-2)));
    case_(std::string(key) + " as string", kv(key, strv("1")));
  }
  case_("add_bos_token as u32", kv("tokenizer.ggml.add_bos_token", u32v(1)), Expect::Either);
  case_("pre unknown", kv("tokenizer.ggml.pre", strv("bogus-pre")), spm ? Expect::Either : Expect::Fail);
  case_("pre as u32", kv("tokenizer.ggml.pre", u32v(1)), spm ? Expect::Either : Expect::Fail);
  // Merges (BPE).
  if (f->find("tokenizer.ggml.merges")) {
    auto merges = f->get_string_array("tokenizer.ggml.merges");
    auto with_merges = [&](std::vector<std::string> m) { return kv("tokenizer.ggml.merges", str_array(std::move(m))); };
    auto m1 = merges;
    m1.push_back("zzqxj qqzzv");
    case_("merge naming unknown tokens", with_merges(m1));
    auto m2 = merges;
    m2[0] = "nospace";
    case_("merge without a space", with_merges(m2));
    auto m3 = merges;
    m3[1] = tokens[n / 2] + " \xff\xfe";
    case_("merge naming an unknown second token", with_merges(m3));
    auto m4 = merges;
    m4.push_back(" ");
    case_("merge of empty strings", with_merges(m4));
    case_("merges as u32", kv("tokenizer.ggml.merges", Value::make_array(ValueType::UINT32, {u32v(1)})));
    case_("merges empty", with_merges({}), Expect::Either);
  }
}

}  // namespace

TEST_CASE("corrupt models: truncations, flipped header bytes, huge fields, tensor table") {
  for (const std::string* base : {&plain_model(), &vocab_model()}) {
    const Bytes orig = read_file(*base);
    const Layout l = Walker(orig).walk();
    const uint64_t end = data_end(*base);
    const bool with_vocab = base == &vocab_model();
    guarded(fs::path(*base).filename().string() + " bytes", tmp("corrupt-case-model.gguf"), true, [&](Table& t) {
      truncations(t, orig, l, end, with_vocab ? 16 : 32);
      flips(t, orig, std::min<uint64_t>(l.header_end, 4096), with_vocab ? 32 : 96);
      huge_fields(t, orig, l);
      tensor_fields(t, orig, l);
    });
  }
}

TEST_CASE("corrupt models: metadata and tensor types wrong for the architecture") {
  for (const std::string* base : {&plain_model(), &vocab_model()}) {
    guarded(fs::path(*base).filename().string() + " rewrites", tmp("corrupt-case-rewrite.gguf"), true,
            [&](Table& t) { model_rewrites(t, *base); });
  }
}

TEST_CASE("corrupt vocabularies: every shipped vocabulary") {
  for (const char* name : {"llama-spm", "gpt-2", "phi-3", "deepseek-llm", "deepseek-coder"}) {
    const std::string base = vocab_file(name);
    REQUIRE(fs::exists(base));
    const bool full = std::string(name) == "llama-spm" || std::string(name) == "gpt-2";
    const Bytes orig = read_file(base);
    const Layout l = Walker(orig).walk();
    guarded(std::string("vocab ") + name, tmp("corrupt-case-vocab.gguf"), false, [&](Table& t) {
      truncations(t, orig, l, orig.size(), full ? 24 : 8);
      flips(t, orig, 4096, full ? 24 : 8);
      huge_fields(t, orig, l);
      if (full) vocab_rewrites(t, base);
    });
  }
}

// ---- The tool ------------------------------------------------------------------------------------------

namespace {
struct ToolRun {
  int status = 0;
  std::string err;
};
ToolRun run_tool(const std::vector<std::string>& args) {
  int efd[2];
  REQUIRE(::pipe(efd) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(efd[1], 2);
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, 1);
    ::close(efd[0]);
    ::close(efd[1]);
    std::vector<char*> argv;
    std::string tool = MOE_TOOL_PATH;
    argv.push_back(tool.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::alarm(60);
    ::execv(tool.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(efd[1]);
  ToolRun r;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(efd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    r.err.append(buf, size_t(n));
  }
  ::close(efd[0]);
  REQUIRE(::waitpid(pid, &r.status, 0) == pid);
  return r;
}
}  // namespace

TEST_CASE("the moe tool exits 1 with 'moe: error:' and the file name on corrupt input") {
  REQUIRE(fs::exists(MOE_TOOL_PATH));
  const Bytes model = read_file(plain_model());
  const Layout ml = Walker(model).walk();
  const Bytes vocab = read_file(vocab_file("gpt-2"));
  const Layout vl = Walker(vocab).walk();
  struct Input {
    std::string name;
    Bytes bytes;
    bool is_model;
  };
  std::vector<Input> inputs;
  inputs.push_back({"tool-truncated.gguf", Bytes(model.begin(), model.begin() + long(model.size() / 2)), true});
  {
    Bytes b = model;
    poke<uint64_t>(b, ml.kvs.front().key_len_off, 1ull << 62);
    inputs.push_back({"tool-huge-string.gguf", b, true});
  }
  {
    Bytes b = model;
    const TensorRec& t = ml.tensors.back();
    poke<uint64_t>(b, t.offset_off, 1ull << 40);
    inputs.push_back({"tool-offset-past-end.gguf", b, true});
  }
  {
    Bytes b = vocab;
    poke<uint64_t>(b, vl.kv("tokenizer.ggml.tokens")->count_off, ~0ull);
    inputs.push_back({"tool-array-count.gguf", b, false});
  }
  inputs.push_back({"tool-not-gguf.gguf", Bytes{'h', 'e', 'l', 'l', 'o', '\n'}, true});
  {
    // Well-formed GGUF, wrong for the architecture: the router has one row too few.
    auto f = GgufFile::open(plain_model());
    Rewrite rw;
    const auto* r = f->find_tensor("blk.0.ffn_gate_inp.weight");
    REQUIRE(r);
    rw.tensors[r->name] = TensorEdit{.ne = std::vector<uint64_t>{r->ne[0], r->ne[1] - 1}};
    const std::string p = tmp("tool-bad-router.gguf");
    rewrite(*f, rw, p);
    inputs.push_back({"tool-bad-router.gguf", read_file(p), true});
  }
  for (const auto& in : inputs) {
    const std::string path = tmp(in.name);
    write_file(path, in.bytes);
    std::vector<std::vector<std::string>> cmds;
    if (in.is_model) {
      cmds.push_back({"inspect", path});
      cmds.push_back({"run", "-m", path, "-p", "hi", "-n", "2", "-t", "1"});
    }
    cmds.push_back({"tokenize", "-m", path, "hello"});
    for (const auto& c : cmds) {
      const ToolRun r = run_tool(c);
      INFO("moe " << c[0] << " " << in.name << ": stderr: " << r.err);
      REQUIRE_FALSE(WIFSIGNALED(r.status));
      CHECK(WEXITSTATUS(r.status) == 1);
      CHECK(r.err.find("moe: error:") != std::string::npos);
      CHECK(r.err.find(path) != std::string::npos);
    }
    fs::remove(path);
  }
  // A missing file too.
  const ToolRun r = run_tool({"inspect", tmp("no-such-file.gguf")});
  CHECK_FALSE(WIFSIGNALED(r.status));
  CHECK(WEXITSTATUS(r.status) == 1);
  CHECK(r.err.find("no-such-file.gguf") != std::string::npos);
}
