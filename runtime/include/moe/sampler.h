// moe/sampler.h — turns a logits vector into the next token id.
// Pipeline (each stage off at its neutral value): repetition / presence / frequency penalties over
// the last `penalty_last_n` tokens -> greedy when temperature <= 0 -> top-k -> top-p -> min-p ->
// temperature -> softmax -> draw with a seeded xoshiro256** generator (same seed, same logits, same
// history: same token, on every platform).
// A Sampler owns its candidate buffers (sized once for the vocabulary: sampling never allocates)
// and its RNG state. Not thread-safe: one per session.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace moe {

struct SamplerParams {
  float temperature = 0.8f;     // <= 0: greedy (argmax, ties to the lowest id)
  int32_t top_k = 40;           // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off (keep tokens with p >= min_p * p_max)
  float repeat_penalty = 1.0f;  // 1: off. logit > 0 divided by it, logit <= 0 multiplied
  float presence_penalty = 0.0f;   // subtracted once from every token seen in the window
  float frequency_penalty = 0.0f;  // subtracted per occurrence in the window
  int32_t penalty_last_n = 64;     // window of recent tokens the penalties look at (0: off, -1: all)
  uint64_t seed = 0xC0FFEE;
};

class Sampler {
 public:
  Sampler(SamplerParams p, uint32_t n_vocab);
  // Chooses a token from logits (n_vocab floats; not modified). `history` is every token so far
  // (prompt and generated), most recent last. Returns an id in [0, n_vocab).
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);
  void reseed(uint64_t seed) noexcept;
  const SamplerParams& params() const noexcept { return p_; }

 private:
  double next_uniform() noexcept;  // in [0, 1)
  SamplerParams p_;
  uint32_t n_vocab_;
  std::vector<float> work_;      // penalised logits
  std::vector<int32_t> cand_;    // candidate ids
  std::vector<float> prob_;      // candidate probabilities
  std::vector<uint32_t> count_;  // occurrences in the penalty window (reset after each use)
  uint64_t s_[4];
};

// The argmax of logits, ties to the lowest id.
int32_t argmax(std::span<const float> logits) noexcept;

}  // namespace moe
