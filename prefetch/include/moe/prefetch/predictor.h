// moe/prefetch/predictor.h — expert predictors: guess which experts layers N+1 .. N+d will route to
// while layer N computes. Shared by the engine and the trace simulator (`moe sim`).
//
// Call protocol (one Predictor per decode stream):
//   begin_request(r)         a new request (sequence) starts; history predictors close the last one.
//   observe(layer, experts)  the real routing of the current token at `layer` is known. Calls come
//                            for EVERY layer in order 0 .. n_layer-1, token after token (dense layers
//                            with an empty list), so event-indexed predictors (oracle, recorded) can
//                            keep their position by counting.
//   predict(ahead, out)      guesses for the layer `ahead` (1 .. n_layer-1) layers after the last
//                            observed one: layer (last + ahead) mod n_layer, of the next token when it
//                            wraps. Writes at most out.size() distinct experts, best first, each with
//                            a score in [0, 1] (an estimated probability that the expert is chosen);
//                            returns how many it wrote.
// Scores from different predictors are comparable only loosely; the combiner takes their maximum.
//
// Thread-safety: a Predictor is NOT thread-safe; it belongs to one stream. After construction no
// method allocates (every table and scratch buffer is sized by the constructor).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moe::prefetch {

struct Guess {
  uint32_t expert = 0;
  float score = 0;  // [0, 1]
};

class Predictor {
 public:
  virtual ~Predictor() = default;
  virtual const char* name() const noexcept = 0;
  virtual void begin_request(uint32_t /*request*/) {}
  // PRECONDITION: layer < n_layer, every expert < n_expert, experts distinct.
  virtual void observe(uint32_t layer, std::span<const uint16_t> experts) = 0;
  // PRECONDITION: 1 <= ahead < n_layer, observe() called at least once.
  virtual uint32_t predict(uint32_t ahead, std::span<Guess> out) = 0;
};

// A read-only view of per-event expert lists in CSR form: the experts of event i (= token * n_layer
// + layer) are ids[off[i] .. off[i+1]). moe::trace::Trace stores its routing and its recorded guess
// columns this way; the view keeps prefetch/ free of the trace library. The arrays must outlive the
// predictor that holds the view.
struct EventView {
  uint32_t n_layer = 0;
  std::span<const uint64_t> off;  // n_events + 1 entries
  std::span<const uint16_t> ids;
  uint64_t n_events() const noexcept { return off.empty() ? 0 : off.size() - 1; }
};

struct PredictorOptions {
  uint32_t n_layer = 0;   // > 0
  uint32_t n_expert = 0;  // 1 .. 65535
  uint32_t max_k = 8;     // most experts one (token, layer) routes to (sizes scratch buffers)
  uint32_t max_ahead = 1; // deepest `ahead` predict() will be asked for (transition keeps one table per distance)
  // transition, popularity: an observation's weight halves every `half_life_tokens` tokens
  // (<= 0: no decay).
  double half_life_tokens = 4096;
  // history: past requests kept (ring; the oldest is replaced) and matches blended per prediction.
  uint32_t history_capacity = 64;
  uint32_t history_matches = 3;
  // oracle: the real routing of the replayed trace (required for "oracle").
  EventView future;
  // recorded: a guess column of the trace (required for "recorded"); guesses of event i are the ones
  // recorded before event i ran, replayed for ahead == 1 only.
  EventView recorded;
  std::string recorded_name = "recorded";
};

// Names make_predictor accepts: "none" (empty predictor list), "transition", "popularity",
// "history", "oracle", "recorded" (also "recorded:<column name>", resolved by the caller), and
// comma-separated combinations ("transition,popularity").
const std::vector<std::string_view>& predictor_names();

// Builds a predictor from a spec. Returns nullptr for "none" / "" with *error empty, and nullptr with
// *error set for an unknown name or a missing input (oracle without `future`, ...). May allocate.
std::unique_ptr<Predictor> make_predictor(std::string_view spec, const PredictorOptions& o,
                                          std::string* error);

// Individual constructors (PRECONDITIONS as PredictorOptions says).
std::unique_ptr<Predictor> make_transition_predictor(const PredictorOptions& o);
std::unique_ptr<Predictor> make_popularity_predictor(const PredictorOptions& o);
std::unique_ptr<Predictor> make_history_predictor(const PredictorOptions& o);
std::unique_ptr<Predictor> make_oracle_predictor(const PredictorOptions& o);
std::unique_ptr<Predictor> make_recorded_predictor(const PredictorOptions& o);
// Union of several predictors: each expert's score is the maximum over the parts.
std::unique_ptr<Predictor> make_combined_predictor(std::vector<std::unique_ptr<Predictor>> parts,
                                                   const PredictorOptions& o);

// Helper shared by the implementations: writes the best min(out.size(), n) entries of scores[0..n)
// with score > 0 into out, best first (ties: lower expert first). `scratch` holds n entries.
// Never allocates.
// Uses AVX2 where the CPU has it; the result is identical to detail::top_scores_portable.
uint32_t top_scores(std::span<const float> scores, std::span<Guess> out, std::span<Guess> scratch);

namespace detail {
// The baseline-x86-64 (SSE2) / portable implementations, exposed so tests compare the dispatched
// paths against them bit for bit.
uint32_t top_scores_portable(std::span<const float> scores, std::span<Guess> out, std::span<Guess> scratch);
// out[e] = sum over i = 0 .. nr-1, in that order, of rows[i][e] * w[i], starting from 0.
// PRECONDITIONS: every rows[i] and out hold n floats; out does not overlap the rows.
void weighted_row_sum(float* __restrict out, const float* const* rows, const float* w, uint32_t nr,
                      uint32_t n) noexcept;
}  // namespace detail

}  // namespace moe::prefetch
