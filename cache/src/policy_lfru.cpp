// cache/src/policy_lfru.cpp — LFRU, this project's variant (after Bilal & Kang's least frequent
// recently used): the pool is split into
//   - a probation segment, ordered by recency (LRU), where every new entry starts, and
//   - a protected segment of floor(n_slots * protected_fraction) slots, ordered by decayed frequency
//     (the LFU score of policy_lfu.cpp).
// A hit on a probation entry promotes it to the protected segment; when that overflows, its coldest
// entry (lowest decayed count, possibly the newcomer) is demoted to the MRU end of probation. Victims
// come from probation, least recent first; only when no probation entry is evictable is the coldest
// evictable protected entry taken. One-shot experts thus never displace the frequently used ones,
// while recency still decides among the rarely used. Prefetches enter probation like inserts; a
// prefetched entry's first use does not promote it (it is the anticipated access).
// Not thread-safe (called under the manager's mutex).
#include <algorithm>
#include <cmath>

#include "index_list.h"
#include "indexed_heap.h"
#include "policy_impl.h"

namespace moe::cache::detail {
namespace {

class LfruPolicy final : public Policy {
 public:
  LfruPolicy(double half_life, double fraction)
      : half_life_(half_life), fraction_(fraction), protected_(Colder{&counter_}) {}
  const char* name() const noexcept override { return "lfru"; }
  void reset(const PoolInfo& pool) override {
    counter_.reset(pool.n_slots, half_life_);
    probation_.reset(pool.n_slots);
    protected_.reset(pool.n_slots);
    protected_cap_ = std::min<uint32_t>(
        pool.n_slots, static_cast<uint32_t>(std::floor(pool.n_slots * fraction_)));
  }
  void on_insert(uint32_t slot, uint32_t, bool) override {
    counter_.start(slot);
    probation_.push_back(slot);
  }
  void on_hit(uint32_t slot, uint32_t, bool first_use) override {
    if (first_use) {
      counter_.last(slot) = counter_.now();
      if (probation_.contains(slot)) probation_.move_to_back(slot);
      else protected_.update(slot);
      return;
    }
    counter_.access(slot);
    if (protected_.contains(slot)) {
      protected_.update(slot);
      return;
    }
    if (protected_cap_ == 0) {
      probation_.move_to_back(slot);
      return;
    }
    probation_.remove(slot);
    protected_.push(slot);
    if (protected_.size() > protected_cap_) {
      const uint32_t d = protected_.top();
      protected_.erase(d);
      probation_.push_back(d);
    }
  }
  uint32_t victim(const uint8_t* evictable, uint32_t, bool) override {
    auto ok = [&](uint32_t s) { return evictable[s] != 0; };
    uint32_t v = probation_.find_front(ok);
    if (v != IndexList::kNil) return v;
    v = protected_.best_where(ok);
    return v == protected_.kNil ? kNoSlot : v;
  }
  void on_remove(uint32_t slot, uint32_t, bool) override {
    if (probation_.contains(slot)) probation_.remove(slot);
    else protected_.erase(slot);
  }
  uint32_t size() const noexcept override { return probation_.size() + protected_.size(); }

 private:
  struct Colder {
    const DecayedCounter* c;
    bool operator()(uint32_t a, uint32_t b) const noexcept { return c->colder(a, b); }
  };
  double half_life_, fraction_;
  uint32_t protected_cap_ = 0;
  DecayedCounter counter_;
  IndexList probation_;
  IndexedHeap<Colder> protected_;
};

}  // namespace

std::unique_ptr<Policy> make_lfru(double half_life, double protected_fraction) {
  return std::make_unique<LfruPolicy>(half_life, protected_fraction);
}

}  // namespace moe::cache::detail
