// cache/src/policy_arc.cpp — Adaptive Replacement Cache (Megiddo & Modha, FAST 2003).
// Resident lists T1 (seen once recently) and T2 (seen at least twice), ghost lists B1/B2 of keys
// recently evicted from T1/T2, and the adaptive target p for |T1|, with c = the pool's slots:
//   hit in T1 or T2                  -> MRU of T2
//   miss, key in B1                  -> p = min(c, p + max(1, |B2|/|B1|)), key -> MRU of T2
//   miss, key in B2                  -> p = max(0, p - max(1, |B1|/|B2|)), key -> MRU of T2
//   miss, key in neither             -> MRU of T1
//   REPLACE (the pool is full): evict LRU of T1 into B1 if |T1| >= 1 and (|T1| > p or (key in B2 and
//   |T1| == p)), else LRU of T2 into B2.
//   Ghosts are bounded as in the paper: |T1| + |B1| <= c and |T1| + |T2| + |B1| + |B2| <= 2c.
// Differences forced by the manager, which calls victim() before on_insert():
//   - victim() computes the adapted p for the incoming key without committing it (on_insert does);
//   - the paper's "delete LRU of B1/B2 before REPLACE" becomes "trim the ghost lists after insert",
//     which removes the same keys;
//   - the LRU end of the chosen list is skipped while pinned or in flight (then the other list);
//   - entries freed without eviction (aborted, erased) leave no ghost;
//   - a prefetch enters T1 (dropping the key's ghost without adapting p), and its first demand use
//     keeps it in T1 (that use is the anticipated access, not a second one).
// Not thread-safe (called under the manager's mutex).
#include <algorithm>

#include "index_list.h"
#include "policy_impl.h"

namespace moe::cache::detail {
namespace {

class ArcPolicy final : public Policy {
 public:
  const char* name() const noexcept override { return "arc"; }
  void reset(const PoolInfo& pool) override {
    c_ = pool.n_slots;
    first_key_ = pool.first_key;
    p_ = 0.0;
    t1_.reset(c_);
    t2_.reset(c_);
    b1_.reset(pool.n_keys);
    b2_.reset(pool.n_keys);
  }
  void on_insert(uint32_t slot, uint32_t key, bool demand) override {
    const uint32_t k = key - first_key_;
    if (b1_.contains(k)) {
      if (demand) p_ = adapted_p(k);
      b1_.remove(k);
      (demand ? t2_ : t1_).push_back(slot);
    } else if (b2_.contains(k)) {
      if (demand) p_ = adapted_p(k);
      b2_.remove(k);
      (demand ? t2_ : t1_).push_back(slot);
    } else {
      t1_.push_back(slot);
    }
    while (t1_.size() + b1_.size() > c_ && !b1_.empty()) b1_.pop_front();
    while (t1_.size() + t2_.size() + b1_.size() + b2_.size() > 2 * c_) {
      if (!b2_.empty()) b2_.pop_front();
      else if (!b1_.empty()) b1_.pop_front();
      else break;
    }
  }
  void on_hit(uint32_t slot, uint32_t, bool first_use) override {
    if (t2_.contains(slot)) {
      t2_.move_to_back(slot);
    } else if (first_use) {
      t1_.move_to_back(slot);
    } else {
      t1_.remove(slot);
      t2_.push_back(slot);
    }
  }
  uint32_t victim(const uint8_t* evictable, uint32_t incoming_key, bool demand) override {
    const uint32_t k = incoming_key - first_key_;
    const double p = demand ? adapted_p(k) : p_;
    const double t1 = t1_.size();
    const bool from_t1 = t1_.size() >= 1 && (t1 > p || (demand && b2_.contains(k) && t1 == p));
    auto ok = [&](uint32_t s) { return evictable[s] != 0; };
    IndexList& first = from_t1 ? t1_ : t2_;
    IndexList& second = from_t1 ? t2_ : t1_;
    uint32_t v = first.find_front(ok);
    if (v == IndexList::kNil) v = second.find_front(ok);
    return v == IndexList::kNil ? kNoSlot : v;
  }
  void on_remove(uint32_t slot, uint32_t key, bool evicted) override {
    const uint32_t k = key - first_key_;
    if (t1_.contains(slot)) {
      t1_.remove(slot);
      if (evicted) b1_.push_back(k);
    } else {
      t2_.remove(slot);
      if (evicted) b2_.push_back(k);
    }
  }
  uint32_t size() const noexcept override { return t1_.size() + t2_.size(); }

 private:
  // p after a demand miss of local key k (unchanged when k is in no ghost list).
  double adapted_p(uint32_t k) const noexcept {
    const double b1 = b1_.size(), b2 = b2_.size();
    if (b1_.contains(k)) return std::min<double>(c_, p_ + std::max(1.0, b2 / b1));
    if (b2_.contains(k)) return std::max(0.0, p_ - std::max(1.0, b1 / b2));
    return p_;
  }
  uint32_t c_ = 0, first_key_ = 0;
  double p_ = 0.0;
  IndexList t1_, t2_;  // over pool-local slots
  IndexList b1_, b2_;  // over pool-local keys
};

}  // namespace

std::unique_ptr<Policy> make_arc() { return std::make_unique<ArcPolicy>(); }

}  // namespace moe::cache::detail
