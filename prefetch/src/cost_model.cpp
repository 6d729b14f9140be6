// prefetch/src/cost_model.cpp — MissCostModel (moe/prefetch/cost_model.h): arithmetic only, no IO.
// A value type; see the header for thread-safety.
#include "moe/prefetch/cost_model.h"

#include <algorithm>
#include <cstdio>
#include <limits>

namespace moe::prefetch {

MissCostModel::MissCostModel(CostModelParams p) : p_(p) {
  // Guard the divisions: a zero or negative rate would make every estimate infinite or negative.
  if (!(p_.link_bytes_per_s > 0)) p_.link_bytes_per_s = 1;
  if (!(p_.compute_bytes_per_s > 0)) p_.compute_bytes_per_s = 1;
  if (!(p_.link_latency_s >= 0)) p_.link_latency_s = 0;
  if (!(p_.compute_in_place_bytes_per_s >= 0)) p_.compute_in_place_bytes_per_s = 0;
  p_.online_weight = std::clamp(p_.online_weight, 0.0, 1.0);
}

double MissCostModel::fetch_seconds(uint64_t bytes, uint64_t queued_bytes_ahead) const noexcept {
  return double(queued_bytes_ahead) / p_.link_bytes_per_s + p_.link_latency_s + double(bytes) / p_.link_bytes_per_s;
}

double MissCostModel::compute_seconds(uint64_t bytes) const noexcept {
  return double(bytes) / p_.compute_bytes_per_s;
}

double MissCostModel::compute_in_place_seconds(uint64_t bytes) const noexcept {
  if (p_.compute_in_place_bytes_per_s <= 0) return std::numeric_limits<double>::infinity();
  return double(bytes) / p_.compute_in_place_bytes_per_s;
}

MissDecision MissCostModel::decide(uint64_t bytes, uint64_t queued_bytes_ahead) const noexcept {
  MissDecision d;
  // Fetching costs the wait plus computing the fetched copy; computing in place costs only that.
  d.fetch_s = fetch_seconds(bytes, queued_bytes_ahead) + compute_seconds(bytes);
  d.compute_s = compute_in_place_seconds(bytes);
  d.action = d.compute_s < d.fetch_s ? MissAction::ComputeInPlace : MissAction::Fetch;
  return d;
}

uint64_t MissCostModel::bytes_hidden_by(double seconds) const noexcept {
  const double usable = seconds - p_.link_latency_s;
  return usable > 0 ? uint64_t(usable * p_.link_bytes_per_s) : 0;
}

void MissCostModel::observe_transfer(uint64_t bytes, double seconds) noexcept {
  if (!(seconds > 0) || bytes == 0 || p_.online_weight <= 0) return;
  const double t = seconds - p_.link_latency_s;
  if (!(t > 0)) return;
  const double bw = double(bytes) / t;
  p_.link_bytes_per_s = (1 - p_.online_weight) * p_.link_bytes_per_s + p_.online_weight * bw;
}

std::string MissCostModel::to_text() const {
  char buf[200];
  if (p_.compute_in_place_bytes_per_s > 0)
    std::snprintf(buf, sizeof buf, "link %.2f GB/s + %.0f us, compute %.1f GB/s, in place %.1f GB/s",
                  p_.link_bytes_per_s / 1e9, p_.link_latency_s * 1e6, p_.compute_bytes_per_s / 1e9,
                  p_.compute_in_place_bytes_per_s / 1e9);
  else
    std::snprintf(buf, sizeof buf, "link %.2f GB/s + %.0f us, compute %.1f GB/s, in place: none",
                  p_.link_bytes_per_s / 1e9, p_.link_latency_s * 1e6, p_.compute_bytes_per_s / 1e9);
  return buf;
}

}  // namespace moe::prefetch
