// moe/cache/policy.h — eviction policies behind one interface, and the factory by name.
//
// A Policy orders the occupied slots of ONE pool (the global pool, or one layer's quota) and picks
// victims. It is driven only by its ResidencyManager, which calls it under the manager's mutex, so a
// Policy needs no locking of its own and is NOT thread-safe by itself. Slots are pool-local indices
// [0, n_slots); keys are dense key indices (layer * n_expert + expert) inside [first_key,
// first_key + n_keys). After reset() no method allocates.
//
// Call protocol (the manager guarantees it):
//   on_insert(slot, key, demand)  the slot now holds key (in flight or resident). demand = false for a
//                                  prefetch (not an access yet).
//   on_hit(slot, key, first_use)  a demand access of an occupied slot. first_use = the entry was
//                                  prefetched and this is its first use.
//   victim(evictable, incoming, demand)
//                                  the pool is full and key `incoming` needs a slot (demand = false
//                                  for a prefetch): return the slot to evict among those with
//                                  evictable[slot] != 0, or kNoSlot. Pure: the manager then calls
//                                  on_remove for it, then on_insert for the incoming key.
//   on_remove(slot, key, evicted) the slot is freed: evicted = chosen as a victim (ARC records a
//                                  ghost), false = aborted or erased.
//   may_evict(slot)                false when the policy refuses the slot as a victim whatever the
//                                  manager prefers (the static hot set). Used by the manager's
//                                  prefetched-unused-first rule.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "moe/cache/expert_key.h"
#include "moe/cache/status.h"

namespace moe::cache {

struct UsageProfile;

struct PoolInfo {
  uint32_t n_slots = 0;    // slots in this pool (> 0 when a policy is created)
  uint32_t first_key = 0;  // dense key indices of this pool: [first_key, first_key + n_keys)
  uint32_t n_keys = 0;
  uint32_t n_expert = 0;   // key index = layer * n_expert + expert
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual const char* name() const noexcept = 0;
  // Sizes every structure for the pool; called once before any other method. May allocate.
  virtual void reset(const PoolInfo& pool) = 0;
  virtual void on_insert(uint32_t slot, uint32_t key, bool demand) = 0;
  virtual void on_hit(uint32_t slot, uint32_t key, bool first_use) = 0;
  virtual uint32_t victim(const uint8_t* evictable, uint32_t incoming_key, bool demand) = 0;
  virtual void on_remove(uint32_t slot, uint32_t key, bool evicted) = 0;
  virtual bool may_evict(uint32_t /*slot*/) const noexcept { return true; }
  // Slots the policy currently tracks (for invariant checks).
  virtual uint32_t size() const noexcept = 0;
};

// Belady's oracle: the position (in the simulator's access sequence) of the next demand access of
// `key` after the current one, or UINT64_MAX when it is never accessed again. Called under the
// manager's lock on every insert and hit of a Belady pool; it must not call back into the manager.
using NextUseFn = std::function<uint64_t(ExpertKey key)>;

struct PolicyParams {
  // lfu, lfru: an access's weight halves every `lfu_half_life` accesses of the pool (> 0).
  double lfu_half_life = 1024.0;
  // lfru: fraction of the pool's slots in the protected (LFU) segment, in [0, 1].
  double lfru_protected_fraction = 0.75;
  // static: the usage profile (required) and the hot-set size per pool. static_hot_slots = 0 means
  // 3/4 of the pool's slots (rounded down, at least 1 slot left for the LRU part when n_slots > 1).
  std::shared_ptr<const UsageProfile> profile;
  uint32_t static_hot_slots = 0;
  // belady: the oracle (required).
  NextUseFn next_use;
};

// Names accepted by make_policy: "lru", "lfu", "lfru", "arc", "static", "belady".
const std::vector<std::string_view>& policy_names();

// Creates a policy by name. On failure returns nullptr and sets *status (unknown name, or a
// parameter the policy needs is missing / out of range). `status` may be null.
std::unique_ptr<Policy> make_policy(std::string_view name, const PolicyParams& params,
                                    CacheStatus* status);

// Belady helper for the simulator: the future of a fixed demand access sequence. Feed it the
// sequence once; call advance() as each access is replayed (BEFORE handing that access to the
// manager); oracle() then answers "next use after the current position" for every key in O(1).
// Not thread-safe (the simulator is single-threaded).
class AccessFuture {
 public:
  // n_layer x n_expert bounds the keys; every key in `seq` must lie inside them.
  AccessFuture(std::vector<ExpertKey> seq, uint32_t n_layer, uint32_t n_expert);
  // Consumes access number position() (0-based): its key's next use becomes the next occurrence.
  void advance() noexcept;
  uint64_t position() const noexcept { return pos_; }
  uint64_t next_use(ExpertKey k) const noexcept;
  NextUseFn oracle() const;  // captures `this`: the AccessFuture must outlive the policy

 private:
  std::vector<ExpertKey> seq_;
  std::vector<uint64_t> next_;      // next_[i]: next index with the same key, or UINT64_MAX
  std::vector<uint64_t> upcoming_;  // per dense key: index of its next access >= pos_
  uint32_t n_layer_, n_expert_;
  uint64_t pos_ = 0;
};

}  // namespace moe::cache
