// cache/src/policy_static.cpp — static hot set from a usage profile: the N keys of the pool with the
// highest profile counts (ties: lower layer, then lower expert; zero counts never qualify) are hot;
// a hot entry, once inserted, is never chosen as a victim (pinned by policy; may_evict says so, so
// the manager's prefetched-unused-first rule respects it too). Every other entry is managed by LRU.
// N = params.static_hot_slots, capped at the pool's slots minus one (so cold keys can always pass
// through one slot), or by default 3/4 of the pool's slots. With a single-slot pool the one slot is
// LRU. Not thread-safe (called under the manager's mutex).
#include <algorithm>
#include <numeric>

#include "index_list.h"
#include "moe/cache/profile.h"
#include "policy_impl.h"

namespace moe::cache::detail {
namespace {

class StaticHotSetPolicy final : public Policy {
 public:
  StaticHotSetPolicy(std::shared_ptr<const UsageProfile> profile, uint32_t hot_slots)
      : profile_(std::move(profile)), hot_slots_(hot_slots) {}
  const char* name() const noexcept override { return "static"; }
  void reset(const PoolInfo& pool) override {
    first_key_ = pool.first_key;
    cold_.reset(pool.n_slots);
    hot_slot_.assign(pool.n_slots, 0);
    hot_key_.assign(pool.n_keys, 0);
    n_hot_resident_ = 0;
    const uint32_t cap = pool.n_slots > 0 ? pool.n_slots - 1 : 0;
    const uint32_t want = hot_slots_ ? hot_slots_ : pool.n_slots * 3 / 4;
    const uint32_t n_hot = std::min(want, cap);
    std::vector<uint32_t> order(pool.n_keys);
    std::iota(order.begin(), order.end(), 0u);
    auto count = [&](uint32_t k) {
      const uint32_t key = pool.first_key + k;
      return profile_->count(ExpertKey{key / pool.n_expert, key % pool.n_expert});
    };
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t b) { return count(a) > count(b); });
    for (uint32_t i = 0; i < n_hot && i < order.size(); ++i)
      if (count(order[i]) > 0) hot_key_[order[i]] = 1;
  }
  void on_insert(uint32_t slot, uint32_t key, bool) override {
    if (hot_key_[key - first_key_]) {
      hot_slot_[slot] = 1;
      ++n_hot_resident_;
    } else {
      cold_.push_back(slot);
    }
  }
  void on_hit(uint32_t slot, uint32_t, bool) override {
    if (!hot_slot_[slot]) cold_.move_to_back(slot);
  }
  uint32_t victim(const uint8_t* evictable, uint32_t, bool) override {
    const uint32_t v = cold_.find_front([&](uint32_t s) { return evictable[s] != 0; });
    return v == IndexList::kNil ? kNoSlot : v;
  }
  void on_remove(uint32_t slot, uint32_t, bool) override {
    if (hot_slot_[slot]) {  // only when aborted or erased: hot slots are never victims
      hot_slot_[slot] = 0;
      --n_hot_resident_;
    } else {
      cold_.remove(slot);
    }
  }
  bool may_evict(uint32_t slot) const noexcept override { return hot_slot_[slot] == 0; }
  uint32_t size() const noexcept override { return cold_.size() + n_hot_resident_; }

 private:
  std::shared_ptr<const UsageProfile> profile_;
  uint32_t hot_slots_;
  uint32_t first_key_ = 0, n_hot_resident_ = 0;
  IndexList cold_;
  std::vector<uint8_t> hot_slot_;  // per pool slot
  std::vector<uint8_t> hot_key_;   // per pool key
};

}  // namespace

std::unique_ptr<Policy> make_static(std::shared_ptr<const UsageProfile> profile, uint32_t hot_slots) {
  return std::make_unique<StaticHotSetPolicy>(std::move(profile), hot_slots);
}

}  // namespace moe::cache::detail
