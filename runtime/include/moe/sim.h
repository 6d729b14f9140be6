// moe/sim.h — the trace simulator behind `moe sim`: a discrete-event replay of a routing trace
// through the same cache objects (moe::cache::ResidencyManager + a policy by name) and the same
// predictors (moe::prefetch::Predictor) the engine uses, with a device profile for the timing.
//
// Timeline of one (token, layer) event, in ms of simulated time:
//   t_route = start + dense_ms_per_layer            attention + router: the routing is now known
//   stale prefetches of this layer still queued (not started) are cancelled (slot freed)
//   each routed expert is looked up (and pinned until the layer ends):
//     resident              ready at t_route
//     prefetch in transfer  ready when its transfer ends
//     prefetch still queued promoted to demand (jumps the prefetch queue)
//     absent                demand fetch: queued before every prefetch; when no slot can be had
//                           (budget 0, all pinned) the expert is streamed through a scratch buffer
//   compute: resident experts first, the others as they arrive (each expert_ms); the layer ends
//   at the last expert's end; stall = layer time - dense - k * expert_ms (compute idle, waiting).
//   predictions made at t_route for layers +1 .. +depth (wrapping into the next token) are queued
//   at prefetch priority, best first per target layer (the best guesses_per_layer of each), at
//   most step_budget_experts new transfers per step, guesses below `threshold` dropped.
// The link that fills the cache is one serial channel (bandwidth link_gbps, link_latency_us per
// transfer); a transfer in progress is never preempted, queued prefetches are. Demand transfers
// always end before the layer that needs them ends, so the next layer sees them resident.
//
// Metrics (SimResult): hit rate = hits / lookups as the cache counts them (an expert still in
// transfer is not a hit); prefetch precision / recall over the prefetch PLAN: for every MoE event
// that some step predicted, P = union of the guesses selected for it (after threshold and step
// budget, whether or not they needed a transfer), A = the real routing;
// recall = sum |A & P| / sum |A|, precision = sum |A & P| / sum |P|. Overlap ratio = (transfer time
// - stall time) / transfer time (stalls only happen while the link is busy, so it lies in [0, 1]).
// tok_s = tokens / simulated time.
//
// Thread-safety: simulate() is reentrant (no shared state); a Trace may be shared by concurrent
// simulations. Errors (bad config, unknown policy/predictor/profile, unknown expert size) throw
// moe::Error naming the cause.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/cache/policy.h"
#include "moe/cache/residency.h"
#include "moe/json.h"
#include "moe/trace.h"

namespace moe::sim {

struct DeviceProfile {
  std::string name = "pcie4";
  bool gpu = true;                   // GPU mode (host -> device link) or CPU mode (disk -> DRAM)
  double link_gbps = 25;             // GB/s (1e9 bytes/s) of the link that fills the cache tier
  double link_latency_us = 10;       // fixed cost of one expert transfer
  double compute_gbps = 1000;        // bytes of expert weights the compute streams per second (decode
                                     // is bandwidth-bound): expert_ms = expert_bytes / compute
  double dense_ms_per_layer = 0.05;  // attention + router + shared experts of one layer, one token
  double expert_ms = -1;             // compute of one routed expert for one token; < 0: derived

  // One expert's compute time and transfer time for `expert_bytes` bytes, in ms.
  double expert_compute_ms(uint64_t expert_bytes) const noexcept;
  double transfer_ms(uint64_t bytes) const noexcept;
  json::Value to_json() const;
};

// Built-in names: pcie3, pcie4, pcie5 (GPU mode: host -> device link and a GPU of that era);
// nvme-gen3, nvme-gen4, nvme-gen5 (CPU mode: disk -> DRAM, DDR4 compute); ddr4, ddr5 (CPU compute
// rate; alone they imply an nvme-gen4 link).
const std::vector<std::string_view>& device_profile_names();
// `spec` is a built-in name, several joined with '+' (later ones override the fields they set:
// "nvme-gen5+ddr5"), or the path of a JSON file:
//   {"base": "pcie4", "name": "...", "mode": "gpu"|"cpu", "link_gbps": x, "link_latency_us": x,
//    "compute_gbps": x, "dense_ms_per_layer": x, "expert_ms": x}   (every key optional)
// Throws moe::Error (InvalidArgument for an unknown name, Corrupt/Io for a bad file).
DeviceProfile device_profile(std::string_view spec);
DeviceProfile device_profile_from_json(const json::Value& v, std::string_view source);

struct SimConfig {
  std::string policy = "lru";        // a cache policy name (moe::cache::policy_names())
  std::string predictor = "none";    // a predictor spec ("none", "transition,popularity", ...)
  uint64_t budget_bytes = 0;         // cache tier capacity; slots = budget / expert bytes
  uint64_t expert_bytes = 0;         // 0: the trace's expert_bytes (which must then be known)
  cache::Scope scope = cache::Scope::Global;
  uint32_t depth = 1;                // predict layers +1 .. +depth (clamped to n_layer - 1)
  double threshold = 0;              // drop guesses with a lower score
  uint32_t step_budget_experts = UINT32_MAX;  // new prefetch transfers per step (layer)
  uint32_t guesses_per_layer = 0;    // best guesses taken per target layer; 0 = the trace's max top-k
  double predictor_half_life_tokens = 4096;
  uint32_t history_capacity = 64;
  cache::PolicyParams policy_params;  // lfu/lfru/static knobs; static without a profile uses the
                                      // trace's own counts; belady's oracle is supplied here
  DeviceProfile device;
};

struct SimResult {
  std::string policy, predictor, device;
  uint64_t budget_bytes = 0, expert_bytes = 0;
  uint32_t slots = 0;
  uint64_t tokens = 0, events = 0, accesses = 0;
  uint64_t hits = 0, inflight_hits = 0, misses = 0, streamed = 0, evictions = 0;
  double hit_rate = 0;
  uint64_t bytes_moved = 0, demand_bytes = 0, prefetch_bytes = 0;
  uint64_t prefetch_issued = 0;     // prefetch transfers queued (new reservations)
  uint64_t prefetch_used = 0;       // prefetched entries whose first demand use came
  uint64_t prefetch_cancelled = 0;  // queued prefetches cancelled before their transfer began
  uint64_t prefetch_wasted = 0;     // prefetched entries evicted unused
  double precision = 0, recall = 0;  // of the prefetch plan (see above); 0 when nothing predicted
  std::vector<double> recall_per_layer, precision_per_layer;
  double transfer_ms = 0, stall_ms = 0, compute_ms = 0, total_ms = 0;
  double stall_ms_per_token = 0, tok_s = 0, overlap = 0;
  double wall_s = 0;  // CPU seconds the replay loop took on its thread (excludes setup)
  double events_per_s() const noexcept { return wall_s > 0 ? static_cast<double>(events) / wall_s : 0; }

  // {"policy","predictor","device","budget_bytes","slots","hit_rate","bytes_moved",
  //  "stall_ms_per_token","tok_s","prefetch_precision","prefetch_recall","overlap_ratio", ...,
  //  "wall_s","events_per_s"}  (the last two measure the replay itself, so they vary run to run)
  json::Value to_json() const;
};

// Replays `t` under `cfg`. PRECONDITION: t is a valid trace (as trace::read returns).
SimResult simulate(const trace::Trace& t, const SimConfig& cfg);

// The trace's demand access sequence as cache keys, in replay order (Belady's future).
std::vector<cache::ExpertKey> demand_sequence(const trace::Trace& t);

}  // namespace moe::sim
