// prefetch/src/predictor_impl.h — pieces shared by the predictor implementations (internal).
// Not thread-safe (each object belongs to one stream).
#pragma once
#include <cmath>
#include <cstdint>

#include "moe/prefetch/predictor.h"

namespace moe::prefetch::detail {

// Exponential decay without touching old entries: an observation made at token t is added with
// weight 2^(t / half_life), so relative weights halve every half_life tokens. When the current
// weight grows past 2^64 the owner rescales its tables by 1 / weight (rare: once per 64 half-lives).
class DecayClock {
 public:
  explicit DecayClock(double half_life_tokens)
      : step_(half_life_tokens > 0 ? std::exp2(1.0 / half_life_tokens) : 1.0) {}
  float weight() const noexcept { return static_cast<float>(w_); }
  // Advances one token. Returns the factor the owner must multiply its tables by (1 = none).
  float tick() noexcept {
    w_ *= step_;
    if (w_ > 1.8e19) {
      const double f = 1.0 / w_;
      w_ = 1.0;
      return static_cast<float>(f);
    }
    return 1.0f;
  }

 private:
  double step_;
  double w_ = 1.0;
};

// Detects token boundaries from the observe() sequence (layers come in order 0 .. n_layer-1).
struct TokenTracker {
  uint32_t last_layer = UINT32_MAX;
  bool any = false;
  // True when this observation starts a new token.
  bool step(uint32_t layer) noexcept {
    const bool fresh = !any || layer <= last_layer;
    any = true;
    last_layer = layer;
    return fresh;
  }
};

}  // namespace moe::prefetch::detail
