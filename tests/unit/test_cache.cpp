// Residency manager: the leveldb-style specification (hit and miss, pins, heavy entries, zero size)
// plus the MoE cases (in flight never evicted, prefetched-unused evicted first, all pinned fails,
// per-layer quotas, aborted fetches under a pin) and exact statistics.
#include <algorithm>
#include <set>
#include <unordered_set>

#include "test_cache_util.h"

using namespace cache_test;

TEST_CASE("ExpertKey packs, orders and hashes") {
  const ExpertKey k{7, 300};
  CHECK(k.pack() == ((uint64_t{7} << 32) | 300));
  CHECK(ExpertKey::unpack(k.pack()) == k);
  CHECK(ExpertKey{1, 9} < ExpertKey{2, 0});
  std::unordered_set<ExpertKey> s;
  for (uint32_t l = 0; l < 16; ++l)
    for (uint32_t e = 0; e < 16; ++e) s.insert(ExpertKey{l, e});
  CHECK(s.size() == 256);
  CHECK(s.count(ExpertKey{3, 4}) == 1);
}

TEST_CASE("HitAndMiss") {
  auto m = make("lru", 4);
  CHECK(!m->Lookup(K(1)));
  CHECK(m->Peek(K(1)) == EntryState::Absent);

  Reservation r = m->Insert(K(1), FetchKind::Demand);
  REQUIRE(r.status == ReserveStatus::Reserved);
  CHECK(!r.evicted_valid);
  CHECK(!r.handle);
  {
    Handle h = m->Lookup(K(1));
    REQUIRE(h);
    CHECK(h.key() == K(1));
    CHECK(h.slot() == r.slot);
    CHECK(h.state_at_lookup() == EntryState::Resident);
    CHECK(m->state(h) == EntryState::Resident);
  }
  CHECK(!m->Lookup(K(2)));
  CHECK(m->Peek(K(1)) == EntryState::Resident);

  // Inserting a present key changes nothing.
  Reservation again = m->Insert(K(1), FetchKind::Demand);
  CHECK(again.status == ReserveStatus::AlreadyPresent);
  CHECK(again.slot == r.slot);

  // Out-of-range keys are a status, never a crash.
  CHECK(!m->Lookup(ExpertKey{0, 64}));
  CHECK(!m->Lookup(ExpertKey{1, 0}));
  CHECK(m->Insert(ExpertKey{5, 5}, FetchKind::Demand).status == ReserveStatus::InvalidKey);
  CHECK(!m->CompleteFetch(ExpertKey{9, 9}));
  CHECK(!m->AbortFetch(ExpertKey{9, 9}));

  const LayerStats t = m->stats().total();
  CHECK(t.hits == 1);
  CHECK(t.misses == 2);  // Peek does not count
  CHECK(t.inserts == 1);
  check_ok(*m);
}

TEST_CASE("EntriesArePinned") {
  auto m = make("lru", 2);
  m->Insert(K(1), FetchKind::Demand);
  Handle h1 = m->Lookup(K(1));
  REQUIRE(h1);
  const uint32_t slot1 = h1.slot();
  // Heavy pressure: every insert must evict the other slot, never the pinned one.
  for (uint32_t e = 2; e < 40; ++e) {
    Reservation r = m->Insert(K(e), FetchKind::Demand);
    REQUIRE(r.status == ReserveStatus::Reserved);
    CHECK(r.slot != slot1);
    if (r.evicted_valid) CHECK(r.evicted != K(1));
    ExpertKey k;
    CHECK(m->slot_state(slot1, &k) == EntryState::Resident);
    CHECK(k == K(1));
  }
  // Two pins on one entry: it stays pinned until both are released.
  Handle h1b = m->Lookup(K(1));
  h1.release();
  CHECK(!h1);
  m->Insert(K(100 % 64), FetchKind::Demand);
  CHECK(m->Peek(K(1)) == EntryState::Resident);
  h1b.release();
  // Unpinned and least recently used now: the next insert evicts it.
  Reservation r = m->Insert(K(50), FetchKind::Demand);
  REQUIRE(r.evicted_valid);
  CHECK(r.evicted == K(1));
  CHECK(r.slot == slot1);  // the slot is reused, its index stable
  check_ok(*m);
}

TEST_CASE("Handle moves transfer the pin") {
  auto m = make("lru", 1);
  m->Insert(K(1), FetchKind::Demand);
  Handle a = m->Lookup(K(1));
  Handle b = std::move(a);
  CHECK(!a);
  CHECK(b);
  CHECK(m->stats().pinned == 1);
  Handle c;
  c = std::move(b);
  CHECK(m->stats().pinned == 1);
  CHECK(m->Insert(K(2), FetchKind::Demand).status == ReserveStatus::NoSlot);
  c = Handle();
  CHECK(m->stats().pinned == 0);
  CHECK(m->Insert(K(2), FetchKind::Demand).status == ReserveStatus::Reserved);
  check_ok(*m);
}

TEST_CASE("HeavyEntries: slots, bytes and stable indices") {
  TierConfig cfg;
  cfg.name = "dram";
  cfg.budget_bytes = 1050;  // 10 slots of 100 B; the 50 B remainder is unused
  cfg.slot_bytes = 100;
  cfg.n_layer = 2;
  cfg.n_expert = 16;
  auto m = ResidencyManager::create(cfg, "lru", {}, nullptr);
  REQUIRE(m);
  CHECK(m->slot_count() == 10);
  CHECK(m->slot_bytes() == 100);
  CHECK(m->Insert(K(0), FetchKind::Demand, false, 101).status == ReserveStatus::InvalidKey);

  std::set<uint32_t> slots;
  for (uint32_t e = 0; e < 10; ++e) {
    Reservation r = m->Insert(K(e), FetchKind::Demand, false, 60 + e);
    REQUIRE(r.status == ReserveStatus::Reserved);
    CHECK(r.slot < 10);
    slots.insert(r.slot);
  }
  CHECK(slots.size() == 10);  // every slot distinct
  TierStats s = m->stats();
  CHECK(s.resident == 10);
  CHECK(s.total().bytes_in == 10 * 60 + 45);  // the bytes each fetch declared
  // A BeginFetch counts its bytes only when they arrive.
  Reservation r = m->BeginFetch(K(3, 1), FetchKind::Demand);
  REQUIRE(r.status == ReserveStatus::Reserved);
  CHECK(m->stats().layers[1].bytes_in == 0);
  CHECK(m->CompleteFetch(K(3, 1)));
  CHECK(m->stats().layers[1].bytes_in == 100);  // 0 = the slot size
  CHECK(!m->CompleteFetch(K(3, 1)));            // only once

  // A budget larger than the model is capped at one slot per expert.
  cfg.budget_bytes = 1'000'000;
  auto big = ResidencyManager::create(cfg, "lru", {}, nullptr);
  REQUIRE(big);
  CHECK(big->slot_count() == 32);
  check_ok(*m);
}

TEST_CASE("ZeroCapacity disables caching") {
  for (const char* pol : {"lru", "lfu", "lfru", "arc"}) {
    CAPTURE(pol);
    TierConfig cfg;
    cfg.budget_bytes = 99;  // below one slot
    cfg.slot_bytes = 100;
    cfg.n_layer = 2;
    cfg.n_expert = 8;
    auto m = ResidencyManager::create(cfg, pol, {}, nullptr);
    REQUIRE(m);
    CHECK(m->slot_count() == 0);
    for (int i = 0; i < 3; ++i) {
      CHECK(!m->Lookup(K(1)));
      CHECK(m->Touch(K(2)) == EntryState::Absent);
      Reservation r = m->Insert(K(1), FetchKind::Demand, true);
      CHECK(r.status == ReserveStatus::Disabled);
      CHECK(!r.ok());
      CHECK(!r.handle);
      CHECK(m->BeginFetch(K(1), FetchKind::Prefetch).status == ReserveStatus::Disabled);
      CHECK(!m->CompleteFetch(K(1)));
      CHECK(!m->AbortFetch(K(1)));
    }
    const LayerStats t = m->stats().total();
    CHECK(t.misses == 6);
    CHECK(t.rejected == 6);
    CHECK(t.inserts == 0);
    check_ok(*m);
  }
  // Layer scope with fewer slots than layers: every quota is 0.
  auto m = make("lru", 3, 4, 8, Scope::Layer);
  CHECK(m->slot_count() == 0);
  CHECK(m->Insert(K(1, 2), FetchKind::Demand).status == ReserveStatus::Disabled);
}

TEST_CASE("InFlightNeverEvicted") {
  auto m = make("lru", 2);
  Reservation a = m->BeginFetch(K(1), FetchKind::Demand);
  Reservation b = m->BeginFetch(K(2), FetchKind::Demand);
  REQUIRE(a.status == ReserveStatus::Reserved);
  REQUIRE(b.status == ReserveStatus::Reserved);
  CHECK(m->Peek(K(1)) == EntryState::InFlight);
  // Both slots in flight: a third reservation fails cleanly.
  CHECK(m->BeginFetch(K(3), FetchKind::Demand).status == ReserveStatus::NoSlot);
  CHECK(m->BeginFetch(K(3), FetchKind::Prefetch).status == ReserveStatus::NoSlot);
  // A lookup of an in-flight entry is an in-flight hit and pins it.
  {
    Handle h = m->Lookup(K(1));
    REQUIRE(h);
    CHECK(h.state_at_lookup() == EntryState::InFlight);
    CHECK(m->CompleteFetch(K(1)));
    CHECK(m->state(h) == EntryState::Resident);
    // Resident but pinned: still no victim.
    CHECK(m->BeginFetch(K(3), FetchKind::Demand).status == ReserveStatus::NoSlot);
  }
  // Now 1 is resident and unpinned: it goes, 2 (in flight, least recently used) stays.
  Reservation c = m->BeginFetch(K(3), FetchKind::Demand);
  REQUIRE(c.status == ReserveStatus::Reserved);
  CHECK(c.evicted == K(1));
  CHECK(m->Peek(K(2)) == EntryState::InFlight);
  // Abort frees the slot without an eviction.
  CHECK(m->AbortFetch(K(2)));
  CHECK(m->Peek(K(2)) == EntryState::Absent);
  Reservation d = m->Insert(K(4), FetchKind::Demand);
  CHECK(d.status == ReserveStatus::Reserved);
  CHECK(!d.evicted_valid);
  CHECK(d.slot == b.slot);
  const LayerStats t = m->stats().total();
  CHECK(t.evictions == 1);
  CHECK(t.aborts == 1);
  CHECK(t.inflight_hits == 1);
  CHECK(t.reserve_failures == 3);
  check_ok(*m);
}

TEST_CASE("AbortFetch under a pin frees the slot at the last release") {
  auto m = make("lru", 1);
  Reservation r = m->BeginFetch(K(1), FetchKind::Demand, /*pin=*/true);
  REQUIRE(r.status == ReserveStatus::Reserved);
  REQUIRE(r.handle);
  CHECK(r.handle.state_at_lookup() == EntryState::InFlight);
  CHECK(m->AbortFetch(K(1)));
  CHECK(m->state(r.handle) == EntryState::Aborted);
  CHECK(m->Peek(K(1)) == EntryState::Absent);
  CHECK(!m->CompleteFetch(K(1)));  // late completion of an aborted fetch is refused
  check_ok(*m);
  // The slot is still held by the handle: nothing can take it.
  CHECK(m->BeginFetch(K(2), FetchKind::Demand).status == ReserveStatus::NoSlot);
  r.handle.release();
  Reservation s = m->BeginFetch(K(2), FetchKind::Demand);
  CHECK(s.status == ReserveStatus::Reserved);
  CHECK(s.slot == r.slot);
  check_ok(*m);
}

TEST_CASE("AllPinnedReservationFails") {
  auto m = make("arc", 3);
  std::vector<Handle> pins;
  for (uint32_t e = 0; e < 3; ++e) {
    Reservation r = m->Insert(K(e), FetchKind::Demand, /*pin=*/true);
    REQUIRE(r.status == ReserveStatus::Reserved);
    CHECK(r.handle.state_at_lookup() == EntryState::Resident);
    pins.push_back(std::move(r.handle));
  }
  for (int i = 0; i < 5; ++i) {
    Reservation r = m->BeginFetch(K(10 + i), FetchKind::Demand);
    CHECK(r.status == ReserveStatus::NoSlot);
    CHECK(!r.evicted_valid);
  }
  for (uint32_t e = 0; e < 3; ++e) CHECK(m->Peek(K(e)) == EntryState::Resident);
  CHECK(m->stats().total().reserve_failures == 5);
  CHECK(m->stats().pinned == 3);
  pins[1].release();
  Reservation r = m->BeginFetch(K(10), FetchKind::Demand);
  CHECK(r.status == ReserveStatus::Reserved);
  CHECK(r.evicted == K(1));
  check_ok(*m);
}

TEST_CASE("PrefetchedUnusedEvictedFirst") {
  SUBCASE("the oldest prefetched-unused entry goes before the policy's victim") {
    auto m = make("lru", 3);
    m->Insert(K(1), FetchKind::Demand);
    m->Insert(K(2), FetchKind::Demand);
    REQUIRE(m->BeginFetch(K(9), FetchKind::Prefetch).status == ReserveStatus::Reserved);
    // In flight: not a victim even though unused.
    Reservation r = m->Insert(K(3), FetchKind::Demand);
    CHECK(r.evicted == K(1));
    CHECK(m->CompleteFetch(K(9)));
    // 9 is the most recently inserted but unused: it goes first.
    r = m->Insert(K(4), FetchKind::Demand);
    CHECK(r.evicted == K(9));
    LayerStats t = m->stats().total();
    CHECK(t.prefetch_inserts == 1);
    CHECK(t.prefetch_wasted == 1);
    CHECK(t.prefetch_hits == 0);
    check_ok(*m);
  }
  SUBCASE("a used prefetch is an ordinary entry") {
    auto m = make("lru", 2);
    m->Insert(K(1), FetchKind::Demand);
    m->Insert(K(9), FetchKind::Prefetch);
    CHECK(m->Touch(K(9)) == EntryState::Resident);
    CHECK(m->Touch(K(9)) == EntryState::Resident);
    Reservation r = m->Insert(K(3), FetchKind::Demand);
    CHECK(r.evicted == K(1));
    const LayerStats t = m->stats().total();
    CHECK(t.prefetch_hits == 1);  // the first use only
    CHECK(t.prefetch_wasted == 0);
    CHECK(t.hits == 2);
  }
  SUBCASE("a prefetch used while in flight counts as a prefetch hit") {
    auto m = make("lru", 2);
    m->BeginFetch(K(9), FetchKind::Prefetch);
    CHECK(m->Touch(K(9)) == EntryState::InFlight);
    m->CompleteFetch(K(9));
    const LayerStats t = m->stats().total();
    CHECK(t.prefetch_hits == 1);
    CHECK(t.inflight_hits == 1);
  }
  SUBCASE("the rule can be turned off") {
    auto m = make("lru", 3, 1, 64, Scope::Global, {}, /*pu_first=*/false);
    m->Insert(K(1), FetchKind::Demand);
    m->Insert(K(2), FetchKind::Demand);
    m->Insert(K(9), FetchKind::Prefetch);
    CHECK(m->Insert(K(4), FetchKind::Demand).evicted == K(1));
  }
  SUBCASE("for every policy") {
    for (const char* pol : {"lru", "lfu", "lfru", "arc"}) {
      CAPTURE(pol);
      auto m = make(pol, 4);
      for (uint32_t e = 0; e < 3; ++e) access(*m, K(e));
      m->Insert(K(20), FetchKind::Prefetch);
      for (uint32_t e = 0; e < 3; ++e) access(*m, K(e));  // make 0..2 frequent and recent
      Reservation r = m->Insert(K(30), FetchKind::Demand);
      CHECK(r.evicted == K(20));
      check_ok(*m);
    }
  }
}

TEST_CASE("An early demand fetch decides and counts as the plain miss it replaces") {
  // Manager A misses the plain way (Lookup, then BeginFetch Demand); B starts some misses early
  // (BeginFetch EarlyDemand, complete, then the Lookup). Same evictions, states and statistics.
  for (const char* policy : {"lru", "lfu", "lfru", "arc"}) {
    CAPTURE(policy);
    auto a = make(policy, 8), b = make(policy, 8);
    uint64_t rng = 12345;
    for (int step = 0; step < 2000; ++step) {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      const uint32_t e = uint32_t((rng >> 33) % 24);
      const bool early = (rng >> 20) & 1;
      Handle ha = a->Lookup(K(e));
      if (!ha) {
        Reservation r = a->BeginFetch(K(e), FetchKind::Demand, /*pin=*/true);
        REQUIRE(r.status == ReserveStatus::Reserved);
        a->CompleteFetch(K(e));
      }
      if (early && b->Peek(K(e)) == EntryState::Absent) {
        REQUIRE(b->BeginFetch(K(e), FetchKind::EarlyDemand).status == ReserveStatus::Reserved);
        if (rng & 1) b->CompleteFetch(K(e));  // arrived before the access, or not yet
      }
      Handle hb = b->Lookup(K(e));
      if (!hb) {
        Reservation r = b->BeginFetch(K(e), FetchKind::Demand, /*pin=*/true);
        REQUIRE(r.status == ReserveStatus::Reserved);
      }
      b->CompleteFetch(K(e));
      for (uint32_t x = 0; x < 24; ++x) REQUIRE(a->Peek(K(x)) == b->Peek(K(x)));
    }
    const LayerStats sa = a->stats().total(), sb = b->stats().total();
    CHECK(sa.misses == sb.misses);
    CHECK(sa.hits + sa.inflight_hits == sb.hits + sb.inflight_hits);
    CHECK(sa.evictions == sb.evictions);
    CHECK(sa.inserts == sb.inserts);
    CHECK(sb.prefetch_inserts == 0);
    check_ok(*b);
  }
}

TEST_CASE("Erase drops only resident, unpinned entries") {
  auto m = make("arc", 2);
  m->Insert(K(1), FetchKind::Demand);
  m->BeginFetch(K(2), FetchKind::Demand);
  CHECK(!m->Erase(K(2)));  // in flight
  {
    Handle h = m->Lookup(K(1));
    CHECK(!m->Erase(K(1)));  // pinned
  }
  CHECK(m->Erase(K(1)));
  CHECK(!m->Erase(K(1)));
  CHECK(m->stats().total().evictions == 0);
  check_ok(*m);
}

TEST_CASE("Per-layer quotas isolate layers") {
  // 4 layers, 9 slots: 2 per layer, the ninth unused.
  auto m = make("lru", 9, 4, 16, Scope::Layer);
  CHECK(m->slot_count() == 8);
  for (uint32_t l = 0; l < 4; ++l) CHECK(m->pool_slots(l) == 2);
  for (uint32_t l = 1; l < 4; ++l) {
    access(*m, K(0, l));
    access(*m, K(1, l));
  }
  // Thrash layer 0 with many experts: only layer 0 entries are ever evicted.
  for (int round = 0; round < 5; ++round) {
    for (uint32_t e = 0; e < 16; ++e) {
      Reservation r = m->Insert(K(e, 0), FetchKind::Demand);
      if (r.evicted_valid) CHECK(r.evicted.layer == 0);
      CHECK(r.slot < 2);  // layer 0's pool is slots [0, 2)
    }
  }
  for (uint32_t l = 1; l < 4; ++l) {
    CHECK(m->Peek(K(0, l)) == EntryState::Resident);
    CHECK(m->Peek(K(1, l)) == EntryState::Resident);
  }
  const TierStats s = m->stats();
  CHECK(s.layers[0].evictions > 0);
  for (uint32_t l = 1; l < 4; ++l) CHECK(s.layers[l].evictions == 0);
  // A full, pinned layer fails on its own while the others still take entries.
  Handle a = m->Lookup(K(1, 2));
  Handle b = m->Lookup(K(0, 2));
  REQUIRE((a && b));
  CHECK(m->Insert(K(5, 2), FetchKind::Demand).status == ReserveStatus::NoSlot);
  CHECK(m->Insert(K(5, 3), FetchKind::Demand).status == ReserveStatus::Reserved);
  check_ok(*m);

  // Dense layers get no quota; the budget is split over the MoE layers only.
  TierConfig cfg;
  cfg.budget_bytes = 6 * kSlot;
  cfg.slot_bytes = kSlot;
  cfg.n_layer = 4;
  cfg.n_expert = 8;
  cfg.moe_layers = {false, true, true, true};
  cfg.scope = Scope::Layer;
  auto d = ResidencyManager::create(cfg, "lru", {}, nullptr);
  REQUIRE(d);
  CHECK(d->pool_slots(0) == 0);
  CHECK(d->pool_slots(1) == 2);
  CHECK(d->Insert(K(1, 0), FetchKind::Demand).status == ReserveStatus::Disabled);
  CHECK(d->Insert(K(1, 3), FetchKind::Demand).status == ReserveStatus::Reserved);
  cfg.scope = Scope::Global;
  auto g = ResidencyManager::create(cfg, "lru", {}, nullptr);
  REQUIRE(g);
  CHECK(g->slot_count() == 6);
  CHECK(g->Insert(K(1, 0), FetchKind::Demand).status == ReserveStatus::Disabled);
  check_ok(*d);
  check_ok(*g);
}

TEST_CASE("Scope names") {
  Scope s;
  CHECK(parse_scope("global", &s));
  CHECK(s == Scope::Global);
  CHECK(parse_scope("layer", &s));
  CHECK(s == Scope::Layer);
  CHECK(!parse_scope("Layer", &s));
  CHECK(std::string(scope_name(Scope::Layer)) == "layer");
}

TEST_CASE("Statistics are exact, per layer, and reset") {
  auto m = make("lru", 2, 2, 8);
  // layer 0: miss 1, miss 2, hit 1, miss 3 (evicts 2), prefetch 4 (evicts 1), evict 4 unused.
  CHECK(!access(*m, K(1, 0)));
  CHECK(!access(*m, K(2, 0)));
  CHECK(access(*m, K(1, 0)));
  CHECK(!access(*m, K(3, 0)));
  m->Insert(K(4, 0), FetchKind::Prefetch, false, 40);
  // layer 1: miss 0 (evicts the prefetched-unused 4 of layer 0: the pool is global)
  CHECK(!access(*m, K(0, 1)));
  CHECK(access(*m, K(0, 1)));
  const TierStats s = m->stats();
  REQUIRE(s.layers.size() == 2);
  const LayerStats& l0 = s.layers[0];
  CHECK(l0.hits == 1);
  CHECK(l0.misses == 3);
  CHECK(l0.inserts == 4);
  CHECK(l0.prefetch_inserts == 1);
  CHECK(l0.evictions == 3);  // 2, 1, then 4
  CHECK(l0.prefetch_wasted == 1);
  CHECK(l0.prefetch_hits == 0);
  CHECK(l0.bytes_in == 3 * kSlot + 40);
  const LayerStats& l1 = s.layers[1];
  CHECK(l1.hits == 1);
  CHECK(l1.misses == 1);
  CHECK(l1.evictions == 0);
  CHECK(l1.bytes_in == kSlot);
  const LayerStats t = s.total();
  CHECK(t.lookups() == 6);
  CHECK(t.hit_rate() == doctest::Approx(2.0 / 6.0));
  CHECK(s.slots == 2);
  CHECK(s.resident == 2);
  const std::string js = s.to_json();
  CHECK(js.find("\"tier\": \"test\"") != std::string::npos);
  CHECK(js.find("\"prefetch_wasted\": 1") != std::string::npos);
  CHECK(js.find("\"layers\": [") != std::string::npos);
  CHECK(s.to_text().find("hit rate") != std::string::npos);
  m->reset_stats();
  const TierStats z = m->stats();
  CHECK(z.total() == LayerStats{});
  CHECK(z.resident == 2);  // reset clears counters, not contents
}

TEST_CASE("Invalid configurations are a status") {
  TierConfig cfg;
  cfg.budget_bytes = 1000;
  cfg.n_layer = 2;
  cfg.n_expert = 4;
  CacheStatus st;
  cfg.slot_bytes = 0;
  CHECK(!ResidencyManager::create(cfg, "lru", {}, &st));
  CHECK(st.code == CacheCode::InvalidArgument);
  CHECK(st.message.find("slot_bytes") != std::string::npos);
  cfg.slot_bytes = 100;
  CHECK(!ResidencyManager::create(cfg, "fifo", {}, &st));
  CHECK(st.code == CacheCode::NotFound);
  CHECK(st.message.find("fifo") != std::string::npos);
  cfg.moe_layers = {true};
  CHECK(!ResidencyManager::create(cfg, "lru", {}, &st));
  CHECK(st.code == CacheCode::InvalidArgument);
  cfg.moe_layers.clear();
  cfg.n_expert = 0;
  CHECK(!ResidencyManager::create(cfg, "lru", {}, &st));
  cfg.n_expert = 4;
  CHECK(ResidencyManager::create(cfg, "lru", {}, &st));
  CHECK(st.ok());
}

TEST_CASE("a single-threaded manager (thread_safe = false) makes the same decisions") {
  // The simulator's configuration skips the mutex; everything else must be the same code path.
  for (const char* policy : {"lru", "lfu", "arc"}) {
    CAPTURE(policy);
    std::unique_ptr<ResidencyManager> m[2];
    for (int i = 0; i < 2; ++i) {
      TierConfig cfg;
      cfg.name = "test";
      cfg.budget_bytes = 8 * kSlot;
      cfg.slot_bytes = kSlot;
      cfg.n_layer = 2;
      cfg.n_expert = 32;
      cfg.thread_safe = i == 0;
      CacheStatus st;
      m[i] = ResidencyManager::create(cfg, policy, PolicyParams{}, &st);
      REQUIRE_MESSAGE(m[i], st.message);
    }
    uint64_t x = 12345;
    for (int step = 0; step < 2000; ++step) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      const ExpertKey k{static_cast<uint32_t>((x >> 33) % 2), static_cast<uint32_t>((x >> 40) % 32)};
      const bool prefetch = (x >> 20) % 4 == 0;
      EntryState s[2];
      for (int i = 0; i < 2; ++i) {
        s[i] = prefetch ? m[i]->Peek(k) : m[i]->Touch(k);
        if (s[i] == EntryState::Absent) {
          Reservation r = m[i]->BeginFetch(k, prefetch ? FetchKind::Prefetch : FetchKind::Demand);
          if (r.status == ReserveStatus::Reserved) m[i]->CompleteFetch(k);
        }
      }
      REQUIRE(s[0] == s[1]);
    }
    const TierStats a = m[0]->stats(), b = m[1]->stats();
    CHECK(a.total().hits == b.total().hits);
    CHECK(a.total().misses == b.total().misses);
    CHECK(a.total().evictions == b.total().evictions);
    CHECK(m[1]->check_invariants().empty());
  }
}
