// moe/prefetch/cost_model.h — the miss cost model: for an expert that is not where the compute is,
// is it sooner to fetch it (wait for the link) or to compute it where its weights already are?
//
//   fetch_s   = queued_bytes_ahead / link_bps + link_latency_s + bytes / link_bps
//               (a transfer already in progress: only its remaining bytes)
//   compute_s = bytes / compute_in_place_bps      (decode is bandwidth-bound: the kernel streams the
//               weights once; e.g. GPU mode: the CPU computing the expert from its DRAM copy)
// In CPU-only mode there is no second copy to compute from (the DRAM cache is the only place the CPU
// can read weights from), so every miss is a fetch; the model still predicts the stall.
// The rates come from a start-up calibration (moe/planner.h: calibrate_cost_model) or from flags, and
// may be refined online from observed transfers (observe_transfer: an exponentially weighted mean).
//
// Thread-safety: a MissCostModel is a value; const methods are reentrant; observe_transfer() must not
// race with other calls (one planner owns it).
#pragma once
#include <cstdint>
#include <string>

namespace moe::prefetch {

struct CostModelParams {
  double link_bytes_per_s = 2e9;         // bandwidth of the link that fills the cache tier
  double link_latency_s = 100e-6;        // fixed cost of one expert transfer
  double compute_bytes_per_s = 20e9;     // expert weight bytes per second the in-cache compute streams
  double compute_in_place_bytes_per_s = 0;  // where the weights already are (GPU mode: CPU from DRAM);
                                            // 0 = no second copy (CPU-only mode)
  double online_weight = 0.1;            // weight of one observed transfer in the online mean (0 = off)
};

enum class MissAction : uint8_t { Fetch, ComputeInPlace };

struct MissDecision {
  MissAction action = MissAction::Fetch;
  double fetch_s = 0;    // expected seconds until the fetched expert is usable
  double compute_s = 0;  // expected seconds to compute it in place (infinity without a second copy)
};

class MissCostModel {
 public:
  // PRECONDITION: rates > 0 (except compute_in_place_bytes_per_s, which may be 0), latency >= 0.
  explicit MissCostModel(CostModelParams p = {});
  const CostModelParams& params() const noexcept { return p_; }

  // Seconds until an expert of `bytes` bytes is usable when fetched now behind `queued_bytes_ahead`
  // bytes of transfers that go first (demand reads already queued).
  double fetch_seconds(uint64_t bytes, uint64_t queued_bytes_ahead = 0) const noexcept;
  // Seconds to compute one token's pass over an expert of `bytes` where it is resident.
  double compute_seconds(uint64_t bytes) const noexcept;
  // Seconds to compute it in place from the second copy; +infinity without one.
  double compute_in_place_seconds(uint64_t bytes) const noexcept;
  // The cheaper way to serve one miss. remaining_bytes < bytes when the transfer already started.
  MissDecision decide(uint64_t bytes, uint64_t queued_bytes_ahead = 0) const noexcept;
  // Bytes the link moves while `seconds` of compute run (a natural per-step prefetch budget).
  uint64_t bytes_hidden_by(double seconds) const noexcept;

  // Refines the link bandwidth with one observed transfer (bytes moved in `seconds`, latency
  // included). Ignored for seconds <= 0.
  void observe_transfer(uint64_t bytes, double seconds) noexcept;

  std::string to_text() const;  // "link 2.10 GB/s + 95 us, compute 18.3 GB/s, in place: none"

 private:
  CostModelParams p_;
};

}  // namespace moe::prefetch
