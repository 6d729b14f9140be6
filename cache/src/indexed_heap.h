// cache/src/indexed_heap.h — a binary heap over indices [0, n) with O(log n) push / erase / update
// and a position table, plus best_where(): the best element that satisfies a predicate, found by a
// best-first walk of the heap (O(m log m) for m elements visited, no allocation after reset()).
// Before(a, b) == true means a is nearer the top (a is evicted before b). Not thread-safe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace moe::cache::detail {

template <typename Before>
class IndexedHeap {
 public:
  static constexpr uint32_t kNil = 0xffffffffu;

  explicit IndexedHeap(Before before = Before()) : before_(std::move(before)) {}
  void reset(uint32_t n) {
    heap_.clear();
    heap_.reserve(n);
    pos_.assign(n, kNil);
    scratch_.clear();
    scratch_.reserve(n);
  }
  Before& order() noexcept { return before_; }
  uint32_t size() const noexcept { return static_cast<uint32_t>(heap_.size()); }
  bool contains(uint32_t i) const noexcept { return pos_[i] != kNil; }
  uint32_t top() const noexcept { return heap_.empty() ? kNil : heap_[0]; }

  void push(uint32_t i) {
    pos_[i] = size();
    heap_.push_back(i);  // within the reserved capacity: no allocation
    sift_up(pos_[i]);
  }
  void erase(uint32_t i) noexcept {
    const uint32_t p = pos_[i];
    const uint32_t last = heap_.back();
    heap_.pop_back();
    pos_[i] = kNil;
    if (p == size()) return;  // it was the last element
    heap_[p] = last;
    pos_[last] = p;
    update_at(p);
  }
  // Re-establish the order after i's priority changed in either direction.
  void update(uint32_t i) noexcept { update_at(pos_[i]); }

  // The best element (by Before) with ok(e), or kNil.
  template <typename Pred>
  uint32_t best_where(Pred ok) {
    if (heap_.empty()) return kNil;
    if (ok(heap_[0])) return heap_[0];  // the common case: the top is evictable
    // Best-first walk: scratch_ is a heap of heap positions ordered by their elements.
    scratch_.clear();
    auto worse = [this](uint32_t pa, uint32_t pb) { return before_(heap_[pb], heap_[pa]); };
    auto push_pos = [&](uint32_t p) {
      if (p >= heap_.size()) return;
      scratch_.push_back(p);
      std::size_t c = scratch_.size() - 1;
      while (c > 0) {
        const std::size_t par = (c - 1) / 2;
        if (!worse(scratch_[par], scratch_[c])) break;
        std::swap(scratch_[par], scratch_[c]);
        c = par;
      }
    };
    auto pop_pos = [&]() {
      const uint32_t r = scratch_[0];
      scratch_[0] = scratch_.back();
      scratch_.pop_back();
      std::size_t c = 0;
      for (;;) {
        std::size_t l = 2 * c + 1, b = c;
        if (l < scratch_.size() && worse(scratch_[b], scratch_[l])) b = l;
        if (l + 1 < scratch_.size() && worse(scratch_[b], scratch_[l + 1])) b = l + 1;
        if (b == c) break;
        std::swap(scratch_[b], scratch_[c]);
        c = b;
      }
      return r;
    };
    push_pos(1);
    push_pos(2);
    while (!scratch_.empty()) {
      const uint32_t p = pop_pos();
      if (ok(heap_[p])) return heap_[p];
      push_pos(2 * p + 1);
      push_pos(2 * p + 2);
    }
    return kNil;
  }

 private:
  void update_at(uint32_t p) noexcept {
    if (p > 0 && before_(heap_[p], heap_[(p - 1) / 2])) sift_up(p);
    else sift_down(p);
  }
  void place(uint32_t p, uint32_t e) noexcept {
    heap_[p] = e;
    pos_[e] = p;
  }
  void sift_up(uint32_t p) noexcept {
    const uint32_t e = heap_[p];
    while (p > 0) {
      const uint32_t par = (p - 1) / 2;
      if (!before_(e, heap_[par])) break;
      place(p, heap_[par]);
      p = par;
    }
    place(p, e);
  }
  void sift_down(uint32_t p) noexcept {
    const uint32_t e = heap_[p];
    const uint32_t n = size();
    for (;;) {
      uint32_t c = 2 * p + 1;
      if (c >= n) break;
      if (c + 1 < n && before_(heap_[c + 1], heap_[c])) ++c;
      if (!before_(heap_[c], e)) break;
      place(p, heap_[c]);
      p = c;
    }
    place(p, e);
  }

  Before before_;
  std::vector<uint32_t> heap_, pos_, scratch_;
};

}  // namespace moe::cache::detail
