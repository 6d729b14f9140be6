// cache/src/index_list.h — an intrusive doubly-linked list over the indices [0, n): O(1) push,
// remove, move-to-back, membership; no allocation after reset(). Front = oldest (LRU), back = newest.
// Not thread-safe (owned by one policy, used under the manager's mutex).
#pragma once
#include <cstdint>
#include <vector>

namespace moe::cache::detail {

class IndexList {
 public:
  static constexpr uint32_t kNil = 0xffffffffu;

  void reset(uint32_t n) {
    prev_.assign(n, kNil);
    next_.assign(n, kNil);
    in_.assign(n, 0);
    head_ = tail_ = kNil;
    size_ = 0;
  }
  bool contains(uint32_t i) const noexcept { return in_[i] != 0; }
  uint32_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  uint32_t front() const noexcept { return head_; }
  uint32_t back() const noexcept { return tail_; }
  uint32_t next(uint32_t i) const noexcept { return next_[i]; }
  uint32_t prev(uint32_t i) const noexcept { return prev_[i]; }

  // PRECONDITION: !contains(i).
  void push_back(uint32_t i) noexcept {
    prev_[i] = tail_;
    next_[i] = kNil;
    if (tail_ != kNil) next_[tail_] = i; else head_ = i;
    tail_ = i;
    in_[i] = 1;
    ++size_;
  }
  // PRECONDITION: contains(i).
  void remove(uint32_t i) noexcept {
    const uint32_t p = prev_[i], n = next_[i];
    if (p != kNil) next_[p] = n; else head_ = n;
    if (n != kNil) prev_[n] = p; else tail_ = p;
    prev_[i] = next_[i] = kNil;
    in_[i] = 0;
    --size_;
  }
  void move_to_back(uint32_t i) noexcept {
    if (tail_ == i) return;
    remove(i);
    push_back(i);
  }
  uint32_t pop_front() noexcept {
    const uint32_t i = head_;
    if (i != kNil) remove(i);
    return i;
  }
  // First index from the front with ok(i), or kNil.
  template <typename Pred>
  uint32_t find_front(Pred ok) const {
    for (uint32_t i = head_; i != kNil; i = next_[i])
      if (ok(i)) return i;
    return kNil;
  }

 private:
  std::vector<uint32_t> prev_, next_;
  std::vector<uint8_t> in_;
  uint32_t head_ = kNil, tail_ = kNil, size_ = 0;
};

}  // namespace moe::cache::detail
