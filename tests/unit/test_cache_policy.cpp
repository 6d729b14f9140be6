// Eviction policies: exact victim orders on crafted sequences (LRU, LFU with and without decay,
// LFRU, ARC, static hot set), Belady against a brute-force optimum and against every other policy,
// the factory, and a 1M-access run through the simulator path.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <functional>
#include <random>

#include "moe/cache/profile.h"
#include "test_cache_util.h"

using namespace cache_test;

namespace {

// Replays demand accesses of layer-0 experts; returns the evicted experts in order.
std::vector<uint32_t> victims(ResidencyManager& m, const std::vector<uint32_t>& seq,
                              std::vector<bool>* hits = nullptr) {
  std::vector<uint32_t> ev;
  for (uint32_t e : seq) {
    const bool h = access(m, K(e), &ev);
    if (hits) hits->push_back(h);
  }
  check_ok(m);
  return ev;
}

using V = std::vector<uint32_t>;

}  // namespace

TEST_CASE("EvictionOrder: LRU") {
  auto m = make("lru", 3);
  // 1 2 3 | hit 1 | 4 evicts 2 | 5 evicts 3 | hit 4 | 6 evicts 1 | 2 evicts 5
  CHECK(victims(*m, {1, 2, 3, 1, 4, 5, 4, 6, 2}) == V{2, 3, 1, 5});
}

TEST_CASE("EvictionOrder: LFU without decay is frequency, then recency") {
  PolicyParams p;
  p.lfu_half_life = 1e12;  // effectively no decay
  auto m = make("lfu", 3, 1, 64, Scope::Global, p);
  // counts: 1 -> 4, 2 -> 2, 3 -> 1; 4 evicts 3; 4 reaches 3; 5 evicts 2 (2 < 3 < 4);
  // 6 evicts 5 (1 use); 7 evicts 6 (1 use)
  CHECK(victims(*m, {1, 1, 1, 1, 2, 2, 3, 4, 4, 4, 5, 6, 7}) == V{3, 2, 5, 6});
  // Ties are broken by least recent access.
  auto t = make("lfu", 3, 1, 64, Scope::Global, p);
  CHECK(victims(*t, {1, 2, 3, 2, 1, 4}) == V{3});       // 3 is the only single-use entry
  CHECK(victims(*t, {9}) == V{4});                      // 4 has 1 use, 1 and 2 have 2
  CHECK(victims(*t, {2, 1, 8}) == V{9});
  auto r = make("lfu", 3, 1, 64, Scope::Global, p);
  CHECK(victims(*r, {1, 2, 3, 4, 5}) == V{1, 2});  // all once: least recent first
}

TEST_CASE("EvictionOrder: LFU decay lets recent use beat old frequency") {
  // A was used 6 times long ago, B twice just now. Without decay A stays; with a half-life of one
  // access A's old weight (2+4+..+64 = 126) is below B's (128+256) and A goes.
  const V seq = {0, 0, 0, 0, 0, 0, 1, 1, 2};
  PolicyParams slow;
  slow.lfu_half_life = 1e12;
  auto m = make("lfu", 2, 1, 64, Scope::Global, slow);
  CHECK(victims(*m, seq) == V{1});
  PolicyParams fast;
  fast.lfu_half_life = 1.0;
  auto d = make("lfu", 2, 1, 64, Scope::Global, fast);
  CHECK(victims(*d, seq) == V{0});
  // Long runs renormalise the weights without changing the order.
  auto r = make("lfu", 2, 1, 64, Scope::Global, fast);
  std::vector<uint32_t> long_seq;
  for (int i = 0; i < 3000; ++i) long_seq.push_back(i % 2);
  victims(*r, long_seq);
  CHECK(victims(*r, {0, 5}) == V{1});
}

TEST_CASE("EvictionOrder: LFRU protects the re-used from one-shot scans") {
  PolicyParams p;
  p.lfu_half_life = 1e12;
  p.lfru_protected_fraction = 0.5;  // 2 of 4 slots protected
  auto m = make("lfru", 4, 1, 64, Scope::Global, p);
  // 1 and 2 are re-used (promoted); then a scan 10..15 of one-shot experts only cycles probation.
  std::vector<bool> hits;
  const V ev = victims(*m, {1, 2, 1, 2, 10, 11, 12, 13, 14, 15, 1, 2}, &hits);
  CHECK(ev == V{10, 11, 12, 13});
  CHECK(hits.back());
  CHECK(hits[hits.size() - 2]);
  // LRU on the same sequence loses both.
  auto l = make("lru", 4);
  std::vector<bool> lh;
  victims(*l, {1, 2, 1, 2, 10, 11, 12, 13, 14, 15, 1, 2}, &lh);
  CHECK(!lh.back());
  // Protected overflow demotes the coldest protected entry to the MRU end of probation: when 4
  // (2 uses) is promoted next to 1 (3 uses) and 3 (2 uses, older), 3 is demoted. Probation is then
  // [3, 5]: 6 evicts 3, 7 evicts 5; 1 and 4 stay.
  auto o = make("lfru", 4, 1, 64, Scope::Global, p);
  CHECK(victims(*o, {1, 1, 1, 3, 3, 4, 4, 5, 6, 7}) == V{3, 5});
  CHECK(o->Peek(K(1)) == EntryState::Resident);
  CHECK(o->Peek(K(4)) == EntryState::Resident);
}

TEST_CASE("EvictionOrder: ARC (Megiddo & Modha) with ghosts") {
  auto m = make("arc", 2);
  // Traced by hand (T1/T2 resident, B1/B2 ghosts, p the T1 target):
  //  A        T1=[A]
  //  A        T2=[A]                       (second use)
  //  B        T1=[B]
  //  C        evict B (|T1|=1 > p=0) -> B1=[B]; T1=[C]
  //  D        evict C -> B1=[B,C] trimmed to [C] (|T1|+|B1| <= c); T1=[D]
  //  B        evict D -> B1=[C,D] trimmed to [D]; T1=[B]
  //  D        ghost hit in B1: p=1; |T1|=1 is not > 1 -> evict A from T2 -> B2=[A]; T2=[D]
  //  A        ghost hit in B2: p=0; evict B from T1 -> B1=[B]; T2=[D,A]
  //  C        new: T1 empty -> evict D (LRU of T2) -> B2=[D]; T1=[C]
  std::vector<bool> hits;
  CHECK(victims(*m, {0, 0, 1, 2, 3, 1, 3, 0, 2}, &hits) == V{1, 2, 3, 0, 1, 3});
  CHECK(hits == std::vector<bool>{false, true, false, false, false, false, false, false, false});
  // LRU keeps the frequent A less well: it evicts A first.
  auto l = make("lru", 2);
  CHECK(victims(*l, {0, 0, 1, 2}) == V{0});
}

TEST_CASE("EvictionOrder: ARC skips pinned entries at the LRU end") {
  auto m = make("arc", 3);
  victims(*m, {1, 2, 3});  // T1 = [1, 2, 3]
  Handle h = m->Lookup(K(1));  // a hit: 1 moves to T2, and is pinned
  Handle h2 = m->Lookup(K(2)); // 2 moves to T2, pinned
  // T1 = [3], T2 = [1, 2]: p = 0, |T1| = 1 > 0 -> 3 goes.
  Reservation r = m->Insert(K(4), FetchKind::Demand);
  CHECK(r.evicted == K(3));
  // T1 = [4], T2 = [1, 2] pinned. Next: T1's 4 goes (from T1 by the rule).
  r = m->Insert(K(5), FetchKind::Demand);
  CHECK(r.evicted == K(4));
  // Pin 5 too: nothing is evictable any more.
  Handle h5 = m->Lookup(K(5));
  CHECK(m->Insert(K(6), FetchKind::Demand).status == ReserveStatus::NoSlot);
  h2.release();  // T1 is empty; in T2 the pinned 1 is skipped and 2 goes
  r = m->Insert(K(6), FetchKind::Demand);
  CHECK(r.evicted == K(2));
  check_ok(*m);
}

TEST_CASE("StaticHotSet keeps the profile's top experts") {
  auto prof = std::make_shared<UsageProfile>();
  prof->resize(1, 16);
  prof->counts[0][3] = 100;
  prof->counts[0][7] = 90;
  prof->counts[0][1] = 80;
  prof->counts[0][0] = 5;
  PolicyParams p;
  p.profile = prof;
  p.static_hot_slots = 2;  // hot = {3, 7}; 2 more slots run LRU
  auto m = make("static", 4, 1, 16, Scope::Global, p);
  victims(*m, {3, 7});
  // Cold experts churn through the two LRU slots; 3 and 7 never leave.
  const V ev = victims(*m, {1, 2, 4, 5, 6, 1, 2});
  CHECK(ev == V{1, 2, 4, 5, 6});
  CHECK(m->Peek(K(3)) == EntryState::Resident);
  CHECK(m->Peek(K(7)) == EntryState::Resident);
  // A prefetched-unused hot expert is not evicted by the prefetched-unused-first rule either.
  auto q = make("static", 4, 1, 16, Scope::Global, p);
  q->Insert(K(3), FetchKind::Prefetch);
  victims(*q, {7, 10, 11});
  CHECK(victims(*q, {12}) == V{10});
  CHECK(q->Peek(K(3)) == EntryState::Resident);
  // Per-layer scope: each layer's hot set is taken from its own counts.
  auto prof2 = std::make_shared<UsageProfile>();
  prof2->resize(2, 8);
  prof2->counts[0][5] = 10;
  prof2->counts[1][2] = 10;
  PolicyParams p2;
  p2.profile = prof2;
  auto lay = make("static", 8, 2, 8, Scope::Layer, p2);  // 4 slots per layer, 3 hot (only 1 counted)
  victims(*lay, {5});
  for (uint32_t e = 0; e < 8; ++e) access(*lay, K(e, 0));
  CHECK(lay->Peek(K(5, 0)) == EntryState::Resident);
  check_ok(*lay);
}

TEST_CASE("Policy factory") {
  for (auto name : policy_names()) CHECK(!name.empty());
  CHECK(policy_names().size() == 6);
  CacheStatus st;
  CHECK(make_policy("lru", {}, &st));
  CHECK(make_policy("lfu", {}, &st));
  CHECK(make_policy("lfru", {}, &st));
  CHECK(make_policy("arc", {}, &st));
  CHECK(!make_policy("static", {}, &st));
  CHECK(st.code == CacheCode::InvalidArgument);
  CHECK(st.message.find("profile") != std::string::npos);
  CHECK(!make_policy("belady", {}, &st));
  CHECK(st.message.find("future") != std::string::npos);
  CHECK(!make_policy("LRU", {}, &st));
  CHECK(st.code == CacheCode::NotFound);
  CHECK(st.message.find("known: lru, lfu, lfru, arc, static, belady") != std::string::npos);
  PolicyParams bad;
  bad.lfu_half_life = 0;
  CHECK(!make_policy("lfu", bad, &st));
  bad = {};
  bad.lfru_protected_fraction = 1.5;
  CHECK(!make_policy("lfru", bad, &st));
  PolicyParams ok;
  ok.profile = std::make_shared<UsageProfile>();
  ok.next_use = [](ExpertKey) { return uint64_t{0}; };
  auto s = make_policy("static", ok, &st);
  REQUIRE(s);
  CHECK(std::string(s->name()) == "static");
  CHECK(make_policy("belady", ok, &st));
  CHECK(st.ok());
}

namespace {

// The most hits any demand-paging replacement achieves (exhaustive over victim choices).
int brute_force_hits(const std::vector<uint32_t>& seq, size_t i, uint32_t mask, int cap) {
  if (i == seq.size()) return 0;
  const uint32_t bit = 1u << seq[i];
  if (mask & bit) return 1 + brute_force_hits(seq, i + 1, mask, cap);
  if (__builtin_popcount(mask) < cap) return brute_force_hits(seq, i + 1, mask | bit, cap);
  int best = 0;
  for (uint32_t v = 0; v < 32; ++v)
    if (mask & (1u << v)) best = std::max(best, brute_force_hits(seq, i + 1, (mask & ~(1u << v)) | bit, cap));
  return best;
}

// Hits of `policy` on a demand sequence (layer-0 experts), Belady fed by an AccessFuture.
int policy_hits(const std::string& policy, const std::vector<uint32_t>& seq, uint32_t cap,
                uint32_t n_expert) {
  std::vector<ExpertKey> keys;
  for (uint32_t e : seq) keys.push_back(K(e));
  AccessFuture fut(keys, 1, n_expert);
  PolicyParams p;
  p.next_use = fut.oracle();
  auto prof = std::make_shared<UsageProfile>();
  for (uint32_t e : seq) prof->add(K(e));
  p.profile = prof;
  auto m = make(policy, cap, 1, n_expert, Scope::Global, p);
  int hits = 0;
  for (uint32_t e : seq) {
    fut.advance();
    hits += access(*m, K(e)) ? 1 : 0;
  }
  check_ok(*m);
  return hits;
}

}  // namespace

TEST_CASE("AccessFuture answers next uses") {
  AccessFuture f({K(1), K(2), K(1), K(3, 1)}, 2, 4);
  CHECK(f.next_use(K(1)) == 0);
  CHECK(f.next_use(K(3, 1)) == 3);
  CHECK(f.next_use(K(0)) == UINT64_MAX);
  f.advance();  // consumed access 0 (key 1)
  CHECK(f.next_use(K(1)) == 2);
  f.advance();
  CHECK(f.next_use(K(2)) == UINT64_MAX);
  f.advance();
  CHECK(f.next_use(K(1)) == UINT64_MAX);
  CHECK(f.position() == 3);
  CHECK(f.next_use(ExpertKey{9, 9}) == UINT64_MAX);
}

TEST_CASE("Belady is optimal on tiny cases (brute force)") {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    const uint32_t n_keys = 3 + rng() % 3;      // 3..5 experts
    const uint32_t cap = 1 + rng() % 3;         // 1..3 slots
    const size_t len = 4 + rng() % 9;           // 4..12 accesses
    std::vector<uint32_t> seq(len);
    for (auto& e : seq) e = rng() % n_keys;
    CAPTURE(trial);
    CHECK(policy_hits("belady", seq, cap, 8) == brute_force_hits(seq, 0, 0, static_cast<int>(cap)));
  }
}

TEST_CASE("Belady hits >= every other policy on random sequences") {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 40; ++trial) {
    const uint32_t n_keys = 8 + rng() % 24;
    const uint32_t cap = 2 + rng() % 8;
    std::vector<uint32_t> seq(500);
    // Skewed (Zipf-like) draws so the policies differ.
    std::vector<double> w(n_keys);
    for (uint32_t i = 0; i < n_keys; ++i) w[i] = 1.0 / (1.0 + i);
    std::discrete_distribution<uint32_t> zipf(w.begin(), w.end());
    for (auto& e : seq) e = zipf(rng);
    const int opt = policy_hits("belady", seq, cap, 32);
    for (const char* pol : {"lru", "lfu", "lfru", "arc", "static"}) {
      CAPTURE(pol);
      CAPTURE(trial);
      CHECK(policy_hits(pol, seq, cap, 32) <= opt);
    }
  }
}

TEST_CASE("Throughput: 1M accesses through the simulator path") {
  // 48 layers x 64 experts, top-8 routing with skew, 1024 slots (a third of the experts). The
  // simulator's loop: per (token, layer) event one batched Touch of the k experts, then an Insert
  // per miss. Not a timed assertion: it prints the rate, and the run must merely finish.
  const uint32_t n_layer = 48, n_expert = 64, top_k = 8;
  std::mt19937 rng(7);
  std::vector<ExpertKey> seq;
  seq.reserve(1'000'000);
  while (seq.size() < 1'000'000 - n_layer * top_k) {
    for (uint32_t l = 0; l < n_layer; ++l) {
      for (uint32_t j = 0; j < top_k; ++j) {
        uint32_t e = rng() % n_expert;
        if (rng() % 4 != 0) e %= 16;  // three quarters of the picks from 16 popular experts
        seq.push_back(ExpertKey{l, e});
      }
    }
  }
  for (const char* pol : {"lru", "lfu", "lfru", "arc", "belady"}) {
    AccessFuture fut(seq, n_layer, n_expert);
    PolicyParams p;
    p.next_use = fut.oracle();
    auto m = make(pol, 1024, n_layer, n_expert, Scope::Global, p);
    const std::clock_t c0 = std::clock();  // CPU time: the machine running the tests may be loaded
    uint64_t hits = 0;
    EntryState st[top_k];
    for (size_t i = 0; i < seq.size(); i += top_k) {
      if (std::string_view(pol) == "belady") {
        // Belady needs the oracle positioned at each access: one access at a time.
        for (uint32_t j = 0; j < top_k; ++j) {
          fut.advance();
          st[j] = m->Touch(seq[i + j]);
          if (st[j] == EntryState::Absent) m->Insert(seq[i + j], FetchKind::Demand);
        }
      } else {
        m->Touch(&seq[i], top_k, st);
        for (uint32_t j = 0; j < top_k; ++j)
          if (st[j] == EntryState::Absent) m->Insert(seq[i + j], FetchKind::Demand);
      }
      for (uint32_t j = 0; j < top_k; ++j) hits += st[j] != EntryState::Absent;
    }
    const double s = std::max(1e-9, static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC);
    const LayerStats t = m->stats().total();
    CHECK(t.hits == hits);
    CHECK(t.lookups() == seq.size());
    const std::string name = pol;
    MESSAGE(name << ": " << seq.size() << " accesses in " << s << " CPU s (" << seq.size() / s / 1e6
                 << " M accesses/s, " << seq.size() / top_k / s / 1e6 << " M token-layer events/s), hit rate "
                 << t.hit_rate());
    check_ok(*m);
  }
}
