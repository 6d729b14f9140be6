// prefetch/src/predictor.cpp — the predictor factory, the combiner, and the shared top-k helper.
// Owns nothing shared; every object here is single-stream (not thread-safe), see predictor.h.
#include <algorithm>
#include <bit>
#include <limits>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MOE_PREDICTOR_AVX2 1
#endif

#include "moe/prefetch/predictor.h"
#include "predictor_impl.h"

namespace moe::prefetch {

namespace {

// The insertion window shared by the top-k paths: offers one candidate (score desc, expert asc;
// candidates arrive in ascending expert order) to out[0..n) holding the best `want` so far.
inline void window_insert(Guess g, Guess* out, uint32_t want, uint32_t& n, float& thr) noexcept {
  if (!(g.score > thr)) return;
  uint32_t p = n < want ? n++ : n - 1;
  while (p > 0 && out[p - 1].score < g.score) {
    out[p] = out[p - 1];
    --p;
  }
  out[p] = g;
  if (n == want) thr = out[n - 1].score;
}

#if defined(MOE_PREDICTOR_AVX2)
bool cpu_has_avx2() noexcept {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

// top_scores for want <= 32 with scratch >= size, 8 scores per compare. Same result as the
// portable path: the floor below is another valid lower bound on the want-th best score (8 * B >=
// want disjoint groups, each group's maximum a real score, NaN never raising a maximum), and the
// window keeps the exact best `want` of any superset of them offered in ascending expert order.
// Why AVX2: the compaction tests 8 scores per compare + movemask instead of one store and add
// per score, and the prediction's top-k is a third of the simulator's time.
__attribute__((target("avx2"))) uint32_t top_scores_avx2(const float* sc, uint32_t size, Guess* out, uint32_t want,
                                                         Guess* cand) noexcept {
  float floor_score = -std::numeric_limits<float>::infinity();
  const uint32_t V = size / 8, B = (want + 7) / 8;
  if (V >= B && B <= 4) {
    const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    __m256 m[4] = {ninf, ninf, ninf, ninf};
    uint32_t v = 0;
    if (B == 1) {  // want <= 8 (the common top-k): two accumulators, merged after
      for (; v + 2 <= V; v += 2) {
        m[0] = _mm256_max_ps(_mm256_loadu_ps(sc + 8 * v), m[0]);
        m[1] = _mm256_max_ps(_mm256_loadu_ps(sc + 8 * v + 8), m[1]);
      }
      if (v < V) m[0] = _mm256_max_ps(_mm256_loadu_ps(sc + 8 * v), m[0]);
      m[0] = _mm256_max_ps(m[0], m[1]);  // groups = lanes: max over all of a lane's vectors
    } else {
      for (; v < V; ++v) m[v % B] = _mm256_max_ps(_mm256_loadu_ps(sc + 8 * v), m[v % B]);
      for (uint32_t b = 1; b < B; ++b) m[0] = _mm256_min_ps(m[0], m[b]);
    }
    alignas(32) float l8[8];
    _mm256_store_ps(l8, m[0]);
    floor_score = l8[0];
    for (int i = 1; i < 8; ++i) floor_score = std::min(floor_score, l8[i]);
  }
  // Candidates (>= floor, > 0; ordered compares are false for NaN) in ascending expert order.
  uint32_t nc = 0;
  const __m256 f8 = _mm256_set1_ps(floor_score), zero = _mm256_setzero_ps();
  uint32_t e = 0;
  for (; e + 8 <= size; e += 8) {
    const __m256 x = _mm256_loadu_ps(sc + e);
    uint32_t mask = static_cast<uint32_t>(_mm256_movemask_ps(
        _mm256_and_ps(_mm256_cmp_ps(x, f8, _CMP_GE_OQ), _mm256_cmp_ps(x, zero, _CMP_GT_OQ))));
    while (mask) {
      const uint32_t i = e + static_cast<uint32_t>(std::countr_zero(mask));
      cand[nc++] = Guess{i, sc[i]};
      mask &= mask - 1;
    }
  }
  for (; e < size; ++e)
    if (sc[e] >= floor_score && sc[e] > 0.0f) cand[nc++] = Guess{e, sc[e]};
  uint32_t n = 0;
  float thr = 0.0f;
  for (uint32_t c = 0; c < nc; ++c) window_insert(cand[c], out, want, n, thr);
  return n;
}

// weighted_row_sum with 8-wide vectors: per element the same multiply and add, in the same row
// order, as the portable code (no FMA in the "avx2" target), so the floats are identical.
__attribute__((target("avx2"))) void weighted_row_sum_avx2(float* __restrict out, const float* const* rows,
                                                           const float* w, uint32_t nr, uint32_t n) noexcept {
  uint32_t e = 0;
  for (; e + 32 <= n; e += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (uint32_t i = 0; i < nr; ++i) {
      const float* r = rows[i] + e;
      const __m256 wi = _mm256_set1_ps(w[i]);
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(r), wi));
      a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(r + 8), wi));
      a2 = _mm256_add_ps(a2, _mm256_mul_ps(_mm256_loadu_ps(r + 16), wi));
      a3 = _mm256_add_ps(a3, _mm256_mul_ps(_mm256_loadu_ps(r + 24), wi));
    }
    _mm256_storeu_ps(out + e, a0);
    _mm256_storeu_ps(out + e + 8, a1);
    _mm256_storeu_ps(out + e + 16, a2);
    _mm256_storeu_ps(out + e + 24, a3);
  }
  for (; e + 8 <= n; e += 8) {
    __m256 a0 = _mm256_setzero_ps();
    for (uint32_t i = 0; i < nr; ++i)
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(rows[i] + e), _mm256_set1_ps(w[i])));
    _mm256_storeu_ps(out + e, a0);
  }
  for (; e < n; ++e) {
    float a = 0.0f;
    for (uint32_t i = 0; i < nr; ++i) a += rows[i][e] * w[i];
    out[e] = a;
  }
}
#endif

}  // namespace

namespace detail {
void weighted_row_sum(float* __restrict out, const float* const* rows, const float* w, uint32_t nr,
                      uint32_t n) noexcept {
#if defined(MOE_PREDICTOR_AVX2)
  if (cpu_has_avx2()) return weighted_row_sum_avx2(out, rows, w, nr, n);
#endif
  weighted_row_sum_portable(out, rows, w, nr, n);
}
}  // namespace detail

uint32_t top_scores(std::span<const float> scores, std::span<Guess> out, std::span<Guess> scratch) {
#if defined(MOE_PREDICTOR_AVX2)
  const uint32_t want = static_cast<uint32_t>(std::min(out.size(), scores.size()));
  if (want > 0 && want <= 32 && scratch.size() >= scores.size() && cpu_has_avx2())
    return top_scores_avx2(scores.data(), static_cast<uint32_t>(scores.size()), out.data(), want, scratch.data());
#endif
  return detail::top_scores_portable(scores, out, scratch);
}

namespace detail {
uint32_t top_scores_portable(std::span<const float> scores, std::span<Guess> out, std::span<Guess> scratch) {
  const uint32_t want = static_cast<uint32_t>(std::min(out.size(), scores.size()));
  if (want == 0) return 0;
  if (want <= 32) {
    // Why insertion: a prefetch wants the best handful (top-k) of 64..256 scores; keeping a sorted
    // window of `want` costs one compare per score in the common case.
    // A score enters the window only when it beats `thr`: 0 while the window fills, then the
    // window's last score (equal scores keep the lower expert). The window so holds the best `want`
    // under the order (score desc, expert asc) of the scores seen, so any score that at least
    // `want` others beat can be skipped without changing the result.
    uint32_t n = 0;
    float thr = 0.0f;
    const float* sc = scores.data();
    const uint32_t size = static_cast<uint32_t>(scores.size());
    uint32_t e = 0;
#if defined(__SSE2__)
    // Why a floor: inserting into the window mispredicts a branch per insertion, and a plain scan
    // inserts about want * (1 + ln(size / want)) times. Split the scores into 4 * B >= want
    // disjoint groups (lane x (vector index mod B)); every group's maximum is a real score, so at
    // least `want` scores are >= floor = the smallest group maximum, and scores below it are
    // skipped. max_ps(s, m) returns m when s is NaN: NaN scores never raise a maximum.
    float floor_score = -std::numeric_limits<float>::infinity();
    {
      const uint32_t B = (want + 3) / 4, V = size / 4;
      if (V >= B && B <= 8) {
        const __m128 ninf = _mm_set1_ps(-std::numeric_limits<float>::infinity());
        __m128 lo;
        if (B == 1) {  // want <= 4
          __m128 m0 = ninf;
          for (uint32_t v = 0; v < V; ++v) m0 = _mm_max_ps(_mm_loadu_ps(sc + 4 * v), m0);
          lo = m0;
        } else if (B == 2) {  // want 5..8 (the common top-k): two accumulators kept in registers
          __m128 m0 = ninf, m1 = ninf;
          uint32_t v = 0;
          for (; v + 2 <= V; v += 2) {
            m0 = _mm_max_ps(_mm_loadu_ps(sc + 4 * v), m0);
            m1 = _mm_max_ps(_mm_loadu_ps(sc + 4 * v + 4), m1);
          }
          if (v < V) m0 = _mm_max_ps(_mm_loadu_ps(sc + 4 * v), m0);  // v % 2 == 0
          lo = _mm_min_ps(m0, m1);
        } else {
          __m128 m[8];
          for (uint32_t b = 0; b < B; ++b) m[b] = ninf;
          for (uint32_t v = 0; v < V; ++v) {
            const uint32_t b = v % B;
            m[b] = _mm_max_ps(_mm_loadu_ps(sc + 4 * v), m[b]);
          }
          lo = m[0];
          for (uint32_t b = 1; b < B; ++b) lo = _mm_min_ps(lo, m[b]);
        }
        alignas(16) float l4[4];
        _mm_store_ps(l4, lo);
        floor_score = std::min(std::min(l4[0], l4[1]), std::min(l4[2], l4[3]));
      }
    }
    if (scratch.size() >= size) {
      // Why compaction: the candidates (>= floor, > 0) are gathered without a branch per score
      // (every score is written, the count only advances for candidates; NaN compares false),
      // so only the few candidates reach the branchy window insertion, in ascending expert order.
      uint32_t nc = 0;
      Guess* cand = scratch.data();
      for (uint32_t i = 0; i < size; ++i) {
        const float s = sc[i];
        cand[nc] = Guess{i, s};
        nc += static_cast<uint32_t>((s >= floor_score) & (s > 0.0f));
      }
      for (uint32_t c = 0; c < nc; ++c) window_insert(cand[c], out.data(), want, n, thr);
      return n;
    }
    const __m128 f4 = _mm_set1_ps(floor_score);
#endif
    for (;;) {
#if defined(__SSE2__)
      // Without scratch: most scores lose; test four at a time (the compares are false for NaN,
      // like the scalar test) and only look closer at a group with a candidate.
      const __m128 t4 = _mm_set1_ps(thr);
      while (e + 4 <= size) {
        const __m128 x = _mm_loadu_ps(sc + e);
        if (_mm_movemask_ps(_mm_and_ps(_mm_cmpgt_ps(x, t4), _mm_cmpge_ps(x, f4))) != 0) break;
        e += 4;
      }
#endif
      if (e >= size) break;
      const float s = sc[e];
#if defined(__SSE2__)
      const bool candidate = s > thr && s >= floor_score;
#else
      const bool candidate = s > thr;
#endif
      if (candidate) window_insert(Guess{e, s}, out.data(), want, n, thr);
      ++e;
    }
    return n;
  }
  uint32_t n = 0;
  for (uint32_t e = 0; e < scores.size(); ++e)
    if (scores[e] > 0.0f) scratch[n++] = Guess{e, scores[e]};
  const uint32_t m = std::min<uint32_t>(n, static_cast<uint32_t>(out.size()));
  auto better = [](const Guess& a, const Guess& b) {
    return a.score > b.score || (a.score == b.score && a.expert < b.expert);
  };
  // Why partial_sort: only the best m are wanted and m is usually a handful out of 64..256.
  std::partial_sort(scratch.begin(), scratch.begin() + m, scratch.begin() + n, better);
  std::copy(scratch.begin(), scratch.begin() + m, out.begin());
  return m;
}
}  // namespace detail

namespace {

// Union of parts: score = max over the parts that guessed the expert.
class Combined final : public Predictor {
 public:
  Combined(std::vector<std::unique_ptr<Predictor>> parts, const PredictorOptions& o)
      : parts_(std::move(parts)), scores_(o.n_expert, 0.0f), buf_(o.n_expert), scratch_(o.n_expert),
        touched_(o.n_expert) {
    for (size_t i = 0; i < parts_.size(); ++i) {
      if (i) name_ += ',';
      name_ += parts_[i]->name();
    }
  }
  const char* name() const noexcept override { return name_.c_str(); }
  void begin_request(uint32_t r) override {
    for (auto& p : parts_) p->begin_request(r);
  }
  void observe(uint32_t layer, std::span<const uint16_t> experts) override {
    for (auto& p : parts_) p->observe(layer, experts);
  }
  uint32_t predict(uint32_t ahead, std::span<Guess> out) override {
    // The best m of the union (score = max) lie within the union of each part's best m.
    const std::span<Guess> part_out(buf_.data(), std::min(buf_.size(), out.size()));
    for (auto& p : parts_) {
      const uint32_t n = p->predict(ahead, part_out);
      for (uint32_t i = 0; i < n; ++i) {
        float& s = scores_[buf_[i].expert];
        if (s == 0.0f) touched_[touched_n_++] = buf_[i].expert;
        s = std::max(s, buf_[i].score);
      }
    }
    // Gather only the touched experts (why: avoid scanning and clearing all n_expert scores).
    uint32_t n = 0;
    for (uint32_t i = 0; i < touched_n_; ++i) {
      const uint32_t e = touched_[i];
      scratch_[n++] = Guess{e, scores_[e]};
      scores_[e] = 0.0f;
    }
    touched_n_ = 0;
    const uint32_t m = std::min<uint32_t>(n, static_cast<uint32_t>(out.size()));
    std::partial_sort(scratch_.begin(), scratch_.begin() + m, scratch_.begin() + n, [](const Guess& a, const Guess& b) {
      return a.score > b.score || (a.score == b.score && a.expert < b.expert);
    });
    std::copy(scratch_.begin(), scratch_.begin() + m, out.begin());
    return m;
  }

 private:
  std::vector<std::unique_ptr<Predictor>> parts_;
  std::string name_;
  std::vector<float> scores_;
  std::vector<Guess> buf_, scratch_;
  std::vector<uint32_t> touched_;
  uint32_t touched_n_ = 0;
};

bool trim_eq(std::string_view a, std::string_view b) { return a == b; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

const std::vector<std::string_view>& predictor_names() {
  static const std::vector<std::string_view> names = {"none",   "transition", "popularity",
                                                      "history", "oracle",     "recorded"};
  return names;
}

std::unique_ptr<Predictor> make_combined_predictor(std::vector<std::unique_ptr<Predictor>> parts,
                                                   const PredictorOptions& o) {
  return std::make_unique<Combined>(std::move(parts), o);
}

std::unique_ptr<Predictor> make_predictor(std::string_view spec, const PredictorOptions& o,
                                          std::string* error) {
  std::string err;
  auto set_err = [&](std::string m) {
    if (error) *error = std::move(m);
    return nullptr;
  };
  if (error) error->clear();
  if (o.n_layer == 0 || o.n_expert == 0 || o.n_expert > 65535 || o.max_k == 0)
    return set_err("predictor: n_layer, n_expert (1..65535) and max_k must be positive");
  if (o.max_ahead == 0 || (o.n_layer > 1 && o.max_ahead >= o.n_layer) || (o.n_layer == 1 && o.max_ahead > 1))
    return set_err("predictor: prefetch depth must lie in 1 .. n_layer-1 (got " + std::to_string(o.max_ahead) +
                   " for " + std::to_string(o.n_layer) + " layers)");
  std::vector<std::unique_ptr<Predictor>> parts;
  std::string_view rest = spec;
  while (true) {
    const size_t c = rest.find(',');
    const std::string_view name = trim(rest.substr(0, c));
    if (name.empty() || trim_eq(name, "none")) {
      // nothing
    } else if (name == "transition") {
      const double cells = static_cast<double>(o.max_ahead) * o.n_layer * o.n_expert * o.n_expert;
      if (cells * sizeof(float) > 2.0 * (1ull << 30))
        return set_err("predictor: transition tables for depth " + std::to_string(o.max_ahead) + " would need " +
                       std::to_string(static_cast<uint64_t>(cells * 4 / (1 << 20))) + " MiB; lower the depth");
      parts.push_back(make_transition_predictor(o));
    } else if (name == "popularity") {
      parts.push_back(make_popularity_predictor(o));
    } else if (name == "history") {
      if (o.history_capacity == 0 || o.history_matches == 0)
        return set_err("predictor: history needs a capacity and a match count > 0");
      parts.push_back(make_history_predictor(o));
    } else if (name == "oracle") {
      if (o.future.n_events() == 0 || o.future.n_layer != o.n_layer)
        return set_err("predictor: oracle needs the replayed trace (simulator only)");
      parts.push_back(make_oracle_predictor(o));
    } else if (name == "recorded" || name.starts_with("recorded:")) {
      if (o.recorded.n_events() == 0 || o.recorded.n_layer != o.n_layer)
        return set_err("predictor: '" + std::string(name) + "' needs a guess column recorded in the trace");
      parts.push_back(make_recorded_predictor(o));
    } else {
      std::string known;
      for (auto n : predictor_names()) known += (known.empty() ? "" : ", ") + std::string(n);
      return set_err("predictor: unknown name '" + std::string(name) + "' (known: " + known + ")");
    }
    if (c == std::string_view::npos) break;
    rest.remove_prefix(c + 1);
  }
  if (parts.empty()) return nullptr;
  if (parts.size() == 1) return std::move(parts.front());
  return make_combined_predictor(std::move(parts), o);
}

}  // namespace moe::prefetch
