// cache/src/residency.cpp — ResidencyManager: the slot table of one tier, its pools, pins, in-flight
// entries, the prefetched-unused lists and the statistics. Every public method takes mu_ (see
// residency.h); the *_locked helpers expect it held. Nothing here allocates after create(), except
// stats() / check_invariants() which build their results.
#include "moe/cache/residency.h"

#include <cstdio>
#include <cstdlib>
#include <limits>

namespace moe::cache {

namespace {

// Programmer errors inside cache/ (a policy returning a non-evictable victim, a double release):
// report file:line and stop, like MOE_ASSERT, without depending on the runtime library.
[[noreturn]] void cache_assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: moe cache internal error: %s\n", file, line, expr);
  std::abort();
}
#define CACHE_ASSERT(c) ((c) ? (void)0 : cache_assert_fail(#c, __FILE__, __LINE__))

}  // namespace

struct ResidencyManager::Pool {
  uint32_t first_slot = 0, n_slots = 0;
  uint32_t first_key = 0, n_keys = 0;
  std::vector<uint32_t> free;  // stack of free slots (global indices); capacity n_slots
  std::unique_ptr<Policy> policy;
  uint32_t pu_head = kNoSlot, pu_tail = kNoSlot;  // prefetched-unused entries, oldest first
};

bool parse_scope(std::string_view s, Scope* out) noexcept {
  if (s == "global") { *out = Scope::Global; return true; }
  if (s == "layer") { *out = Scope::Layer; return true; }
  return false;
}
const char* scope_name(Scope s) noexcept { return s == Scope::Global ? "global" : "layer"; }

const char* entry_state_name(EntryState s) noexcept {
  switch (s) {
    case EntryState::Absent: return "absent";
    case EntryState::InFlight: return "in-flight";
    case EntryState::Resident: return "resident";
    case EntryState::Aborted: return "aborted";
  }
  return "?";
}

const char* reserve_status_name(ReserveStatus s) noexcept {
  switch (s) {
    case ReserveStatus::Reserved: return "reserved";
    case ReserveStatus::AlreadyPresent: return "already-present";
    case ReserveStatus::NoSlot: return "no-slot";
    case ReserveStatus::Disabled: return "disabled";
    case ReserveStatus::InvalidKey: return "invalid-key";
  }
  return "?";
}

ResidencyManager::ResidencyManager() = default;
ResidencyManager::~ResidencyManager() = default;

std::unique_ptr<ResidencyManager> ResidencyManager::create(const TierConfig& cfg,
                                                           std::string_view policy,
                                                           const PolicyParams& params,
                                                           CacheStatus* status) {
  auto fail = [&](CacheCode c, std::string msg) -> std::unique_ptr<ResidencyManager> {
    if (status) *status = CacheStatus::error(c, "cache tier '" + cfg.name + "': " + std::move(msg));
    return nullptr;
  };
  if (status) *status = CacheStatus::success();
  if (cfg.slot_bytes == 0) return fail(CacheCode::InvalidArgument, "slot_bytes must be > 0");
  if (cfg.n_layer == 0 || cfg.n_expert == 0)
    return fail(CacheCode::InvalidArgument, "n_layer and n_expert must be > 0");
  const uint64_t n_keys = uint64_t{cfg.n_layer} * cfg.n_expert;
  if (n_keys >= std::numeric_limits<uint32_t>::max())
    return fail(CacheCode::InvalidArgument, "n_layer * n_expert must be below 2^32");
  if (!cfg.moe_layers.empty() && cfg.moe_layers.size() != cfg.n_layer)
    return fail(CacheCode::InvalidArgument, "moe_layers must be empty or have n_layer entries");
  CacheStatus st;
  if (!make_policy(policy, params, &st)) return fail(st.code, st.message);

  std::unique_ptr<ResidencyManager> m(new ResidencyManager());
  m->cfg_ = cfg;
  m->policy_name_ = std::string(policy);
  m->n_keys_ = static_cast<uint32_t>(n_keys);
  // More slots than keys can never be used: cap there (a budget larger than the model).
  const uint64_t total = std::min<uint64_t>(cfg.budget_bytes / cfg.slot_bytes, n_keys);
  auto is_moe = [&](uint32_t l) { return cfg.moe_layers.empty() || cfg.moe_layers[l]; };
  uint32_t n_moe = 0;
  for (uint32_t l = 0; l < cfg.n_layer; ++l) n_moe += is_moe(l) ? 1 : 0;

  m->pool_of_layer_.assign(cfg.n_layer, kNoSlot);
  if (cfg.scope == Scope::Global) {
    Pool p;
    p.n_slots = static_cast<uint32_t>(total);
    p.n_keys = m->n_keys_;
    m->pools_.push_back(std::move(p));
    for (uint32_t l = 0; l < cfg.n_layer; ++l)
      if (is_moe(l)) m->pool_of_layer_[l] = 0;
  } else {
    const uint32_t per =
        n_moe ? static_cast<uint32_t>(std::min<uint64_t>(total / n_moe, cfg.n_expert)) : 0;
    uint32_t first = 0;
    for (uint32_t l = 0; l < cfg.n_layer; ++l) {
      if (!is_moe(l)) continue;
      Pool p;
      p.first_slot = first;
      p.n_slots = per;
      p.first_key = l * cfg.n_expert;
      p.n_keys = cfg.n_expert;
      first += per;
      m->pool_of_layer_[l] = static_cast<uint32_t>(m->pools_.size());
      m->pools_.push_back(std::move(p));
    }
  }
  uint32_t n_slots = 0;
  for (Pool& p : m->pools_) {
    n_slots += p.n_slots;
    if (p.n_slots == 0) continue;
    p.policy = make_policy(policy, params, &st);
    if (!p.policy) return fail(st.code, st.message);
    p.policy->reset(PoolInfo{p.n_slots, p.first_key, p.n_keys, cfg.n_expert});
    p.free.reserve(p.n_slots);
    for (uint32_t s = p.n_slots; s-- > 0;) p.free.push_back(p.first_slot + s);  // slot 0 pops first
  }
  m->n_slots_total_ = n_slots;
  m->slot_of_key_.assign(n_keys, kNoSlot);
  m->key_of_slot_.assign(n_slots, kNoSlot);
  m->pins_.assign(n_slots, 0);
  m->bytes_.assign(n_slots, 0);
  m->state_.assign(n_slots, SlotState::Free);
  m->evictable_.assign(n_slots, 0);
  m->prefetched_unused_.assign(n_slots, 0);
  m->early_unaccessed_.assign(n_slots, 0);
  m->pu_prev_.assign(n_slots, kNoSlot);
  m->pu_next_.assign(n_slots, kNoSlot);
  m->pool_of_slot_.assign(n_slots, kNoSlot);
  for (uint32_t i = 0; i < m->pools_.size(); ++i)
    for (uint32_t s = 0; s < m->pools_[i].n_slots; ++s) m->pool_of_slot_[m->pools_[i].first_slot + s] = i;
  m->stats_.assign(cfg.n_layer, LayerStats{});
  return m;
}

uint32_t ResidencyManager::key_index(ExpertKey k) const noexcept {
  if (k.layer >= cfg_.n_layer || k.expert >= cfg_.n_expert) return kNoSlot;
  return k.layer * cfg_.n_expert + k.expert;
}

uint32_t ResidencyManager::pool_slots(uint32_t layer) const noexcept {
  if (layer >= pool_of_layer_.size() || pool_of_layer_[layer] == kNoSlot) return 0;
  return pools_[pool_of_layer_[layer]].n_slots;
}

const char* ResidencyManager::policy_name() const noexcept { return policy_name_.c_str(); }

// --- prefetched-unused list (per pool, oldest first) ------------------------------------------

void ResidencyManager::pu_push(Pool& p, uint32_t s) noexcept {
  prefetched_unused_[s] = 1;
  pu_prev_[s] = p.pu_tail;
  pu_next_[s] = kNoSlot;
  if (p.pu_tail != kNoSlot) pu_next_[p.pu_tail] = s; else p.pu_head = s;
  p.pu_tail = s;
}

void ResidencyManager::pu_unlink(uint32_t s) noexcept {
  if (!prefetched_unused_[s]) return;
  Pool& p = pools_[pool_of_slot_[s]];
  const uint32_t a = pu_prev_[s], b = pu_next_[s];
  if (a != kNoSlot) pu_next_[a] = b; else p.pu_head = b;
  if (b != kNoSlot) pu_prev_[b] = a; else p.pu_tail = a;
  pu_prev_[s] = pu_next_[s] = kNoSlot;
  prefetched_unused_[s] = 0;
}

// --- demand path --------------------------------------------------------------------------------

EntryState ResidencyManager::access_locked(ExpertKey k, uint32_t* slot_out) {
  const uint32_t ki = key_index(k);
  if (ki == kNoSlot) return EntryState::Absent;
  LayerStats& st = stats_[k.layer];
  const uint32_t s = slot_of_key_[ki];
  if (s == kNoSlot) {
    ++st.misses;
    return EntryState::Absent;
  }
  if (early_unaccessed_[s]) {  // the access the early fetch was started for: a miss, no second reference
    early_unaccessed_[s] = 0;
    ++st.misses;
    *slot_out = s;
    return state_[s] == SlotState::Resident ? EntryState::Resident : EntryState::InFlight;
  }
  Pool& p = pools_[pool_of_slot_[s]];
  const bool first_use = prefetched_unused_[s] != 0;
  if (first_use) {
    pu_unlink(s);
    ++st.prefetch_hits;
  }
  p.policy->on_hit(s - p.first_slot, ki, first_use);
  *slot_out = s;
  if (state_[s] == SlotState::Resident) {
    ++st.hits;
    return EntryState::Resident;
  }
  ++st.inflight_hits;
  return EntryState::InFlight;
}

Handle ResidencyManager::Lookup(ExpertKey k) {
  Guard lock(*this);
  uint32_t s = kNoSlot;
  const EntryState e = access_locked(k, &s);
  if (e == EntryState::Absent) return Handle();
  ++pins_[s];
  evictable_[s] = 0;
  return Handle(this, s, k, e);
}

EntryState ResidencyManager::Touch(ExpertKey k) {
  Guard lock(*this);
  uint32_t s = kNoSlot;
  return access_locked(k, &s);
}

void ResidencyManager::Touch(const ExpertKey* keys, uint32_t n, EntryState* states) {
  Guard lock(*this);
  uint32_t s = kNoSlot;
  for (uint32_t i = 0; i < n; ++i) states[i] = access_locked(keys[i], &s);
}

EntryState ResidencyManager::Peek(ExpertKey k) const {
  Guard lock(*this);
  const uint32_t ki = key_index(k);
  if (ki == kNoSlot || slot_of_key_[ki] == kNoSlot) return EntryState::Absent;
  return state_[slot_of_key_[ki]] == SlotState::Resident ? EntryState::Resident : EntryState::InFlight;
}

void ResidencyManager::release_slot(uint32_t s) noexcept {
  Guard lock(*this);
  CACHE_ASSERT(s < n_slots_total_ && pins_[s] > 0);
  if (--pins_[s] != 0) return;
  if (state_[s] == SlotState::Zombie) free_slot_locked(s);
  else if (state_[s] == SlotState::Resident) evictable_[s] = 1;
}

// --- filling ------------------------------------------------------------------------------------

void ResidencyManager::free_slot_locked(uint32_t s) {
  state_[s] = SlotState::Free;
  evictable_[s] = 0;
  key_of_slot_[s] = kNoSlot;
  pools_[pool_of_slot_[s]].free.push_back(s);  // within the reserved capacity
}

Reservation ResidencyManager::reserve_locked(ExpertKey k, FetchKind kind, bool pin, uint64_t bytes) {
  Reservation r;
  const uint32_t ki = key_index(k);
  if (ki == kNoSlot || bytes > cfg_.slot_bytes) {
    r.status = ReserveStatus::InvalidKey;
    return r;
  }
  if (bytes == 0) bytes = cfg_.slot_bytes;
  LayerStats& st = stats_[k.layer];
  uint32_t s = slot_of_key_[ki];
  if (s != kNoSlot) {
    r.status = ReserveStatus::AlreadyPresent;
    r.slot = s;
    if (pin) {
      ++pins_[s];
      evictable_[s] = 0;
      r.handle = Handle(this, s, k,
                        state_[s] == SlotState::Resident ? EntryState::Resident : EntryState::InFlight);
    }
    return r;
  }
  const uint32_t pi = pool_of_layer_[k.layer];
  if (pi == kNoSlot || pools_[pi].n_slots == 0) {
    ++st.rejected;
    r.status = ReserveStatus::Disabled;
    return r;
  }
  Pool& p = pools_[pi];
  const bool demand = kind != FetchKind::Prefetch;
  if (!p.free.empty()) {
    s = p.free.back();
    p.free.pop_back();
  } else {
    uint32_t v = kNoSlot;
    if (cfg_.prefetched_unused_first) {
      for (uint32_t x = p.pu_head; x != kNoSlot; x = pu_next_[x]) {
        if (evictable_[x] && p.policy->may_evict(x - p.first_slot)) {
          v = x;
          break;
        }
      }
    }
    if (v == kNoSlot) {
      const uint32_t local = p.policy->victim(evictable_.data() + p.first_slot, ki, demand);
      if (local != kNoSlot) {
        CACHE_ASSERT(local < p.n_slots);
        v = p.first_slot + local;
      }
    }
    if (v == kNoSlot) {
      ++st.reserve_failures;
      r.status = ReserveStatus::NoSlot;
      return r;
    }
    CACHE_ASSERT(evictable_[v] && state_[v] == SlotState::Resident && pins_[v] == 0);
    const uint32_t old = key_of_slot_[v];
    const ExpertKey old_key{old / cfg_.n_expert, old % cfg_.n_expert};
    LayerStats& ost = stats_[old_key.layer];
    p.policy->on_remove(v - p.first_slot, old, true);
    ++ost.evictions;
    if (prefetched_unused_[v]) {
      ++ost.prefetch_wasted;
      pu_unlink(v);
    }
    slot_of_key_[old] = kNoSlot;
    r.evicted_valid = true;
    r.evicted = old_key;
    s = v;
  }
  key_of_slot_[s] = ki;
  slot_of_key_[ki] = s;
  state_[s] = SlotState::InFlight;
  evictable_[s] = 0;
  bytes_[s] = bytes;
  early_unaccessed_[s] = kind == FetchKind::EarlyDemand ? 1 : 0;
  ++st.inserts;
  if (!demand) {
    ++st.prefetch_inserts;
    pu_push(p, s);
  }
  p.policy->on_insert(s - p.first_slot, ki, demand);
  r.status = ReserveStatus::Reserved;
  r.slot = s;
  if (pin) {
    pins_[s] = 1;
    r.handle = Handle(this, s, k, EntryState::InFlight);
  }
  return r;
}

Reservation ResidencyManager::BeginFetch(ExpertKey k, FetchKind kind, bool pin, uint64_t bytes) {
  Guard lock(*this);
  return reserve_locked(k, kind, pin, bytes);
}

bool ResidencyManager::complete_locked(uint32_t ki) {
  const uint32_t s = slot_of_key_[ki];
  if (s == kNoSlot || state_[s] != SlotState::InFlight) return false;
  state_[s] = SlotState::Resident;
  evictable_[s] = pins_[s] == 0 ? 1 : 0;
  LayerStats& st = stats_[ki / cfg_.n_expert];
  ++st.completions;
  st.bytes_in += bytes_[s];
  return true;
}

bool ResidencyManager::CompleteFetch(ExpertKey k) {
  Guard lock(*this);
  const uint32_t ki = key_index(k);
  return ki != kNoSlot && complete_locked(ki);
}

bool ResidencyManager::AbortFetch(ExpertKey k) {
  Guard lock(*this);
  const uint32_t ki = key_index(k);
  if (ki == kNoSlot) return false;
  const uint32_t s = slot_of_key_[ki];
  if (s == kNoSlot || state_[s] != SlotState::InFlight) return false;
  Pool& p = pools_[pool_of_slot_[s]];
  ++stats_[k.layer].aborts;
  pu_unlink(s);
  p.policy->on_remove(s - p.first_slot, ki, false);
  slot_of_key_[ki] = kNoSlot;
  if (pins_[s] > 0) state_[s] = SlotState::Zombie;  // freed by the last release
  else free_slot_locked(s);
  return true;
}

Reservation ResidencyManager::Insert(ExpertKey k, FetchKind kind, bool pin, uint64_t bytes) {
  Guard lock(*this);
  Reservation r = reserve_locked(k, kind, pin, bytes);
  if (r.status == ReserveStatus::Reserved) {
    complete_locked(key_index(k));
    if (r.handle) r.handle.state_ = EntryState::Resident;
  }
  return r;
}

bool ResidencyManager::Erase(ExpertKey k) {
  Guard lock(*this);
  const uint32_t ki = key_index(k);
  if (ki == kNoSlot) return false;
  const uint32_t s = slot_of_key_[ki];
  if (s == kNoSlot || state_[s] != SlotState::Resident || pins_[s] != 0) return false;
  Pool& p = pools_[pool_of_slot_[s]];
  pu_unlink(s);
  p.policy->on_remove(s - p.first_slot, ki, false);
  slot_of_key_[ki] = kNoSlot;
  free_slot_locked(s);
  return true;
}

// --- inspection ---------------------------------------------------------------------------------

EntryState ResidencyManager::state(const Handle& h) const {
  if (!h) return EntryState::Absent;
  ExpertKey k;
  return slot_state(h.slot(), &k);
}

EntryState ResidencyManager::slot_state(uint32_t slot, ExpertKey* key) const {
  Guard lock(*this);
  if (slot >= n_slots_total_) return EntryState::Absent;
  const uint32_t ki = key_of_slot_[slot];
  if (key && ki != kNoSlot) *key = ExpertKey{ki / cfg_.n_expert, ki % cfg_.n_expert};
  switch (state_[slot]) {
    case SlotState::Free: return EntryState::Absent;
    case SlotState::InFlight: return EntryState::InFlight;
    case SlotState::Resident: return EntryState::Resident;
    case SlotState::Zombie: return EntryState::Aborted;
  }
  return EntryState::Absent;
}

TierStats ResidencyManager::stats() const {
  Guard lock(*this);
  TierStats t;
  t.tier = cfg_.name;
  t.slot_bytes = cfg_.slot_bytes;
  t.slots = n_slots_total_;
  for (uint32_t s = 0; s < n_slots_total_; ++s) {
    t.resident += state_[s] == SlotState::Resident ? 1 : 0;
    t.in_flight += state_[s] == SlotState::InFlight ? 1 : 0;
    t.pinned += pins_[s] > 0 ? 1 : 0;
  }
  t.layers = stats_;
  return t;
}

void ResidencyManager::reset_stats() {
  Guard lock(*this);
  for (LayerStats& s : stats_) s = LayerStats{};
}

std::string ResidencyManager::check_invariants() const {
  Guard lock(*this);
  auto bad = [](uint32_t s, const char* what) {
    return "slot " + std::to_string(s) + ": " + what;
  };
  std::vector<uint32_t> in_free(n_slots_total_, 0);
  for (const Pool& p : pools_) {
    for (uint32_t s : p.free) {
      if (s < p.first_slot || s >= p.first_slot + p.n_slots) return bad(s, "on another pool's free list");
      if (in_free[s]++) return bad(s, "twice on a free list");
    }
  }
  std::vector<uint32_t> occupied(pools_.size(), 0);
  uint32_t n_pu = 0;
  for (uint32_t s = 0; s < n_slots_total_; ++s) {
    const SlotState st = state_[s];
    if ((st == SlotState::Free) != (in_free[s] == 1)) return bad(s, "free state and free list disagree");
    if (evictable_[s] != (st == SlotState::Resident && pins_[s] == 0 ? 1 : 0))
      return bad(s, "evictable flag wrong");
    if (prefetched_unused_[s]) {
      ++n_pu;
      if (st != SlotState::InFlight && st != SlotState::Resident) return bad(s, "prefetched-unused but not occupied");
    }
    switch (st) {
      case SlotState::Free:
        if (pins_[s] != 0) return bad(s, "free but pinned");
        break;
      case SlotState::InFlight:
      case SlotState::Resident: {
        const uint32_t ki = key_of_slot_[s];
        if (ki >= n_keys_ || slot_of_key_[ki] != s) return bad(s, "key map does not point back");
        if (pool_of_layer_[ki / cfg_.n_expert] != pool_of_slot_[s]) return bad(s, "key in the wrong pool");
        ++occupied[pool_of_slot_[s]];
        break;
      }
      case SlotState::Zombie:
        if (pins_[s] == 0) return bad(s, "aborted entry without pins not freed");
        if (key_of_slot_[s] < n_keys_ && slot_of_key_[key_of_slot_[s]] == s)
          return bad(s, "aborted entry still mapped");
        break;
    }
  }
  for (uint32_t ki = 0; ki < n_keys_; ++ki) {
    const uint32_t s = slot_of_key_[ki];
    if (s != kNoSlot && (s >= n_slots_total_ || key_of_slot_[s] != ki))
      return "key " + std::to_string(ki) + ": slot does not point back";
  }
  uint32_t listed = 0;
  for (uint32_t i = 0; i < pools_.size(); ++i) {
    const Pool& p = pools_[i];
    if (p.policy && p.policy->size() != occupied[i])
      return "pool " + std::to_string(i) + ": policy tracks " + std::to_string(p.policy->size()) +
             " slots, " + std::to_string(occupied[i]) + " are occupied";
    uint32_t prev = kNoSlot;
    for (uint32_t x = p.pu_head; x != kNoSlot; x = pu_next_[x]) {
      if (!prefetched_unused_[x] || pu_prev_[x] != prev) return bad(x, "prefetched-unused list broken");
      if (++listed > n_slots_total_) return "prefetched-unused list has a cycle";
      prev = x;
    }
    if (prev != p.pu_tail) return "pool " + std::to_string(i) + ": prefetched-unused tail wrong";
  }
  if (listed != n_pu) return "prefetched-unused flags and lists disagree";
  return {};
}

}  // namespace moe::cache
