// Multithreaded stress: compute threads look up / reserve / pin, a prefetch thread reserves ahead,
// IO threads complete or abort fetches, a checker validates the invariants while all of this runs.
// Every held pin is re-checked (its slot still holds its key), and the final state must be clean.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "test_cache_util.h"

using namespace cache_test;

namespace {

// The IO side: a queue of fetches to complete (or abort) on other threads.
struct IoQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ExpertKey> q;
  bool done = false;
  void push(ExpertKey k) {
    { std::lock_guard<std::mutex> l(mu); q.push_back(k); }
    cv.notify_one();
  }
  bool pop(ExpertKey* k) {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done || !q.empty(); });
    if (q.empty()) return false;
    *k = q.front();
    q.pop_front();
    return true;
  }
  void close() {
    { std::lock_guard<std::mutex> l(mu); done = true; }
    cv.notify_all();
  }
};

void run_stress(const char* policy, Scope scope) {
  const uint32_t n_layer = 4, n_expert = 16;
  auto m = make(policy, 24, n_layer, n_expert, scope);
  IoQueue io;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> pin_violations{0}, pinned_checks{0}, invariant_failures{0};
  std::string first_invariant_failure;
  std::mutex fail_mu;

  auto compute = [&](unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<Handle> held;
    for (int it = 0; it < 20000; ++it) {
      const ExpertKey k{static_cast<uint32_t>(rng() % n_layer), static_cast<uint32_t>(rng() % (rng() % 2 ? 6 : n_expert))};
      Handle h = m->Lookup(k);
      if (!h) {
        Reservation r = m->BeginFetch(k, FetchKind::Demand, /*pin=*/true);
        if (r.status == ReserveStatus::Reserved) io.push(k);
        if (r.status == ReserveStatus::NoSlot) std::this_thread::yield();  // wait for IO / releases
        h = std::move(r.handle);
      }
      if (it % 8 == 0) std::this_thread::yield();  // let the IO threads run on a small machine
      if (h) held.push_back(std::move(h));
      // Verify every pin: its slot still holds its key (resident, in flight, or aborted-pinned).
      for (const Handle& x : held) {
        ExpertKey at{};
        const EntryState s = m->slot_state(x.slot(), &at);
        ++pinned_checks;
        if (s == EntryState::Absent || !(at == x.key())) ++pin_violations;
      }
      // Release a random subset (keep at most 3 pins, as a layer's kernels would).
      while (held.size() > 3 || (!held.empty() && rng() % 3 == 0)) {
        const size_t i = rng() % held.size();
        std::swap(held[i], held.back());
        held.pop_back();
      }
    }
  };
  auto prefetcher = [&](unsigned seed) {
    std::mt19937 rng(seed);
    while (!stop.load()) {
      const ExpertKey k{static_cast<uint32_t>(rng() % n_layer), static_cast<uint32_t>(rng() % n_expert)};
      if (m->Peek(k) == EntryState::Absent) {
        Reservation r = m->BeginFetch(k, FetchKind::Prefetch);
        if (r.status == ReserveStatus::Reserved) io.push(k);
      }
      std::this_thread::yield();
    }
  };
  auto io_thread = [&](unsigned seed) {
    std::mt19937 rng(seed);
    ExpertKey k;
    while (io.pop(&k)) {
      if (rng() % 10 == 0) m->AbortFetch(k);
      else m->CompleteFetch(k);
    }
  };
  auto checker = [&] {
    while (!stop.load()) {
      const std::string inv = m->check_invariants();
      if (!inv.empty()) {
        ++invariant_failures;
        std::lock_guard<std::mutex> l(fail_mu);
        if (first_invariant_failure.empty()) first_invariant_failure = inv;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  };

  std::vector<std::thread> ios, aux;
  for (unsigned i = 0; i < 2; ++i) ios.emplace_back(io_thread, 100 + i);
  aux.emplace_back(prefetcher, 7);
  aux.emplace_back(checker);
  std::vector<std::thread> comp;
  for (unsigned i = 0; i < 3; ++i) comp.emplace_back(compute, 1 + i);
  for (auto& t : comp) t.join();
  stop = true;
  for (auto& t : aux) t.join();
  io.close();
  for (auto& t : ios) t.join();

  CHECK_MESSAGE(invariant_failures.load() == 0, first_invariant_failure);
  CHECK(pin_violations.load() == 0);
  CHECK(pinned_checks.load() > 0);
  check_ok(*m);
  const TierStats s = m->stats();
  CHECK(s.pinned == 0);
  CHECK(s.in_flight == 0);  // every fetch was completed or aborted
  const LayerStats t = s.total();
  CHECK(t.inserts == t.completions + t.aborts);
  CHECK(t.lookups() == 3u * 20000u);
  CHECK(t.evictions > 0);
  const std::string summary = std::string(policy) + "/" + scope_name(scope) + ": " + s.to_text();
  MESSAGE(summary);
}

}  // namespace

TEST_CASE("Stress: pin / unpin / complete / abort from several threads") {
  for (const char* pol : {"lru", "lfu", "lfru", "arc"}) {
    CAPTURE(pol);
    run_stress(pol, Scope::Global);
  }
  run_stress("arc", Scope::Layer);
}
