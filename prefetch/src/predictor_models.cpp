// prefetch/src/predictor_models.cpp — the predictors: transition table, popularity, request history
// (MoE-Infinity-style activation matrices), oracle and recorded guesses. Each object belongs to one
// stream (not thread-safe); every table is sized in the constructor, so observe/predict never allocate.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "moe/prefetch/predictor.h"
#include "predictor_impl.h"

namespace moe::prefetch {
namespace {

using detail::DecayClock;
using detail::TokenTracker;

// ---- transition -------------------------------------------------------------------------------
// count[j][l][e][e'] = decayed number of tokens in which expert e was chosen at layer l and e' at
// the layer j layers later (the next token's layers when it wraps; never across requests);
// row[j][l][e] = decayed number of times e at layer l had its j-later layer observed.
// predict(j) from the last observed set A: score(e') = mean over e in A of count / (row + w), where w
// is one current-weight pseudo-observation (smoothing: an expert seen once does not score 1).
// A deterministic mapping e -> f(e) makes f(e) score about 1/|A| + the co-occurrence rate, so the
// mapped set ranks first.
class Transition final : public Predictor {
 public:
  explicit Transition(const PredictorOptions& o)
      : L_(o.n_layer), E_(o.n_expert), D_(o.max_ahead), K_(o.max_k), clock_(o.half_life_tokens),
        table_(static_cast<size_t>(D_) * L_ * E_ * E_, 0.0f), row_(static_cast<size_t>(D_) * L_ * E_, 0.0f),
        ring_layer_(D_ + 1, 0), ring_n_(D_ + 1, 0), ring_ids_(static_cast<size_t>(D_ + 1) * K_, 0),
        scores_(E_, 0.0f), scratch_(E_), rows_(K_), inv_(K_) {}
  const char* name() const noexcept override { return "transition"; }
  void begin_request(uint32_t) override { ring_count_ = 0; }
  void observe(uint32_t layer, std::span<const uint16_t> a) override {
    if (tracker_.step(layer)) {
      const float f = clock_.tick();
      if (f != 1.0f) {
        for (float& x : table_) x *= f;
        for (float& x : row_) x *= f;
      }
    }
    const float w = clock_.weight();
    const uint32_t slots = D_ + 1;
    for (uint32_t j = 1; j <= std::min(D_, ring_count_); ++j) {
      const uint32_t s = (ring_head_ + slots - j) % slots;
      const uint32_t sl = ring_layer_[s];
      if ((sl + j) % L_ != layer) continue;  // a gap in the sequence: learn nothing from it
      const uint16_t* src = &ring_ids_[static_cast<size_t>(s) * K_];
      const size_t base = (static_cast<size_t>(j - 1) * L_ + sl) * E_;
      for (uint32_t i = 0; i < ring_n_[s]; ++i) {
        row_[base + src[i]] += w;
        float* t = &table_[(base + src[i]) * E_];
        for (uint16_t e2 : a) t[e2] += w;
      }
    }
    // Push this event into the ring of the last D_ + 1 observations.
    const uint32_t n = std::min<uint32_t>(static_cast<uint32_t>(a.size()), K_);
    ring_layer_[ring_head_] = layer;
    ring_n_[ring_head_] = n;
    std::copy(a.begin(), a.begin() + n, &ring_ids_[static_cast<size_t>(ring_head_) * K_]);
    ring_head_ = (ring_head_ + 1) % slots;
    ring_count_ = std::min(ring_count_ + 1, slots);
  }
  uint32_t predict(uint32_t ahead, std::span<Guess> out) override {
    if (ring_count_ == 0 || ahead == 0 || ahead > D_) return 0;
    const uint32_t s = (ring_head_ + D_) % (D_ + 1);  // the last observation
    const uint32_t n = ring_n_[s];
    if (n == 0) return 0;
    const uint16_t* src = &ring_ids_[static_cast<size_t>(s) * K_];
    const size_t base = (static_cast<size_t>(ahead - 1) * L_ + ring_layer_[s]) * E_;
    const float w = clock_.weight();
    const float mean = 1.0f / static_cast<float>(n);
    // The rows that contribute (row count > 0), in the order of the observed set.
    uint32_t nr = 0;
    for (uint32_t i = 0; i < n; ++i) {
      const float r = row_[base + src[i]];
      if (r <= 0.0f) continue;
      rows_[nr] = &table_[(base + src[i]) * E_];
      inv_[nr] = mean / (r + w);
      ++nr;
    }
    detail::weighted_row_sum(scores_.data(), rows_.data(), inv_.data(), nr, E_);
    return top_scores(scores_, out, scratch_);
  }

 private:
  uint32_t L_, E_, D_, K_;
  DecayClock clock_;
  TokenTracker tracker_;
  std::vector<float> table_;  // (D, L, E, E)
  std::vector<float> row_;    // (D, L, E)
  std::vector<uint32_t> ring_layer_, ring_n_;
  std::vector<uint16_t> ring_ids_;  // (D + 1, K)
  uint32_t ring_head_ = 0, ring_count_ = 0;
  std::vector<float> scores_;
  std::vector<Guess> scratch_;
  std::vector<const float*> rows_;  // predict(): the contributing table rows (K)
  std::vector<float> inv_;          // ... and their weights
};

// ---- popularity -------------------------------------------------------------------------------
// score(e at layer l) = decayed count of tokens choosing e at l / decayed count of tokens seen at l.
class Popularity final : public Predictor {
 public:
  explicit Popularity(const PredictorOptions& o)
      : L_(o.n_layer), E_(o.n_expert), clock_(o.half_life_tokens), count_(static_cast<size_t>(L_) * E_, 0.0f),
        total_(L_, 0.0f), scores_(E_, 0.0f), scratch_(E_) {}
  const char* name() const noexcept override { return "popularity"; }
  void observe(uint32_t layer, std::span<const uint16_t> a) override {
    if (tracker_.step(layer)) {
      const float f = clock_.tick();
      if (f != 1.0f) {
        for (float& x : count_) x *= f;
        for (float& x : total_) x *= f;
      }
    }
    if (a.empty()) return;
    const float w = clock_.weight();
    total_[layer] += w;
    float* c = &count_[static_cast<size_t>(layer) * E_];
    for (uint16_t e : a) c[e] += w;
  }
  uint32_t predict(uint32_t ahead, std::span<Guess> out) override {
    if (!tracker_.any) return 0;
    const uint32_t tl = (tracker_.last_layer + ahead) % L_;
    if (total_[tl] <= 0.0f) return 0;
    const float inv = 1.0f / total_[tl];
    const float* c = &count_[static_cast<size_t>(tl) * E_];
    for (uint32_t e = 0; e < E_; ++e) scores_[e] = std::min(1.0f, c[e] * inv);
    return top_scores(scores_, out, scratch_);
  }

 private:
  uint32_t L_, E_;
  DecayClock clock_;
  TokenTracker tracker_;
  std::vector<float> count_;  // (L, E)
  std::vector<float> total_;  // (L)
  std::vector<float> scores_;
  std::vector<Guess> scratch_;
};

// ---- history ----------------------------------------------------------------------------------
// The current request's activation matrix M (layer x expert counts of chosen experts) is matched by
// cosine similarity against the matrices of the last `capacity` finished requests. Dot products are
// kept incrementally (observing expert (l, e) adds stored[s][l][e] to dot[s]), so a prediction costs
// O(capacity + matches * n_expert). predict(j) blends the best `matches` stored requests, weighted
// by similarity: score(e) = sum_s sim_s * stored_s[tl][e] / tokens_s / sum_s sim_s, i.e. the
// fraction of that request's tokens that chose e at the target layer. Without any stored request
// of positive similarity it falls back to the current request's own frequencies.
class History final : public Predictor {
 public:
  explicit History(const PredictorOptions& o)
      : L_(o.n_layer), E_(o.n_expert), S_(o.history_capacity), M_(std::min(o.history_matches, o.history_capacity)),
        LE_(static_cast<size_t>(L_) * E_), cur_(LE_, 0.0f), store_(LE_ * S_, 0.0f), store_norm_(S_, 0.0),
        store_tokens_(S_, 0), dot_(S_, 0.0), best_(M_), best_sim_(M_), scores_(E_, 0.0f), scratch_(E_) {}
  const char* name() const noexcept override { return "history"; }
  void begin_request(uint32_t) override {
    if (cur_tokens_ == 0) return;
    // Why a copy: stored matrices are the fixed-size ring; no allocation after construction.
    std::copy(cur_.begin(), cur_.end(), store_.begin() + static_cast<ptrdiff_t>(next_ * LE_));
    store_norm_[next_] = std::sqrt(cur_norm2_);
    store_tokens_[next_] = cur_tokens_;
    next_ = (next_ + 1) % S_;
    valid_ = std::min(valid_ + 1, S_);
    std::fill(cur_.begin(), cur_.end(), 0.0f);
    std::fill(dot_.begin(), dot_.end(), 0.0);
    cur_norm2_ = 0;
    cur_tokens_ = 0;
    tracker_ = TokenTracker{};
  }
  void observe(uint32_t layer, std::span<const uint16_t> a) override {
    if (tracker_.step(layer)) ++cur_tokens_;
    const size_t row = static_cast<size_t>(layer) * E_;
    for (uint16_t e : a) {
      const size_t i = row + e;
      const float c = cur_[i];
      cur_norm2_ += 2.0 * c + 1.0;
      cur_[i] = c + 1.0f;
      for (uint32_t s = 0; s < valid_; ++s) dot_[s] += store_[s * LE_ + i];
    }
  }
  uint32_t predict(uint32_t ahead, std::span<Guess> out) override {
    if (!tracker_.any) return 0;
    const uint32_t tl = (tracker_.last_layer + ahead) % L_;
    const size_t row = static_cast<size_t>(tl) * E_;
    // The best M_ stored requests by cosine similarity (insertion into a tiny sorted array).
    uint32_t nb = 0;
    if (cur_norm2_ > 0) {
      const double inv_cur = 1.0 / std::sqrt(cur_norm2_);
      for (uint32_t s = 0; s < valid_; ++s) {
        if (dot_[s] <= 0 || store_norm_[s] <= 0) continue;
        const double sim = dot_[s] * inv_cur / store_norm_[s];
        if (nb == M_ && sim <= best_sim_[nb - 1]) continue;
        uint32_t p = nb < M_ ? nb++ : nb - 1;
        while (p > 0 && best_sim_[p - 1] < sim) {
          best_sim_[p] = best_sim_[p - 1];
          best_[p] = best_[p - 1];
          --p;
        }
        best_sim_[p] = sim;
        best_[p] = s;
      }
    }
    if (nb == 0) {
      if (cur_tokens_ == 0) return 0;
      const float inv = 1.0f / static_cast<float>(cur_tokens_);
      for (uint32_t e = 0; e < E_; ++e) scores_[e] = std::min(1.0f, cur_[row + e] * inv);
    } else {
      double total = 0;
      for (uint32_t b = 0; b < nb; ++b) total += best_sim_[b];
      std::fill(scores_.begin(), scores_.end(), 0.0f);
      for (uint32_t b = 0; b < nb; ++b) {
        const uint32_t s = best_[b];
        const float w = static_cast<float>(best_sim_[b] / total / static_cast<double>(store_tokens_[s]));
        const float* m = &store_[s * LE_ + row];
        for (uint32_t e = 0; e < E_; ++e) scores_[e] += w * m[e];
      }
      for (float& x : scores_) x = std::min(1.0f, x);
    }
    return top_scores(scores_, out, scratch_);
  }

 private:
  uint32_t L_, E_, S_, M_;
  size_t LE_;
  TokenTracker tracker_;
  std::vector<float> cur_;  // (L, E) counts of the current request
  double cur_norm2_ = 0;
  uint64_t cur_tokens_ = 0;
  std::vector<float> store_;  // (S, L, E)
  std::vector<double> store_norm_;
  std::vector<uint64_t> store_tokens_;
  std::vector<double> dot_;  // dot(cur, stored[s])
  uint32_t valid_ = 0, next_ = 0;
  std::vector<uint32_t> best_;
  std::vector<double> best_sim_;
  std::vector<float> scores_;
  std::vector<Guess> scratch_;
};

// ---- oracle / recorded --------------------------------------------------------------------------
// Both count observe() calls to know the current event index i; the oracle answers event i + ahead
// from the real routing, recorded answers event i + 1 from a recorded guess column. Score 1.
class EventReplay final : public Predictor {
 public:
  EventReplay(const char* name, EventView v, bool any_ahead, std::string label)
      : name_(std::move(label)), v_(v), any_ahead_(any_ahead) {
    if (name_.empty()) name_ = name;
  }
  const char* name() const noexcept override { return name_.c_str(); }
  void observe(uint32_t, std::span<const uint16_t>) override { ++cur_; }
  uint32_t predict(uint32_t ahead, std::span<Guess> out) override {
    if (cur_ == 0 || (!any_ahead_ && ahead != 1)) return 0;
    const uint64_t i = cur_ - 1 + ahead;
    if (i >= v_.n_events()) return 0;
    uint32_t n = 0;
    for (uint64_t p = v_.off[i]; p < v_.off[i + 1] && n < out.size(); ++p) out[n++] = Guess{v_.ids[p], 1.0f};
    return n;
  }

 private:
  std::string name_;
  EventView v_;
  bool any_ahead_;
  uint64_t cur_ = 0;  // events observed
};

}  // namespace

std::unique_ptr<Predictor> make_transition_predictor(const PredictorOptions& o) {
  return std::make_unique<Transition>(o);
}
std::unique_ptr<Predictor> make_popularity_predictor(const PredictorOptions& o) {
  return std::make_unique<Popularity>(o);
}
std::unique_ptr<Predictor> make_history_predictor(const PredictorOptions& o) {
  return std::make_unique<History>(o);
}
std::unique_ptr<Predictor> make_oracle_predictor(const PredictorOptions& o) {
  return std::make_unique<EventReplay>("oracle", o.future, true, "oracle");
}
std::unique_ptr<Predictor> make_recorded_predictor(const PredictorOptions& o) {
  return std::make_unique<EventReplay>("recorded", o.recorded, false, o.recorded_name);
}

}  // namespace moe::prefetch
