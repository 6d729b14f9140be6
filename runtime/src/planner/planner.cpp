// runtime/src/planner/planner.cpp — PrefetchPlanner (the Session hook that prefetches layer N+1..N+d
// while layer N computes), PregatedPredictor and the cost-model calibration (moe/planner.h).
// Single-threaded like the Session it observes; the store it drives is thread-safe.
#include "moe/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "moe/error.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/ops.h"
#include "moe/kernels/thread_pool.h"
#include "moe/prefetch/io.h"

namespace moe {

namespace ops = kernels::ops;
using prefetch::Guess;
using Clock = std::chrono::steady_clock;

// ---- stats --------------------------------------------------------------------------------------

PredictionCounts PlannerStats::plan_total() const noexcept {
  PredictionCounts t;
  for (const auto& c : plan) t += c;
  return t;
}

PredictionCounts PlannerStats::ahead1_total(size_t component) const noexcept {
  PredictionCounts t;
  if (component < ahead1.size())
    for (const auto& c : ahead1[component]) t += c;
  return t;
}

std::string PlannerStats::to_text() const {
  const PredictionCounts t = plan_total();
  std::string s = fmt::format(
      "prefetch plan: precision {:.1f}%, recall {:.1f}% | {} reads ({:.1f} MiB), {} already present, {} refused, "
      "{} below threshold, {} over budget, {} cancelled | predict {:.3f} s\n",
      100 * t.precision(), 100 * t.recall(), prefetch_reads, double(prefetch_bytes) / (1 << 20), already_present,
      refused, dropped_threshold, dropped_budget, cancel_requests, predict_seconds);
  for (size_t c = 0; c < predictor_names.size(); ++c)
    s += fmt::format("  {} one-layer-ahead recall {:.1f}%, precision {:.1f}%\n", predictor_names[c],
                     100 * ahead1_total(c).recall(), 100 * ahead1_total(c).precision());
  s += "  layer | plan P    R    |";
  for (const auto& n : predictor_names) s += fmt::format(" {} R@1 |", n);
  s += "\n";
  for (size_t l = 0; l < plan.size(); ++l) {
    bool any = plan[l].actual > 0;
    for (const auto& a : ahead1) any = any || (l < a.size() && a[l].actual > 0);
    if (!any) continue;
    s += fmt::format("  {:5} | {:5.1f}% {:5.1f}% |", l, 100 * plan[l].precision(), 100 * plan[l].recall());
    for (size_t c = 0; c < ahead1.size(); ++c) s += fmt::format(" {:5.1f}% |", 100 * ahead1[c][l].recall());
    s += "\n";
  }
  return s;
}

// ---- pregated -----------------------------------------------------------------------------------

PregatedPredictor::PregatedPredictor(const Model& m) : m_(m) {
  const ModelSpec& s = m.spec();
  uint32_t max_e = 1;
  for (uint32_t il = 0; il < s.n_layer; ++il)
    if (s.layers[il].is_moe) max_e = std::max(max_e, s.layers[il].n_expert);
  xn_.resize(s.n_embd);
  logits_.resize(max_e);
  scratch_.resize(max_e);
}

uint32_t PregatedPredictor::predict(uint32_t target, const float* x, std::span<Guess> out) {
  const ModelSpec& s = m_.spec();
  MOE_ASSERT(target < s.n_layer, "pregated: target layer out of range");
  const LayerSpec& ls = s.layers[target];
  const LayerWeights& L = m_.layer(target);
  if (!ls.is_moe || !L.router) return 0;
  const uint32_t ne = ls.n_expert;
  m_.norm(x, m_.router_norm(target), m_.router_norm_b(target), xn_.data());
  // Why no thread pool: one (n_expert x n_embd) matvec is tens of microseconds; waking workers costs more.
  kernels::matvec(L.router.type, L.router.data, L.router.rows, L.router.cols, xn_.data(), logits_.data(), nullptr);
  if (s.gating.func == GatingFunc::Softmax) {
    ops::softmax(logits_.data(), ne);
  } else {
    for (uint32_t e = 0; e < ne; ++e) logits_[e] = ops::sigmoid(logits_[e]);
  }
  return prefetch::top_scores(std::span<const float>(logits_.data(), ne), out,
                              std::span<Guess>(scratch_.data(), ne));
}

// ---- planner ------------------------------------------------------------------------------------

struct PrefetchPlanner::Impl {
  const Model& m;
  CachedExpertSource* store;
  PlannerOptions o;
  uint32_t n_layer = 0, n_expert = 0, max_k = 1, depth = 0, max_tokens = 1;
  // Components in spec order; kind -1 = pregated, else an index into `online`.
  std::vector<std::string> names;
  std::vector<int> kind;
  std::unique_ptr<PregatedPredictor> pregated;
  std::vector<std::unique_ptr<prefetch::Predictor>> online;
  // The plan per target layer (guesses kept since its last routing).
  std::vector<std::vector<uint8_t>> planned, issued;  // [layer][expert]
  std::vector<std::vector<uint8_t>> speculative;      // [layer][expert]: issued from 2+ layers ahead
  std::vector<uint8_t> in_step;                       // (n_expert) scratch: candidates of this commit
  std::vector<std::vector<uint16_t>> plan_list;       // [layer]
  // One-layer-ahead guesses: pending (made, routing not known yet) and used (scored) per component.
  std::vector<std::vector<std::vector<uint16_t>>> pending, used;  // [component][layer] -> experts
  std::vector<std::vector<uint8_t>> pending_mark;                 // [component][expert] scratch
  // Step scratch.
  std::vector<float> cand;            // (n_expert) merged score per expert, 0 = not a candidate
  std::vector<uint32_t> touched;      // experts with cand > 0
  uint32_t n_touched = 0;
  std::vector<Guess> guesses, sorted; // (n_expert)
  std::vector<uint8_t> actual;        // (n_expert) routing of the layer being scored
  std::vector<uint16_t> last_ids;     // (max_k) one token's routing as u16
  uint64_t budget_left = 0;
  // Prefetches issued whose target layer has not routed yet, and their cap: the cache's slots less
  // room for two layers of demand misses (why: more in the air and they evict each other or the
  // experts the current layer needs).
  uint32_t outstanding = 0, outstanding_cap = UINT32_MAX;
  PlannerStats st;

  Impl(const Model& model, CachedExpertSource* s, const PlannerOptions& opt) : m(model), store(s), o(opt) {}

  uint32_t guesses_for(uint32_t layer) const {
    const LayerSpec& ls = m.spec().layers[layer];
    const uint32_t k = o.guesses_per_layer ? o.guesses_per_layer : (ls.is_moe ? ls.n_expert_used : max_k);
    return std::min(std::max<uint32_t>(k, 1), n_expert);
  }

  void merge(uint32_t n, size_t comp, bool ahead1, uint32_t target) {
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t e = guesses[i].expert;
      if (cand[e] == 0.0f) touched[n_touched++] = e;
      cand[e] = std::max(cand[e], std::max(guesses[i].score, std::numeric_limits<float>::min()));
      if (ahead1 && !pending_mark[comp][e]) {
        pending_mark[comp][e] = 1;
        pending[comp][target].push_back(uint16_t(e));
      }
    }
  }
  void clear_marks(size_t comp, uint32_t target) {
    for (uint16_t e : pending[comp][target]) pending_mark[comp][e] = 0;
  }

  // Turns the merged candidates for `target`, guessed `ahead` layers before it, into plan entries and
  // prefetch reads, best first. Reads for guesses 2+ layers ahead are speculative (the reader's lowest
  // priority); the one-layer-ahead guess then confirms them or cancels those not yet read.
  void commit(uint32_t target, uint32_t ahead) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_touched; ++i) {
      const uint32_t e = touched[i];
      sorted[n++] = Guess{e, cand[e]};
      cand[e] = 0.0f;
      in_step[e] = 1;
    }
    n_touched = 0;
    if (ahead == 1) {
      auto& pl = plan_list[target];
      for (size_t i = 0; i < pl.size();) {
        const uint16_t e = pl[i];
        if (speculative[target][e] && !in_step[e] && store && store->cancel_prefetch(target, e)) {
          ++st.cancel_requests;
          speculative[target][e] = issued[target][e] = planned[target][e] = 0;
          if (outstanding) --outstanding;
          pl[i] = pl.back();
          pl.pop_back();
          continue;
        }
        // Confirmed one layer ahead: what of its speculative read is still queued goes at prefetch priority.
        if (speculative[target][e] && in_step[e] && store) store->prefetch(target, e, /*speculative=*/false);
        speculative[target][e] = 0;
        ++i;
      }
    }
    for (uint32_t i = 0; i < n; ++i) in_step[sorted[i].expert] = 0;
    std::sort(sorted.begin(), sorted.begin() + n, [](const Guess& a, const Guess& b) {
      return a.score > b.score || (a.score == b.score && a.expert < b.expert);
    });
    const bool unbounded = o.step_budget_bytes == 0;
    for (uint32_t i = 0; i < n; ++i) {
      const uint32_t e = sorted[i].expert;
      if (planned[target][e]) continue;
      if (sorted[i].score < o.threshold) {
        ++st.dropped_threshold;
        continue;
      }
      if (store) {
        const cache::EntryState es = store->state(target, e);
        if (es == cache::EntryState::Resident || es == cache::EntryState::InFlight) {
          ++st.already_present;
        } else {
          const uint64_t bytes = m.experts().at(target, e)->bytes();
          if ((!unbounded && bytes > budget_left) || outstanding >= outstanding_cap) {
            ++st.dropped_budget;
            continue;
          }
          if (store->prefetch(target, e, /*speculative=*/ahead > 1)) {
            issued[target][e] = 1;
            speculative[target][e] = ahead > 1 ? 1 : 0;
            ++outstanding;
            ++st.prefetch_reads;
            st.prefetch_bytes += bytes;
            if (!unbounded) budget_left -= bytes;
          } else {
            ++st.refused;
          }
        }
      }
      planned[target][e] = 1;
      plan_list[target].push_back(uint16_t(e));
    }
  }

  void pregated_step(uint32_t source, const float* x, uint32_t n_tokens) {
    const auto t0 = Clock::now();
    const uint32_t E = m.spec().n_embd;
    for (uint32_t a = 1; a <= depth && source + a < n_layer; ++a) {
      const uint32_t target = source + a;
      if (!m.spec().layers[target].is_moe) continue;
      const uint32_t g = guesses_for(target);
      for (size_t c = 0; c < kind.size(); ++c) {
        if (kind[c] != -1) continue;
        if (a == 1) {
          clear_marks(c, target);
          pending[c][target].clear();
        }
        for (uint32_t t = 0; t < n_tokens; ++t) {
          const uint32_t k = pregated->predict(target, x + size_t(t) * E, std::span<Guess>(guesses.data(), g));
          merge(k, c, a == 1, target);
        }
        if (a == 1) clear_marks(c, target);
      }
      commit(target, a);
    }
    st.predict_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }

  void online_step(uint32_t source, std::span<const uint16_t> routing) {
    if (online.empty()) return;
    const auto t0 = Clock::now();
    for (auto& p : online) p->observe(source, routing);
    for (uint32_t a = 1; a <= depth; ++a) {
      const uint32_t target = (source + a) % n_layer;
      if (!m.spec().layers[target].is_moe) continue;
      const uint32_t g = guesses_for(target);
      for (size_t c = 0; c < kind.size(); ++c) {
        if (kind[c] < 0) continue;
        const uint32_t k = online[size_t(kind[c])]->predict(a, std::span<Guess>(guesses.data(), g));
        if (a == 1) {
          clear_marks(c, target);
          pending[c][target].clear();
        }
        merge(k, c, a == 1, target);
        if (a == 1) clear_marks(c, target);
      }
      commit(target, a);
    }
    st.predict_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }

  // The routing of `layer` is known: score the plan and the one-ahead guesses, cancel stale reads.
  void score(uint32_t layer, const int32_t* experts, uint32_t n_tokens, uint32_t k) {
    uint32_t n_actual = 0;
    for (uint32_t i = 0; i < n_tokens * k; ++i) {
      const int32_t e = experts[i];
      if (e >= 0 && uint32_t(e) < n_expert && !actual[uint32_t(e)]) {
        actual[uint32_t(e)] = 1;
        ++n_actual;
      }
    }
    auto overlap = [&](std::span<const uint16_t> p) {
      uint64_t c = 0;
      for (uint16_t e : p) c += actual[e];
      return c;
    };
    auto& pl = plan_list[layer];
    if (!pl.empty()) {
      PredictionCounts& pc = st.plan[layer];
      pc.actual += n_actual;
      pc.predicted += pl.size();
      pc.correct += overlap(pl);
      for (uint16_t e : pl) {
        if (issued[layer][e] && !actual[e] && store && store->drop_prefetch(layer, e)) ++st.cancel_requests;
        if (issued[layer][e] && outstanding) --outstanding;
        issued[layer][e] = 0;
        planned[layer][e] = 0;
        speculative[layer][e] = 0;
      }
      pl.clear();
    }
    for (size_t c = 0; c < kind.size(); ++c) {
      auto& pg = pending[c][layer];
      used[c][layer].assign(pg.begin(), pg.end());  // capacity reserved: no allocation
      if (!pg.empty()) {
        PredictionCounts& ac = st.ahead1[c][layer];
        ac.actual += n_actual;
        ac.predicted += pg.size();
        ac.correct += overlap(pg);
      }
      pg.clear();
    }
    for (uint32_t i = 0; i < n_tokens * k; ++i) {
      const int32_t e = experts[i];
      if (e >= 0 && uint32_t(e) < n_expert) actual[uint32_t(e)] = 0;
    }
  }
};

PrefetchPlanner::PrefetchPlanner(const Model& m, CachedExpertSource* store, const PlannerOptions& o,
                                 uint32_t max_tokens)
    : impl_(std::make_unique<Impl>(m, store, o)), o_(o) {
  Impl& I = *impl_;
  const ModelSpec& s = m.spec();
  I.n_layer = s.n_layer;
  I.max_tokens = std::max<uint32_t>(1, max_tokens);
  for (uint32_t il = 0; il < s.n_layer; ++il)
    if (s.layers[il].is_moe) {
      I.n_expert = std::max(I.n_expert, s.layers[il].n_expert);
      I.max_k = std::max(I.max_k, s.layers[il].n_expert_used);
    }
  I.n_expert = std::max<uint32_t>(I.n_expert, 1);
  I.depth = std::min<uint32_t>(std::max<uint32_t>(o.depth, 1), s.n_layer > 1 ? s.n_layer - 1 : 0);
  if (o.threshold < 0 || o.threshold > 1)
    fail(ErrorCode::InvalidArgument, "--prefetch-threshold {} must be in [0, 1]", o.threshold);

  prefetch::PredictorOptions po;
  po.n_layer = s.n_layer;
  po.n_expert = I.n_expert;
  po.max_k = std::max(I.max_k, o.guesses_per_layer);
  po.max_ahead = std::max<uint32_t>(I.depth, 1);
  po.half_life_tokens = o.half_life_tokens;
  po.history_capacity = o.history_capacity;
  size_t start = 0;
  const std::string& spec = o.predictor;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    std::string name = spec.substr(start, end - start);
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    start = end + 1;
    if (name.empty() || name == "none") continue;
    if (std::find(I.names.begin(), I.names.end(), name) != I.names.end()) continue;
    if (name == "pregated") {
      if (!I.pregated) I.pregated = std::make_unique<PregatedPredictor>(m);
      I.kind.push_back(-1);
    } else if (name == "transition" || name == "popularity" || name == "history") {
      std::string err;
      auto p = prefetch::make_predictor(name, po, &err);
      if (!p) fail(ErrorCode::InvalidArgument, "--predictor '{}': {}", name, err);
      I.kind.push_back(int(I.online.size()));
      I.online.push_back(std::move(p));
    } else {
      fail(ErrorCode::InvalidArgument,
           "--predictor: unknown predictor '{}' (use none, pregated, transition, popularity, history, "
           "comma-separated to combine)",
           name);
    }
    I.names.push_back(name);
  }
  if (I.names.empty()) I.depth = 0;
  if (store) {
    const uint32_t slots = store->plan().slots, reserve = 2 * I.max_k;
    I.outstanding_cap = slots > reserve ? slots - reserve : 0;
  }

  const size_t L = s.n_layer, E = I.n_expert, C = I.names.size();
  I.planned.assign(L, std::vector<uint8_t>(E, 0));
  I.issued.assign(L, std::vector<uint8_t>(E, 0));
  I.speculative.assign(L, std::vector<uint8_t>(E, 0));
  I.in_step.assign(E, 0);
  I.plan_list.resize(L);
  for (auto& v : I.plan_list) v.reserve(E);
  I.pending.assign(C, std::vector<std::vector<uint16_t>>(L));
  I.used.assign(C, std::vector<std::vector<uint16_t>>(L));
  for (size_t c = 0; c < C; ++c)
    for (size_t l = 0; l < L; ++l) {
      I.pending[c][l].reserve(E);
      I.used[c][l].reserve(E);
    }
  I.pending_mark.assign(C, std::vector<uint8_t>(E, 0));
  I.cand.assign(E, 0.0f);
  I.touched.resize(E);
  I.guesses.resize(E);
  I.sorted.resize(E);
  I.actual.assign(E, 0);
  I.last_ids.resize(I.max_k);
  I.st.plan.resize(L);
  I.st.predictor_names = I.names;
  I.st.ahead1.assign(C, std::vector<PredictionCounts>(L));
}

PrefetchPlanner::~PrefetchPlanner() = default;

bool PrefetchPlanner::active() const noexcept { return !impl_->names.empty(); }
size_t PrefetchPlanner::n_components() const noexcept { return impl_->names.size(); }
const std::string& PrefetchPlanner::component_name(size_t c) const noexcept { return impl_->names[c]; }

std::span<const uint16_t> PrefetchPlanner::last_guess(size_t component, uint32_t layer) const noexcept {
  const Impl& I = *impl_;
  if (component >= I.used.size() || layer >= I.n_layer) return {};
  return I.used[component][layer];
}

void PrefetchPlanner::after_attention(uint32_t layer, const float* x, uint32_t n_tokens) {
  Impl& I = *impl_;
  ++I.st.steps;
  I.budget_left = o_.step_budget_bytes;  // a step = one source layer
  if (I.pregated && o_.pregate_point == PregatePoint::AfterAttention) I.pregated_step(layer, x, n_tokens);
}

void PrefetchPlanner::after_routing(uint32_t layer, const int32_t* experts, uint32_t n_tokens, uint32_t k) {
  Impl& I = *impl_;
  if (I.names.empty() || n_tokens == 0) return;
  I.score(layer, experts, n_tokens, k);
  // The online predictors follow one token per step: the batch's last.
  const int32_t* last = experts + size_t(n_tokens - 1) * k;
  const uint32_t kk = std::min(k, uint32_t(I.last_ids.size()));
  for (uint32_t j = 0; j < kk; ++j) I.last_ids[j] = uint16_t(last[j]);
  I.online_step(layer, std::span<const uint16_t>(I.last_ids.data(), kk));
}

void PrefetchPlanner::after_layer(uint32_t layer, const float* x, uint32_t n_tokens) {
  Impl& I = *impl_;
  if (I.names.empty()) return;
  if (!I.m.spec().layers[layer].is_moe) I.online_step(layer, {});
  if (I.pregated && o_.pregate_point == PregatePoint::AfterLayer) I.pregated_step(layer, x, n_tokens);
}

void PrefetchPlanner::begin_request(uint32_t request) {
  for (auto& p : impl_->online) p->begin_request(request);
}

PlannerStats PrefetchPlanner::stats() const { return impl_->st; }

void PrefetchPlanner::reset_stats() {
  Impl& I = *impl_;
  PlannerStats fresh;
  fresh.plan.resize(I.n_layer);
  fresh.predictor_names = I.names;
  fresh.ahead1.assign(I.names.size(), std::vector<PredictionCounts>(I.n_layer));
  I.st = std::move(fresh);
}

// ---- calibration --------------------------------------------------------------------------------

prefetch::CostModelParams calibrate_cost_model(const Model& m, kernels::ThreadPool& pool) {
  prefetch::CostModelParams p;
  const ExpertTable& t = m.experts();
  // Up to 16 experts of the first MoE layers, read with O_DIRECT into aligned slot buffers.
  std::vector<const ExpertSlices*> ex;
  for (uint32_t il = 0; il < t.n_layer() && ex.size() < 16; ++il) {
    if (!t.is_moe_layer(il)) continue;
    for (uint32_t e = 0; e < t.n_expert() && ex.size() < 16; ++e)
      if (const ExpertSlices* es = t.at(il, e)) ex.push_back(es);
  }
  TensorType type = TensorType::F32;
  if (!ex.empty()) {
    type = ex[0]->gate.type;
    prefetch::IoOptions io;
    io.queue_depth = 8;
    auto reader = prefetch::IoReader::open(m.file().path(), std::move(io));
    auto slot_of = [](const Slice& s) { return prefetch::slot_bytes(s.offset, s.nbytes); };
    uint64_t max_slot = 0;
    for (const ExpertSlices* es : ex) max_slot = std::max(max_slot, slot_of(es->gate) + slot_of(es->up) + slot_of(es->down));
    const size_t buf_bytes = size_t(max_slot) * ex.size();
    void* buf = std::aligned_alloc(prefetch::kIoAlign, (buf_bytes + prefetch::kIoAlign - 1) & ~(prefetch::kIoAlign - 1));
    if (!buf) fail(ErrorCode::OutOfMemory, "cost-model calibration: cannot allocate {} bytes", buf_bytes);
    auto read_expert = [&](size_t i) {
      uint8_t* base = static_cast<uint8_t*>(buf) + i * max_slot;
      const ExpertSlices& es = *ex[i];
      const uint64_t o1 = slot_of(es.gate), o2 = o1 + slot_of(es.up);
      const prefetch::IoPiece pieces[3] = {{es.gate.offset, es.gate.nbytes, base, prefetch::IoPieceMode::Slot},
                                           {es.up.offset, es.up.nbytes, base + o1, prefetch::IoPieceMode::Slot},
                                           {es.down.offset, es.down.nbytes, base + o2, prefetch::IoPieceMode::Slot}};
      return reader->submit(pieces, prefetch::IoPriority::Demand);
    };
    try {
      // Latency: one small (one block) read, best of a few.
      double lat = 1e9;
      for (int r = 0; r < 3; ++r) {
        const Slice& s = ex[r % ex.size()]->down;
        const prefetch::IoPiece piece{s.offset, std::min<uint64_t>(s.nbytes, 512), buf, prefetch::IoPieceMode::Slot};
        const auto t0 = Clock::now();
        const prefetch::IoStatus st = reader->wait(reader->submit(std::span(&piece, 1), prefetch::IoPriority::Demand));
        if (!st.ok()) fail(ErrorCode::Io, "{}", st.message);
        lat = std::min(lat, std::chrono::duration<double>(Clock::now() - t0).count());
      }
      // Bandwidth: the experts read as the cache reads them (one request each, concurrently).
      std::vector<uint64_t> tickets;
      uint64_t bytes = 0;
      const auto t0 = Clock::now();
      for (size_t i = 0; i < ex.size(); ++i) {
        tickets.push_back(read_expert(i));
        bytes += ex[i]->bytes();
      }
      for (uint64_t tk : tickets) {
        const prefetch::IoStatus st = reader->wait(tk);
        if (!st.ok()) fail(ErrorCode::Io, "{}", st.message);
      }
      const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      p.link_latency_s = lat;
      if (dt > 0) p.link_bytes_per_s = double(bytes) / dt;
    } catch (...) {
      std::free(buf);
      throw;
    }
    std::free(buf);
  }
  const double c = kernels::measure_matvec_bandwidth(type, pool, size_t(32) << 20, 2);
  if (c > 0) p.compute_bytes_per_s = c;
  p.compute_in_place_bytes_per_s = 0;  // CPU-only: the DRAM cache is the only copy the CPU computes from
  return p;
}

}  // namespace moe
