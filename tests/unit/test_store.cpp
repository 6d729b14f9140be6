// tests/unit/test_store.cpp — the DRAM expert store (moe/expert_store.h): acquired bytes equal the file
// on both IO backends; greedy generation through the cache is bit-identical (tokens and every logit) to
// the mmap baseline for several budgets, every policy and both scopes; a budget below the minimum is
// a clear error; IO faults (EIO) give a clean moe::Error and leave the source usable; short reads and
// EAGAIN change nothing; prefetch, in-flight waits and cancellation; every slot pinned.
// Single-threaded test bodies (the store's IO threads run underneath).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "moe/engine.h"
#include "moe/expert_store.h"
#include "moe/gen.h"

using namespace moe;
using cache::EntryState;

namespace {

struct Run {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // every step's logits, back to back
};

const std::vector<int32_t> kPrompt = {3, 17, 42, 7, 99, 5, 123, 64};

// A small olmoe-shaped q8_0 model (16 experts x 3 MoE layers, top-4), written once per process.
const std::string& model_path() {
  static const std::string path = [] {
    GenOptions o;
    o.arch = "olmoe";
    o.out = std::string(MOE_TEST_TMP) + "/store_small.gguf";
    o.n_layer = 3;
    o.n_embd = 256;
    o.n_ff = 256;
    o.n_expert = 16;
    o.n_expert_used = 4;
    o.n_head = 4;
    o.n_head_kv = 4;
    o.head_dim = 64;
    o.n_ctx = 256;
    o.vocab = "none";
    o.n_vocab = 256;
    o.type = "q8_0";
    o.seed = 7;
    o.router_skew = 0.8f;  // some experts hotter than others: policies differ
    generate_model(o);
    return o.out;
  }();
  return path;
}

SessionOptions session_opts() {
  SessionOptions s;
  s.n_ctx = 64;
  s.n_batch = 16;
  s.n_threads = 1;
  return s;
}

// Greedy decoding: prefill kPrompt, then n tokens; logits of every step recorded.
Run greedy(const Model& m, ExpertSource& src, int n, cache::UsageProfile* profile = nullptr) {
  Session s(m, src, session_opts());
  Run r;
  auto logits = s.eval(kPrompt);
  for (int i = 0; i < n; ++i) {
    r.logits.insert(r.logits.end(), logits.begin(), logits.end());
    const int32_t t = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    r.tokens.push_back(t);
    logits = s.eval(std::span<const int32_t>(&t, 1));
    if (profile)
      for (uint32_t il = 0; il < m.spec().n_layer; ++il)
        for (int32_t e : s.last_experts(il)) profile->add({il, uint32_t(e)});
  }
  r.logits.insert(r.logits.end(), logits.begin(), logits.end());
  return r;
}

bool identical(const Run& a, const Run& b) {
  return a.tokens == b.tokens && a.logits.size() == b.logits.size() &&
         std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)) == 0;
}

StoreOptions base_opts(uint64_t budget) {
  StoreOptions o;
  o.ram_budget_bytes = budget;
  o.session = session_opts();
  o.overhead_bytes = 1 << 20;
  return o;
}

// The budget that pays for `slots` expert slots on model m.
uint64_t budget_for_slots(const Model& m, uint32_t slots, const StoreOptions& o = base_opts(0)) {
  StoreMemoryPlan p = plan_store_memory(m, o);
  return p.resident + uint64_t(slots) * p.slot_bytes;
}

// Options for a cache of `slots` slots whose first expert read (all its chunks) meets one fault
// (Delay: `value` in ms; Error: an errno).
StoreOptions first_read_fault(const Model& m, uint32_t slots, prefetch::IoFaultRule::Kind kind, uint64_t value) {
  auto plan = std::make_shared<prefetch::IoFaultPlan>();
  prefetch::IoFaultRule r;
  r.kind = kind;
  r.request = 0;
  r.chunk = -1;
  r.value = value;
  plan->rules.push_back(r);
  StoreOptions o = base_opts(budget_for_slots(m, slots));
  o.faults = plan;
  return o;
}

// Every expert's three slices equal the file's bytes.
void check_all_experts(const Model& m, CachedExpertSource& src) {
  const uint8_t* file = m.file().bytes().data();
  const ExpertTable& t = m.experts();
  for (uint32_t il = 0; il < t.n_layer(); ++il) {
    if (!t.is_moe_layer(il)) continue;
    for (uint32_t e = 0; e < t.n_expert(); ++e) {
      const ExpertSlices& sl = *t.at(il, e);
      ExpertWeights w = src.acquire(il, e);
      REQUIRE(w.gate.nbytes == sl.gate.nbytes);
      REQUIRE(w.down.nbytes == sl.down.nbytes);
      CHECK(std::memcmp(w.gate.data, file + sl.gate.offset, sl.gate.nbytes) == 0);
      CHECK(std::memcmp(w.up.data, file + sl.up.offset, sl.up.nbytes) == 0);
      CHECK(std::memcmp(w.down.data, file + sl.down.offset, sl.down.nbytes) == 0);
      CHECK(w.gate.rows == m.spec().layers[il].n_ff_expert);
      CHECK(w.gate.cols == m.spec().n_embd);
      CHECK(w.down.rows == m.spec().n_embd);
      src.release(il, e);
    }
  }
}

const Run& reference() {
  static const Run r = [] {
    auto m = Model::load(model_path());
    MmapExpertSource src(*m);
    return greedy(*m, src, 32);
  }();
  return r;
}

}  // namespace

TEST_CASE("memory plan: the split adds up and the minimum is stated") {
  auto m = Model::load(model_path());
  StoreOptions o = base_opts(0);
  StoreMemoryPlan p0 = plan_store_memory(*m, o);
  CHECK(p0.n_experts == 3u * 16u);
  CHECK(p0.slot_bytes % prefetch::kIoAlign == 0);
  CHECK(p0.slot_bytes >= m->experts().max_expert_bytes());
  CHECK(p0.slot_bytes <= m->experts().max_expert_bytes() + 3 * prefetch::kIoAlign);
  CHECK(p0.min_slots == 4u);  // top-4 of one layer
  CHECK(p0.dense >= m->experts().dense_bytes());
  CHECK(p0.sessions >= uint64_t(3) * 64 * (4 * 64 + 4 * 64) * 2);  // the f16 KV cache at least
  CHECK(p0.resident == p0.dense + p0.sessions + p0.overhead);
  CHECK(p0.minimum == p0.resident + 4 * p0.slot_bytes);
  CHECK_FALSE(p0.fits());

  o.ram_budget_bytes = p0.minimum + 2 * p0.slot_bytes + 100;
  StoreMemoryPlan p = plan_store_memory(*m, o);
  CHECK(p.fits());
  CHECK(p.slots == 6u);
  CHECK(p.arena == 6 * p.slot_bytes);
  CHECK(p.resident + p.arena <= p.budget);
  o.ram_budget_bytes = 1ull << 40;
  CHECK(plan_store_memory(*m, o).slots == 48u);  // capped at every expert

  o.scope = cache::Scope::Layer;
  CHECK(plan_store_memory(*m, o).min_slots == 12u);  // top-4 in each of 3 layers
}

TEST_CASE("a budget below the minimum is a clear error stating the minimum") {
  auto m = Model::load(model_path());
  StoreOptions o = base_opts(0);
  const StoreMemoryPlan p = plan_store_memory(*m, o);
  o.ram_budget_bytes = p.minimum - 1;
  try {
    CachedExpertSource src(*m, o);
    FAIL("no error for a budget below the minimum");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    const std::string msg = e.what();
    CHECK(msg.find(std::to_string(p.minimum)) != std::string::npos);
    CHECK(msg.find("GiB") != std::string::npos);
    CHECK(msg.find("minimum") != std::string::npos);
    CHECK(msg.find(model_path()) != std::string::npos);
  }
  o.ram_budget_bytes = p.minimum;
  CHECK_NOTHROW(CachedExpertSource(*m, o));
  // The factory: no budget = the mmap baseline.
  CHECK(dynamic_cast<MmapExpertSource*>(make_expert_source(*m, base_opts(0)).get()) != nullptr);
  CHECK(dynamic_cast<CachedExpertSource*>(make_expert_source(*m, o).get()) != nullptr);
  // Unknown policy; static without a profile.
  o.policy = "nope";
  CHECK_THROWS_AS(CachedExpertSource(*m, o), Error);
  o.policy = "static";
  CHECK_THROWS_AS(CachedExpertSource(*m, o), Error);
}

TEST_CASE("acquired experts equal the file's bytes on both IO backends, through evictions") {
  auto m = Model::load(model_path());
  for (auto be : {prefetch::IoBackend::Uring, prefetch::IoBackend::Pread}) {
    CAPTURE(prefetch::to_string(be));
    StoreOptions o = base_opts(budget_for_slots(*m, 5));
    o.io_backend = be;
    std::vector<std::string> notices;
    o.notice = [&](std::string_view s) { notices.emplace_back(s); };
    CachedExpertSource src(*m, o);
    CHECK(src.io_backend() == be);
    CHECK(src.io_direct());  // ext4/xfs accept O_DIRECT; a refusal would be announced
    CHECK(src.plan().slots == 5u);
    check_all_experts(*m, src);
    check_all_experts(*m, src);  // again: every expert was evicted and is read again
    StoreStats s = src.stats();
    CHECK(s.acquires == 96u);
    CHECK(s.misses == 96u);  // 48 distinct keys cycled through 5 slots: LRU never hits
    CHECK(s.evictions == 91u);
    CHECK(s.payload_bytes == 2 * m->experts().total_bytes());
    CHECK(s.bytes_read >= s.payload_bytes);
    CHECK(s.io.bytes_bounced == 0u);  // Slot mode: zero copies
    CHECK(s.stall_seconds > 0);
    CHECK(s.tier.pinned == 0u);
    // A hit returns the same slot's data without IO.
    const uint64_t reads = s.io.requests;
    ExpertWeights a = src.acquire(2, 15);
    src.release(2, 15);
    CHECK(src.stats().hits == s.hits + 1);
    CHECK(src.stats().io.requests == reads);
    (void)a;
  }
}

TEST_CASE("offloading never changes the output: every budget, policy and scope, both backends") {
  auto m = Model::load(model_path());
  const Run& ref = reference();
  REQUIRE(ref.tokens.size() == 32u);
  CHECK(std::count(ref.tokens.begin(), ref.tokens.end(), ref.tokens[0]) < 32);  // not a degenerate run

  // The static policy's profile: expert usage of the reference run.
  auto profile = std::make_shared<cache::UsageProfile>();
  {
    MmapExpertSource mm(*m);
    greedy(*m, mm, 32, profile.get());
  }
  const StoreMemoryPlan p0 = plan_store_memory(*m, base_opts(0));
  const std::vector<uint32_t> slot_counts = {p0.min_slots, 9, 48};
  for (const char* policy : {"lru", "lfu", "lfru", "arc", "static"}) {
    for (uint32_t slots : slot_counts) {
      CAPTURE(policy);
      CAPTURE(slots);
      StoreOptions o = base_opts(budget_for_slots(*m, slots));
      o.policy = policy;
      o.profile = profile;
      CachedExpertSource src(*m, o);
      REQUIRE(src.plan().slots == slots);
      const Run r = greedy(*m, src, 32);
      CHECK(identical(r, ref));
      const StoreStats s = src.stats();
      CHECK(s.acquires > 0u);
      CHECK(s.tier.pinned == 0u);
      if (slots == 48) CHECK(s.misses <= 48u);  // everything fits: each expert read once at most
      if (slots == 48) CHECK(s.evictions == 0u);
      if (slots < 48) CHECK(s.evictions > 0u);
    }
  }
  // Layer scope (a quota per layer) and the pread backend.
  for (auto be : {prefetch::IoBackend::Uring, prefetch::IoBackend::Pread}) {
    StoreOptions o = base_opts(0);
    o.scope = cache::Scope::Layer;
    o.io_backend = be;
    o.ram_budget_bytes = budget_for_slots(*m, 15, o);
    CachedExpertSource src(*m, o);
    CHECK(src.stats().tier.slots == 15u);
    CHECK(identical(greedy(*m, src, 32), ref));
  }
}

TEST_CASE("EIO becomes a clean moe::Error naming the file and offset; the source stays usable") {
  auto m = Model::load(model_path());
  for (auto be : {prefetch::IoBackend::Uring, prefetch::IoBackend::Pread}) {
    CAPTURE(prefetch::to_string(be));
    auto plan = std::make_shared<prefetch::IoFaultPlan>();
    prefetch::IoFaultRule r;
    r.kind = prefetch::IoFaultRule::Kind::Error;
    r.request = 20;  // the 21st expert read, during decode
    r.chunk = -1;
    r.value = EIO;
    r.times = 100;
    plan->rules.push_back(r);
    StoreOptions o = base_opts(budget_for_slots(*m, 6));
    o.io_backend = be;
    o.faults = plan;
    CachedExpertSource src(*m, o);
    try {
      greedy(*m, src, 32);
      FAIL("no error from a failing read");
    } catch (const Error& e) {
      CHECK(e.code() == ErrorCode::Io);
      const std::string msg = e.what();
      CHECK(msg.find(model_path()) != std::string::npos);
      CHECK(msg.find("offset") != std::string::npos);
      CHECK(msg.find("expert") != std::string::npos);
    }
    const StoreStats s = src.stats();
    CHECK(s.io_errors == 1u);
    CHECK(s.tier.pinned == 0u);
    CHECK(s.tier.in_flight == 0u);
    // Later requests have other ordinals: a new session on the same source gives the reference output.
    CHECK(identical(greedy(*m, src, 32), reference()));
  }
}

TEST_CASE("short reads and EAGAIN on every read leave the output identical") {
  auto m = Model::load(model_path());
  for (auto be : {prefetch::IoBackend::Uring, prefetch::IoBackend::Pread}) {
    CAPTURE(prefetch::to_string(be));
    auto plan = std::make_shared<prefetch::IoFaultPlan>();
    for (uint64_t q = 0; q < 400; ++q) {
      prefetch::IoFaultRule r;
      r.request = q;
      r.chunk = -1;
      if (q % 2 == 0) {
        r.kind = prefetch::IoFaultRule::Kind::ShortRead;
        r.value = 4096 + 100;
      } else {
        r.kind = prefetch::IoFaultRule::Kind::Again;
        r.times = 2;
      }
      plan->rules.push_back(r);
    }
    StoreOptions o = base_opts(budget_for_slots(*m, 6));
    o.io_backend = be;
    o.faults = plan;
    CachedExpertSource src(*m, o);
    CHECK(identical(greedy(*m, src, 32), reference()));
    const StoreStats s = src.stats();
    CHECK(s.io.resubmits > 0u);
    CHECK(s.io.retries > 0u);
    CHECK(s.io_errors == 0u);
  }
}

TEST_CASE("prefetch fills slots asynchronously; a demand waits for it; cancellation frees the slot") {
  auto m = Model::load(model_path());
  const uint8_t* file = m->file().bytes().data();
  SUBCASE("prefetched experts become resident and count as prefetch hits") {
    CachedExpertSource src(*m, base_opts(budget_for_slots(*m, 48)));
    for (uint32_t e = 0; e < 16; ++e) CHECK(src.prefetch(1, e));
    CHECK(src.prefetch(1, 3));  // already in flight or resident
    src.wait_idle();
    for (uint32_t e = 0; e < 16; ++e) CHECK(src.state(1, e) == EntryState::Resident);
    const ExpertSlices& sl = *m->experts().at(1, 9);
    ExpertWeights w = src.acquire(1, 9);
    CHECK(std::memcmp(w.up.data, file + sl.up.offset, sl.up.nbytes) == 0);
    src.release(1, 9);
    const StoreStats s = src.stats();
    CHECK(s.prefetches == 16u);
    CHECK(s.hits == 1u);
    CHECK(s.misses == 0u);
    CHECK(s.prefetch_hits == 1u);
    CHECK(src.cancel_prefetch(1, 4) == false);  // nothing in flight
  }
  SUBCASE("an acquire of an expert whose prefetch is still in flight waits for it") {
    StoreOptions o = first_read_fault(*m, 8, prefetch::IoFaultRule::Kind::Delay, 200);
    CachedExpertSource src(*m, o);
    REQUIRE(src.prefetch(0, 5));
    CHECK(src.state(0, 5) == EntryState::InFlight);
    const auto t0 = std::chrono::steady_clock::now();
    ExpertWeights w = src.acquire(0, 5);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(waited > 0.1);
    const ExpertSlices& sl = *m->experts().at(0, 5);
    CHECK(std::memcmp(w.down.data, file + sl.down.offset, sl.down.nbytes) == 0);
    CHECK(src.cancel_prefetch(0, 5) == false);  // resident now (and it was demanded)
    src.release(0, 5);
    const StoreStats s = src.stats();
    CHECK(s.inflight_hits == 1u);
    CHECK(s.misses == 0u);
    CHECK(s.prefetch_hits == 1u);
    CHECK(s.stall_seconds > 0.1);
  }
  SUBCASE("cancel_prefetch of a slow prefetch frees its slot; a later acquire reads it on demand") {
    StoreOptions o = first_read_fault(*m, 8, prefetch::IoFaultRule::Kind::Delay, 300);
    CachedExpertSource src(*m, o);
    REQUIRE(src.prefetch(2, 11));
    CHECK(src.cancel_prefetch(2, 11));
    src.wait_idle();
    CHECK(src.state(2, 11) == EntryState::Absent);
    CHECK(src.stats().prefetch_cancelled == 1u);
    CHECK(src.stats().tier.in_flight == 0u);
    ExpertWeights w = src.acquire(2, 11);
    const ExpertSlices& sl = *m->experts().at(2, 11);
    CHECK(std::memcmp(w.gate.data, file + sl.gate.offset, sl.gate.nbytes) == 0);
    src.release(2, 11);
    CHECK(src.stats().misses == 1u);
  }
  SUBCASE("a failed prefetch only frees the slot: the acquire reads it again") {
    StoreOptions o = first_read_fault(*m, 8, prefetch::IoFaultRule::Kind::Error, EIO);
    CachedExpertSource src(*m, o);
    REQUIRE(src.prefetch(1, 1));
    ExpertWeights w = src.acquire(1, 1);  // either waits and retries, or misses after the abort
    const ExpertSlices& sl = *m->experts().at(1, 1);
    CHECK(std::memcmp(w.gate.data, file + sl.gate.offset, sl.gate.nbytes) == 0);
    src.release(1, 1);
    CHECK(src.stats().io_errors == 1u);
  }
  SUBCASE("will_acquire starts the read now; the acquire that follows is the one miss") {
    StoreOptions o = first_read_fault(*m, 8, prefetch::IoFaultRule::Kind::Delay, 150);
    CachedExpertSource src(*m, o);
    src.will_acquire(2, 6);
    CHECK(src.state(2, 6) == EntryState::InFlight);
    CHECK_FALSE(src.cancel_prefetch(2, 6));  // a demand read: not cancellable
    src.will_acquire(2, 6);                  // already in flight: nothing more
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // "computing other experts"
    const auto t0 = std::chrono::steady_clock::now();
    ExpertWeights w = src.acquire(2, 6);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(waited < 0.1);  // the read (150 ms) ran during the sleep: it started at will_acquire
    const ExpertSlices& sl = *m->experts().at(2, 6);
    CHECK(std::memcmp(w.down.data, file + sl.down.offset, sl.down.nbytes) == 0);
    src.release(2, 6);
    const StoreStats s = src.stats();
    CHECK(s.misses == 1u);
    CHECK(s.hits == 0u);
    CHECK(s.inflight_hits == 0u);
    CHECK(s.prefetches == 0u);
    CHECK(s.io.requests == 1u);
    src.will_acquire(2, 6);  // resident: nothing
    src.will_acquire(9, 0);  // out of range: ignored
    CHECK(src.stats().io.requests == 1u);
  }
  SUBCASE("a queued read moves up: a speculative one when prefetched again, a prefetch when demanded") {
    StoreOptions o = first_read_fault(*m, 8, prefetch::IoFaultRule::Kind::Delay, 1000);
    o.prefetch_inflight = 1;  // the held first read fills the prefetch limit: the others stay queued
    CachedExpertSource src(*m, o);
    REQUIRE(src.prefetch(0, 1));
    REQUIRE(src.prefetch(0, 2, /*speculative=*/true));
    REQUIRE(src.prefetch(0, 3));
    CHECK(src.stats().io.raised == 0u);
    CHECK(src.prefetch(0, 2));  // the guess confirmed: the speculative read goes at prefetch priority
    CHECK(src.stats().io.raised == 1u);
    src.will_acquire(0, 3);  // demanded: a demand read, not held back by the prefetch limit
    CHECK(src.stats().io.raised == 2u);
    const auto t0 = std::chrono::steady_clock::now();
    ExpertWeights w = src.acquire(0, 3);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(waited < 0.5);  // did not wait for the held read (1 s)
    CHECK(src.state(0, 1) == EntryState::InFlight);
    const ExpertSlices& sl = *m->experts().at(0, 3);
    CHECK(std::memcmp(w.gate.data, file + sl.gate.offset, sl.gate.nbytes) == 0);
    src.release(0, 3);
    src.wait_idle();
    CHECK(src.state(0, 1) == EntryState::Resident);
    CHECK(src.state(0, 2) == EntryState::Resident);
    const StoreStats s = src.stats();
    CHECK(s.inflight_hits == 1u);
    CHECK(s.misses == 0u);
  }
  SUBCASE("prefetch into a cache whose slots are all pinned is refused, not blocking") {
    CachedExpertSource src(*m, base_opts(budget_for_slots(*m, 4)));
    for (uint32_t e = 0; e < 4; ++e) src.acquire(0, e);
    CHECK_FALSE(src.prefetch(0, 9));
    for (uint32_t e = 0; e < 4; ++e) src.release(0, e);
    CHECK(src.prefetch(0, 9));
    src.wait_idle();
    CHECK(src.state(0, 9) == EntryState::Resident);
  }
}

TEST_CASE("every slot pinned: an error when this thread holds them, a wait when another thread does") {
  auto m = Model::load(model_path());
  CachedExpertSource src(*m, base_opts(budget_for_slots(*m, 4)));
  for (uint32_t e = 0; e < 4; ++e) src.acquire(1, e);
  try {
    src.acquire(1, 8);
    FAIL("no error with every slot pinned");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::InvalidArgument);
    CHECK(std::string(e.what()).find("pinned") != std::string::npos);
  }
  for (uint32_t e = 0; e < 4; ++e) src.release(1, e);

  // Another thread holds every slot and releases one after 100 ms: the acquire waits, then succeeds.
  std::thread holder;
  {
    std::atomic<bool> pinned{false};
    holder = std::thread([&] {
      for (uint32_t e = 0; e < 4; ++e) src.acquire(2, e);
      pinned = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      for (uint32_t e = 0; e < 4; ++e) src.release(2, e);
    });
    while (!pinned) std::this_thread::yield();
    ExpertWeights w = src.acquire(2, 12);
    const ExpertSlices& sl = *m->experts().at(2, 12);
    CHECK(std::memcmp(w.up.data, m->file().bytes().data() + sl.up.offset, sl.up.nbytes) == 0);
    src.release(2, 12);
    holder.join();
  }
  CHECK(src.stats().tier.pinned == 0u);
}

TEST_CASE("offloading never changes the output of a deepseek2 model (dense lead layer, shared experts, MLA)") {
  // DeepSeek-V3 flavour: the shared experts and the dense first layer stay resident; only routed
  // experts (16 x 3 MoE layers, top-4 from 2 of 4 groups) go through the cache.
  GenOptions g;
  g.arch = "deepseek2";
  g.preset = "tiny-v3";
  g.out = std::string(MOE_TEST_TMP) + "/store_ds2.gguf";
  g.vocab = "none";
  g.n_vocab = 256;
  g.type = "q8_0";
  g.seed = 5;
  generate_model(g);
  auto m = Model::load(g.out);
  REQUIRE(m->spec().kv_lora_rank > 0);
  REQUIRE(!m->experts().is_moe_layer(0));
  // The shared experts are dense bytes, not expert slices.
  for (const auto& name : m->experts().expert_tensor_names()) CHECK(name.find("shexp") == std::string::npos);
  Run ref;
  {
    MmapExpertSource src(*m);
    ref = greedy(*m, src, 16);
  }
  const StoreMemoryPlan p0 = plan_store_memory(*m, base_opts(0));
  CHECK(p0.n_experts == 48u);
  for (const char* policy : {"lru", "arc"}) {
    for (uint32_t slots : {p0.min_slots, 12u}) {
      CAPTURE(policy);
      CAPTURE(slots);
      StoreOptions o = base_opts(budget_for_slots(*m, slots));
      o.policy = policy;
      CachedExpertSource src(*m, o);
      REQUIRE(src.plan().slots == slots);
      CHECK(identical(greedy(*m, src, 16), ref));
      CHECK(src.stats().evictions > 0u);
    }
  }
}

TEST_CASE("gpt-oss through the store: per-expert biases travel with their expert; output unchanged") {
  GenOptions g;
  g.arch = "gpt-oss";
  g.preset = "tiny";  // 4 layers x 8 experts (top-2), MXFP4 experts, sliding window 4 < the prompt
  g.vocab = "none";
  g.n_vocab = 256;
  g.seed = 3;
  g.out = std::string(MOE_TEST_TMP) + "/store_gpt_oss.gguf";
  generate_model(g);
  auto m = Model::load(g.out);
  MmapExpertSource mm(*m);
  const Run ref = greedy(*m, mm, 24);
  const uint8_t* file = m->file().bytes().data();
  for (auto be : {prefetch::IoBackend::Uring, prefetch::IoBackend::Pread}) {
    CAPTURE(int(be));
    StoreOptions o = base_opts(0);
    o.io_backend = be;
    const StoreMemoryPlan p0 = plan_store_memory(*m, o);
    o.ram_budget_bytes = budget_for_slots(*m, p0.min_slots, o);
    CachedExpertSource src(*m, o);
    REQUIRE(src.plan().slots == p0.min_slots);
    {
      const ExpertSlices& sl = *m->experts().at(1, 5);
      REQUIRE(sl.down_bias.nbytes == uint64_t(m->spec().n_embd) * 4);
      ExpertWeights w = src.acquire(1, 5);
      REQUIRE(w.gate_bias.nbytes == sl.gate_bias.nbytes);
      CHECK(std::memcmp(w.gate_bias.data, file + sl.gate_bias.offset, sl.gate_bias.nbytes) == 0);
      CHECK(std::memcmp(w.up_bias.data, file + sl.up_bias.offset, sl.up_bias.nbytes) == 0);
      CHECK(std::memcmp(w.down_bias.data, file + sl.down_bias.offset, sl.down_bias.nbytes) == 0);
      CHECK(std::memcmp(w.down.data, file + sl.down.offset, sl.down.nbytes) == 0);
      src.release(1, 5);
    }
    CHECK(identical(greedy(*m, src, 24), ref));
    CHECK(src.stats().evictions > 0u);
  }
}

// At the minimum budget (p0.min_slots slots, default policy) the store's greedy run of 16 tokens equals
// `ref` (the memory map's) bit for bit, with evictions on the way.
void check_minimum_budget_run(const Model& m, const StoreMemoryPlan& p0, const Run& ref) {
  CachedExpertSource src(m, base_opts(budget_for_slots(m, p0.min_slots)));
  REQUIRE(src.plan().slots == p0.min_slots);
  CHECK(identical(greedy(m, src, 16), ref));
  CHECK(src.stats().evictions > 0u);
}

TEST_CASE("offloading never changes the output of a llama4 model (interleaved dense layers, shared expert)") {
  // 2 MoE layers x 8 experts (top-1, the weight on the expert input) between dense layers; chunk 3, so
  // chunked attention and the NoPE layer's temperature step change within the run.
  GenOptions g;
  g.arch = "llama4";
  g.preset = "tiny";
  g.n_chunk = 3;
  g.vocab = "none";
  g.n_vocab = 256;
  g.type = "q8_0";
  g.seed = 4;
  g.out = std::string(MOE_TEST_TMP) + "/store_llama4.gguf";
  generate_model(g);
  auto m = Model::load(g.out);
  REQUIRE(!m->experts().is_moe_layer(0));
  REQUIRE(m->experts().is_moe_layer(1));
  for (const auto& name : m->experts().expert_tensor_names()) CHECK(name.find("shexp") == std::string::npos);
  MmapExpertSource mm(*m);
  const Run ref = greedy(*m, mm, 16);
  const StoreMemoryPlan p0 = plan_store_memory(*m, base_opts(0));
  CHECK(p0.n_experts == 16u);
  check_minimum_budget_run(*m, p0, ref);
}

TEST_CASE("offloading never changes the output of a phimoe model (biased norms and LM head, LongRoPE)") {
  GenOptions g;
  g.arch = "phimoe";
  g.preset = "tiny";
  g.vocab = "none";
  g.n_vocab = 256;
  g.type = "q8_0";
  g.seed = 3;
  g.out = std::string(MOE_TEST_TMP) + "/store_phimoe.gguf";
  generate_model(g);
  auto m = Model::load(g.out);
  REQUIRE(m->spec().norm_bias);
  for (const auto& name : m->experts().expert_tensor_names()) CHECK(name.find("_exps.weight") != std::string::npos);
  MmapExpertSource mm(*m);
  const Run ref = greedy(*m, mm, 16);
  const StoreMemoryPlan p0 = plan_store_memory(*m, base_opts(0));
  check_minimum_budget_run(*m, p0, ref);
}

TEST_CASE("glm4moe through the store: the NextN layer is neither dense nor cached; output unchanged") {
  GenOptions g;
  g.arch = "glm4moe";
  g.preset = "tiny";  // dense first layer, 3 MoE layers x 8 experts (top-2) + shared expert, 1 NextN layer
  g.vocab = "none";
  g.n_vocab = 256;
  g.type = "q8_0";
  g.seed = 2;
  g.out = std::string(MOE_TEST_TMP) + "/store_glm4moe.gguf";
  generate_model(g);
  auto m = Model::load(g.out);
  REQUIRE(m->spec().n_layer_nextn == 1);
  REQUIRE(m->experts().skipped_bytes() > 0);
  Run ref;
  {
    MmapExpertSource src(*m);
    ref = greedy(*m, src, 16);
  }
  const StoreMemoryPlan p0 = plan_store_memory(*m, base_opts(0));
  CHECK(p0.n_experts == 24u);  // the NextN layer's 8 experts are not in the cache
  CHECK(p0.dense == m->experts().dense_bytes() + m->file().data_offset());
  check_minimum_budget_run(*m, p0, ref);
}
