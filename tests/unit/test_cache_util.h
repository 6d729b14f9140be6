// Helpers shared by the cache tests: build a small manager, replay demand accesses simulator-style.
#pragma once
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "moe/cache/residency.h"

namespace cache_test {

using namespace moe::cache;

inline constexpr uint64_t kSlot = 100;  // bytes per slot in these tests

inline std::unique_ptr<ResidencyManager> make(const std::string& policy, uint32_t slots,
                                              uint32_t n_layer = 1, uint32_t n_expert = 64,
                                              Scope scope = Scope::Global, PolicyParams params = {},
                                              bool pu_first = true) {
  TierConfig cfg;
  cfg.name = "test";
  cfg.budget_bytes = uint64_t{slots} * kSlot;
  cfg.slot_bytes = kSlot;
  cfg.n_layer = n_layer;
  cfg.n_expert = n_expert;
  cfg.scope = scope;
  cfg.prefetched_unused_first = pu_first;
  CacheStatus st;
  auto m = ResidencyManager::create(cfg, policy, params, &st);
  REQUIRE_MESSAGE(m, st.message);
  return m;
}

inline ExpertKey K(uint32_t e, uint32_t layer = 0) { return ExpertKey{layer, e}; }

// One demand access as the simulator does it: Touch; on a miss Insert (demand). Returns true on a
// hit; appends an evicted key's expert index to *evicted when given.
inline bool access(ResidencyManager& m, ExpertKey k, std::vector<uint32_t>* evicted = nullptr) {
  if (m.Touch(k) != EntryState::Absent) return true;
  Reservation r = m.Insert(k, FetchKind::Demand);
  REQUIRE_MESSAGE(r.status == ReserveStatus::Reserved, reserve_status_name(r.status));
  if (r.evicted_valid && evicted) evicted->push_back(r.evicted.expert);
  return false;
}

inline void check_ok(const ResidencyManager& m) {
  const std::string inv = m.check_invariants();
  CHECK_MESSAGE(inv.empty(), inv);
}

}  // namespace cache_test
