// moe/trace.h — expert routing traces: what `moe trace` records and `moe sim` replays.
//
// A trace holds, for every token and every layer, the experts the router chose (with their weights)
// and each predictor's guesses for that layer made before it ran. In memory it is flat arrays so a
// simulator can walk millions of (token, layer) events per second. Traces are immutable once built;
// concurrent readers are safe.
//
// File format (.moetrace), little-endian, version 1:
//   offset size  field
//   0      8     magic "MOETRACE"
//   8      4     u32 version = 1
//   12     4     u32 n_layer        layers of the model (dense layers carry k = 0)
//   16     4     u32 n_expert       routed experts per MoE layer, 1..65535
//   20     4     u32 max_k          most experts chosen for one (token, layer), 1..255
//   24     4     u32 n_predictors   guess sets stored per event, 0..64
//   28     4     u32 flags          bit 0: weights present; other bits zero
//   32     8     u64 n_tokens       token records that follow
//   40     8     u64 expert_bytes   bytes of one expert in the traced model (0 = unknown)
//   48     4     u32 name_bytes     length of the source name (0..4096)
//   52     12    reserved, zero
//   64     ...   n_predictors names, each { u8 len | len bytes }, then the source name (name_bytes)
//   then n_tokens token records:
//     u32 request   sequence/request id (records of one request are consecutive)
//     u8  phase     0 = prefill, 1 = decode
//     n_layer events: { u8 k | k x u16 expert | (weights) k x f32 weight |
//                       n_predictors x { u8 m | m x u16 expert } }
// Anything out of range (counts beyond the file, ids >= n_expert, k > max_k) is rejected with
// moe::Error(Corrupt) naming the file and offset.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moe::trace {

struct Trace {
  uint32_t n_layer = 0, n_expert = 0, max_k = 0;
  bool has_weights = false;
  uint64_t expert_bytes = 0;
  std::string source;                   // model or generator description
  std::vector<std::string> predictors;  // names of the guess sets
  std::vector<uint32_t> request;        // per token
  std::vector<uint8_t> phase;           // per token
  // Event (t, l) is index t * n_layer + l; its experts are ids[off[i] .. off[i+1]).
  std::vector<uint64_t> off{0};
  std::vector<uint16_t> ids;
  std::vector<float> weights;  // parallel to ids when has_weights
  // Guesses of predictor p for event i: pred_ids[p][pred_off[p][i] .. pred_off[p][i+1]).
  std::vector<std::vector<uint64_t>> pred_off;
  std::vector<std::vector<uint16_t>> pred_ids;

  uint64_t n_tokens() const noexcept { return request.size(); }
  uint64_t n_events() const noexcept { return off.size() - 1; }
  std::span<const uint16_t> experts(uint64_t token, uint32_t layer) const noexcept {
    uint64_t i = token * n_layer + layer;
    return {ids.data() + off[i], ids.data() + off[i + 1]};
  }
  std::span<const float> expert_weights(uint64_t token, uint32_t layer) const noexcept {
    uint64_t i = token * n_layer + layer;
    if (!has_weights) return {};
    return {weights.data() + off[i], weights.data() + off[i + 1]};
  }
  std::span<const uint16_t> guesses(size_t predictor, uint64_t token, uint32_t layer) const noexcept {
    uint64_t i = token * n_layer + layer;
    const auto& o = pred_off[predictor];
    return {pred_ids[predictor].data() + o[i], pred_ids[predictor].data() + o[i + 1]};
  }
};

// Incremental construction (used by the engine while it runs, and by the converters).
class TraceBuilder {
 public:
  TraceBuilder(uint32_t n_layer, uint32_t n_expert, bool with_weights, std::vector<std::string> predictors = {});
  void set_source(std::string s) { t_.source = std::move(s); }
  void set_expert_bytes(uint64_t b) { t_.expert_bytes = b; }
  // Starts a token; then call add_layer exactly n_layer times, in layer order.
  void begin_token(uint32_t request, uint8_t phase);
  // experts.size() <= 255; weights empty or the same size; guesses one list per predictor (or empty).
  void add_layer(std::span<const uint16_t> experts, std::span<const float> weights = {},
                 std::span<const std::vector<uint16_t>> guesses = {});
  Trace finish();

 private:
  Trace t_;
  uint32_t layer_in_token_ = 0;
  bool open_ = false;
};

void write(const Trace& t, const std::string& path);
Trace read(const std::string& path);
Trace read_memory(std::span<const uint8_t> bytes, const std::string& name);

// Synthetic routing with controllable statistics.
struct SynthOptions {
  uint32_t n_layer = 16, n_expert = 64, k = 8;
  uint64_t n_tokens = 1024;
  uint32_t n_requests = 1;      // tokens split evenly into this many requests
  double skew = 1.0;            // Zipf exponent of per-layer popularity (0 = uniform)
  double repeat_prob = 0.3;     // each chosen expert is re-chosen at the next token with this probability
  double layer_corr = 0.3;      // each expert follows a fixed layer-to-layer mapping with this probability
  uint64_t seed = 1;
  // Optional per-layer popularity (n_layer x n_expert, any positive scale) replacing the Zipf law,
  // e.g. from a measured popularity matrix.
  std::vector<std::vector<double>> popularity;
  uint64_t expert_bytes = 0;
};
Trace synthesize(const SynthOptions& o);

// Converters.
// JSONL routing log: one object per (token, layer): {"token": t, "layer": l, "experts": [...],
// optional "weights" or "probs": [...], optional "request": r}. Tokens are numbered from 0 and the
// records of a token may come in any order; missing layers are dense (k = 0).
Trace from_jsonl(const std::string& path, uint32_t n_expert_hint = 0);
// Popularity matrix JSON {"total_input_tokens": N, "expert_popularity": [[counts per expert] per layer]}
// (as published by the Fiddler project). Tokens are sampled from the per-layer popularity with the
// other SynthOptions (n_tokens, repeat, correlation, seed) and top-k = k, which must be given: the
// counts do not determine it (Mixtral's files hold 2.7 to 3.3 decisions per input token for k = 2).
Trace from_popularity(const std::string& path, SynthOptions o, uint32_t k);

}  // namespace moe::trace
