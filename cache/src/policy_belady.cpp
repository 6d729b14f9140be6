// cache/src/policy_belady.cpp — Belady's MIN (optimal offline replacement for demand paging): the
// victim is the evictable entry whose next use lies furthest in the future (never again = infinity;
// ties: lower slot). The next-use position of an entry is asked of the oracle on each insert and hit
// (it cannot change in between). Simulator only: it needs the future. Also AccessFuture, the oracle
// built from a recorded access sequence. Not thread-safe (called under the manager's mutex).
#include <limits>

#include "indexed_heap.h"
#include "policy_impl.h"

namespace moe::cache {
namespace detail {
namespace {

class BeladyPolicy final : public Policy {
 public:
  explicit BeladyPolicy(NextUseFn f) : next_use_(std::move(f)), heap_(Later{&next_}) {}
  const char* name() const noexcept override { return "belady"; }
  void reset(const PoolInfo& pool) override {
    n_expert_ = pool.n_expert;
    next_.assign(pool.n_slots, 0);
    heap_.reset(pool.n_slots);
  }
  void on_insert(uint32_t slot, uint32_t key, bool) override {
    next_[slot] = ask(key);
    heap_.push(slot);
  }
  void on_hit(uint32_t slot, uint32_t key, bool) override {
    next_[slot] = ask(key);
    heap_.update(slot);
  }
  uint32_t victim(const uint8_t* evictable, uint32_t, bool) override {
    const uint32_t v = heap_.best_where([&](uint32_t s) { return evictable[s] != 0; });
    return v == heap_.kNil ? kNoSlot : v;
  }
  void on_remove(uint32_t slot, uint32_t, bool) override { heap_.erase(slot); }
  uint32_t size() const noexcept override { return heap_.size(); }

 private:
  struct Later {
    const std::vector<uint64_t>* next;
    bool operator()(uint32_t a, uint32_t b) const noexcept {
      const uint64_t na = (*next)[a], nb = (*next)[b];
      return na > nb || (na == nb && a < b);
    }
  };
  uint64_t ask(uint32_t key) const { return next_use_(ExpertKey{key / n_expert_, key % n_expert_}); }
  NextUseFn next_use_;
  uint32_t n_expert_ = 1;
  std::vector<uint64_t> next_;
  IndexedHeap<Later> heap_;
};

}  // namespace

std::unique_ptr<Policy> make_belady(NextUseFn next_use) {
  return std::make_unique<BeladyPolicy>(std::move(next_use));
}

}  // namespace detail

static constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

AccessFuture::AccessFuture(std::vector<ExpertKey> seq, uint32_t n_layer, uint32_t n_expert)
    : seq_(std::move(seq)), n_layer_(n_layer), n_expert_(n_expert) {
  const size_t n_keys = static_cast<size_t>(n_layer) * n_expert;
  next_.assign(seq_.size(), kNever);
  upcoming_.assign(n_keys, kNever);
  // Walking backwards, upcoming_ holds each key's nearest later occurrence.
  for (size_t i = seq_.size(); i-- > 0;) {
    const size_t k = static_cast<size_t>(seq_[i].layer) * n_expert + seq_[i].expert;
    next_[i] = upcoming_[k];
    upcoming_[k] = i;
  }
}

void AccessFuture::advance() noexcept {
  if (pos_ >= seq_.size()) return;
  const ExpertKey k = seq_[pos_];
  upcoming_[static_cast<size_t>(k.layer) * n_expert_ + k.expert] = next_[pos_];
  ++pos_;
}

uint64_t AccessFuture::next_use(ExpertKey k) const noexcept {
  if (k.layer >= n_layer_ || k.expert >= n_expert_) return kNever;
  return upcoming_[static_cast<size_t>(k.layer) * n_expert_ + k.expert];
}

NextUseFn AccessFuture::oracle() const {
  return [this](ExpertKey k) { return next_use(k); };
}

}  // namespace moe::cache
