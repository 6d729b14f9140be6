// tests/unit/test_soak.cpp — the churn soak: 5,000 generated tokens on a tiny generated model through
// the DRAM expert store at its smallest legal budget (maximum churn: nearly every expert use is a miss
// that evicts another), with the predictors on (transition + popularity + history, combined) issuing
// and cancelling prefetches after every token, across several requests.
// Asserts: the tokens equal those of the mmap baseline (offloading never changes the math); the
// resident set (VmRSS) is flat after warm-up (growth < 2 MiB between token 1000 and token 5000) in
// normal builds; under AddressSanitizer, LeakSanitizer checks at exit that nothing leaked (the RSS bound
// is skipped there: ASan's quarantine of freed blocks grows the resident set by design).
// Single-threaded test body (the store's IO threads run underneath).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "moe/engine.h"
#include "moe/expert_store.h"
#include "moe/gen.h"
#include "moe/prefetch/predictor.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MOE_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MOE_TEST_SANITIZED 1
#endif
#endif

using namespace moe;

namespace {

constexpr int kTokens = 5000;
constexpr int kPerRequest = 500;  // a request = prompt + 500 generated tokens, then the session resets
constexpr uint32_t kCtx = 520;

// VmRSS of this process in bytes (0 when /proc is unavailable).
uint64_t vm_rss() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

const std::string& model_path() {
  static const std::string p = [] {
    GenOptions o;
    o.arch = "qwen3moe";
    o.out = std::string(MOE_TEST_TMP) + "/soak.gguf";
    o.n_layer = 3;
    o.n_embd = 64;
    o.n_ff = 64;
    o.n_expert = 16;
    o.n_expert_used = 2;
    o.n_head = 2;
    o.n_head_kv = 1;
    o.head_dim = 32;
    o.n_ctx = 1024;
    o.vocab = "none";
    o.n_vocab = 256;
    o.type = "q8_0";
    o.seed = 11;
    generate_model(o);
    return o.out;
  }();
  return p;
}

SessionOptions session_opts() {
  SessionOptions s;
  s.n_ctx = kCtx;
  s.n_batch = 8;
  s.n_threads = 1;
  return s;
}

// Deterministic sampling from the logits (temperature 1, xorshift RNG): routing stays varied, unlike
// greedy decoding of a random model, which settles into a loop.
struct Rng {
  uint64_t s;
  double next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return double(s >> 11) / double(1ull << 53);
  }
};
int32_t sample(std::span<const float> logits, Rng& rng, std::vector<double>& p) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  p.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) sum += (p[i] = std::exp(double(logits[i] - mx)));
  double r = rng.next() * sum;
  for (size_t i = 0; i < p.size(); ++i)
    if ((r -= p[i]) <= 0) return int32_t(i);
  return int32_t(p.size() - 1);
}

struct SoakResult {
  std::vector<int32_t> tokens;
  uint64_t rss_at_1000 = 0, rss_at_end = 0;
};

// Generates kTokens tokens in requests of kPerRequest; with a store, runs the predictors and prefetches
// the guessed experts of the next token's layers after every token (cancelling the weakest guess).
SoakResult soak(const Model& m, ExpertSource& src, CachedExpertSource* store) {
  const ModelSpec& spec = m.spec();
  prefetch::PredictorOptions po;
  po.n_layer = spec.n_layer;
  po.n_expert = spec.n_expert;
  po.max_k = spec.n_expert_used;
  po.max_ahead = spec.n_layer - 1;
  std::string err;
  auto pred = prefetch::make_predictor("transition,popularity,history", po, &err);
  REQUIRE_MESSAGE(pred, err);
  std::vector<prefetch::Guess> guesses(4);
  std::vector<uint16_t> routed;
  std::vector<double> scratch;

  Session s(m, src, session_opts());
  Rng rng{0x9e3779b97f4a7c15ull};
  SoakResult r;
  r.tokens.reserve(kTokens);
  for (uint32_t req = 0; int(r.tokens.size()) < kTokens; ++req) {
    s.reset();
    pred->begin_request(req);
    const int32_t prompt[4] = {int32_t(req % 256), 7, int32_t((req * 31) % 256), 42};
    auto logits = s.eval(prompt);
    for (int i = 0; i < kPerRequest && int(r.tokens.size()) < kTokens; ++i) {
      const int32_t t = sample(logits, rng, scratch);
      r.tokens.push_back(t);
      if (r.tokens.size() == 1000) r.rss_at_1000 = vm_rss();
      logits = s.eval(std::span<const int32_t>(&t, 1));
      for (uint32_t il = 0; il < spec.n_layer; ++il) {
        routed.clear();
        for (int32_t e : s.last_experts(il)) routed.push_back(uint16_t(e));
        pred->observe(il, routed);
      }
      if (!store) continue;
      for (uint32_t ahead = 1; ahead < spec.n_layer; ++ahead) {
        const uint32_t layer = (spec.n_layer - 1 + ahead) % spec.n_layer;
        const uint32_t n = pred->predict(ahead, guesses);
        for (uint32_t g = 0; g < n; ++g) (void)store->prefetch(layer, guesses[g].expert);
        if (n == guesses.size()) (void)store->cancel_prefetch(layer, guesses[n - 1].expert);
      }
    }
  }
  r.rss_at_end = vm_rss();
  return r;
}

}  // namespace

TEST_CASE("soak: 5000 tokens at the smallest legal cache, predictors on: same tokens, flat memory") {
  const auto t0 = std::chrono::steady_clock::now();
  auto m = Model::load(model_path());
  // Baseline: the page cache (mmap) source.
  SoakResult base;
  {
    MmapExpertSource src(*m);
    base = soak(*m, src, nullptr);
  }
  REQUIRE(base.tokens.size() == size_t(kTokens));

  StoreOptions o;
  o.session = session_opts();
  o.overhead_bytes = 1 << 20;
  o.ram_budget_bytes = 1;  // plan only
  const StoreMemoryPlan p = plan_store_memory(*m, o);
  o.ram_budget_bytes = p.minimum;
  CachedExpertSource store(*m, o);
  INFO("plan: " << store.plan().to_text());
  CHECK(store.plan().slots == p.min_slots);
  CHECK(store.plan().slots < p.n_experts);
  const SoakResult got = soak(*m, store, &store);
  store.wait_idle();
  const StoreStats st = store.stats();
  MESSAGE("soak: " << st.to_text());
  MESSAGE("soak: VmRSS at token 1000 " << got.rss_at_1000 / 1024 << " KiB, at token " << kTokens << " "
                                       << got.rss_at_end / 1024 << " KiB, "
                                       << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
                                       << " s");
  CHECK(got.tokens == base.tokens);
  // Maximum churn: a large share of expert uses miss and evict.
  CHECK(st.misses > uint64_t(kTokens));
  CHECK(st.evictions > uint64_t(kTokens));
  CHECK(st.prefetches > 0);
  CHECK(st.io_errors == 0);
#ifndef MOE_TEST_SANITIZED
  REQUIRE(got.rss_at_1000 > 0);
  const int64_t growth = int64_t(got.rss_at_end) - int64_t(got.rss_at_1000);
  CHECK_MESSAGE(growth < (2 << 20), "VmRSS grew by " << growth / 1024 << " KiB between token 1000 and " << kTokens);
#endif
}
