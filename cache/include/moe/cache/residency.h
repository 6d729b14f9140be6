// moe/cache/residency.h — one tier's residency manager: which experts occupy which slots.
//
// A tier (VRAM, DRAM, ...) is a byte budget cut into fixed-size slots: slot_bytes = the largest
// expert of the model's size class, slots = budget / slot_bytes. Slot indices are stable for the
// manager's lifetime, so the engine maps slot -> memory as base + slot * slot_bytes. Every slot is
// Free, InFlight (reserved, data arriving) or Resident. Keys are (layer, expert) with layer < n_layer,
// expert < n_expert; the manager keeps a dense key -> slot table, so nothing on the hot path hashes
// or allocates.
//
// Scope: Global = one pool of all slots; Layer = the budget split evenly across the MoE layers, each
// layer a pool of floor(slots / n_moe_layers) slots with its own policy (a remainder of fewer than
// n_moe_layers slots stays unused; a layer whose quota is 0 never caches).
//
// Eviction: only Resident entries with no pin are evicted, never InFlight or pinned ones. When
// `prefetched_unused_first` is set (default), the oldest evictable entry that was prefetched and not
// used yet is the victim before the policy is asked (unless the policy vetoes it, see may_evict).
// When nothing is evictable, a reservation fails with ReserveStatus::NoSlot: the caller waits for a
// release or computes elsewhere. Capacity 0 disables the pool: lookups miss, reservations return
// ReserveStatus::Disabled.
//
// Thread-safety: every public method takes the manager's mutex (one std::mutex; skipped when
// TierConfig::thread_safe is false, for single-threaded users such as the simulator), so the compute thread may Lookup/BeginFetch while IO completion threads call
// CompleteFetch/AbortFetch and other threads drop Handles. A Handle may be released on any thread;
// it must not outlive its manager. The Belady oracle is called under the mutex.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "moe/cache/expert_key.h"
#include "moe/cache/policy.h"
#include "moe/cache/stats.h"
#include "moe/cache/status.h"

namespace moe::cache {

enum class Scope { Global, Layer };
// "global" / "layer" (the --cache-scope values). Returns false on anything else.
bool parse_scope(std::string_view s, Scope* out) noexcept;
const char* scope_name(Scope s) noexcept;

enum class EntryState : uint8_t {
  Absent,    // not in this tier (or the key is out of range)
  InFlight,  // slot reserved, data arriving
  Resident,  // data present
  Aborted,   // (only seen through a Handle) the fetch was aborted while the handle pinned it
};
const char* entry_state_name(EntryState s) noexcept;

// EarlyDemand: a demand fetch started before its access (the engine knows the routing and starts a
// layer's misses while it computes the resident experts). It is evicted and inserted as Demand; its
// first access is counted as the miss it is, and the policy sees that access as the insert already
// told it (no second reference).
enum class FetchKind : uint8_t { Demand, Prefetch, EarlyDemand };

struct TierConfig {
  std::string name = "tier";     // for statistics ("vram", "dram")
  uint64_t budget_bytes = 0;     // bytes of this tier given to experts; 0 disables caching
  uint64_t slot_bytes = 0;       // bytes of one slot (> 0): the largest expert of the size class
  uint32_t n_layer = 0;          // model layers (keys' layer < n_layer), > 0
  uint32_t n_expert = 0;         // routed experts per MoE layer (keys' expert < n_expert), > 0
  std::vector<bool> moe_layers;  // which layers have routed experts; empty = all of them
  Scope scope = Scope::Global;
  bool prefetched_unused_first = true;
  // false: every call comes from one thread (the simulator), so the manager skips its mutex. Why:
  // the lock and unlock were ~6% of a replay. Calls from two threads are then a data race.
  bool thread_safe = true;
};

class ResidencyManager;

// A pin on one slot: while a Handle holds it, the entry is never evicted and its slot is never
// reused. Move-only; releases on destruction. An empty Handle (a miss) holds nothing.
class Handle {
 public:
  Handle() noexcept = default;
  Handle(Handle&& o) noexcept { steal(o); }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) { release(); steal(o); }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { release(); }

  explicit operator bool() const noexcept { return mgr_ != nullptr; }
  uint32_t slot() const noexcept { return slot_; }  // stable slot index, kNoSlot when empty
  ExpertKey key() const noexcept { return key_; }
  // State when the handle was taken (Resident or InFlight), Absent for an empty handle. The current
  // state (InFlight -> Resident/Aborted) is ResidencyManager::state(handle).
  EntryState state_at_lookup() const noexcept { return state_; }
  void release() noexcept;

 private:
  friend class ResidencyManager;
  Handle(ResidencyManager* m, uint32_t slot, ExpertKey k, EntryState s) noexcept
      : mgr_(m), slot_(slot), key_(k), state_(s) {}
  void steal(Handle& o) noexcept {
    mgr_ = o.mgr_; slot_ = o.slot_; key_ = o.key_; state_ = o.state_;
    o.mgr_ = nullptr; o.slot_ = kNoSlot; o.state_ = EntryState::Absent;
  }
  ResidencyManager* mgr_ = nullptr;
  uint32_t slot_ = kNoSlot;
  ExpertKey key_{};
  EntryState state_ = EntryState::Absent;
};

enum class ReserveStatus : uint8_t {
  Reserved,       // a slot was reserved for the key (state InFlight); `evicted` tells what left
  AlreadyPresent, // the key is already InFlight or Resident in `slot` (nothing changed)
  NoSlot,         // every slot of the pool is pinned or in flight (or vetoed): wait or compute elsewhere
  Disabled,       // the pool has 0 slots: this tier does not cache the key
  InvalidKey,     // layer/expert out of range, or bytes > slot_bytes
};
const char* reserve_status_name(ReserveStatus s) noexcept;

struct Reservation {
  ReserveStatus status = ReserveStatus::Disabled;
  uint32_t slot = kNoSlot;     // for Reserved / AlreadyPresent
  bool evicted_valid = false;  // an entry was evicted to make room
  ExpertKey evicted{};         // ... this one (its slot is `slot`)
  Handle handle;               // a pin on `slot` when requested and status is Reserved/AlreadyPresent

  bool ok() const noexcept {
    return status == ReserveStatus::Reserved || status == ReserveStatus::AlreadyPresent;
  }
};

class ResidencyManager {
 public:
  // Builds a manager; on an impossible config (slot_bytes 0, n_layer/n_expert 0, too many keys,
  // moe_layers of the wrong length) or a policy that cannot be created (unknown name, missing
  // profile/oracle) returns nullptr and sets *status (may be null).
  static std::unique_ptr<ResidencyManager> create(const TierConfig& cfg, std::string_view policy,
                                                  const PolicyParams& params, CacheStatus* status);
  ~ResidencyManager();
  ResidencyManager(const ResidencyManager&) = delete;
  ResidencyManager& operator=(const ResidencyManager&) = delete;

  // --- demand path ---------------------------------------------------------------------------
  // A demand access: counts a hit / in-flight hit / miss, tells the policy, marks a prefetched entry
  // used, and on a hit or in-flight hit returns a Handle pinning the slot (empty on a miss).
  Handle Lookup(ExpertKey k);
  // Same accounting as Lookup without pinning (the simulator's access). Returns the state found.
  EntryState Touch(ExpertKey k);
  // Batch form for the simulator: one lock for the n accesses of a (token, layer) event, in order;
  // states[i] receives the state found for keys[i]. PRECONDITION: both arrays hold n elements.
  void Touch(const ExpertKey* keys, uint32_t n, EntryState* states);
  // Looks without counting or telling the policy (predictors, planners). Never pins.
  EntryState Peek(ExpertKey k) const;

  // --- filling -------------------------------------------------------------------------------
  // Reserves a slot for `k` (state InFlight), evicting if the pool is full. `bytes` is what the
  // fetch will bring (0 = slot_bytes; must be <= slot_bytes), counted into bytes_in on completion.
  // A Prefetch entry is marked prefetched-unused until its first demand access. When `pin` is set
  // and the result is ok(), reservation.handle pins the slot (so it survives until the kernel ran).
  Reservation BeginFetch(ExpertKey k, FetchKind kind, bool pin = false, uint64_t bytes = 0);
  // The data of `k` has arrived: InFlight -> Resident. False if `k` is not in flight (aborted,
  // or never reserved). Callable from any thread.
  bool CompleteFetch(ExpertKey k);
  // The fetch of `k` failed or was cancelled: its slot is freed (at once, or when the last pin of
  // it is released; handles then report Aborted). False if `k` is not in flight.
  bool AbortFetch(ExpertKey k);
  // BeginFetch + CompleteFetch for data copied synchronously.
  Reservation Insert(ExpertKey k, FetchKind kind, bool pin = false, uint64_t bytes = 0);
  // Drops a resident, unpinned entry (not an eviction: no ghost, no eviction count). False if the
  // entry is absent, in flight or pinned.
  bool Erase(ExpertKey k);

  // --- inspection ----------------------------------------------------------------------------
  EntryState state(const Handle& h) const;  // current state of a pinned slot
  // The key held by `slot` (valid only while its state is not Absent) and the state of the slot.
  EntryState slot_state(uint32_t slot, ExpertKey* key) const;
  uint32_t slot_count() const noexcept { return n_slots_total_; }  // slots in use by pools
  uint64_t slot_bytes() const noexcept { return cfg_.slot_bytes; }
  uint32_t pool_slots(uint32_t layer) const noexcept;  // slots available to `layer`'s pool
  const TierConfig& config() const noexcept { return cfg_; }
  const char* policy_name() const noexcept;
  TierStats stats() const;
  void reset_stats();
  // Checks every internal invariant (key <-> slot maps, free lists, pin counts, policy sizes,
  // prefetched-unused list). Returns an empty string when they hold, else a description.
  std::string check_invariants() const;

 private:
  struct Pool;
  ResidencyManager();
  friend class Handle;
  void release_slot(uint32_t slot) noexcept;
  uint32_t key_index(ExpertKey k) const noexcept;
  EntryState access_locked(ExpertKey k, uint32_t* slot_out);
  Reservation reserve_locked(ExpertKey k, FetchKind kind, bool pin, uint64_t bytes);
  bool complete_locked(uint32_t ki);
  void free_slot_locked(uint32_t slot);
  void pu_unlink(uint32_t slot) noexcept;
  void pu_push(Pool& p, uint32_t slot) noexcept;

  enum class SlotState : uint8_t { Free, InFlight, Resident, Zombie };
  TierConfig cfg_;
  std::string policy_name_;
  mutable std::mutex mu_;
  // Locks mu_ unless the config is single-threaded.
  class Guard {
   public:
    explicit Guard(const ResidencyManager& m) noexcept : mu_(m.cfg_.thread_safe ? &m.mu_ : nullptr) {
      if (mu_) mu_->lock();
    }
    ~Guard() {
      if (mu_) mu_->unlock();
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    std::mutex* mu_;
  };
  uint32_t n_keys_ = 0;
  uint32_t n_slots_total_ = 0;
  std::vector<uint32_t> slot_of_key_;     // dense key -> slot (kNoSlot)
  std::vector<uint32_t> pool_of_layer_;   // layer -> pool index (kNoSlot for dense layers)
  std::vector<Pool> pools_;
  // per slot
  std::vector<uint32_t> key_of_slot_;     // dense key (valid unless Free)
  std::vector<uint32_t> pins_;
  std::vector<uint64_t> bytes_;           // bytes the fetch brings
  std::vector<SlotState> state_;
  std::vector<uint8_t> evictable_;        // Resident && pins == 0 (the policies' view)
  std::vector<uint8_t> prefetched_unused_;
  std::vector<uint8_t> early_unaccessed_;  // an EarlyDemand entry not accessed yet
  std::vector<uint32_t> pu_prev_, pu_next_;
  std::vector<uint32_t> pool_of_slot_;
  std::vector<LayerStats> stats_;
};

inline void Handle::release() noexcept {
  if (mgr_) {
    mgr_->release_slot(slot_);
    mgr_ = nullptr;
    slot_ = kNoSlot;
    state_ = EntryState::Absent;
  }
}

}  // namespace moe::cache
