// Trace format, synthetic generator and converters.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "moe/error.h"
#include "moe/trace.h"

using namespace moe;
using namespace moe::trace;

namespace {
std::string tmp(const std::string& n) { return std::string(MOE_TEST_TMP) + "/" + n; }
std::vector<uint8_t> slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
}  // namespace

TEST_CASE("builder, write and read round trip with predictors and weights") {
  TraceBuilder b(3, 8, true, {"pregated", "oracle"});
  b.set_source("unit");
  b.set_expert_bytes(12345);
  for (uint32_t t = 0; t < 5; ++t) {
    b.begin_token(t / 3, t == 0 ? 0 : 1);
    for (uint32_t l = 0; l < 3; ++l) {
      std::vector<uint16_t> e = {static_cast<uint16_t>((t + l) % 8), static_cast<uint16_t>((t * 3 + l + 1) % 8)};
      if (l == 1) e.clear();  // a dense layer
      std::vector<float> w(e.size(), 0.5f);
      std::vector<std::vector<uint16_t>> g = {{static_cast<uint16_t>(l)}, e};
      b.add_layer(e, w, g);
    }
  }
  Trace t = b.finish();
  CHECK(t.n_tokens() == 5);
  CHECK(t.n_events() == 15);
  CHECK(t.max_k == 2);
  write(t, tmp("rt.moetrace"));
  Trace r = read(tmp("rt.moetrace"));
  CHECK(r.source == "unit");
  CHECK(r.expert_bytes == 12345);
  CHECK(r.predictors == std::vector<std::string>{"pregated", "oracle"});
  CHECK(r.request == t.request);
  CHECK(r.phase == t.phase);
  CHECK(r.ids == t.ids);
  CHECK(r.off == t.off);
  CHECK(r.weights == t.weights);
  CHECK(r.pred_ids == t.pred_ids);
  CHECK(r.experts(1, 1).empty());
  CHECK(r.guesses(0, 4, 2).size() == 1);
  CHECK(r.guesses(1, 4, 2)[0] == r.experts(4, 2)[0]);
}

TEST_CASE("corrupt traces are rejected clearly, at every truncation") {
  Trace t = synthesize({.n_layer = 4, .n_expert = 16, .k = 2, .n_tokens = 20, .seed = 3});
  write(t, tmp("c.moetrace"));
  auto good = slurp(tmp("c.moetrace"));
  read_memory(good, "good");
  for (size_t n = 0; n < good.size(); n += 7) {
    std::vector<uint8_t> b(good.begin(), good.begin() + static_cast<long>(n));
    CHECK_THROWS_AS(read_memory(b, "cut"), Error);
  }
  auto b = good;
  b[0] = 'X';
  CHECK_THROWS_WITH_AS(read_memory(b, "bad"), doctest::Contains("bad magic"), Error);
  b = good;
  uint64_t huge = 1ull << 60;
  std::memcpy(b.data() + 32, &huge, 8);
  CHECK_THROWS_WITH_AS(read_memory(b, "bad"), doctest::Contains("cannot fit"), Error);
  b = good;
  uint16_t bad_id = 999;
  size_t first_id = 64 + t.source.size() + 5 + 1;
  std::memcpy(b.data() + first_id, &bad_id, 2);
  CHECK_THROWS_WITH_AS(read_memory(b, "bad"), doctest::Contains(">= n_expert"), Error);
  b = good;
  b.push_back(0);
  CHECK_THROWS_WITH_AS(read_memory(b, "bad"), doctest::Contains("unexpected bytes"), Error);
}

TEST_CASE("synthetic traces follow their statistics") {
  SynthOptions o{.n_layer = 8, .n_expert = 32, .k = 4, .n_tokens = 4000, .skew = 1.2, .repeat_prob = 0.0,
                 .layer_corr = 0.0, .seed = 7};
  Trace t = synthesize(o);
  CHECK(t.n_tokens() == 4000);
  std::vector<uint64_t> count(32);
  for (uint64_t tok = 0; tok < t.n_tokens(); ++tok) {
    auto e = t.experts(tok, 0);
    REQUIRE(e.size() == 4);
    std::set<uint16_t> s(e.begin(), e.end());
    CHECK(s.size() == 4);  // distinct
    for (auto x : e) ++count[x];
    float ws = 0;
    for (float w : t.expert_weights(tok, 0)) ws += w;
    CHECK(ws == doctest::Approx(1.0).epsilon(1e-4));
  }
  std::sort(count.begin(), count.end());
  CHECK(count.back() > 4 * count.front());  // skewed
  Trace u = synthesize({.n_layer = 8, .n_expert = 32, .k = 4, .n_tokens = 4000, .skew = 0.0, .repeat_prob = 0.0,
                        .layer_corr = 0.0, .seed = 7});
  std::vector<uint64_t> uc(32);
  for (uint64_t tok = 0; tok < u.n_tokens(); ++tok)
    for (auto x : u.experts(tok, 3)) ++uc[x];
  std::sort(uc.begin(), uc.end());
  CHECK(uc.back() < 1.5 * uc.front());  // uniform
  // Repeat probability shows up as overlap between consecutive tokens.
  auto overlap = [](const Trace& tr) {
    double same = 0, all = 0;
    for (uint64_t tok = 1; tok < tr.n_tokens(); ++tok)
      for (uint32_t l = 0; l < tr.n_layer; ++l) {
        auto a = tr.experts(tok - 1, l), b = tr.experts(tok, l);
        for (auto x : b) same += std::find(a.begin(), a.end(), x) != a.end();
        all += b.size();
      }
    return same / all;
  };
  o.skew = 0;
  double base = overlap(synthesize(o));
  o.repeat_prob = 0.6;
  double rep = overlap(synthesize(o));
  CHECK(rep > base + 0.3);
  // Determinism.
  CHECK(synthesize(o).ids == synthesize(o).ids);
}

TEST_CASE("JSONL routing logs convert") {
  {
    std::ofstream f(tmp("r.jsonl"));
    f << R"({"token": 0, "layer": 0, "experts": [1, 2], "probs": [0.6, 0.4]})" << "\n";
    f << R"({"token": 0, "layer": 2, "experts": [3, 0], "probs": [0.5, 0.5]})" << "\n";
    f << "\n";
    f << R"({"token": 1, "layer": 0, "experts": [7, 2], "probs": [0.9, 0.1], "request": 4})" << "\n";
  }
  Trace t = from_jsonl(tmp("r.jsonl"));
  CHECK(t.n_layer == 3);
  CHECK(t.n_expert == 8);
  CHECK(t.n_tokens() == 2);
  CHECK(t.experts(0, 1).empty());
  CHECK(t.experts(1, 0)[0] == 7);
  CHECK(t.expert_weights(0, 0)[0] == doctest::Approx(0.6));
  CHECK(t.request[1] == 4);
  {
    std::ofstream f(tmp("bad.jsonl"));
    f << R"({"token": 0, "layer": 0, "experts": [1, -2]})" << "\n";
  }
  CHECK_THROWS_WITH_AS(from_jsonl(tmp("bad.jsonl")), doctest::Contains("bad.jsonl:1"), Error);
}

TEST_CASE("Mixtral popularity matrices convert with their skew") {
  std::string dir = std::string(MOE_SHARED_DATA) + "/routing/mixtral-8x7b-instruct";
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".json") continue;
    ++files;
    Trace t = from_popularity(e.path().string(), {.n_tokens = 3000, .repeat_prob = 0, .layer_corr = 0, .seed = 1}, 2);
    CHECK_THROWS_AS(from_popularity(e.path().string(), {}, 0), Error);
    CHECK(t.n_layer == 32);
    CHECK(t.n_expert == 8);
    CHECK(t.max_k == 2);  // Mixtral routes each token to 2 experts
  }
  CHECK(files == 7);
}
