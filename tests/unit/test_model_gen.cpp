// `moe gen` streams: writing a model many times larger than the generator's chunk keeps the peak
// resident set nearly flat (checked with getrusage's high-water mark, in a binary of its own so no
// earlier test has raised it).
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <filesystem>
#include <string>

#include "moe/gen.h"
#include "moe/gguf.h"
#include "moe/model.h"

using namespace moe;

namespace {
long max_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;  // KiB on Linux
}
}  // namespace

TEST_CASE("a mid-size model is written in bounded memory") {
  GenOptions o;
  o.arch = "qwen3moe";
  o.out = std::string(MOE_TEST_TMP) + "/rss_mid.gguf";
  o.n_layer = 4;
  o.n_embd = 512;
  o.n_ff = 512;
  o.n_expert = 32;
  o.n_expert_used = 4;
  o.n_head = 8;
  o.n_head_kv = 2;
  o.vocab = "none";
  o.n_vocab = 1024;
  o.type = "q8_0";
  const long before = max_rss_kib();
  GenResult r = generate_model(o);
  const long grown_mib = (max_rss_kib() - before) / 1024;
  MESSAGE("file " << r.file_bytes / (1 << 20) << " MiB, peak RSS grew " << grown_mib << " MiB");
  CHECK(r.file_bytes > (100ull << 20));
  CHECK(grown_mib < 40);
  auto f = gguf::GgufFile::open(o.out);
  ExpertTable t = ExpertTable::build(*f, load_model_spec(*f));
  CHECK(t.total_bytes() > (100ull << 20));
  std::filesystem::remove(o.out);
}
