// prefetch/src/predictor_impl.h — pieces shared by the predictor implementations (internal).
// Not thread-safe (each object belongs to one stream).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

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

// out[e] = sum over i = 0 .. nr-1, in that order, of rows[i][e] * w[i], starting from 0 — the same
// operations per element as "out = 0; for each row: out[e] += row[e] * w" (so identical floats),
// but each output element stays in a register across the rows (one store per element instead of
// one load + store per row). PRECONDITIONS: every rows[i] and out hold n floats; out does not
// overlap the rows. Why GCC vector types: the build targets baseline x86-64 at -O2, where the
// auto-vectorizer leaves this loop scalar; 4-wide mul + add keeps the rounding of the scalar loop.
inline void weighted_row_sum_portable(float* __restrict out, const float* const* rows, const float* w, uint32_t nr,
                             uint32_t n) noexcept {
  uint32_t e = 0;
#if defined(__GNUC__) || defined(__clang__)
  using v4 = float __attribute__((vector_size(16)));
  for (; e + 16 <= n; e += 16) {
    v4 a0 = {0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0;
    for (uint32_t i = 0; i < nr; ++i) {
      const float* r = rows[i] + e;
      v4 b0, b1, b2, b3;
      std::memcpy(&b0, r, 16);  // unaligned loads
      std::memcpy(&b1, r + 4, 16);
      std::memcpy(&b2, r + 8, 16);
      std::memcpy(&b3, r + 12, 16);
      const v4 wi = {w[i], w[i], w[i], w[i]};
      a0 += b0 * wi;
      a1 += b1 * wi;
      a2 += b2 * wi;
      a3 += b3 * wi;
    }
    std::memcpy(out + e, &a0, 16);
    std::memcpy(out + e + 4, &a1, 16);
    std::memcpy(out + e + 8, &a2, 16);
    std::memcpy(out + e + 12, &a3, 16);
  }
  for (; e + 4 <= n; e += 4) {
    v4 a0 = {0, 0, 0, 0};
    for (uint32_t i = 0; i < nr; ++i) {
      v4 b0;
      std::memcpy(&b0, rows[i] + e, 16);
      const v4 wi = {w[i], w[i], w[i], w[i]};
      a0 += b0 * wi;
    }
    std::memcpy(out + e, &a0, 16);
  }
#endif
  for (; e < n; ++e) {
    float a = 0.0f;
    for (uint32_t i = 0; i < nr; ++i) a += rows[i][e] * w[i];
    out[e] = a;
  }
}

}  // namespace moe::prefetch::detail
