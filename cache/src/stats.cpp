// cache/src/stats.cpp — totals and JSON / text renderings of TierStats. Pure functions on values.
#include <cstdio>

#include "moe/cache/stats.h"

namespace moe::cache {

LayerStats& LayerStats::operator+=(const LayerStats& o) noexcept {
  hits += o.hits;
  inflight_hits += o.inflight_hits;
  misses += o.misses;
  inserts += o.inserts;
  prefetch_inserts += o.prefetch_inserts;
  completions += o.completions;
  aborts += o.aborts;
  evictions += o.evictions;
  bytes_in += o.bytes_in;
  prefetch_hits += o.prefetch_hits;
  prefetch_wasted += o.prefetch_wasted;
  reserve_failures += o.reserve_failures;
  rejected += o.rejected;
  return *this;
}

LayerStats TierStats::total() const noexcept {
  LayerStats t;
  for (const LayerStats& l : layers) t += l;
  return t;
}

namespace {

void append_layer(std::string& out, const LayerStats& s) {
  char buf[640];
  std::snprintf(buf, sizeof buf,
                "{\"hits\": %llu, \"inflight_hits\": %llu, \"misses\": %llu, \"hit_rate\": %.6f, "
                "\"inserts\": %llu, \"prefetch_inserts\": %llu, \"completions\": %llu, \"aborts\": %llu, "
                "\"evictions\": %llu, \"bytes_in\": %llu, \"prefetch_hits\": %llu, "
                "\"prefetch_wasted\": %llu, \"reserve_failures\": %llu, \"rejected\": %llu}",
                (unsigned long long)s.hits, (unsigned long long)s.inflight_hits,
                (unsigned long long)s.misses, s.hit_rate(), (unsigned long long)s.inserts,
                (unsigned long long)s.prefetch_inserts, (unsigned long long)s.completions,
                (unsigned long long)s.aborts, (unsigned long long)s.evictions,
                (unsigned long long)s.bytes_in, (unsigned long long)s.prefetch_hits,
                (unsigned long long)s.prefetch_wasted, (unsigned long long)s.reserve_failures,
                (unsigned long long)s.rejected);
  out += buf;
}

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { o += '\\'; o += static_cast<char>(c); }
    else if (c < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); o += b; }
    else o += static_cast<char>(c);
  }
  return o + "\"";
}

}  // namespace

std::string TierStats::to_json() const {
  std::string out = "{\"tier\": " + json_string(tier) + ", \"slot_bytes\": " + std::to_string(slot_bytes) +
                    ", \"slots\": " + std::to_string(slots) + ", \"resident\": " + std::to_string(resident) +
                    ", \"in_flight\": " + std::to_string(in_flight) + ", \"pinned\": " + std::to_string(pinned) +
                    ", \"total\": ";
  append_layer(out, total());
  out += ", \"layers\": [";
  for (size_t i = 0; i < layers.size(); ++i) {
    if (i) out += ", ";
    append_layer(out, layers[i]);
  }
  out += "]}";
  return out;
}

std::string TierStats::to_text() const {
  const LayerStats t = total();
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s: %u slots x %llu B, %u resident, hit rate %.2f%% (%llu hits, %llu in flight, %llu misses), "
                "%llu evictions, %.3f GB in, prefetch %llu used / %llu wasted, %llu reservations refused",
                tier.c_str(), slots, (unsigned long long)slot_bytes, resident, 100.0 * t.hit_rate(),
                (unsigned long long)t.hits, (unsigned long long)t.inflight_hits, (unsigned long long)t.misses,
                (unsigned long long)t.evictions, t.bytes_in / 1e9, (unsigned long long)t.prefetch_hits,
                (unsigned long long)t.prefetch_wasted, (unsigned long long)t.reserve_failures);
  return buf;
}

}  // namespace moe::cache
