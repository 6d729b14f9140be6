// moe/planner.h — the prefetch planner: while layer N computes, it predicts the experts of layers
// N+1 .. N+d and queues them at prefetch priority in the DRAM expert cache (CachedExpertSource), so
// layer N+1 finds them resident. It is a LayerObserver installed on a Session (set_observer).
//
// One step (source layer N, inside Session::eval):
//   after_attention(N)  pregated ("attention" variant): the routers of N+1..N+d applied to N's
//                       residual after attention (each after RMSNorm with the target layer's
//                       ffn_norm): top-k by router probability (or by --prefetch-threshold)
//   after_routing(N)    the real routing of N is known: N's still-queued stale prefetches are
//                       cancelled, the plan for N is scored (precision/recall), the online predictors
//                       observe it and predict N+1..N+d (wrapping into the next token)
//   after_layer(N)      pregated ("layer" variant) on N's residual after its FFN; dense layers are
//                       observed (empty routing) here
// Every prediction passes the threshold, then the per-step byte budget (new reads started in one
// step), best score first; experts already resident or in flight cost nothing. Demand misses jump
// queued prefetches in the reader; prefetched-but-unused entries are the cache's first victims.
// The planner never touches the session's math: outputs are bit-identical with or without it.
//
// Metrics (PlannerStats): the prefetch PLAN per target layer (union of the guesses kept for it before
// its routing ran) against its routing: recall = sum |A&P| / sum |A|, precision = sum |A&P| / sum |P|;
// and per predictor the one-layer-ahead recall of its top-k guess (before threshold and budget).
//
// Thread-safety: a planner belongs to one Session (single-threaded, like the session); the store it
// drives is thread-safe. Nothing allocates after construction except the stats() copy.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "moe/engine.h"
#include "moe/expert_store.h"
#include "moe/prefetch/cost_model.h"
#include "moe/prefetch/predictor.h"

namespace moe {

namespace kernels {
class ThreadPool;
}

enum class PregatePoint : uint8_t { AfterAttention, AfterLayer };

struct PlannerOptions {
  // Comma-separated: none | pregated | transition | popularity | history (a union: max score).
  std::string predictor = "pregated";
  uint32_t depth = 1;               // predict layers N+1 .. N+depth (clamped to n_layer - 1)
  double threshold = 0;             // guesses with a lower score (probability) are not prefetched
  uint64_t step_budget_bytes = 0;   // bytes of new prefetch reads per step (layer); 0 = unbounded
  uint32_t guesses_per_layer = 0;   // guesses per target layer and token; 0 = the layer's top-k
  PregatePoint pregate_point = PregatePoint::AfterAttention;
  double half_life_tokens = 4096;   // transition, popularity
  uint32_t history_capacity = 64;   // history
};

struct PredictionCounts {
  uint64_t actual = 0, predicted = 0, correct = 0;
  double recall() const noexcept { return actual ? double(correct) / double(actual) : 0.0; }
  double precision() const noexcept { return predicted ? double(correct) / double(predicted) : 0.0; }
  PredictionCounts& operator+=(const PredictionCounts& o) noexcept {
    actual += o.actual;
    predicted += o.predicted;
    correct += o.correct;
    return *this;
  }
};

struct PlannerStats {
  uint64_t steps = 0;              // source layers processed
  uint64_t prefetch_reads = 0;     // prefetch() calls that started a read
  uint64_t prefetch_bytes = 0;     // bytes of those experts
  uint64_t already_present = 0;    // guesses found resident or in flight (no read)
  uint64_t refused = 0;            // prefetch() found no slot
  uint64_t dropped_threshold = 0;  // guesses below the threshold
  uint64_t dropped_budget = 0;     // guesses over the step budget (or the cache's room for prefetches)
  uint64_t cancel_requests = 0;    // stale prefetches cancelled in flight or dropped from the cache
  double predict_seconds = 0;      // time spent predicting (pregated matvecs included)
  std::vector<PredictionCounts> plan;  // per layer: the prefetch plan vs the routing
  std::vector<std::string> predictor_names;       // components, in spec order
  std::vector<std::vector<PredictionCounts>> ahead1;  // [component][layer]: one-layer-ahead top-k
  PredictionCounts plan_total() const noexcept;
  PredictionCounts ahead1_total(size_t component) const noexcept;
  std::string to_text() const;     // a few lines: totals, then per layer
};

// Pre-gated prediction: applies layer `target`'s router (after RMSNorm with its ffn_norm) to a
// residual-stream row. Needs the model's weights; no retraining. Owns its scratch (n_embd + n_expert).
class PregatedPredictor {
 public:
  explicit PregatedPredictor(const Model& m);
  // Writes the best min(out.size(), n_expert) experts of `target` for the hidden row x (n_embd
  // floats), best first, scored by the gating probability (softmax over all experts, or sigmoid).
  // Returns 0 for a dense target layer. PRECONDITION: target < n_layer.
  uint32_t predict(uint32_t target, const float* x, std::span<prefetch::Guess> out);

 private:
  const Model& m_;
  std::vector<float> xn_, logits_;
  std::vector<prefetch::Guess> scratch_;
};

class PrefetchPlanner final : public LayerObserver {
 public:
  // `store` may be null: predictions are made and scored but nothing is fetched (tracing, the mmap
  // source). Throws moe::Error(InvalidArgument) for an unknown predictor name. `m` and `store` must
  // outlive the planner. max_tokens: the session's n_batch (sizes the batch scratch).
  PrefetchPlanner(const Model& m, CachedExpertSource* store, const PlannerOptions& o, uint32_t max_tokens);
  ~PrefetchPlanner() override;

  void after_attention(uint32_t layer, const float* x, uint32_t n_tokens) override;
  void after_routing(uint32_t layer, const int32_t* experts, uint32_t n_tokens, uint32_t k) override;
  void after_layer(uint32_t layer, const float* x, uint32_t n_tokens) override;

  // A new request (sequence) begins: history predictors close the last one.
  void begin_request(uint32_t request);
  // True when at least one predictor is enabled.
  bool active() const noexcept;
  const PlannerOptions& options() const noexcept { return o_; }

  PlannerStats stats() const;
  void reset_stats();
  // The one-layer-ahead guess (best first, top-k) component `c` made for `layer` of the token last
  // evaluated, before that layer ran (empty when none was made: dense layer, pregated at layer 0).
  std::span<const uint16_t> last_guess(size_t component, uint32_t layer) const noexcept;
  size_t n_components() const noexcept;
  const std::string& component_name(size_t c) const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  PlannerOptions o_;
};

// The link and compute rates of this machine for model `m`: a short O_DIRECT read of a few experts
// from the model file (link bandwidth and per-transfer latency) and a matvec probe of the experts'
// tensor type on `pool` (compute). Takes about 0.1-0.5 s. Throws moe::Error(Io) when the file cannot
// be read. in_place_bytes_per_s stays 0 (CPU-only: no second copy).
prefetch::CostModelParams calibrate_cost_model(const Model& m, kernels::ThreadPool& pool);

}  // namespace moe
