// tests/unit/test_api.cpp — the embedding API (moe/moe.h, moe/moe.hpp) and `moe chat`, on tiny
// generated models: lifecycle, status codes and last-error messages, load progress and its
// cancellation, cancellation from another thread, seeded determinism, API greedy tokens == a direct
// engine loop (with and without the RAM expert cache), chat with KV-cache prefix reuse, the C++
// wrapper, and a scripted `moe chat` session.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "moe/engine.h"
#include "moe/gen.h"
#include "moe/moe.h"
#include "moe/moe.hpp"
#include "moe/sampler.h"

namespace fs = std::filesystem;

namespace {

// One model per vocabulary, generated once per process.
const std::string& tiny_model(const std::string& vocab) {
  static std::string phi3, none;
  std::string& path = vocab == "phi-3" ? phi3 : none;
  if (path.empty()) {
    fs::create_directories(MOE_TEST_TMP);
    moe::GenOptions o;
    o.preset = "tiny";
    o.vocab = vocab;
    o.data_dir = MOE_SHARED_DATA;
    o.out = std::string(MOE_TEST_TMP) + "/api-tiny-" + vocab + ".gguf";
    o.seed = 7;
    moe::generate_model(o);
    path = o.out;
  }
  return path;
}

struct Collect {
  std::vector<int32_t> tokens;
  std::string text;
};

bool collect_cb(const char* text, size_t len, int32_t token, void* ud) {
  auto* c = static_cast<Collect*>(ud);
  c->text.append(text, len);
  if (token >= 0) c->tokens.push_back(token);
  return true;
}

moe_model* load(const std::string& path, const moe_model_params* p = nullptr) {
  moe_model* m = nullptr;
  const moe_status s = moe_model_load(path.c_str(), p, nullptr, nullptr, &m);
  REQUIRE_MESSAGE(s == MOE_STATUS_OK, moe_last_error());
  REQUIRE(m != nullptr);
  return m;
}

std::vector<int32_t> greedy_api(moe_model* m, const std::vector<int32_t>& prompt, int n) {
  moe_session_params sp = moe_session_default_params();
  sp.sampling.temperature = 0;
  sp.n_ctx = 256;
  moe_session* s = nullptr;
  REQUIRE(moe_session_new(m, &sp, &s) == MOE_STATUS_OK);
  moe_generate_params gp = moe_generate_default_params();
  gp.n_predict = n;
  gp.ignore_eog = true;
  Collect c;
  REQUIRE(moe_session_generate_tokens(s, prompt.data(), prompt.size(), &gp, collect_cb, &c) == MOE_STATUS_OK);
  moe_session_free(s);
  return c.tokens;
}

std::string run_cmd(const std::string& cmd, int* status) {
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

}  // namespace

TEST_CASE("status strings are distinct and total") {
  std::vector<std::string> seen;
  for (int i = 0; i < MOE_STATUS_COUNT; ++i) {
    const std::string s = moe_status_string(static_cast<moe_status>(i));
    CHECK(s != "unknown status");
    for (const auto& o : seen) CHECK(o != s);
    seen.push_back(s);
  }
  CHECK(std::string(moe_status_string(MOE_STATUS_COUNT)) == "unknown status");
  CHECK(std::string(moe_version()).size() > 0);
}

TEST_CASE("model and session lifecycle") {
  moe_model* m = load(tiny_model("phi-3"));
  moe_model_info info;
  REQUIRE(moe_model_get_info(m, &info) == MOE_STATUS_OK);
  CHECK(std::string(info.architecture) == "qwen3moe");
  CHECK(info.n_vocab == 32064);
  CHECK(info.n_expert == 8);
  CHECK(info.n_expert_used == 2);
  CHECK(info.has_tokenizer);
  CHECK(info.has_chat_template);
  CHECK_FALSE(info.has_cache);

  // Tokenize round trip, and the capacity contract.
  size_t n = 0;
  CHECK(moe_model_tokenize(m, "Hello world", 11, false, false, nullptr, 0, &n) == MOE_STATUS_INVALID_ARGUMENT);
  REQUIRE(n > 0);
  std::vector<int32_t> ids(n);
  REQUIRE(moe_model_tokenize(m, "Hello world", 11, false, false, ids.data(), ids.size(), &n) == MOE_STATUS_OK);
  char buf[64];
  size_t len = 0;
  REQUIRE(moe_model_detokenize(m, ids.data(), ids.size(), buf, sizeof buf, &len) == MOE_STATUS_OK);
  CHECK(std::string(buf) == "Hello world");

  moe_session* s = nullptr;
  moe_session_params sp = moe_session_default_params();
  sp.n_ctx = 128;
  REQUIRE(moe_session_new(m, &sp, &s) == MOE_STATUS_OK);
  CHECK(moe_session_n_past(s) == 0);
  moe_generate_params gp = moe_generate_default_params();
  gp.n_predict = 6;
  gp.ignore_eog = true;
  Collect c;
  REQUIRE(moe_session_generate(s, "Once upon a time", &gp, collect_cb, &c) == MOE_STATUS_OK);
  CHECK(c.tokens.size() == 6);
  moe_session_stats st;
  REQUIRE(moe_session_get_stats(s, &st) == MOE_STATUS_OK);
  CHECK(st.n_ctx == 128);
  CHECK(st.last_generated_tokens == 6);
  CHECK(st.last_stop_reason == MOE_STOP_N_PREDICT);
  size_t n_prompt = 0;
  std::vector<int32_t> pids(64);
  REQUIRE(moe_model_tokenize(m, "Once upon a time", 16, true, true, pids.data(), pids.size(), &n_prompt) == MOE_STATUS_OK);
  CHECK(st.last_prompt_tokens == n_prompt);
  CHECK(st.prompt_tokens == st.last_prompt_tokens);
  // The last sampled token is evaluated lazily: n_past = prompt + generated - 1.
  CHECK(moe_session_n_past(s) == st.last_prompt_tokens + 5);
  CHECK(st.expert_acquires > 0);
  CHECK(st.decode_tok_s > 0);

  // Continuing appends after the context.
  Collect c2;
  gp.n_predict = 3;
  REQUIRE(moe_session_generate(s, " and then", &gp, collect_cb, &c2) == MOE_STATUS_OK);
  CHECK(c2.tokens.size() == 3);
  REQUIRE(moe_session_get_stats(s, &st) == MOE_STATUS_OK);
  CHECK(st.generated_tokens == 9);

  // A prompt that does not fit.
  std::vector<int32_t> big(200, 5);
  const uint32_t before = moe_session_n_past(s);
  CHECK(moe_session_generate_tokens(s, big.data(), big.size(), &gp, nullptr, nullptr) == MOE_STATUS_CONTEXT_FULL);
  CHECK(std::string(moe_last_error()).find("does not fit") != std::string::npos);
  CHECK(moe_session_n_past(s) == before);  // nothing was evaluated
  moe_session_reset(s);
  CHECK(moe_session_n_past(s) == 0);
  REQUIRE(moe_session_get_stats(s, &st) == MOE_STATUS_OK);
  CHECK(st.generated_tokens == 0);
  // Bad token ids are an argument error, not a crash.
  int32_t bad = 1 << 30;
  CHECK(moe_session_generate_tokens(s, &bad, 1, &gp, nullptr, nullptr) == MOE_STATUS_INVALID_ARGUMENT);
  moe_session_free(s);
  moe_model_free(m);
  moe_session_free(nullptr);
  moe_model_free(nullptr);
}

TEST_CASE("missing and corrupt files give a status and a message naming the file") {
  moe_model* m = reinterpret_cast<moe_model*>(0x1);
  const std::string missing = std::string(MOE_TEST_TMP) + "/api-no-such-model.gguf";
  CHECK(moe_model_load(missing.c_str(), nullptr, nullptr, nullptr, &m) == MOE_STATUS_IO);
  CHECK(m == nullptr);
  CHECK(std::string(moe_last_error()).find("api-no-such-model.gguf") != std::string::npos);

  const std::string garbage = std::string(MOE_TEST_TMP) + "/api-garbage.gguf";
  {
    std::ofstream f(garbage, std::ios::binary);
    f << "NOPE this is not a model at all, just bytes.......................";
  }
  CHECK(moe_model_load(garbage.c_str(), nullptr, nullptr, nullptr, &m) == MOE_STATUS_CORRUPT);
  CHECK(std::string(moe_last_error()).find("api-garbage.gguf") != std::string::npos);

  // A truncated copy of a real model.
  const std::string trunc = std::string(MOE_TEST_TMP) + "/api-truncated.gguf";
  {
    std::ifstream in(tiny_model("phi-3"), std::ios::binary);
    std::vector<char> head(1 << 20);
    in.read(head.data(), head.size());
    std::ofstream out(trunc, std::ios::binary);
    out.write(head.data(), in.gcount());
  }
  const moe_status st = moe_model_load(trunc.c_str(), nullptr, nullptr, nullptr, &m);
  CHECK(st == MOE_STATUS_CORRUPT);
  CHECK(m == nullptr);
  CHECK(std::string(moe_last_error()).find("api-truncated.gguf") != std::string::npos);

  // NULL arguments.
  CHECK(moe_model_load(nullptr, nullptr, nullptr, nullptr, &m) == MOE_STATUS_INVALID_ARGUMENT);
  CHECK(moe_model_load(missing.c_str(), nullptr, nullptr, nullptr, nullptr) == MOE_STATUS_INVALID_ARGUMENT);

  // Bad parameters.
  moe_model_params p = moe_model_default_params();
  p.ram_budget_bytes = 64ull << 20;
  p.cache_policy = "no-such-policy";
  CHECK(moe_model_load(tiny_model("phi-3").c_str(), &p, nullptr, nullptr, &m) == MOE_STATUS_INVALID_ARGUMENT);
  p.cache_policy = nullptr;
  p.predictor = "psychic";
  CHECK(moe_model_load(tiny_model("phi-3").c_str(), &p, nullptr, nullptr, &m) == MOE_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(moe_last_error()).find("psychic") != std::string::npos);
  p.predictor = nullptr;
  p.io_backend = "floppy";
  CHECK(moe_model_load(tiny_model("phi-3").c_str(), &p, nullptr, nullptr, &m) == MOE_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(moe_last_error()).find("floppy") != std::string::npos);
  p.io_backend = nullptr;
  p.load_to_ram = true;  // a budget streams experts from the file: copying it all is refused
  CHECK(moe_model_load(tiny_model("phi-3").c_str(), &p, nullptr, nullptr, &m) == MOE_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(moe_last_error()).find("load_to_ram") != std::string::npos);
  p.ram_budget_bytes = 0;  // without one it loads
  REQUIRE(moe_model_load(tiny_model("phi-3").c_str(), &p, nullptr, nullptr, &m) == MOE_STATUS_OK);
  moe_model_free(m);
  m = nullptr;

  // The last error is per thread.
  std::string other = "unset";
  std::thread([&] { other = moe_last_error(); }).join();
  CHECK(other.empty());
  CHECK_FALSE(std::string(moe_last_error()).empty());
}

TEST_CASE("load progress is reported and can cancel the load") {
  struct P {
    std::vector<float> seen;
    int cancel_at = -1;
  };
  auto cb = [](float f, void* ud) -> bool {
    auto* p = static_cast<P*>(ud);
    p->seen.push_back(f);
    return p->cancel_at < 0 || int(p->seen.size()) < p->cancel_at;
  };
  P p;
  moe_model* m = nullptr;
  REQUIRE(moe_model_load(tiny_model("phi-3").c_str(), nullptr, cb, &p, &m) == MOE_STATUS_OK);
  REQUIRE(p.seen.size() >= 3);
  CHECK(p.seen.front() == 0.0f);
  CHECK(p.seen.back() == 1.0f);
  for (size_t i = 1; i < p.seen.size(); ++i) CHECK(p.seen[i] >= p.seen[i - 1]);
  moe_model_free(m);

  P q;
  q.cancel_at = 2;
  m = nullptr;
  CHECK(moe_model_load(tiny_model("phi-3").c_str(), nullptr, cb, &q, &m) == MOE_STATUS_CANCELLED);
  CHECK(m == nullptr);
  CHECK(q.seen.size() == 2);
  CHECK(std::string(moe_last_error()).find("cancelled") != std::string::npos);
}

TEST_CASE("cancel from another thread stops generation") {
  moe_model* m = load(tiny_model("phi-3"));
  moe_session_params sp = moe_session_default_params();
  sp.n_ctx = 2048;
  sp.n_batch = 1;
  moe_session* s = nullptr;
  REQUIRE(moe_session_new(m, &sp, &s) == MOE_STATUS_OK);

  SUBCASE("during decode") {
    struct Ctx {
      std::atomic<int> n{0};
    } ctx;
    auto cb = [](const char*, size_t, int32_t tok, void* ud) -> bool {
      if (tok >= 0) static_cast<Ctx*>(ud)->n.fetch_add(1);
      return true;
    };
    std::thread canceller([&] {
      while (ctx.n.load() < 5) std::this_thread::yield();
      moe_session_cancel(s);
    });
    moe_generate_params gp = moe_generate_default_params();
    gp.ignore_eog = true;  // would run to the full context without the cancel
    const int32_t prompt[] = {1, 2, 3};
    const moe_status st = moe_session_generate_tokens(s, prompt, 3, &gp, cb, &ctx);
    canceller.join();
    CHECK(st == MOE_STATUS_CANCELLED);
    moe_session_stats stats;
    REQUIRE(moe_session_get_stats(s, &stats) == MOE_STATUS_OK);
    CHECK(stats.last_stop_reason == MOE_STOP_CANCELLED);
    CHECK(stats.last_generated_tokens >= 5);
    CHECK(stats.last_generated_tokens < 1000);
    // The session stays usable and the cancel does not leak into the next call.
    gp.n_predict = 2;
    CHECK(moe_session_generate_tokens(s, prompt, 1, &gp, nullptr, nullptr) == MOE_STATUS_OK);
  }
  SUBCASE("during a long prefill") {
    std::vector<int32_t> prompt(2000);
    for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t(100 + i % 1000);
    std::thread canceller([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      moe_session_cancel(s);
    });
    moe_generate_params gp = moe_generate_default_params();
    gp.n_predict = 4;
    const moe_status st = moe_session_generate_tokens(s, prompt.data(), prompt.size(), &gp, nullptr, nullptr);
    canceller.join();
    CHECK(st == MOE_STATUS_CANCELLED);
    CHECK(moe_session_n_past(s) > 0);
    CHECK(moe_session_n_past(s) < prompt.size());
  }
  moe_session_free(s);
  moe_model_free(m);
}

TEST_CASE("same seed, same tokens; reset replays") {
  moe_model* m = load(tiny_model("phi-3"));
  auto sample = [&](uint64_t seed, moe_session* reuse = nullptr) {
    moe_session_params sp = moe_session_default_params();
    sp.n_ctx = 128;
    sp.sampling.temperature = 1.0f;
    sp.sampling.top_k = 0;
    sp.sampling.top_p = 1.0f;
    sp.sampling.min_p = 0.0f;
    sp.sampling.seed = seed;
    moe_session* s = reuse;
    if (!s) REQUIRE(moe_session_new(m, &sp, &s) == MOE_STATUS_OK);
    moe_generate_params gp = moe_generate_default_params();
    gp.n_predict = 16;
    gp.ignore_eog = true;
    Collect c;
    REQUIRE(moe_session_generate(s, "The weather today", &gp, collect_cb, &c) == MOE_STATUS_OK);
    return std::make_pair(c.tokens, s);
  };
  auto [a, sa] = sample(42);
  auto [b, sb] = sample(42);
  auto [c, sc] = sample(43);
  CHECK(a.size() == 16);
  CHECK(a == b);
  CHECK(a != c);
  moe_session_reset(sa);
  auto [a2, same] = sample(0, sa);
  CHECK(a2 == a);
  (void)same;
  moe_session_free(sa);
  moe_session_free(sb);
  moe_session_free(sc);
  moe_model_free(m);
}

TEST_CASE("greedy tokens through the API equal a direct engine loop, with and without the expert cache") {
  const std::string path = tiny_model("phi-3");
  const std::vector<int32_t> prompt = {1, 450, 4996, 17354, 1701};
  constexpr int kN = 12;

  auto model = moe::Model::load(path);
  moe::MmapExpertSource src(*model);
  moe::SessionOptions so;
  so.n_ctx = 256;
  moe::Session sess(*model, src, so);
  std::vector<int32_t> ref;
  auto logits = sess.eval(prompt);
  for (int i = 0; i < kN; ++i) {
    const int32_t t = moe::argmax(logits);
    ref.push_back(t);
    logits = sess.eval(std::span<const int32_t>(&t, 1));
  }

  moe_model* m = load(path);
  CHECK(greedy_api(m, prompt, kN) == ref);
  moe_model_free(m);

  moe_model_params p = moe_model_default_params();
  p.ram_budget_bytes = 200ull << 20;
  p.n_ctx = 256;
  moe_model* mc = load(path, &p);
  moe_model_info info;
  REQUIRE(moe_model_get_info(mc, &info) == MOE_STATUS_OK);
  CHECK(info.has_cache);
  CHECK(info.cache_slots > 0);
  CHECK(greedy_api(mc, prompt, kN) == ref);

  // Under a budget, sessions beyond the reservation are refused.
  moe_session_params sp = moe_session_default_params();
  sp.n_ctx = 1024;
  moe_session* s = nullptr;
  CHECK(moe_session_new(mc, &sp, &s) == MOE_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(moe_last_error()).find("reserved") != std::string::npos);
  sp.n_ctx = 0;
  moe_session* s1 = nullptr;
  REQUIRE(moe_session_new(mc, &sp, &s1) == MOE_STATUS_OK);
  CHECK(moe_session_new(mc, &sp, &s) == MOE_STATUS_INVALID_ARGUMENT);
  // Cache statistics after a generation.
  moe_generate_params gp = moe_generate_default_params();
  gp.n_predict = 4;
  REQUIRE(moe_session_generate_tokens(s1, prompt.data(), prompt.size(), &gp, nullptr, nullptr) == MOE_STATUS_OK);
  moe_session_stats st;
  REQUIRE(moe_session_get_stats(s1, &st) == MOE_STATUS_OK);
  CHECK(st.has_cache);
  CHECK(st.last_cache_hits + st.last_cache_misses > 0);
  CHECK(st.last_cache_hit_rate >= 0.0);
  CHECK(st.last_cache_hit_rate <= 1.0);
  moe_session_free(s1);
  moe_model_free(mc);

  // A budget that holds a few experts at a time: misses, arc evictions and pre-gated prefetches (the
  // default), or no prefetch; the same tokens either way.
  for (const char* pred : {"pregated", "pregated,transition", "none"}) {
    CAPTURE(pred);
    moe_model_params ps = moe_model_default_params();
    ps.ram_budget_bytes = 100ull << 20;  // the minimum is about 98 MiB, 64 of it fixed overhead
    ps.n_ctx = 256;
    ps.predictor = pred;
    moe_model* mp = load(path, &ps);
    moe_model_info in2;
    REQUIRE(moe_model_get_info(mp, &in2) == MOE_STATUS_OK);
    CHECK(in2.cache_slots >= 4);
    CHECK(in2.cache_slots < 24);  // of the model's 32 experts
    CHECK(greedy_api(mp, prompt, kN) == ref);
    moe_model_free(mp);
  }
}

TEST_CASE("chat renders the template and reuses the KV cache across turns") {
  moe_model* m = load(tiny_model("phi-3"));
  moe_session_params sp = moe_session_default_params();
  sp.n_ctx = 512;
  sp.sampling.temperature = 0;
  moe_session* s = nullptr;
  REQUIRE(moe_session_new(m, &sp, &s) == MOE_STATUS_OK);
  moe_generate_params gp = moe_generate_default_params();
  gp.n_predict = 0;  // turn 1: only the prompt (a random model's replies need not re-tokenize alike)
  moe_session_stats st;
  std::vector<moe_chat_message> msgs = {{"system", "Be brief."}, {"user", "Hello there"}};
  REQUIRE(moe_session_chat(s, msgs.data(), msgs.size(), &gp, nullptr, nullptr) == MOE_STATUS_OK);
  REQUIRE(moe_session_get_stats(s, &st) == MOE_STATUS_OK);
  CHECK(st.last_reused_tokens == 0);
  const uint32_t after1 = moe_session_n_past(s);
  CHECK(after1 == st.last_prompt_tokens);
  msgs.push_back({"assistant", ""});
  msgs.push_back({"user", "And then?"});
  gp.n_predict = 8;
  Collect r2;
  REQUIRE(moe_session_chat(s, msgs.data(), msgs.size(), &gp, collect_cb, &r2) == MOE_STATUS_OK);
  CHECK(!r2.tokens.empty());
  REQUIRE(moe_session_get_stats(s, &st) == MOE_STATUS_OK);
  CHECK(st.last_reused_tokens == after1);  // the whole first prompt came from the KV cache
  CHECK(st.last_prompt_tokens > 0);
  // Turn 3 after a generated reply: whatever is reused, the context is prompt + evaluated reply.
  msgs.push_back({"assistant", r2.text.c_str()});
  msgs.push_back({"user", "Why?"});
  Collect r3;
  REQUIRE(moe_session_chat(s, msgs.data(), msgs.size(), &gp, collect_cb, &r3) == MOE_STATUS_OK);
  REQUIRE(moe_session_get_stats(s, &st) == MOE_STATUS_OK);
  CHECK(st.last_reused_tokens + st.last_prompt_tokens + st.last_generated_tokens - 1 == moe_session_n_past(s));
  msgs.pop_back();
  msgs.pop_back();

  // A fresh session on the full conversation yields the same reply (reuse never changes the math).
  moe_session* f = nullptr;
  REQUIRE(moe_session_new(m, &sp, &f) == MOE_STATUS_OK);
  Collect r2b;
  REQUIRE(moe_session_chat(f, msgs.data(), msgs.size(), &gp, collect_cb, &r2b) == MOE_STATUS_OK);
  CHECK(r2b.tokens == r2.tokens);
  moe_session_free(f);
  moe_session_free(s);
  moe_model_free(m);
}

TEST_CASE("fallback chat format and stop strings on a model without a template") {
  moe_model* m = load(tiny_model("gpt-2"));
  moe_model_info info;
  REQUIRE(moe_model_get_info(m, &info) == MOE_STATUS_OK);
  CHECK_FALSE(info.has_chat_template);
  moe_session_params sp = moe_session_default_params();
  sp.n_ctx = 256;
  sp.sampling.temperature = 0;
  moe_session* s = nullptr;
  REQUIRE(moe_session_new(m, &sp, &s) == MOE_STATUS_OK);
  moe_generate_params gp = moe_generate_default_params();
  gp.n_predict = 6;
  Collect r;
  moe_chat_message msg{"user", "Hello"};
  REQUIRE(moe_session_chat(s, &msg, 1, &gp, collect_cb, &r) == MOE_STATUS_OK);
  CHECK(!r.tokens.empty());

  // Stop strings: generate freely once, then stop at a piece of that text; it is not emitted.
  moe_session_reset(s);
  gp.n_predict = 12;
  Collect free_run;
  REQUIRE(moe_session_generate(s, "Numbers:", &gp, collect_cb, &free_run) == MOE_STATUS_OK);
  REQUIRE(free_run.text.size() > 6);
  const std::string stop = free_run.text.substr(free_run.text.size() / 2, 3);
  const size_t first = free_run.text.find(stop);
  moe_session_reset(s);
  const char* stops[] = {stop.c_str()};
  gp.stop = stops;
  gp.n_stop = 1;
  Collect cut;
  REQUIRE(moe_session_generate(s, "Numbers:", &gp, collect_cb, &cut) == MOE_STATUS_OK);
  CHECK(cut.text == free_run.text.substr(0, first));
  moe_session_stats st;
  REQUIRE(moe_session_get_stats(s, &st) == MOE_STATUS_OK);
  CHECK(st.last_stop_reason == MOE_STOP_STRING);
  moe_session_free(s);
  moe_model_free(m);
}

TEST_CASE("C++ wrapper: RAII, errors as exceptions, callbacks") {
  using namespace moe::api;
  CHECK_THROWS_AS(Model(std::string(MOE_TEST_TMP) + "/api-no-such-model.gguf"), Error);
  try {
    Model bad(std::string(MOE_TEST_TMP) + "/api-no-such-model.gguf");
  } catch (const Error& e) {
    CHECK(e.status() == MOE_STATUS_IO);
  }
  Model model(tiny_model("phi-3"));
  CHECK(model.info().n_vocab == 32064);
  const auto ids = model.tokenize("Hello world");
  CHECK(model.detokenize(ids) == "Hello world");
  moe_session_params sp = moe_session_default_params();
  sp.n_ctx = 128;
  sp.sampling.temperature = 0;
  Session s(model, sp);
  GenerateOptions o;
  o.n_predict = 5;
  o.ignore_eog = true;
  std::vector<int32_t> got;
  CHECK(s.generate("Hi", [&](std::string_view, int32_t t) {
    if (t >= 0) got.push_back(t);
    return true;
  }, o) == MOE_STOP_N_PREDICT);
  CHECK(got.size() == 5);
  // Returning false stops; an exception in the callback propagates.
  s.reset();
  int calls = 0;
  CHECK(s.generate("Hi", [&](std::string_view, int32_t) { return ++calls < 2; }, o) == MOE_STOP_CALLBACK);
  CHECK(calls == 2);
  s.reset();
  CHECK_THROWS_AS(s.generate("Hi", [&](std::string_view, int32_t) -> bool { throw std::runtime_error("boom"); }, o),
                  std::runtime_error);
  Session moved = std::move(s);
  moved.reset();
  CHECK(moved.n_past() == 0);
  auto reply = moved.chat({{"user", "Hello"}}, {}, o);
  CHECK(reply == MOE_STOP_N_PREDICT);
  CHECK(moved.stats().last_generated_tokens == 5);
}

TEST_CASE("moe chat runs a scripted conversation from stdin") {
  const std::string model = tiny_model("phi-3");
  const std::string cmd = "printf 'Hello there\\n/stats\\nHow are you?\\n/reset\\nAgain\\n/exit\\nnever read\\n' | " +
                          std::string(MOE_TOOL_PATH) + " chat -m " + model +
                          " -n 6 --temp 0 --system 'Be brief.' 2>&1";
  int status = 0;
  const std::string out = run_cmd(cmd, &status);
  INFO(out);
  CHECK(status == 0);
  // One stats line per reply (three replies), the /stats block, the reset notice.
  size_t lines = 0;
  for (size_t p = out.find("[6 tokens"); p != std::string::npos; p = out.find("[6 tokens", p + 1)) ++lines;
  CHECK(lines == 3);
  CHECK(out.find("stats: context") != std::string::npos);
  CHECK(out.find("stats: prompt") != std::string::npos);
  CHECK(out.find("(conversation reset)") != std::string::npos);
  // The second turn reused the first turn's KV cache.
  CHECK(out.find(" cached at") != std::string::npos);
  CHECK(out.find("+ 0 cached") != std::string::npos);

  // With a RAM budget the per-reply line carries the cache figures; a model without a template
  // gets a one-line notice.
  const std::string cmd2 = "printf 'Hi\\n' | " + std::string(MOE_TOOL_PATH) + " chat -m " + tiny_model("gpt-2") +
                           " -n 4 --ram 300M 2>&1";
  const std::string out2 = run_cmd(cmd2, &status);
  INFO(out2);
  CHECK(status == 0);
  CHECK(out2.find("no chat template") != std::string::npos);
  CHECK(out2.find("hit rate") != std::string::npos);

  // A missing model is an error exit with the file named.
  const std::string out3 =
      run_cmd("printf 'x\\n' | " + std::string(MOE_TOOL_PATH) + " chat -m /nonexistent/m.gguf 2>&1", &status);
  CHECK(status != 0);
  CHECK(out3.find("/nonexistent/m.gguf") != std::string::npos);
}
