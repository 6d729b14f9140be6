// cache/src/policy_lru.cpp — least recently used: one recency list, the victim is the least recently
// used evictable slot. A prefetch counts as the anticipated access (the entry enters at the MRU end).
// Not thread-safe (called under the manager's mutex).
#include "index_list.h"
#include "policy_impl.h"

namespace moe::cache::detail {
namespace {

class LruPolicy final : public Policy {
 public:
  const char* name() const noexcept override { return "lru"; }
  void reset(const PoolInfo& pool) override { list_.reset(pool.n_slots); }
  void on_insert(uint32_t slot, uint32_t, bool) override { list_.push_back(slot); }
  void on_hit(uint32_t slot, uint32_t, bool) override { list_.move_to_back(slot); }
  uint32_t victim(const uint8_t* evictable, uint32_t, bool) override {
    const uint32_t v = list_.find_front([&](uint32_t s) { return evictable[s] != 0; });
    return v == IndexList::kNil ? kNoSlot : v;
  }
  void on_remove(uint32_t slot, uint32_t, bool) override { list_.remove(slot); }
  uint32_t size() const noexcept override { return list_.size(); }

 private:
  IndexList list_;
};

}  // namespace

std::unique_ptr<Policy> make_lru() { return std::make_unique<LruPolicy>(); }

}  // namespace moe::cache::detail
