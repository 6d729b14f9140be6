// moe/cache/expert_key.h — the identity of one routed expert: (layer, expert), packable to a u64.
// Plain value type; no shared state (thread-safe by construction).
#pragma once
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>

namespace moe::cache {

struct ExpertKey {
  uint32_t layer = 0;   // model layer index (dense layers included in the numbering)
  uint32_t expert = 0;  // routed expert index within the layer

  // Layer in the high 32 bits, expert in the low 32 bits; ordering of packed values = (layer, expert).
  constexpr uint64_t pack() const noexcept { return (uint64_t{layer} << 32) | expert; }
  static constexpr ExpertKey unpack(uint64_t v) noexcept {
    return ExpertKey{static_cast<uint32_t>(v >> 32), static_cast<uint32_t>(v & 0xffffffffu)};
  }
  friend constexpr bool operator==(ExpertKey a, ExpertKey b) noexcept = default;
  friend constexpr auto operator<=>(ExpertKey a, ExpertKey b) noexcept = default;
};

// Sentinel slot / key index ("none").
inline constexpr uint32_t kNoSlot = 0xffffffffu;

}  // namespace moe::cache

template <>
struct std::hash<moe::cache::ExpertKey> {
  size_t operator()(moe::cache::ExpertKey k) const noexcept {
    // splitmix64 finalizer: layer and expert are small and dense, so mix before bucketing.
    uint64_t x = k.pack() + 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return static_cast<size_t>(x ^ (x >> 31));
  }
};
