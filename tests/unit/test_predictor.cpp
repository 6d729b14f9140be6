// Predictors (prefetch/predictor.h) on crafted routing sequences; no allocation after construction.
// This file replaces the global operator new/delete (malloc/free) to count allocations; GCC's
// -Wmismatched-new-delete cannot see that the replaced pair matches, so it is silenced here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <set>
#include <vector>

#include "moe/prefetch/predictor.h"

// Counts heap allocations of this test binary (to assert that observe/predict never allocate).
static std::atomic<uint64_t> g_allocs{0};
void* operator new(size_t n) {
  ++g_allocs;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

using namespace moe::prefetch;

namespace {

PredictorOptions opts(uint32_t L, uint32_t E, uint32_t k, uint32_t ahead = 1) {
  PredictorOptions o;
  o.n_layer = L;
  o.n_expert = E;
  o.max_k = k;
  o.max_ahead = ahead;
  return o;
}

std::set<uint32_t> top(Predictor& p, uint32_t ahead, uint32_t m) {
  std::vector<Guess> g(m);
  const uint32_t n = p.predict(ahead, g);
  std::set<uint32_t> s;
  for (uint32_t i = 0; i < n; ++i) s.insert(g[i].expert);
  return s;
}

// k distinct random experts out of E.
std::vector<uint16_t> random_set(std::mt19937& rng, uint32_t E, uint32_t k) {
  std::vector<uint16_t> all(E);
  for (uint32_t i = 0; i < E; ++i) all[i] = static_cast<uint16_t>(i);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(k);
  return all;
}

}  // namespace

TEST_CASE("top_scores: best first, ties by lower expert, zeros skipped, both paths agree") {
  std::vector<float> s = {0.1f, 0.5f, 0.0f, 0.5f, 0.9f, 0.2f};
  std::vector<Guess> out(3), scratch(s.size());
  REQUIRE(top_scores(s, out, scratch) == 3);
  CHECK(out[0].expert == 4);
  CHECK(out[1].expert == 1);
  CHECK(out[2].expert == 3);
  // The partial-sort path (more than 32 wanted) gives the same order.
  std::vector<float> big(100, 0.0f);
  std::mt19937 rng(7);
  for (auto& x : big) x = static_cast<float>(rng() % 10) / 10.0f;
  std::vector<Guess> a(40), b(20), sc(100);
  const uint32_t na = top_scores(big, a, sc), nb = top_scores(big, b, sc);
  REQUIRE(nb == 20);
  REQUIRE(na >= 20);
  for (uint32_t i = 0; i < 20; ++i) {
    CHECK(a[i].expert == b[i].expert);
    CHECK(a[i].score == b[i].score);
  }
}

TEST_CASE("top_scores: the dispatched (AVX2) and portable paths equal a sort, bit for bit") {
  // Scores drawn from a small set (many ties), with zeros, negatives, NaN and infinity mixed in.
  std::mt19937 rng(11);
  const float pool[] = {0.0f, -1.0f, 0.25f, 0.5f, 0.75f, 1.0f, 3.0f, std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::quiet_NaN(), 1e-30f, 2.0f, 0.125f};
  for (int iter = 0; iter < 3000; ++iter) {
    const uint32_t size = 1 + rng() % 300, want = 1 + rng() % 40;
    std::vector<float> s(size);
    const bool ties = rng() % 2;
    for (auto& x : s) x = ties ? pool[rng() % std::size(pool)] : std::uniform_real_distribution<float>(-0.2f, 1.0f)(rng);
    std::vector<Guess> ref;
    for (uint32_t e = 0; e < size; ++e)
      if (s[e] > 0.0f) ref.push_back(Guess{e, s[e]});
    // (std::sort with the tie rule, not stable_sort: this binary replaces operator new/delete but not
    // the nothrow new that stable_sort's buffer uses, which ASan reports as a mismatch.)
    std::sort(ref.begin(), ref.end(), [](const Guess& a, const Guess& b) {
      return a.score > b.score || (a.score == b.score && a.expert < b.expert);
    });
    ref.resize(std::min<size_t>(ref.size(), want));
    std::vector<Guess> a(want), b(want), sc(size), sc_small(size / 2);
    const uint32_t na = top_scores(s, a, sc), nb = detail::top_scores_portable(s, b, sc);
    std::vector<Guess> c(want);
    // The windowed path without enough scratch (only for want <= 32: the sort path needs it all).
    const uint32_t nc = want <= 32 ? top_scores(s, c, sc_small) : detail::top_scores_portable(s, c, sc);
    REQUIRE(na == ref.size());
    REQUIRE(nb == ref.size());
    REQUIRE(nc == ref.size());
    for (uint32_t i = 0; i < na; ++i) {
      CHECK(a[i].expert == ref[i].expert);
      CHECK(b[i].expert == ref[i].expert);
      CHECK(c[i].expert == ref[i].expert);
      CHECK(a[i].score == ref[i].score);
    }
  }
}

TEST_CASE("weighted_row_sum equals the scalar row-by-row sum bit for bit") {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> d(-3.0f, 3.0f);
  for (uint32_t n : {1u, 7u, 8u, 31u, 32u, 64u, 100u, 128u, 257u}) {
    for (uint32_t nr : {0u, 1u, 3u, 8u}) {
      std::vector<std::vector<float>> rows(nr, std::vector<float>(n));
      std::vector<const float*> rp(nr);
      std::vector<float> w(nr);
      for (uint32_t i = 0; i < nr; ++i) {
        for (auto& x : rows[i]) x = d(rng);
        rp[i] = rows[i].data();
        w[i] = d(rng);
      }
      std::vector<float> out(n, -7.0f);
      detail::weighted_row_sum(out.data(), rp.data(), w.data(), nr, n);
      for (uint32_t e = 0; e < n; ++e) {
        float a = 0.0f;
        for (uint32_t i = 0; i < nr; ++i) a += rows[i][e] * w[i];
        CHECK(std::memcmp(&a, &out[e], sizeof a) == 0);
      }
    }
  }
}

TEST_CASE("transition learns a deterministic layer-to-layer mapping: recall ~1 at depth 1 and 2") {
  const uint32_t L = 4, E = 16, K = 2;
  auto f = [](uint32_t e) { return static_cast<uint16_t>((e * 5 + 3) % 16); };  // a bijection
  auto p = make_transition_predictor(opts(L, E, K, 2));
  std::mt19937 rng(1);
  uint64_t hit1 = 0, tot1 = 0, hit2 = 0, tot2 = 0;
  for (uint32_t t = 0; t < 400; ++t) {
    std::vector<std::vector<uint16_t>> layers(L);
    layers[0] = random_set(rng, E, K);
    for (uint32_t l = 1; l < L; ++l)
      for (uint16_t e : layers[l - 1]) layers[l].push_back(f(e));
    for (uint32_t l = 0; l < L; ++l) {
      p->observe(l, layers[l]);
      if (t >= 200 && l + 1 < L) {
        const auto g = top(*p, 1, K);
        for (uint16_t e : layers[l + 1]) hit1 += g.count(e), ++tot1;
      }
      if (t >= 200 && l + 2 < L) {
        const auto g = top(*p, 2, K);
        for (uint16_t e : layers[l + 2]) hit2 += g.count(e), ++tot2;
      }
    }
  }
  REQUIRE(tot1 > 0);
  CHECK(static_cast<double>(hit1) / tot1 >= 0.99);
  CHECK(static_cast<double>(hit2) / tot2 >= 0.99);
}

TEST_CASE("popularity picks the most frequent experts of the target layer") {
  const uint32_t L = 2, E = 8;
  auto p = make_popularity_predictor(opts(L, E, 2));
  std::mt19937 rng(3);
  for (uint32_t t = 0; t < 1000; ++t) {
    p->observe(0, std::vector<uint16_t>{static_cast<uint16_t>(rng() % E)});
    std::vector<uint16_t> l1;
    const uint32_t r = rng() % 100;
    if (r < 90) l1.push_back(3);
    if (r < 60 || r >= 95) l1.push_back(7);
    if (l1.size() < 2) l1.push_back(static_cast<uint16_t>(r % 3));  // 0..2, rare each
    p->observe(1, l1);
  }
  p->observe(0, std::vector<uint16_t>{1});
  std::vector<Guess> g(2);
  REQUIRE(p->predict(1, g) == 2);
  CHECK(g[0].expert == 3);
  CHECK(g[1].expert == 7);
  CHECK(g[0].score == doctest::Approx(0.9).epsilon(0.05));
  CHECK(g[0].score <= 1.0f);
  CHECK(g[1].score < g[0].score);
}

TEST_CASE("history matches a repeated request") {
  const uint32_t L = 4, E = 16;
  auto o = opts(L, E, 2);
  auto p = make_history_predictor(o);
  // Request r routes layer l to {pat(r, l), pat(r, l) + 1}; requests 0 and 1 are disjoint.
  auto pat = [](uint32_t r, uint32_t l) -> std::vector<uint16_t> {
    const uint16_t b = static_cast<uint16_t>(r == 1 ? 8 + 2 * l % 8 : 2 * l);
    return {b, static_cast<uint16_t>(b + 1)};
  };
  auto run_request = [&](uint32_t id, uint32_t r, uint32_t tokens) {
    p->begin_request(id);
    for (uint32_t t = 0; t < tokens; ++t)
      for (uint32_t l = 0; l < L; ++l) p->observe(l, pat(r, l));
  };
  run_request(0, 0, 10);
  run_request(1, 1, 10);
  // Request 2 repeats request 0: after its first layer, the stored request 0 predicts the rest.
  p->begin_request(2);
  p->observe(0, pat(0, 0));
  for (uint32_t ahead = 1; ahead < L; ++ahead) {
    const auto g = top(*p, ahead, 2);
    const auto want = pat(0, ahead);
    CHECK(g == std::set<uint32_t>(want.begin(), want.end()));
  }
  // And a repeat of request 1 is matched to request 1.
  p->begin_request(3);
  p->observe(0, pat(1, 0));
  const auto g = top(*p, 2, 2);
  const auto want = pat(1, 2);
  CHECK(g == std::set<uint32_t>(want.begin(), want.end()));
}

TEST_CASE("oracle is exact at every depth; recorded replays its column one layer ahead") {
  const uint32_t L = 3;
  // 2 tokens x 3 layers; the middle layer is dense.
  std::vector<uint64_t> off = {0, 2, 2, 3, 5, 5, 6};
  std::vector<uint16_t> ids = {1, 4, 0, 2, 3, 5};
  auto o = opts(L, 8, 2, 2);
  o.future = EventView{L, off, ids};
  o.recorded = EventView{L, off, ids};
  auto oracle = make_oracle_predictor(o);
  auto rec = make_recorded_predictor(o);
  std::vector<Guess> g(8);
  oracle->observe(0, std::vector<uint16_t>{1, 4});
  rec->observe(0, std::vector<uint16_t>{1, 4});
  CHECK(oracle->predict(1, g) == 0);  // the dense layer
  REQUIRE(oracle->predict(2, g) == 1);
  CHECK(g[0].expert == 0);
  CHECK(g[0].score == 1.0f);
  CHECK(rec->predict(2, g) == 0);  // recorded answers one layer ahead only
  oracle->observe(1, {});
  oracle->observe(2, std::vector<uint16_t>{0});
  REQUIRE(oracle->predict(1, g) == 2);  // wraps into token 1
  CHECK(top(*oracle, 1, 8) == std::set<uint32_t>{2, 3});
  CHECK(top(*oracle, 2, 8).empty());
  oracle->observe(0, std::vector<uint16_t>{2, 3});
  oracle->observe(1, {});
  CHECK(top(*oracle, 1, 8) == std::set<uint32_t>{5});
  oracle->observe(2, std::vector<uint16_t>{5});
  CHECK(oracle->predict(1, g) == 0);  // past the end of the trace
}

TEST_CASE("combined predictor: union with the maximum score; factory names and errors") {
  const uint32_t L = 2;
  std::vector<uint64_t> off = {0, 1, 2, 3, 4};
  std::vector<uint16_t> ids = {0, 5, 1, 6};
  auto o = opts(L, 8, 1);
  o.future = EventView{L, off, ids};
  std::string err;
  auto p = make_predictor("oracle,popularity", o, &err);
  REQUIRE(p);
  CHECK(err.empty());
  CHECK(std::string(p->name()) == "oracle,popularity");
  p->observe(0, std::vector<uint16_t>{0});
  p->observe(1, std::vector<uint16_t>{5});
  p->observe(0, std::vector<uint16_t>{1});
  std::vector<Guess> g(4);
  const uint32_t n = p->predict(1, g);
  REQUIRE(n == 2);
  // The oracle's guess (6) and popularity's (5: chosen at layer 1 in every token so far), both
  // scoring 1; equal scores come lower expert first.
  CHECK(g[0].expert == 5);
  CHECK(g[1].expert == 6);
  CHECK(g[0].score == 1.0f);
  CHECK(g[1].score == 1.0f);

  CHECK(make_predictor("none", o, &err) == nullptr);
  CHECK(err.empty());
  CHECK(make_predictor("", o, &err) == nullptr);
  CHECK(err.empty());
  CHECK(make_predictor("transition,bogus", o, &err) == nullptr);
  CHECK(err.find("bogus") != std::string::npos);
  auto o2 = opts(L, 8, 1);
  CHECK(make_predictor("oracle", o2, &err) == nullptr);
  CHECK(err.find("oracle") != std::string::npos);
  CHECK(make_predictor("recorded", o2, &err) == nullptr);
  CHECK(!err.empty());
  o2.max_ahead = 2;  // >= n_layer
  CHECK(make_predictor("transition", o2, &err) == nullptr);
  CHECK(err.find("depth") != std::string::npos);
}

TEST_CASE("observe and predict never allocate after construction") {
  const uint32_t L = 8, E = 32, K = 4;
  std::vector<uint64_t> off(L * 50 + 1);
  std::vector<uint16_t> ids;
  std::mt19937 rng(5);
  std::vector<std::vector<uint16_t>> ev;
  for (uint32_t i = 0; i < L * 50; ++i) {
    ev.push_back(random_set(rng, E, K));
    ids.insert(ids.end(), ev.back().begin(), ev.back().end());
    off[i + 1] = ids.size();
  }
  auto o = opts(L, E, K, 3);
  o.future = EventView{L, off, ids};
  o.recorded = EventView{L, off, ids};
  o.history_capacity = 4;
  std::string err;
  auto p = make_predictor("transition,popularity,history,oracle,recorded", o, &err);
  REQUIRE(p);
  std::vector<Guess> g(E);
  const uint64_t before = g_allocs.load();
  for (uint32_t i = 0; i < ev.size(); ++i) {
    if (i % (L * 10) == 0) p->begin_request(i);
    p->observe(i % L, ev[i]);
    for (uint32_t a = 1; a <= 3; ++a) p->predict(a, std::span<Guess>(g.data(), a * 4));
  }
  CHECK(g_allocs.load() == before);
}
