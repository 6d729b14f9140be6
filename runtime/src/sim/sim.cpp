// runtime/src/sim/sim.cpp — the discrete-event trace replay (see moe/sim.h for the timeline and the
// metric definitions). One Replay object per simulate() call; nothing is shared (reentrant).
//
// Hot-loop discipline (the target is > 1M token-layer events per second on one core): every table
// is dense and indexed by key = layer * n_expert + expert or by event index, sized before the loop;
// the prefetch queue is an intrusive doubly-linked list over keys; transfers started but not yet
// reported complete sit in a ring buffer in end-time order (the link is serial, so ends ascend).
// Nothing in the loop allocates or hashes.
// Two mirrors of state the cache manager also holds save a locked call per question (results do not
// change: each skipped call would have had no effect): `present_` (the key holds a slot: set when
// a fetch is Reserved, cleared when the reservation's victim leaves or the fetch is aborted), so a
// guess already present skips BeginFetch (AlreadyPresent, which changes nothing); and a per-layer
// bitmask of queued prefetches, so cancelling a layer's stale ones visits only those, in the same
// ascending expert order as a scan.
#include <algorithm>
#include <bit>
#include <ctime>
#include <cmath>
#include <limits>
#include <memory>

#include "moe/cache/profile.h"
#include "moe/error.h"
#include "moe/prefetch/predictor.h"
#include "moe/sim.h"

namespace moe::sim {

std::vector<cache::ExpertKey> demand_sequence(const trace::Trace& t) {
  std::vector<cache::ExpertKey> seq;
  seq.reserve(t.ids.size());
  for (uint64_t i = 0; i < t.n_events(); ++i) {
    const uint32_t layer = static_cast<uint32_t>(i % t.n_layer);
    for (uint64_t p = t.off[i]; p < t.off[i + 1]; ++p) seq.push_back(cache::ExpertKey{layer, t.ids[p]});
  }
  return seq;
}

json::Value SimResult::to_json() const {
  json::Value v = json::Value::object();
  v.set("policy", policy);
  v.set("predictor", predictor);
  v.set("device", device);
  v.set("budget_bytes", budget_bytes);
  v.set("expert_bytes", expert_bytes);
  v.set("slots", slots);
  v.set("tokens", tokens);
  v.set("events", events);
  v.set("accesses", accesses);
  v.set("hit_rate", hit_rate);
  v.set("hits", hits);
  v.set("inflight_hits", inflight_hits);
  v.set("misses", misses);
  v.set("streamed", streamed);
  v.set("evictions", evictions);
  v.set("bytes_moved", bytes_moved);
  v.set("demand_bytes", demand_bytes);
  v.set("prefetch_bytes", prefetch_bytes);
  v.set("bytes_read_per_token", tokens ? static_cast<double>(bytes_moved) / static_cast<double>(tokens) : 0.0);
  v.set("stall_ms_per_token", stall_ms_per_token);
  v.set("tok_s", tok_s);
  v.set("prefetch_precision", precision);
  v.set("prefetch_recall", recall);
  v.set("overlap_ratio", overlap);
  v.set("prefetch_issued", prefetch_issued);
  v.set("prefetch_used", prefetch_used);
  v.set("prefetch_cancelled", prefetch_cancelled);
  v.set("prefetch_wasted", prefetch_wasted);
  v.set("transfer_ms", transfer_ms);
  v.set("stall_ms", stall_ms);
  v.set("compute_ms", compute_ms);
  v.set("total_ms", total_ms);
  v.set("wall_s", wall_s);
  v.set("events_per_s", events_per_s());  // replay speed: token-layer events per CPU second
  json::Value rl = json::Value::array(), pl = json::Value::array();
  for (double x : recall_per_layer) rl.push(x);
  for (double x : precision_per_layer) pl.push(x);
  v.set("recall_per_layer", std::move(rl));
  v.set("precision_per_layer", std::move(pl));
  return v;
}

namespace {

constexpr uint32_t kNil = 0xffffffffu;

// CPU time of the calling thread: the replay's cost on one core, unaffected by other processes.
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}
enum XferState : uint8_t { kIdle = 0, kQueued = 1, kStarted = 2 };

class Replay {
 public:
  Replay(const trace::Trace& t, const SimConfig& c) : t_(t), c_(c) {}
  SimResult run();

 private:
  // --- link ---
  void advance_link(double T);
  void complete_until(double T);
  double start_now(uint32_t key, double at, bool prefetch);  // returns the end time
  void queue_unlink(uint32_t key);
  void queue_insert(uint32_t key, uint64_t target);

  const trace::Trace& t_;
  const SimConfig& c_;
  uint32_t L_ = 0, E_ = 0;
  uint64_t expert_bytes_ = 0;
  double xfer_ms_ = 0, expert_ms_ = 0;
  std::unique_ptr<cache::ResidencyManager> mgr_;
  // per key
  std::vector<uint8_t> xs_;
  std::vector<double> end_;
  std::vector<uint32_t> q_prev_, q_next_;
  std::vector<uint64_t> q_target_;
  std::vector<uint32_t> queued_in_layer_;
  std::vector<uint64_t> queued_bits_;  // (L, W): bit e of layer l's words = key l*E+e is queued
  uint32_t W_ = 0;                     // 64-bit words per layer
  std::vector<uint8_t> present_;       // per key: holds a slot in the manager (see the file comment)
  uint32_t q_head_ = kNil, q_tail_ = kNil;
  std::vector<uint32_t> started_;  // ring, capacity n_keys + 1
  size_t st_head_ = 0, st_tail_ = 0;
  double link_free_ = 0;
  SimResult r_;
};

void Replay::queue_unlink(uint32_t k) {
  const uint32_t a = q_prev_[k], b = q_next_[k];
  if (a != kNil) q_next_[a] = b; else q_head_ = b;
  if (b != kNil) q_prev_[b] = a; else q_tail_ = a;
  q_prev_[k] = q_next_[k] = kNil;
  const uint32_t l = k / E_, e = k % E_;
  --queued_in_layer_[l];
  queued_bits_[static_cast<size_t>(l) * W_ + e / 64] &= ~(uint64_t{1} << (e % 64));
  xs_[k] = kIdle;
}

void Replay::queue_insert(uint32_t k, uint64_t target) {
  // Ordered by target event (nearest first), FIFO among equals; almost always an append.
  uint32_t after = q_tail_;
  while (after != kNil && q_target_[after] > target) after = q_prev_[after];
  const uint32_t before = after == kNil ? q_head_ : q_next_[after];
  q_prev_[k] = after;
  q_next_[k] = before;
  if (after != kNil) q_next_[after] = k; else q_head_ = k;
  if (before != kNil) q_prev_[before] = k; else q_tail_ = k;
  q_target_[k] = target;
  const uint32_t l = k / E_, e = k % E_;
  ++queued_in_layer_[l];
  queued_bits_[static_cast<size_t>(l) * W_ + e / 64] |= uint64_t{1} << (e % 64);
  xs_[k] = kQueued;
}

double Replay::start_now(uint32_t k, double at, bool prefetch) {
  const double start = std::max(link_free_, at);
  const double end = start + xfer_ms_;
  link_free_ = end;
  r_.transfer_ms += xfer_ms_;
  r_.bytes_moved += expert_bytes_;
  (prefetch ? r_.prefetch_bytes : r_.demand_bytes) += expert_bytes_;
  if (k != kNil) {
    xs_[k] = kStarted;
    end_[k] = end;
    started_[st_tail_] = k;
    st_tail_ = st_tail_ + 1 == started_.size() ? 0 : st_tail_ + 1;
  }
  return end;
}

void Replay::complete_until(double T) {
  while (st_head_ != st_tail_) {
    const uint32_t k = started_[st_head_];
    if (end_[k] > T) break;
    mgr_->CompleteFetch(cache::ExpertKey{k / E_, k % E_});
    xs_[k] = kIdle;
    st_head_ = st_head_ + 1 == started_.size() ? 0 : st_head_ + 1;
  }
}

void Replay::advance_link(double T) {
  // Queued prefetches start back to back while the link is free before T.
  while (q_head_ != kNil && link_free_ < T) {
    const uint32_t k = q_head_;
    queue_unlink(k);
    start_now(k, link_free_, true);
  }
  // Whatever is queued now starts at T or later; an idle link stays idle until T.
  link_free_ = std::max(link_free_, T);
  complete_until(T);
}

SimResult Replay::run() {
  L_ = t_.n_layer;
  E_ = t_.n_expert;
  if (L_ == 0 || E_ == 0) fail(ErrorCode::InvalidArgument, "sim: the trace has no layers or experts");
  expert_bytes_ = c_.expert_bytes ? c_.expert_bytes : t_.expert_bytes;
  if (expert_bytes_ == 0)
    fail(ErrorCode::InvalidArgument,
         "sim: the trace ({}) does not record the size of an expert; pass --expert-bytes", t_.source);
  const uint32_t n_keys = L_ * E_;
  const uint64_t n_events = t_.n_events();
  xfer_ms_ = c_.device.transfer_ms(expert_bytes_);
  expert_ms_ = c_.device.expert_compute_ms(expert_bytes_);
  const double dense_ms = c_.device.dense_ms_per_layer;

  // MoE layers: those with any routed expert in the trace.
  std::vector<bool> moe_layer(L_, false);
  for (uint64_t i = 0; i < n_events; ++i)
    if (t_.off[i + 1] > t_.off[i]) moe_layer[i % L_] = true;

  // --- cache ---
  cache::TierConfig tc;
  tc.name = c_.device.gpu ? "vram" : "dram";
  tc.budget_bytes = c_.budget_bytes;
  tc.slot_bytes = expert_bytes_;
  tc.n_layer = L_;
  tc.n_expert = E_;
  tc.moe_layers = moe_layer;
  tc.scope = c_.scope;
  tc.thread_safe = false;  // the replay is one thread
  cache::PolicyParams pp = c_.policy_params;
  std::unique_ptr<cache::AccessFuture> future;
  const bool belady = c_.policy == "belady";
  if (belady) {
    future = std::make_unique<cache::AccessFuture>(demand_sequence(t_), L_, E_);
    pp.next_use = future->oracle();
  }
  if (c_.policy == "static" && !pp.profile) {
    auto prof = std::make_shared<cache::UsageProfile>();
    prof->resize(L_, E_);
    for (uint64_t i = 0; i < n_events; ++i)
      for (uint64_t p = t_.off[i]; p < t_.off[i + 1]; ++p)
        prof->add(cache::ExpertKey{static_cast<uint32_t>(i % L_), t_.ids[p]});
    prof->total_tokens = t_.n_tokens();
    pp.profile = prof;
  }
  cache::CacheStatus cst;
  mgr_ = cache::ResidencyManager::create(tc, c_.policy, pp, &cst);
  if (!mgr_) fail(ErrorCode::InvalidArgument, "sim: cache policy '{}': {}", c_.policy, cst.message);

  // --- predictor ---
  const uint32_t depth = L_ > 1 ? std::clamp<uint32_t>(c_.depth, 1, L_ - 1) : 1;
  prefetch::PredictorOptions po;
  po.n_layer = L_;
  po.n_expert = E_;
  po.max_k = std::max<uint32_t>(1, t_.max_k);
  po.max_ahead = depth;
  po.half_life_tokens = c_.predictor_half_life_tokens;
  po.history_capacity = c_.history_capacity;
  po.future = prefetch::EventView{L_, t_.off, t_.ids};
  // "recorded" replays the first guess column, "recorded:NAME" the named one.
  {
    const std::string& spec = c_.predictor;
    const size_t at = spec.find("recorded");
    if (at != std::string::npos) {
      size_t col = 0;
      std::string want;
      if (spec.compare(at, 9, "recorded:") == 0) {
        const size_t e = spec.find(',', at);
        want = spec.substr(at + 9, e == std::string::npos ? std::string::npos : e - at - 9);
        auto it = std::find(t_.predictors.begin(), t_.predictors.end(), want);
        if (it == t_.predictors.end())
          fail(ErrorCode::InvalidArgument, "sim: the trace has no guess column '{}'", want);
        col = static_cast<size_t>(it - t_.predictors.begin());
      }
      if (t_.predictors.empty()) fail(ErrorCode::InvalidArgument, "sim: the trace records no predictor guesses");
      po.recorded = prefetch::EventView{L_, t_.pred_off[col], t_.pred_ids[col]};
      po.recorded_name = "recorded:" + t_.predictors[col];
    }
  }
  std::string perr;
  std::unique_ptr<prefetch::Predictor> pred = prefetch::make_predictor(c_.predictor, po, &perr);
  if (!pred && !perr.empty()) fail(ErrorCode::InvalidArgument, "sim: {}", perr);

  // --- state ---
  xs_.assign(n_keys, kIdle);
  end_.assign(n_keys, 0.0);
  q_prev_.assign(n_keys, kNil);
  q_next_.assign(n_keys, kNil);
  q_target_.assign(n_keys, 0);
  queued_in_layer_.assign(L_, 0);
  W_ = (E_ + 63) / 64;
  queued_bits_.assign(static_cast<size_t>(L_) * W_, 0);
  present_.assign(n_keys, 0);
  started_.assign(static_cast<size_t>(n_keys) + 1, 0);
  const uint32_t K = std::max<uint32_t>(1, t_.max_k);
  std::vector<cache::Handle> handles(K);
  std::vector<double> ready(K);
  std::vector<uint64_t> in_a(E_, 0);  // stamp: event index + 1 when the expert is routed there
  std::vector<prefetch::Guess> guesses(E_);
  const uint32_t per_layer = std::min(E_, c_.guesses_per_layer ? c_.guesses_per_layer : K);
  // Plan of each pending target event (ring over depth + 1 events): stamp per expert, counts.
  const uint32_t R = depth + 1;
  std::vector<uint64_t> plan_stamp(static_cast<size_t>(R) * E_, 0), plan_targeted(R, 0);
  std::vector<uint32_t> plan_size(R, 0);
  std::vector<uint64_t> rec_num(L_, 0), rec_den(L_, 0), prec_den(L_, 0);

  r_ = SimResult{};
  r_.policy = c_.policy;
  r_.predictor = pred ? pred->name() : "none";
  r_.device = c_.device.name;
  r_.budget_bytes = c_.budget_bytes;
  r_.expert_bytes = expert_bytes_;
  r_.slots = mgr_->slot_count();
  r_.tokens = t_.n_tokens();
  r_.events = n_events;
  r_.accesses = t_.ids.size();

  const double cpu0 = thread_cpu_seconds();
  double now = 0;
  uint32_t cur_request = 0;
  bool any_request = false;
  for (uint64_t ev = 0; ev < n_events; ++ev) {
    const uint32_t layer = static_cast<uint32_t>(ev % L_);
    if (layer == 0) {
      const uint32_t rq = t_.request[ev / L_];
      if (!any_request || rq != cur_request) {
        if (pred) pred->begin_request(rq);
        cur_request = rq;
        any_request = true;
      }
    }
    const uint16_t* a = t_.ids.data() + t_.off[ev];
    const uint32_t k = static_cast<uint32_t>(t_.off[ev + 1] - t_.off[ev]);
    const double t_route = now + dense_ms;
    advance_link(t_route);
    double layer_end = t_route;
    if (k > 0) {
      for (uint32_t i = 0; i < k; ++i) in_a[a[i]] = ev + 1;
      // Plan accounting for this event, before its ring slot is reused by new targets.
      const uint32_t ps = static_cast<uint32_t>(ev % R);
      if (plan_targeted[ps] == ev + 1) {
        uint32_t hit = 0;
        for (uint32_t i = 0; i < k; ++i) hit += plan_stamp[static_cast<size_t>(ps) * E_ + a[i]] == ev + 1;
        rec_num[layer] += hit;
        rec_den[layer] += k;
        prec_den[layer] += plan_size[ps];
      }
      // Stale prefetches of this layer still waiting for the link are cancelled.
      if (queued_in_layer_[layer] > 0) {
        const uint32_t base = layer * E_;
        const uint64_t* qb = &queued_bits_[static_cast<size_t>(layer) * W_];
        for (uint32_t w = 0; w < W_; ++w) {
          for (uint64_t bits = qb[w]; bits != 0; bits &= bits - 1) {  // ascending expert order
            const uint32_t e = w * 64 + static_cast<uint32_t>(std::countr_zero(bits));
            const uint32_t key = base + e;
            if (in_a[e] != ev + 1) {
              queue_unlink(key);
              mgr_->AbortFetch(cache::ExpertKey{layer, e});
              present_[key] = 0;
              ++r_.prefetch_cancelled;
            }
          }
        }
      }
      // Demand accesses: pinned until the layer's compute ends.
      for (uint32_t i = 0; i < k; ++i) {
        const cache::ExpertKey key{layer, a[i]};
        const uint32_t ki = layer * E_ + a[i];
        if (belady) future->advance();
        handles[i] = mgr_->Lookup(key);
        const cache::EntryState s = handles[i].state_at_lookup();
        if (s == cache::EntryState::Resident) {
          ready[i] = t_route;
        } else if (s == cache::EntryState::InFlight) {
          if (xs_[ki] == kQueued) {
            queue_unlink(ki);  // promoted: demand jumps the prefetch queue
            ready[i] = start_now(ki, t_route, true);
          } else {
            ready[i] = end_[ki];
          }
        } else {
          cache::Reservation res = mgr_->BeginFetch(key, cache::FetchKind::Demand, true);
          if (res.status == cache::ReserveStatus::Reserved) {
            present_[ki] = 1;
            if (res.evicted_valid) present_[res.evicted.layer * E_ + res.evicted.expert] = 0;
            handles[i] = std::move(res.handle);
            ready[i] = start_now(ki, t_route, false);
          } else {
            ++r_.streamed;  // no slot: fetched into a scratch buffer, used once
            ready[i] = start_now(kNil, t_route, false);
          }
        }
      }
      // Compute: resident experts first, then the others as they arrive.
      std::sort(ready.begin(), ready.begin() + k);
      double c = t_route;
      for (uint32_t i = 0; i < k; ++i) c = std::max(c, ready[i]) + expert_ms_;
      r_.stall_ms += c - t_route - k * expert_ms_;
      layer_end = c;
    }
    // Predict layers +1 .. +depth and queue their prefetches at t_route (while this layer computes).
    if (pred) {
      pred->observe(layer, std::span<const uint16_t>(a, k));
      uint32_t step_left = c_.step_budget_experts;
      for (uint32_t j = 1; j <= depth && step_left > 0; ++j) {
        const uint64_t te = ev + j;
        if (te >= n_events) break;
        const uint32_t tl = static_cast<uint32_t>(te % L_);
        if (!moe_layer[tl]) continue;
        const uint32_t ps = static_cast<uint32_t>(te % R);
        if (plan_targeted[ps] != te + 1) {
          plan_targeted[ps] = te + 1;
          plan_size[ps] = 0;
        }
        const uint32_t n = pred->predict(j, std::span<prefetch::Guess>(guesses.data(), per_layer));
        for (uint32_t g = 0; g < n && step_left > 0; ++g) {
          if (guesses[g].score < c_.threshold) break;  // sorted best first
          const uint32_t e = guesses[g].expert;
          uint64_t& stamp = plan_stamp[static_cast<size_t>(ps) * E_ + e];
          if (stamp != te + 1) {
            stamp = te + 1;
            ++plan_size[ps];
          }
          const uint32_t ki = tl * E_ + e;
          if (xs_[ki] != kIdle) {
            if (xs_[ki] == kQueued && q_target_[ki] > te) {  // now wanted sooner
              queue_unlink(ki);
              queue_insert(ki, te);
            }
            continue;
          }
          if (present_[ki]) continue;  // BeginFetch would answer AlreadyPresent (and change nothing)
          const cache::Reservation res = mgr_->BeginFetch(cache::ExpertKey{tl, e}, cache::FetchKind::Prefetch);
          if (res.status != cache::ReserveStatus::Reserved) continue;  // no room (or disabled)
          present_[ki] = 1;
          if (res.evicted_valid) present_[res.evicted.layer * E_ + res.evicted.expert] = 0;
          ++r_.prefetch_issued;
          --step_left;
          queue_insert(ki, te);
        }
      }
      advance_link(t_route);  // the link may have been idle: start the new prefetches now
    }
    now = layer_end;
    complete_until(now);
    for (uint32_t i = 0; i < k; ++i) handles[i].release();
  }
  // End of the trace: prefetches never started are cancelled; started ones finish.
  while (q_head_ != kNil) {
    const uint32_t key = q_head_;
    queue_unlink(key);
    mgr_->AbortFetch(cache::ExpertKey{key / E_, key % E_});
    present_[key] = 0;
    ++r_.prefetch_cancelled;
  }
  complete_until(std::numeric_limits<double>::infinity());
  r_.wall_s = thread_cpu_seconds() - cpu0;

  const cache::LayerStats tot = mgr_->stats().total();
  r_.hits = tot.hits;
  r_.inflight_hits = tot.inflight_hits;
  r_.misses = tot.misses;
  r_.evictions = tot.evictions;
  r_.prefetch_used = tot.prefetch_hits;
  r_.prefetch_wasted = tot.prefetch_wasted;
  r_.hit_rate = r_.accesses ? static_cast<double>(r_.hits) / static_cast<double>(r_.accesses) : 0.0;
  uint64_t num = 0, den = 0, pden = 0;
  r_.recall_per_layer.assign(L_, 0.0);
  r_.precision_per_layer.assign(L_, 0.0);
  for (uint32_t l = 0; l < L_; ++l) {
    num += rec_num[l];
    den += rec_den[l];
    pden += prec_den[l];
    if (rec_den[l]) r_.recall_per_layer[l] = static_cast<double>(rec_num[l]) / static_cast<double>(rec_den[l]);
    if (prec_den[l]) r_.precision_per_layer[l] = static_cast<double>(rec_num[l]) / static_cast<double>(prec_den[l]);
  }
  r_.recall = den ? static_cast<double>(num) / static_cast<double>(den) : 0.0;
  r_.precision = pden ? static_cast<double>(num) / static_cast<double>(pden) : 0.0;
  r_.total_ms = now;
  r_.compute_ms = now - r_.stall_ms;
  r_.stall_ms_per_token = r_.tokens ? r_.stall_ms / static_cast<double>(r_.tokens) : 0.0;
  r_.tok_s = now > 0 ? static_cast<double>(r_.tokens) / (now * 1e-3) : 0.0;
  r_.overlap = r_.transfer_ms > 0 ? std::clamp(1.0 - r_.stall_ms / r_.transfer_ms, 0.0, 1.0) : 1.0;
  return r_;
}

}  // namespace

SimResult simulate(const trace::Trace& t, const SimConfig& cfg) {
  Replay r(t, cfg);
  return r.run();
}

}  // namespace moe::sim
