// `moe sim`: replay a routing trace through the cache policies and predictors with a device profile
// (moe/sim.h) and print one row per (policy, predictor, budget): a table, or a JSON array (--json).
// Lists are comma-separated; predictors are combined with '+' ("transition+popularity").
#include <fmt/format.h>

#include <memory>
#include <sstream>

#include "cli.h"
#include "moe/cache/profile.h"
#include "moe/error.h"
#include "moe/sim.h"
#include "moe/trace.h"

namespace moe::tools {
namespace {

struct SimOpts {
  std::string trace_path, policies = "lru", predictors = "none", budgets, budget_experts, device = "pcie4";
  std::string scope = "global", profile, prefetch_budget;
  uint64_t expert_bytes = 0;
  uint32_t depth = 1, prefetch_experts = 0, history_capacity = 64, guesses = 0;
  double threshold = 0, half_life = 4096;
  double link_gbps = -1, link_latency_us = -1, compute_gbps = -1, dense_ms = -1, expert_ms = -1;
  bool json = false;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

int run(const SimOpts& o) {
  const trace::Trace t = trace::read(o.trace_path);
  sim::SimConfig base;
  base.device = sim::device_profile(o.device);
  if (o.link_gbps >= 0) base.device.link_gbps = o.link_gbps;
  if (o.link_latency_us >= 0) base.device.link_latency_us = o.link_latency_us;
  if (o.compute_gbps >= 0) base.device.compute_gbps = o.compute_gbps;
  if (o.dense_ms >= 0) base.device.dense_ms_per_layer = o.dense_ms;
  if (o.expert_ms >= 0) base.device.expert_ms = o.expert_ms;
  if (!(base.device.link_gbps > 0)) throw CLI::ValidationError("--link-gbps", "must be > 0");
  base.expert_bytes = o.expert_bytes ? o.expert_bytes : t.expert_bytes;
  if (base.expert_bytes == 0)
    fail(ErrorCode::InvalidArgument, "{}: the trace does not record the size of an expert; pass --expert-bytes",
         o.trace_path);
  if (!cache::parse_scope(o.scope, &base.scope))
    throw CLI::ValidationError("--cache-scope", "expected global or layer, got '" + o.scope + "'");
  base.depth = o.depth;
  base.threshold = o.threshold;
  base.predictor_half_life_tokens = o.half_life;
  base.history_capacity = o.history_capacity;
  base.guesses_per_layer = o.guesses;
  if (o.prefetch_experts) base.step_budget_experts = o.prefetch_experts;
  if (!o.prefetch_budget.empty()) {
    const uint64_t b = parse_bytes(o.prefetch_budget);
    base.step_budget_experts = static_cast<uint32_t>(std::min<uint64_t>(b / base.expert_bytes, UINT32_MAX));
  }
  if (!o.profile.empty()) {
    auto p = std::make_shared<cache::UsageProfile>();
    const cache::CacheStatus st = cache::read_usage_profile(o.profile, p.get());
    if (!st.ok()) fail(ErrorCode::Corrupt, "{}", st.message);
    base.policy_params.profile = p;
  }

  std::vector<uint64_t> budgets;
  for (const auto& b : split(o.budgets)) budgets.push_back(parse_bytes(b));
  for (const auto& b : split(o.budget_experts)) budgets.push_back(parse_bytes(b) * base.expert_bytes);
  if (budgets.empty()) {
    // Default: a quarter, a half and all of the experts.
    const uint64_t all = static_cast<uint64_t>(t.n_layer) * t.n_expert * base.expert_bytes;
    budgets = {all / 4, all / 2, all};
  }
  const auto policies = split(o.policies);
  auto predictors = split(o.predictors);
  if (predictors.empty()) predictors = {"none"};
  if (policies.empty()) throw CLI::ValidationError("--policy", "empty list");

  json::Value arr = json::Value::array();
  if (!o.json) {
    fmt::print("{}: {} tokens x {} layers, {} experts, top-{}, expert {} | device {} ({} GB/s link, "
               "{:.3f} ms/expert, {:.3f} ms/layer dense)\n",
               o.trace_path, t.n_tokens(), t.n_layer, t.n_expert, t.max_k, human_bytes(base.expert_bytes),
               base.device.name, base.device.link_gbps, base.device.expert_compute_ms(base.expert_bytes),
               base.device.dense_ms_per_layer);
    fmt::print("{:<8} {:<22} {:>10} {:>6} {:>7} {:>6} {:>6} {:>7} {:>10} {:>9} {:>9} {:>8}\n", "policy", "predictor",
               "budget", "slots", "hit%", "prec", "recall", "overlap", "moved", "stall/tok", "tok/s", "Mev/s");
  }
  for (const auto& budget : budgets) {
    for (const auto& pol : policies) {
      for (const auto& pr : predictors) {
        sim::SimConfig c = base;
        c.policy = pol;
        c.budget_bytes = budget;
        c.predictor = pr;
        for (char& ch : c.predictor)
          if (ch == '+') ch = ',';
        const sim::SimResult r = sim::simulate(t, c);
        if (o.json) {
          arr.push(r.to_json());
        } else {
          fmt::print("{:<8} {:<22} {:>10} {:>6} {:>6.2f}% {:>6.3f} {:>6.3f} {:>7.3f} {:>10} {:>7.3f}ms {:>9.2f} {:>8.2f}\n",
                     pol, pr, human_bytes(budget), r.slots, 100.0 * r.hit_rate, r.precision, r.recall, r.overlap,
                     human_bytes(r.bytes_moved), r.stall_ms_per_token, r.tok_s, r.events_per_s() / 1e6);
        }
      }
    }
  }
  if (o.json) fmt::print("{}\n", arr.dump(2));
  return 0;
}

Registrar reg("sim", "Replay a routing trace through cache policies and predictors with a device profile",
              [](CLI::App& app) {
  auto o = std::make_shared<SimOpts>();
  app.add_option("--trace", o->trace_path, "Trace file (.moetrace)")->required();
  app.add_option("--policy", o->policies, "Cache policies, comma-separated (lru,lfu,lfru,arc,static,belady)")
      ->capture_default_str();
  app.add_option("--predictor", o->predictors,
                 "Predictors, comma-separated (none,transition,popularity,history,oracle,recorded[:NAME]); "
                 "combine with '+': transition+popularity")
      ->capture_default_str();
  app.add_option("--budget", o->budgets, "Cache budgets in bytes, comma-separated (1G,2G)");
  app.add_option("--budget-experts", o->budget_experts, "Cache budgets in experts, comma-separated");
  app.add_option("--device", o->device,
                 "Device profile: pcie3|pcie4|pcie5|nvme-gen3|nvme-gen4|nvme-gen5|ddr4|ddr5, joined with '+', "
                 "or a JSON file")
      ->capture_default_str();
  app.add_option("--link-gbps", o->link_gbps, "Override: link bandwidth, GB/s");
  app.add_option("--link-latency-us", o->link_latency_us, "Override: fixed cost per expert transfer, us");
  app.add_option("--compute-gbps", o->compute_gbps, "Override: weight bytes the compute streams per second, GB/s");
  app.add_option("--compute-ms-per-layer", o->dense_ms, "Override: attention/router/dense time per layer, ms");
  app.add_option("--expert-compute-ms", o->expert_ms, "Override: compute time of one routed expert, ms");
  app.add_option("--cache-scope", o->scope, "global or layer")->capture_default_str();
  app.add_option("--expert-bytes", o->expert_bytes, "Bytes of one expert (default: the trace's)");
  app.add_option("--prefetch-depth", o->depth, "Predict layers N+1 .. N+d")->capture_default_str();
  app.add_option("--prefetch-threshold", o->threshold, "Minimum score of a prefetched guess")->capture_default_str();
  app.add_option("--prefetch-experts", o->prefetch_experts, "Most new prefetches per step (0 = no limit)");
  app.add_option("--prefetch-budget", o->prefetch_budget, "Most prefetched bytes per step (e.g. 64M)");
  app.add_option("--prefetch-guesses", o->guesses, "Best guesses taken per predicted layer (0 = the trace's top-k)");
  app.add_option("--half-life", o->half_life, "Predictor decay half-life, tokens")->capture_default_str();
  app.add_option("--history-capacity", o->history_capacity, "Past requests the history predictor keeps")
      ->capture_default_str();
  app.add_option("--profile", o->profile, "Usage profile for the static policy (default: the trace's counts)");
  app.add_flag("--json", o->json, "Print a JSON array, one object per (policy, predictor, budget)");
  return [o] { return run(*o); };
});

}  // namespace
}  // namespace moe::tools
