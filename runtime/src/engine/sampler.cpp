// runtime/src/engine/sampler.cpp — implementation of moe/sampler.h. Not thread-safe (one per session).
#include "moe/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "moe/error.h"

namespace moe {

int32_t argmax(std::span<const float> logits) noexcept {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  return best;
}

namespace {
uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Sampler::Sampler(SamplerParams p, uint32_t n_vocab)
    : p_(p), n_vocab_(n_vocab), work_(n_vocab), cand_(n_vocab), prob_(n_vocab), count_(n_vocab, 0) {
  if (n_vocab == 0) fail(ErrorCode::InvalidArgument, "sampler: empty vocabulary");
  reseed(p.seed);
}

void Sampler::reseed(uint64_t seed) noexcept {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
}

double Sampler::next_uniform() noexcept {
  // xoshiro256** (Blackman & Vigna), top 53 bits as a double in [0, 1).
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return static_cast<double>(result >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  MOE_ASSERT(logits.size() == n_vocab_, "logits size differs from the sampler's vocabulary");
  const uint32_t n = n_vocab_;
  std::copy(logits.begin(), logits.end(), work_.begin());

  // Penalties over the recent window.
  const bool penalise = p_.penalty_last_n != 0 &&
                        (p_.repeat_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f);
  if (penalise && !history.empty()) {
    size_t w = p_.penalty_last_n < 0 ? history.size()
                                     : std::min(history.size(), static_cast<size_t>(p_.penalty_last_n));
    auto win = history.subspan(history.size() - w);
    for (int32_t t : win)
      if (t >= 0 && static_cast<uint32_t>(t) < n) ++count_[t];
    for (int32_t t : win) {
      if (t < 0 || static_cast<uint32_t>(t) >= n || count_[t] == 0) continue;
      float& l = work_[t];
      if (p_.repeat_penalty != 1.0f) l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
      l -= p_.presence_penalty + p_.frequency_penalty * static_cast<float>(count_[t]);
      count_[t] = 0;  // each distinct token penalised once; also resets the counter for next call
    }
  }

  if (p_.temperature <= 0.0f) return argmax(work_);

  // Candidates sorted by logit (descending, ties to lower id); top-k bounds the sort.
  uint32_t m = n;
  for (uint32_t i = 0; i < n; ++i) cand_[i] = static_cast<int32_t>(i);
  auto cmp = [&](int32_t a, int32_t b) { return work_[a] > work_[b] || (work_[a] == work_[b] && a < b); };
  if (p_.top_k > 0 && static_cast<uint32_t>(p_.top_k) < n) {
    m = static_cast<uint32_t>(p_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + m, cand_.begin() + n, cmp);
  } else {
    std::sort(cand_.begin(), cand_.begin() + n, cmp);
  }
  // Probabilities at temperature 1 decide top-p / min-p (llama.cpp's order applies temperature
  // last too); the final draw uses the temperature.
  auto probs = [&](float temp) {
    const float mx = work_[cand_[0]];
    double sum = 0;
    for (uint32_t i = 0; i < m; ++i) {
      prob_[i] = std::exp((work_[cand_[i]] - mx) / temp);
      sum += prob_[i];
    }
    for (uint32_t i = 0; i < m; ++i) prob_[i] = static_cast<float>(prob_[i] / sum);
  };
  probs(1.0f);
  if (p_.top_p < 1.0f) {
    double cum = 0;
    uint32_t keep = m;
    for (uint32_t i = 0; i < m; ++i) {
      cum += prob_[i];
      if (cum >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
    m = std::max(1u, keep);
  }
  if (p_.min_p > 0.0f) {
    const float thr = p_.min_p * prob_[0];
    uint32_t keep = 1;
    while (keep < m && prob_[keep] >= thr) ++keep;
    m = keep;
  }
  probs(p_.temperature);
  double u = next_uniform();
  double cum = 0;
  for (uint32_t i = 0; i < m; ++i) {
    cum += prob_[i];
    if (u < cum) return cand_[i];
  }
  return cand_[m - 1];
}

}  // namespace moe
