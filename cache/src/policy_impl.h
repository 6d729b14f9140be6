// cache/src/policy_impl.h — constructors of the concrete policies (one .cpp each), for the factory.
// Policies are not thread-safe; their manager calls them under its mutex.
#pragma once
#include <memory>

#include "moe/cache/policy.h"

namespace moe::cache::detail {

std::unique_ptr<Policy> make_lru();
std::unique_ptr<Policy> make_lfu(double half_life);
std::unique_ptr<Policy> make_lfru(double half_life, double protected_fraction);
std::unique_ptr<Policy> make_arc();
std::unique_ptr<Policy> make_static(std::shared_ptr<const UsageProfile> profile, uint32_t hot_slots);
std::unique_ptr<Policy> make_belady(NextUseFn next_use);

// Exponentially decayed access counts with lazy decay: instead of multiplying every score by
// 2^(-1/half_life) per access, each access adds a weight that grows by 2^(1/half_life) per access,
// which orders the scores identically (all are implicitly scaled by the same factor). Weights are
// renormalised before they overflow a double.
class DecayedCounter {
 public:
  void reset(uint32_t n, double half_life);
  // Advances the clock by one access and returns the weight of an access now.
  double tick() noexcept;
  double& score(uint32_t i) noexcept { return score_[i]; }
  uint64_t& last(uint32_t i) noexcept { return last_[i]; }
  uint64_t now() const noexcept { return clock_; }
  // a has a lower decayed count than b (ties: a was accessed less recently).
  bool colder(uint32_t a, uint32_t b) const noexcept {
    return score_[a] < score_[b] || (score_[a] == score_[b] && last_[a] < last_[b]);
  }
  void access(uint32_t i) noexcept {  // one access of i, now
    const double w = tick();
    score_[i] += w;
    last_[i] = clock_;
  }
  void start(uint32_t i) noexcept {  // i enters with one access, now
    const double w = tick();
    score_[i] = w;
    last_[i] = clock_;
  }

 private:
  std::vector<double> score_;
  std::vector<uint64_t> last_;
  double growth_ = 1.0, weight_ = 1.0;
  uint64_t clock_ = 0;
};

}  // namespace moe::cache::detail
