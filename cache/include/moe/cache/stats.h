// moe/cache/stats.h — counters of one tier's residency manager, per layer and in total.
// Plain value types: a TierStats is a snapshot copied out of the manager under its lock, so reading
// it needs no synchronisation. Units: counts are events, bytes are bytes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe::cache {

struct LayerStats {
  uint64_t hits = 0;            // demand lookups that found the entry resident
  uint64_t inflight_hits = 0;   // demand lookups that found the entry still arriving (a wait)
  uint64_t misses = 0;          // demand lookups that found nothing
  uint64_t inserts = 0;         // slots reserved (demand + prefetch), including Insert()
  uint64_t prefetch_inserts = 0;  // of which reserved by a prefetch
  uint64_t completions = 0;     // fetches that became resident
  uint64_t aborts = 0;          // fetches abandoned (AbortFetch)
  uint64_t evictions = 0;       // entries evicted to make room
  uint64_t bytes_in = 0;        // bytes that became resident (CompleteFetch / Insert)
  uint64_t prefetch_hits = 0;   // first demand use of a prefetched entry (resident or in flight)
  uint64_t prefetch_wasted = 0; // prefetched entries evicted before any use (aborts count in aborts)
  uint64_t reserve_failures = 0;  // reservations refused: every slot pinned or in flight
  uint64_t rejected = 0;        // reservations refused by capacity 0 (caching disabled for the layer)

  uint64_t lookups() const noexcept { return hits + inflight_hits + misses; }
  // Fraction of demand lookups served without a fetch (in-flight counts as a miss here); 0 if none.
  double hit_rate() const noexcept {
    const uint64_t n = lookups();
    return n ? static_cast<double>(hits) / static_cast<double>(n) : 0.0;
  }
  LayerStats& operator+=(const LayerStats& o) noexcept;
  friend bool operator==(const LayerStats&, const LayerStats&) = default;
};

struct TierStats {
  std::string tier;                // the tier's name ("vram", "dram", ...)
  uint64_t slot_bytes = 0;
  uint32_t slots = 0;              // usable slots (sum over pools)
  uint32_t resident = 0;           // slots holding resident data at snapshot time
  uint32_t in_flight = 0;          // slots reserved with data arriving
  uint32_t pinned = 0;             // slots with at least one pin
  std::vector<LayerStats> layers;  // indexed by layer

  LayerStats total() const noexcept;
  // {"tier": ..., "slot_bytes": ..., "slots": ..., "total": {...}, "layers": [{...}, ...]}
  std::string to_json() const;
  // A short human-readable summary: totals and the hit rate.
  std::string to_text() const;
};

}  // namespace moe::cache
