// cache/src/policy_lfu.cpp — least frequently used with exponential decay: each slot's score is its
// access count with every access weighted 2^(-age / half_life) (age in accesses of the pool); the
// victim is the evictable slot with the lowest score, ties broken by least recent access. A prefetch
// counts as the anticipated access (score of one access now); its first use adds nothing more.
// Also holds DecayedCounter (shared with LFRU). Not thread-safe (called under the manager's mutex).
#include <cmath>

#include "indexed_heap.h"
#include "policy_impl.h"

namespace moe::cache::detail {

void DecayedCounter::reset(uint32_t n, double half_life) {
  score_.assign(n, 0.0);
  last_.assign(n, 0);
  growth_ = std::exp2(1.0 / half_life);
  weight_ = 1.0;
  clock_ = 0;
}

double DecayedCounter::tick() noexcept {
  ++clock_;
  weight_ *= growth_;
  if (weight_ > 1e150) {  // renormalise: same factor for all, so the order is unchanged
    for (double& s : score_) s *= 1e-150;
    weight_ *= 1e-150;
  }
  return weight_;
}

namespace {

class LfuPolicy final : public Policy {
 public:
  explicit LfuPolicy(double half_life) : half_life_(half_life), heap_(Colder{&counter_}) {}
  const char* name() const noexcept override { return "lfu"; }
  void reset(const PoolInfo& pool) override {
    counter_.reset(pool.n_slots, half_life_);
    heap_.reset(pool.n_slots);
  }
  void on_insert(uint32_t slot, uint32_t, bool) override {
    counter_.start(slot);
    heap_.push(slot);
  }
  void on_hit(uint32_t slot, uint32_t, bool first_use) override {
    if (first_use) {  // the prefetch already counted this access; only refresh recency
      counter_.last(slot) = counter_.now();
    } else {
      counter_.access(slot);
    }
    heap_.update(slot);
  }
  uint32_t victim(const uint8_t* evictable, uint32_t, bool) override {
    const uint32_t v = heap_.best_where([&](uint32_t s) { return evictable[s] != 0; });
    return v == heap_.kNil ? kNoSlot : v;
  }
  void on_remove(uint32_t slot, uint32_t, bool) override { heap_.erase(slot); }
  uint32_t size() const noexcept override { return heap_.size(); }

 private:
  struct Colder {
    const DecayedCounter* c;
    bool operator()(uint32_t a, uint32_t b) const noexcept { return c->colder(a, b); }
  };
  double half_life_;
  DecayedCounter counter_;
  IndexedHeap<Colder> heap_;
};

}  // namespace

std::unique_ptr<Policy> make_lfu(double half_life) { return std::make_unique<LfuPolicy>(half_life); }

}  // namespace moe::cache::detail
