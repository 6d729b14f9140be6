// The forward pass end to end on generated models of every supported architecture (llama/Mixtral,
// qwen2moe, qwen3moe, olmoe), f32 and q4_K: prefill in one batch == token-by-token decode == uneven
// batches (bit-identical: matmul rows equal matvec and experts are summed in ascending id order),
// greedy tokens and logits identical for 1 and 2 threads, the expert-source seam (one acquire per
// chosen expert per batch, all released), and the errors bad input must give. The comparison with the
// numpy reference lives in test_engine_reference.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "moe/engine.h"
#include "moe/gen.h"
#include "moe/error.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/quant.h"
#include "moe/sampler.h"
#include "test_engine_models.h"

using namespace moe;

namespace {

std::string tmp(const std::string& name) {
  std::filesystem::create_directories(MOE_TEST_TMP);
  return std::string(MOE_TEST_TMP) + "/" + name;
}

// Writes a tiny model (test_engine_models.h's defaults otherwise) to tmp(name); returns its path.
std::string write_tiny(const std::string& arch, TensorType wtype, const std::string& name) {
  test::TinyModel tm;
  tm.arch = arch;
  tm.wtype = wtype;
  const std::string path = tmp(name);
  test::write_tiny_model(tm, path);
  return path;
}

const std::vector<int32_t> kPrompt = {5, 17, 200, 3, 99, 42, 255, 7};  // < 256: fits every test vocabulary

double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  double mx = 0, ref_mx = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    mx = std::max(mx, std::fabs(double(a[i]) - ref[i]));
    ref_mx = std::max(ref_mx, std::fabs(double(ref[i])));
  }
  return mx / std::max(ref_mx, 1e-30);
}

std::vector<float> engine_logits(const Model& m, const std::vector<int32_t>& toks, int threads, uint32_t n_batch) {
  MmapExpertSource src(m);
  SessionOptions o;
  o.n_ctx = 64;
  o.n_threads = threads;
  o.n_batch = n_batch;
  Session s(m, src, o);
  std::vector<float> all(toks.size() * m.spec().n_vocab);
  s.eval(toks, all.data());
  return all;
}

std::vector<int32_t> greedy(const Model& m, const std::vector<int32_t>& prompt, int n, int threads,
                            uint32_t n_batch, std::vector<float>* last_logits = nullptr) {
  MmapExpertSource src(m);
  SessionOptions o;
  o.n_ctx = 64;
  o.n_threads = threads;
  o.n_batch = n_batch;
  Session s(m, src, o);
  auto logits = s.eval(prompt);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    int32_t t = argmax(logits);
    out.push_back(t);
    logits = s.eval(std::span<const int32_t>(&t, 1));
  }
  if (last_logits) last_logits->assign(logits.begin(), logits.end());
  return out;
}

const char* type_label(TensorType t) { return type_name(t); }

}  // namespace

TEST_CASE("prefill in one batch equals token-by-token decode; 1 and 2 threads agree") {
  for (const char* arch : {"llama", "qwen2moe", "qwen3moe", "olmoe"}) {
    for (TensorType t : {TensorType::F32, TensorType::Q4_K}) {
      test::TinyModel tm;
      tm.arch = arch;
      tm.wtype = t;
      tm.seed = 3;
      const std::string path = tmp(std::string("pd-") + arch + "-" + type_label(t) + ".gguf");
      test::write_tiny_model(tm, path);
      auto m = Model::load(path);
      INFO(std::string(arch), " ", std::string(type_label(t)));
      auto batch = engine_logits(*m, kPrompt, 1, 64);
      auto step = engine_logits(*m, kPrompt, 1, 1);    // n_batch 1: one token per forward
      auto split = engine_logits(*m, kPrompt, 2, 3);   // batches of 3, 3, 2
      // matmul rows equal matvec bit for bit (kernels contract) and experts are summed in ascending id
      // order either way, so the results are identical, not just close.
      CHECK(rel_err(step, batch) == 0.0);
      CHECK(rel_err(split, batch) == 0.0);
      std::vector<float> l1, l2;
      auto g1 = greedy(*m, kPrompt, 8, 1, 64, &l1);
      auto g2 = greedy(*m, kPrompt, 8, 2, 64, &l2);
      auto g3 = greedy(*m, kPrompt, 8, 2, 1);
      CHECK(g1 == g2);
      CHECK(g1 == g3);
      CHECK(l1 == l2);
    }
  }
}

namespace {
// An ExpertSource that counts acquire/release and hands out the mmap views.
class CountingSource final : public ExpertSource {
 public:
  explicit CountingSource(const Model& m) : inner_(m) {}
  ExpertWeights acquire(uint32_t l, uint32_t e) override {
    ++acquired;
    ++live;
    return inner_.acquire(l, e);
  }
  void release(uint32_t l, uint32_t e) noexcept override {
    --live;
    inner_.release(l, e);
  }
  int acquired = 0, live = 0;

 private:
  MmapExpertSource inner_;
};
}  // namespace

TEST_CASE("experts are read through the source, once per batch per chosen expert") {
  test::TinyModel tm;
  tm.arch = "olmoe";
  const std::string path = tmp("seam.gguf");
  test::write_tiny_model(tm, path);
  auto m = Model::load(path);
  CountingSource src(*m);
  SessionOptions o;
  o.n_ctx = 32;
  Session s(*m, src, o);
  s.eval(kPrompt);
  CHECK(src.live == 0);
  // 8 tokens x 2 used experts over 8 experts: at most 8 distinct experts per layer, once each.
  CHECK(src.acquired <= int(tm.n_layer * tm.n_expert));
  CHECK(src.acquired >= int(tm.n_layer * tm.n_used));
  CHECK(s.stats().expert_acquires == uint64_t(src.acquired));
  const int before = src.acquired;
  const int32_t t = 9;
  s.eval(std::span<const int32_t>(&t, 1));
  CHECK(src.acquired - before == int(tm.n_layer * tm.n_used));  // decode: k experts per layer
  for (uint32_t il = 0; il < tm.n_layer; ++il) {
    auto ids = s.last_experts(il);
    auto w = s.last_expert_weights(il);
    REQUIRE(ids.size() == tm.n_used);
    CHECK(ids[0] < ids[1]);
    CHECK(w[0] > 0);
    CHECK(w[0] + w[1] < 1.0f);  // OLMoE: not renormalised
  }
  CHECK(s.pos() == kPrompt.size() + 1);
}

TEST_CASE("bad input gives clear errors") {
  test::TinyModel tm;
  const std::string path = tmp("errors.gguf");
  test::write_tiny_model(tm, path);
  auto m = Model::load(path);
  MmapExpertSource src(*m);
  SessionOptions o;
  o.n_ctx = 4;
  Session s(*m, src, o);
  std::vector<int32_t> too_many = {1, 2, 3, 4, 5};
  CHECK_THROWS_WITH_AS(s.eval(too_many), doctest::Contains("context full"), Error);
  std::vector<int32_t> bad = {1, 100000};
  CHECK_THROWS_WITH_AS(s.eval(bad), doctest::Contains("outside the vocabulary"), Error);
  CHECK_THROWS_AS(Model::load(tmp("does-not-exist.gguf")), Error);
}

namespace {
// Runs a shell command; returns its standard output and stores its exit status in *status.
std::string run_command(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  while (fgets(buf, sizeof buf, p)) out += buf;
  *status = pclose(p);
  return out;
}
}  // namespace

TEST_CASE("moe run --json prints the engine's greedy tokens; moe bench --json reports its keys") {
  const std::string path = write_tiny("qwen3moe", TensorType::Q8_0, "run.gguf");
  auto m = Model::load(path);
  const auto expect = greedy(*m, kPrompt, 6, 1, 64);
  auto capture = [](const std::string& cmd) {
    int status = -1;
    std::string out = run_command(cmd, &status);
    CHECK(status == 0);
    return out;
  };
  std::string ids;
  for (size_t i = 0; i < kPrompt.size(); ++i) ids += (i ? "," : "") + std::to_string(kPrompt[i]);
  const std::string out = capture(std::string(MOE_TOOL_PATH) + " run -m " + path + " --prompt-ids " + ids +
                                  " -n 6 --temp 0 -t 2 --ignore-eos --json");
  std::string want = "\"generated_tokens\":[";
  for (size_t i = 0; i < expect.size(); ++i) want += (i ? "," : "") + std::to_string(expect[i]);
  want += "]";
  CHECK_MESSAGE(out.find(want) != std::string::npos, out);
  CHECK(out.find("\"prefill_tok_s\"") != std::string::npos);
  CHECK(out.find("\"decode_tok_s\"") != std::string::npos);
  const std::string b = capture(std::string(MOE_TOOL_PATH) + " bench -m " + path +
                                " -t 1 --prompt-tokens 8 --gen-tokens 4 --reps 1 --no-bandwidth --json");
  for (const char* k : {"\"decode_tok_s\"", "\"prefill_tok_s\"", "\"bytes_read_per_token\"", "\"mem_bw_fraction\"",
                        "\"decode_tok_s_median\"", "\"decode_tok_s_sd\"", "\"prefill_tok_s_median\""})
    CHECK_MESSAGE(b.find(k) != std::string::npos, b);
  // --no-mmap (the model copied into RAM): the same tokens.
  const std::string nm = capture(std::string(MOE_TOOL_PATH) + " run -m " + path + " --prompt-ids " + ids +
                                 " -n 6 --temp 0 -t 2 --ignore-eos --json --no-mmap");
  CHECK_MESSAGE(nm.find(want) != std::string::npos, nm);
}

TEST_CASE("moe run -f reads the prompt from a file or standard input; a bad file is named") {
  moe::GenOptions o;
  o.arch = "qwen3moe";
  o.preset = "tiny";
  o.type = "q8_0";
  o.vocab = "gpt-2";
  o.out = tmp("prompt_file.gguf");
  moe::generate_model(o);
  const std::string prompt_path = tmp("prompt.txt");
  {
    FILE* f = std::fopen(prompt_path.c_str(), "wb");
    REQUIRE(f != nullptr);
    std::fputs("The quick brown fox\njumps", f);
    std::fclose(f);
  }
  const std::string base = std::string(MOE_TOOL_PATH) + " run -m " + o.out + " -n 4 --temp 0 -t 1 --json";
  auto tokens = [](const std::string& out) {
    const size_t a = out.find("\"prompt_tokens\"");
    const size_t b = out.find("\"text\"");
    return a == std::string::npos || b == std::string::npos ? std::string() : out.substr(a, b - a);
  };
  int status = -1;
  const std::string from_arg = run_command(base + " -p 'The quick brown fox\njumps'", &status);  // a newline inside the quotes
  CHECK(status == 0);
  REQUIRE(!tokens(from_arg).empty());
  const std::string from_file = run_command(base + " -f " + prompt_path, &status);
  CHECK(status == 0);
  CHECK(tokens(from_file) == tokens(from_arg));
  const std::string from_stdin = run_command(base + " -f - < " + prompt_path, &status);
  CHECK(status == 0);
  CHECK(tokens(from_stdin) == tokens(from_arg));
  const std::string missing = run_command(base + " -f " + tmp("no-such-prompt.txt") + " 2>&1", &status);
  CHECK(status != 0);
  CHECK_MESSAGE(missing.find("no-such-prompt.txt") != std::string::npos, missing);
  const std::string both = run_command(base + " -f " + prompt_path + " -p hi 2>&1", &status);
  CHECK(status != 0);
  CHECK_MESSAGE(both.find("excludes") != std::string::npos, both);
}

TEST_CASE("MOE_SIMD caps the kernel level the CLI runs; an unknown value is named and ignored") {
  const std::string tool = MOE_TOOL_PATH;
  const std::string best = moe::kernels::simd_level_name(moe::kernels::best_simd_level());
  const std::string avx2 = moe::kernels::best_simd_level() >= moe::kernels::SimdLevel::AVX2 ? "avx2" : best;
  const std::pair<const char*, std::string> cases[] = {{"scalar", "scalar"}, {"avx2", avx2}, {"avx512", best}};
  for (const auto& [env, want] : cases) {
    CAPTURE(env);
    int status = -1;
    const std::string out = run_command("MOE_SIMD=" + std::string(env) + " " + tool + " --version 2>&1", &status);
    CHECK(status == 0);
    CHECK_MESSAGE(out.find("cpu kernels: " + want + "\n") != std::string::npos, out);
  }
  int status = -1;
  const std::string out = run_command("MOE_SIMD=sse9 " + tool + " --version 2>&1", &status);
  CHECK(status == 0);
  CHECK_MESSAGE(out.find("MOE_SIMD='sse9'") != std::string::npos, out);
  CHECK_MESSAGE(out.find("cpu kernels: " + best + "\n") != std::string::npos, out);
}

TEST_CASE("a model copied into RAM (to_ram, --no-mmap) gives the mapped model's bits") {
  const std::string path = write_tiny("olmoe", TensorType::Q4_K, "ram.gguf");
  auto mapped = Model::load(path);
  auto copied = Model::load(path, /*to_ram=*/true);
  REQUIRE(copied->file().file_size() == mapped->file().file_size());
  CHECK(std::memcmp(copied->file().bytes().data(), mapped->file().bytes().data(), mapped->file().file_size()) == 0);
  std::vector<float> l1, l2;
  CHECK(greedy(*mapped, kPrompt, 6, 2, 64, &l1) == greedy(*copied, kPrompt, 6, 2, 64, &l2));
  CHECK(l1 == l2);
  // With a budget the experts stream from the file: the CLI refuses the pair, naming both flags.
  const std::string cmd = std::string(MOE_TOOL_PATH) + " run -m " + path + " -p hi -n 1 --no-mmap --ram 1G 2>&1";
  int status = 0;
  const std::string out = run_command(cmd, &status);
  CHECK(status != 0);
  CHECK_MESSAGE(out.find("--no-mmap") != std::string::npos, out);
  CHECK_MESSAGE(out.find("--ram") != std::string::npos, out);
}
