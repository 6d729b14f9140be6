// tools/bench_grid.cpp — the grid form of `moe bench` (see bench_grid.h): measures every
// (policy, predictor, budget) point `reps` times plus one baseline, then prints the table / JSON
// and writes the CSV and SVG files.
//
// Metrics of one repetition (Sample):
//   hit_rate              cache hits / expert lookups of the decode (0 without a cache);
//   bytes_read_per_token  model: expert bytes read from the file per decoded token (the memory-map
//                         baseline: expert bytes the kernels touched per token, what a cold page
//                         cache would read); trace: bytes moved over the link per token;
//   decode_tok_s          model: measured; trace: simulated (tokens / simulated time);
//   prefill_tok_s         model: measured; trace: 0 (the simulator replays decode only);
//   stall_ms_per_token, prefetch_precision, prefetch_recall as `moe run --stats` / `moe sim`;
//   events_per_s          trace only: token-layer events replayed per CPU second.
// Thread-safety: single-threaded driver (the engine uses its own pool inside a point).
#include "bench_grid.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>

#include "cli.h"
#include "moe/cache/profile.h"
#include "moe/engine.h"
#include "moe/error.h"
#include "moe/json.h"
#include "moe/sampler.h"
#include "moe/sim.h"
#include "moe/trace.h"
#include "svg.h"

namespace moe::tools {

std::vector<std::string> split_list(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t e = s.find(sep, start);
    if (e == std::string::npos) e = s.size();
    std::string item = s.substr(start, e - start);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.erase(item.begin());
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.pop_back();
    if (!item.empty()) out.push_back(std::move(item));
    start = e + 1;
  }
  return out;
}

namespace {

struct Sample {
  double hit_rate = 0, bytes_read_per_token = 0, decode_tok_s = 0, prefill_tok_s = 0;
  double stall_ms_per_token = 0, prefetch_precision = 0, prefetch_recall = 0, events_per_s = 0;
};

struct MetricDef {
  const char* name;
  double Sample::*field;
  bool trace_only;
};
constexpr MetricDef kMetrics[] = {
    {"hit_rate", &Sample::hit_rate, false},
    {"bytes_read_per_token", &Sample::bytes_read_per_token, false},
    {"decode_tok_s", &Sample::decode_tok_s, false},
    {"prefill_tok_s", &Sample::prefill_tok_s, false},
    {"stall_ms_per_token", &Sample::stall_ms_per_token, false},
    {"prefetch_precision", &Sample::prefetch_precision, false},
    {"prefetch_recall", &Sample::prefetch_recall, false},
    {"events_per_s", &Sample::events_per_s, true},
};
// The metrics printed beside the baseline (value, baseline, ratio).
constexpr const char* kCompared[] = {"hit_rate", "bytes_read_per_token", "decode_tok_s", "prefill_tok_s"};

struct Stat {
  double mean = 0, sd = 0, min = 0, max = 0;
};

Stat stat_of(const std::vector<Sample>& v, double Sample::*f) {
  Stat s;
  if (v.empty()) return s;
  s.min = s.max = v[0].*f;
  double sum = 0;
  for (const Sample& x : v) {
    sum += x.*f;
    s.min = std::min(s.min, x.*f);
    s.max = std::max(s.max, x.*f);
  }
  s.mean = sum / static_cast<double>(v.size());
  if (v.size() > 1) {
    double ss = 0;
    for (const Sample& x : v) ss += (x.*f - s.mean) * (x.*f - s.mean);
    s.sd = std::sqrt(ss / static_cast<double>(v.size() - 1));  // sample standard deviation
  }
  return s;
}

struct Point {
  std::string policy, predictor;
  uint64_t budget = 0;  // bytes; model: 0 = no budget (memory map)
  uint32_t slots = 0;   // expert slots the budget paid for
  std::vector<Sample> reps;
  Stat get(const char* metric) const {
    for (const MetricDef& m : kMetrics)
      if (std::string_view(m.name) == metric) return stat_of(reps, m.field);
    MOE_ASSERT(false, "unknown metric");
    return {};
  }
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---- model mode ----------------------------------------------------------------------------------

struct ModelBench {
  const GridArgs& a;
  const Model& model;
  int threads;
  std::vector<int32_t> prompt;

  // Fresh source, planner and session for `p`; one uncounted warm-up pass, then `reps` passes.
  void measure(Point& p) const {
    OffloadArgs oa = a.offload;
    oa.quiet = true;
    oa.policy = p.policy;
    oa.predictor = p.predictor;
    oa.ram = p.budget ? std::to_string(p.budget) : std::string();
    SessionOptions so;
    so.n_threads = threads;
    so.n_batch = a.n_batch;
    so.n_ctx = a.prompt_tokens + a.gen_tokens + 1;
    oa.apply_gpu(so);
    std::unique_ptr<ExpertSource> src = oa.make_source(model, so);
    std::unique_ptr<PrefetchPlanner> planner = oa.make_planner(model, *src, so);
    if (const auto* c = dynamic_cast<const CachedExpertSource*>(src.get())) p.slots = c->plan().slots;
    Session sess(model, *src, so);
    sess.set_observer(planner.get());
    p.reps.clear();
    for (int rep = -1; rep < a.reps; ++rep) {
      if (planner) planner->begin_request(static_cast<uint32_t>(rep + 1));
      sess.reset();
      Sample s;
      std::span<const float> logits;
      if (a.prompt_tokens > 0) {
        const double t0 = now_s();
        logits = sess.eval(prompt);
        s.prefill_tok_s = a.prompt_tokens / (now_s() - t0);
      } else {
        const int32_t first = 0;  // decode needs one token of context
        logits = sess.eval(std::span<const int32_t>(&first, 1));
      }
      sess.reset_stats();
      reset_offload_stats(*src, planner.get());
      const double t1 = now_s();
      for (uint32_t i = 0; i < a.gen_tokens; ++i) {
        const int32_t t = argmax(logits);
        logits = sess.eval(std::span<const int32_t>(&t, 1));
      }
      const double dt = now_s() - t1;
      if (rep < 0) continue;
      const OffloadMetrics m = offload_metrics(*src, planner.get(), a.gen_tokens, dt);
      const SessionStats& st = sess.stats();
      s.decode_tok_s = a.gen_tokens > 0 && dt > 0 ? a.gen_tokens / dt : 0;
      s.hit_rate = m.hit_rate;
      s.stall_ms_per_token = m.stall_ms_per_token;
      s.prefetch_precision = m.prefetch_precision;
      s.prefetch_recall = m.prefetch_recall;
      s.bytes_read_per_token = m.cached ? m.bytes_read_per_token
                               : st.tokens ? static_cast<double>(st.expert_bytes) / static_cast<double>(st.tokens)
                                           : 0.0;
      p.reps.push_back(s);
    }
  }
};

// ---- trace mode ----------------------------------------------------------------------------------

sim::SimConfig trace_base(const GridArgs& a, const trace::Trace& t) {
  sim::SimConfig base;
  base.device = sim::device_profile(a.device);
  const OffloadArgs& o = a.offload;
  if (o.link_gbps > 0) base.device.link_gbps = o.link_gbps;
  if (o.link_latency_us >= 0) base.device.link_latency_us = o.link_latency_us;
  if (o.compute_gbps > 0) base.device.compute_gbps = o.compute_gbps;
  base.expert_bytes = a.expert_bytes ? a.expert_bytes : t.expert_bytes;
  if (base.expert_bytes == 0)
    fail(ErrorCode::InvalidArgument, "{}: the trace does not record the size of an expert; pass --expert-bytes",
         a.trace);
  if (!cache::parse_scope(o.scope, &base.scope))
    fail(ErrorCode::InvalidArgument, "--cache-scope must be global or layer, not '{}'", o.scope);
  base.depth = o.depth;
  base.threshold = o.threshold;
  base.guesses_per_layer = o.guesses;
  if (!o.step_budget.empty())
    base.step_budget_experts =
        static_cast<uint32_t>(std::min<uint64_t>(parse_bytes(o.step_budget) / base.expert_bytes, UINT32_MAX));
  if (!o.profile.empty()) {
    auto p = std::make_shared<cache::UsageProfile>();
    const cache::CacheStatus st = cache::read_usage_profile(o.profile, p.get());
    if (!st.ok()) fail(ErrorCode::Corrupt, "{}", st.message);
    base.policy_params.profile = p;
  }
  return base;
}

void measure_trace(const trace::Trace& t, const sim::SimConfig& base, int reps, Point& p) {
  sim::SimConfig c = base;
  c.policy = p.policy;
  c.budget_bytes = p.budget;
  c.predictor = p.predictor;
  for (char& ch : c.predictor)
    if (ch == '+') ch = ',';
  p.reps.clear();
  for (int rep = 0; rep < reps; ++rep) {
    const sim::SimResult r = sim::simulate(t, c);
    p.slots = r.slots;
    Sample s;
    s.hit_rate = r.hit_rate;
    s.bytes_read_per_token = r.tokens ? static_cast<double>(r.bytes_moved) / static_cast<double>(r.tokens) : 0.0;
    s.decode_tok_s = r.tok_s;
    s.stall_ms_per_token = r.stall_ms_per_token;
    s.prefetch_precision = r.precision;
    s.prefetch_recall = r.recall;
    s.events_per_s = r.events_per_s();
    p.reps.push_back(s);
  }
}

// ---- output --------------------------------------------------------------------------------------

json::Value ratio_value(double x, double base) { return base > 0 ? json::Value(x / base) : json::Value(nullptr); }

std::string budget_text(uint64_t b, bool model_mode) {
  if (b == 0) return model_mode ? "none" : "0";
  return human_bytes(b);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) {
    if (c == '"') o += '"';
    o += c;
  }
  return o + "\"";
}

std::string csv_num(double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : std::string(); }

struct Report {
  const GridArgs& a;
  bool model_mode;
  std::string baseline_label;
  Point baseline;
  std::vector<Point> points;

  bool metric_on(const MetricDef& m) const { return !m.trace_only || !model_mode; }

  json::Value point_json(const Point& p) const {
    json::Value o = json::Value::object();
    o.set("mode", model_mode ? "model" : "trace");
    o.set("policy", p.policy);
    o.set("predictor", p.predictor);
    o.set("budget_bytes", p.budget);
    o.set("slots", p.slots);
    o.set("reps", static_cast<uint64_t>(p.reps.size()));
    for (const MetricDef& m : kMetrics) {
      if (!metric_on(m)) continue;
      const Stat s = stat_of(p.reps, m.field);
      const std::string n = m.name;
      o.set(n, s.mean);
      o.set(n + "_sd", s.sd);
      o.set(n + "_min", s.min);
      o.set(n + "_max", s.max);
    }
    for (const char* n : kCompared) {
      const double base = baseline.get(n).mean;
      o.set(std::string(n) + "_baseline", base);
      o.set(std::string(n) + "_ratio", ratio_value(p.get(n).mean, base));
    }
    json::Value b = json::Value::object();
    b.set("label", baseline_label);
    b.set("policy", baseline.policy);
    b.set("predictor", baseline.predictor);
    b.set("budget_bytes", baseline.budget);
    for (const MetricDef& m : kMetrics) {
      if (!metric_on(m)) continue;
      const Stat s = stat_of(baseline.reps, m.field);
      b.set(m.name, s.mean);
      b.set(std::string(m.name) + "_sd", s.sd);
    }
    o.set("baseline", std::move(b));
    return o;
  }

  void print_table() const {
    auto fmt_ratio = [](double x, double b) { return b > 0 ? fmt::format("x{:.2f}", x / b) : std::string("-"); };
    const Stat bh = baseline.get("hit_rate"), bb = baseline.get("bytes_read_per_token"),
               bd = baseline.get("decode_tok_s"), bp = baseline.get("prefill_tok_s");
    fmt::print("baseline ({}): hit {:.1f}% | {:.3f} MB/token | decode {:.2f} ± {:.2f} tok/s | prefill {:.2f} tok/s\n",
               baseline_label, 100 * bh.mean, bb.mean / 1e6, bd.mean, bd.sd, bp.mean);
    fmt::print("{:<7} {:<22} {:>9} {:>6} {:>7} {:>7} {:>10} {:>7} {:>18} {:>7} {:>10} {:>7} {:>9} {:>6} {:>6}\n",
               "policy", "predictor", "budget", "slots", "hit%", "base", "MB/tok", "vs base", "decode tok/s ± sd",
               "vs base", "prefill", "vs base", "stall ms", "prec", "recall");
    for (const Point& p : points) {
      const Stat h = p.get("hit_rate"), b = p.get("bytes_read_per_token"), d = p.get("decode_tok_s"),
                 pf = p.get("prefill_tok_s"), st = p.get("stall_ms_per_token"), pr = p.get("prefetch_precision"),
                 rc = p.get("prefetch_recall");
      fmt::print("{:<7} {:<22} {:>9} {:>6} {:>6.1f}% {:>6.1f}% {:>10.3f} {:>7} {:>18} {:>7} {:>10.2f} {:>7} {:>9.3f} "
                 "{:>6.3f} {:>6.3f}\n",
                 p.policy, p.predictor, budget_text(p.budget, model_mode), p.slots, 100 * h.mean, 100 * bh.mean,
                 b.mean / 1e6, fmt_ratio(b.mean, bb.mean), fmt::format("{:.2f} ± {:.2f}", d.mean, d.sd),
                 fmt_ratio(d.mean, bd.mean), pf.mean, fmt_ratio(pf.mean, bp.mean), st.mean, pr.mean, rc.mean);
    }
    if (!model_mode) {
      double ev = 0;
      size_t n = 0;
      for (const Point& p : points) ev += p.get("events_per_s").mean, ++n;
      if (n) fmt::print("replay speed: {:.2f} M token-layer events/s (mean over points, one core)\n", ev / n / 1e6);
    }
  }

  std::string csv() const {
    std::string out = "mode,policy,predictor,budget_bytes,slots,reps";
    for (const MetricDef& m : kMetrics) {
      if (!metric_on(m)) continue;
      out += fmt::format(",{0},{0}_sd,{0}_min,{0}_max", m.name);
    }
    for (const char* n : kCompared) out += fmt::format(",{0}_baseline,{0}_ratio", n);
    out += '\n';
    for (const Point& p : points) {
      out += fmt::format("{},{},{},{},{},{}", model_mode ? "model" : "trace", csv_field(p.policy),
                         csv_field(p.predictor), p.budget, p.slots, p.reps.size());
      for (const MetricDef& m : kMetrics) {
        if (!metric_on(m)) continue;
        const Stat s = stat_of(p.reps, m.field);
        out += fmt::format(",{},{},{},{}", csv_num(s.mean), csv_num(s.sd), csv_num(s.min), csv_num(s.max));
      }
      for (const char* n : kCompared) {
        const double base = baseline.get(n).mean;
        out += fmt::format(",{},{}", csv_num(base), base > 0 ? csv_num(p.get(n).mean / base) : std::string());
      }
      out += '\n';
    }
    return out;
  }

  std::string svg() const {
    svg::Figure f;
    f.title = model_mode ? fmt::format("moe bench: {}", a.model) : fmt::format("moe bench (trace): {}", a.trace);
    f.columns = 2;
    f.reference_label = "baseline: " + baseline_label;
    f.x_format = [mm = model_mode](double x) { return budget_text(static_cast<uint64_t>(x), mm); };
    const std::string xl = model_mode ? "memory budget (--ram)" : "cache budget";
    for (const std::string& pr : a.predictors) {
      svg::Panel hit, tok;
      hit.title = "hit rate, predictor " + pr;
      hit.x_label = xl;
      hit.y_label = "hit rate";
      hit.has_reference = true;
      hit.reference = baseline.get("hit_rate").mean;
      tok.title = std::string(model_mode ? "decode" : "simulated decode") + " tok/s, predictor " + pr;
      tok.x_label = xl;
      tok.y_label = "tokens / s";
      tok.has_reference = true;
      tok.reference = baseline.get("decode_tok_s").mean;
      for (const std::string& pol : a.policies) {
        svg::Series sh, st;
        sh.label = st.label = pol;
        for (const Point& p : points) {
          if (p.policy != pol || p.predictor != pr) continue;
          sh.x.push_back(static_cast<double>(p.budget));
          sh.y.push_back(p.get("hit_rate").mean);
          st.x.push_back(static_cast<double>(p.budget));
          st.y.push_back(p.get("decode_tok_s").mean);
        }
        hit.series.push_back(std::move(sh));
        tok.series.push_back(std::move(st));
      }
      f.panels.push_back(std::move(hit));
      f.panels.push_back(std::move(tok));
    }
    return svg::render(f);
  }
};

}  // namespace

int run_grid(const GridArgs& a) {
  MOE_ASSERT(a.model.empty() != a.trace.empty(), "run_grid: exactly one of model / trace");
  if (a.policies.empty()) fail(ErrorCode::InvalidArgument, "bench: --policy lists no policy");
  if (a.predictors.empty()) fail(ErrorCode::InvalidArgument, "bench: --predictor lists no predictor");
  if (a.reps < 1) fail(ErrorCode::InvalidArgument, "bench: --reps must be >= 1");
  const bool model_mode = !a.model.empty();
  Report rep{a, model_mode, {}, {}, {}};
  std::vector<uint64_t> budgets = a.budgets;

  auto progress = [&](size_t i, size_t n, const Point& p) {
    if (a.offload.quiet) return;
    if (i == 0) fmt::print(stderr, "bench: [0/{}] baseline ({})\n", n, rep.baseline_label);
    else fmt::print(stderr, "bench: [{}/{}] policy {} predictor {} budget {}\n", i, n, p.policy, p.predictor,
                    budget_text(p.budget, model_mode));
  };
  auto make_points = [&] {
    for (const std::string& pol : a.policies)
      for (const std::string& pr : a.predictors)
        for (uint64_t b : budgets) rep.points.push_back(Point{pol, pr, b, 0, {}});
  };

  if (model_mode) {
    if (!a.budget_experts.empty()) fail(ErrorCode::InvalidArgument, "bench: --budget-experts needs --trace");
    if (budgets.empty()) {
      budgets.push_back(0);
      if (!a.offload.quiet && a.policies.size() > 1)
        fmt::print(stderr, "bench: no --ram: every point reads experts through the memory map (policies have no "
                           "effect)\n");
    }
    auto model = a.offload.load_model(a.model);
    const ModelSpec& spec = model->spec();
    ModelBench mb{a, *model,
                  a.threads > 0 ? a.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())),
                  {}};
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(spec.n_vocab) - 1);
    mb.prompt.resize(a.prompt_tokens);
    for (auto& t : mb.prompt) t = pick(rng);
    rep.baseline = Point{"none", "none", 0, 0, {}};
    rep.baseline_label = "memory map, no cache, no prefetch";
    make_points();
    progress(0, rep.points.size(), rep.baseline);
    mb.measure(rep.baseline);
    for (size_t i = 0; i < rep.points.size(); ++i) {
      progress(i + 1, rep.points.size(), rep.points[i]);
      mb.measure(rep.points[i]);
    }
    if (!a.json)
      fmt::print("model {} ({}), {} threads, pp{} tg{}, {} reps\n", a.model, spec.arch_name, mb.threads,
                 a.prompt_tokens, a.gen_tokens, a.reps);
  } else {
    const trace::Trace t = trace::read(a.trace);
    const sim::SimConfig base = trace_base(a, t);
    for (uint64_t n : a.budget_experts) budgets.push_back(n * base.expert_bytes);
    if (budgets.empty()) {
      const uint64_t all = static_cast<uint64_t>(t.n_layer) * t.n_expert * base.expert_bytes;
      budgets = {all / 4, all / 2, all};
    }
    rep.baseline = Point{"lru", "none", 0, 0, {}};
    rep.baseline_label = "no cache (every expert streamed), no prefetch";
    make_points();
    measure_trace(t, base, a.reps, rep.baseline);
    for (size_t i = 0; i < rep.points.size(); ++i) measure_trace(t, base, a.reps, rep.points[i]);
    if (!a.json)
      fmt::print("trace {}: {} tokens x {} layers, {} experts, top-{}, expert {} | device {}, {} reps\n", a.trace,
                 t.n_tokens(), t.n_layer, t.n_expert, t.max_k, human_bytes(base.expert_bytes), base.device.name,
                 a.reps);
  }

  if (a.json) {
    json::Value arr = json::Value::array();
    for (const Point& p : rep.points) arr.push(rep.point_json(p));
    fmt::print("{}\n", arr.dump(2));
  } else {
    rep.print_table();
  }
  if (!a.csv.empty()) svg::write_file(a.csv, rep.csv());
  if (!a.svg.empty()) svg::write_file(a.svg, rep.svg());
  return 0;
}

}  // namespace moe::tools
