// moe/cache/profile.h — usage profiles: per layer, per expert activation counts (written by
// `moe run --save-profile`, read by the static hot-set policy and by the trace tools).
// Plain value type and free functions; no shared state. Needs no library beyond the standard one.
//
// File format: one JSON object (UTF-8 text).
//   {
//     "format": "moe-usage-profile",     optional; when present must be exactly this string
//     "version": 1,                      optional; when present must be 1
//     "total_tokens": 5064,              optional; tokens the counts were gathered over
//     "expert_popularity": [             required; one array per layer, in layer order
//       [1782, 1791, 1940, ...],         layer 0: count of expert e at index e
//       [],                              a dense layer (no routed experts)
//       ...
//     ]
//   }
// Counts are non-negative integers below 2^64 (no sign, fraction or exponent). Keys may come in any
// order; unknown keys are skipped whatever their value (so later versions can add fields), and
// "total_input_tokens" is accepted for "total_tokens", which makes the published Fiddler routing
// statistics (shared/data/routing/*/expert_popularity_*.json) valid profiles as they are.
// Whitespace is free; the writer emits one layer per line. Any other input is rejected with
// CacheCode::Corrupt and a message "<source>:<line>:<column>: <cause>".
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/cache/expert_key.h"
#include "moe/cache/status.h"

namespace moe::cache {

struct UsageProfile {
  uint64_t total_tokens = 0;
  std::vector<std::vector<uint64_t>> counts;  // [layer][expert]; empty for dense layers

  uint32_t n_layer() const noexcept { return static_cast<uint32_t>(counts.size()); }
  // 0 for any (layer, expert) outside the profile.
  uint64_t count(ExpertKey k) const noexcept {
    return k.layer < counts.size() && k.expert < counts[k.layer].size() ? counts[k.layer][k.expert]
                                                                         : 0;
  }
  // Sizes the table to n_layer x n_expert (keeps existing counts); after it add() never allocates
  // for keys inside it.
  void resize(uint32_t n_layer, uint32_t n_expert);
  // counts[k] += n, growing the table when k lies outside it.
  void add(ExpertKey k, uint64_t n = 1);
  // Adds another profile's counts and tokens.
  void merge(const UsageProfile& o);
  friend bool operator==(const UsageProfile&, const UsageProfile&) = default;
};

// Parses the format above from `text`; `source` names it in messages (a path, "<stdin>").
// On error *out is left unspecified.
CacheStatus parse_usage_profile(std::string_view text, std::string_view source, UsageProfile* out);
// The text of `p` in the format above (ends with a newline).
std::string format_usage_profile(const UsageProfile& p);
// File wrappers: Io errors name the path and the system's reason.
CacheStatus read_usage_profile(const std::string& path, UsageProfile* out);
CacheStatus write_usage_profile(const std::string& path, const UsageProfile& p);

}  // namespace moe::cache
