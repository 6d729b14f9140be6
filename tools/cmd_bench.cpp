// `moe bench`: prefill and decode speed of the CPU engine, like llama-bench.
//   moe bench -m MODEL [-t N] [--prompt-tokens 64] [--gen-tokens 32] [--reps R] [--json]
// With lists (--policy lru,arc --ram 1G,2G --predictor none --predictor transition, or
// --predictors none,transition+popularity), --trace FILE, --csv or --svg it runs the grid of
// bench_grid.h instead; the single form below is unchanged.
// Each repetition starts from an empty KV cache, prefills `prompt-tokens` seeded random ids in
// batches, then decodes `gen-tokens` greedily one at a time. Reports the mean and best over the
// repetitions, the bytes of weights and KV cache read per decoded token, and that traffic times the
// decode rate as a fraction of the machine's read bandwidth, measured in the same run with a
// streaming-read probe on the same threads (kernels::measure_read_bandwidth).
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_grid.h"
#include "cli.h"
#include "offload.h"
#include "moe/engine.h"
#include "moe/error.h"
#include "moe/json.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/thread_pool.h"
#include "moe/sampler.h"

namespace moe::tools {
namespace {

struct BenchArgs {
  std::string model;
  int threads = 0;
  uint32_t prompt_tokens = 64, gen_tokens = 32, n_batch = 0;  // n_batch 0: 64 on the CPU, 512 with --vram
  int reps = 3;
  bool json = false, no_bw = false;
  OffloadArgs offload;  // --ram/--policy/... and the prefetch planner (--predictor ...)
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int bench(const BenchArgs& a) {
  auto model = a.offload.load_model(a.model);
  const ModelSpec& spec = model->spec();
  const int threads = a.threads > 0 ? a.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  SessionOptions so;
  so.n_threads = threads;
  so.n_batch = a.n_batch ? a.n_batch : (a.offload.vram.empty() ? 64 : 512);
  so.n_ctx = a.prompt_tokens + a.gen_tokens + 1;
  a.offload.apply_gpu(so);
  std::unique_ptr<ExpertSource> src_owner = a.offload.make_source(*model, so);
  ExpertSource& src = *src_owner;
  std::unique_ptr<PrefetchPlanner> planner = a.offload.make_planner(*model, src, so);
  Session sess(*model, src, so);
  sess.set_observer(planner.get());
  OffloadMetrics metrics;  // offload metrics of the last repetition's decode

  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(spec.n_vocab) - 1);
  std::vector<int32_t> prompt(a.prompt_tokens);
  for (auto& t : prompt) t = pick(rng);

  std::vector<double> pp, tg;
  uint64_t decode_bytes = 0, decode_tokens = 0;
  // One warm-up pass (page cache, thread start-up) that is not counted.
  for (int rep = -1; rep < a.reps; ++rep) {
    if (planner) planner->begin_request(uint32_t(rep + 1));
    sess.reset();
    double pp_rate = 0;
    std::span<const float> logits;
    if (a.prompt_tokens > 0) {
      double t0 = now_s();
      logits = sess.eval(prompt);
      pp_rate = a.prompt_tokens / (now_s() - t0);
    } else {
      const int32_t first = 0;  // decode needs one token of context
      logits = sess.eval(std::span<const int32_t>(&first, 1));
    }
    sess.reset_stats();
    reset_offload_stats(src, planner.get());
    double t1 = now_s();
    for (uint32_t i = 0; i < a.gen_tokens; ++i) {
      int32_t t = argmax(logits);
      logits = sess.eval(std::span<const int32_t>(&t, 1));
    }
    const double dt = now_s() - t1;
    metrics = offload_metrics(src, planner.get(), a.gen_tokens, dt);
    if (rep < 0) continue;
    if (a.prompt_tokens > 0) pp.push_back(pp_rate);
    if (a.gen_tokens > 0) tg.push_back(a.gen_tokens / dt);
    const SessionStats& st = sess.stats();
    decode_bytes += st.expert_bytes + st.dense_bytes + st.kv_bytes;
    decode_tokens += st.tokens;
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0.0 : s / v.size();
  };
  auto best = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
  // The median and the sample standard deviation: on a noisy machine one slow repetition moves the mean.
  auto median = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const size_t h = v.size() / 2;
    return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
  };
  auto sd = [&](const std::vector<double>& v) {
    if (v.size() < 2) return 0.0;
    const double m = mean(v);
    double s2 = 0;
    for (double x : v) s2 += (x - m) * (x - m);
    return std::sqrt(s2 / double(v.size() - 1));
  };
  const double bytes_per_token = decode_tokens ? double(decode_bytes) / decode_tokens : 0;
  double bw = 0;
  if (!a.no_bw) {
    kernels::ThreadPool pool(threads);
    bw = kernels::measure_read_bandwidth(pool);
  }
  const double dec = mean(tg);
  const double frac = bw > 0 ? bytes_per_token * dec / bw : 0;

  if (a.json) {
    json::Value o = json::Value::object();
    o.set("model", json::Value(a.model));
    o.set("arch", json::Value(spec.arch_name));
    o.set("threads", json::Value(threads));
    o.set("simd", json::Value(kernels::simd_level_name(kernels::best_simd_level())));
    o.set("prompt_tokens", json::Value(a.prompt_tokens));
    o.set("gen_tokens", json::Value(a.gen_tokens));
    o.set("reps", json::Value(a.reps));
    o.set("backend", json::Value(std::string(sess.backend())));
    if (std::string(sess.backend()) == "cuda") {
      const SessionStats& ss = sess.stats();  // the last repetition's decode
      o.set("backend_info", json::Value(sess.backend_info()));
      o.set("vram_hits", json::Value(int64_t(ss.vram_hits)));
      o.set("vram_misses", json::Value(int64_t(ss.vram_misses)));
      o.set("vram_upload_bytes_per_token",
            json::Value(ss.tokens ? double(ss.vram_upload_bytes) / double(ss.tokens) : 0.0));
      o.set("cpu_expert_runs", json::Value(int64_t(ss.cpu_expert_runs)));
      o.set("gpu_graph_launches", json::Value(int64_t(ss.gpu_graph_launches)));
      o.set("vram_prefetches", json::Value(int64_t(ss.vram_prefetches)));
      o.set("vram_prefetch_hits", json::Value(int64_t(ss.vram_prefetch_hits)));
    }
    o.set("prefill_tok_s", json::Value(mean(pp)));
    o.set("prefill_tok_s_best", json::Value(best(pp)));
    o.set("prefill_tok_s_median", json::Value(median(pp)));
    o.set("prefill_tok_s_sd", json::Value(sd(pp)));
    o.set("decode_tok_s", json::Value(dec));
    o.set("decode_tok_s_best", json::Value(best(tg)));
    o.set("decode_tok_s_median", json::Value(median(tg)));
    o.set("decode_tok_s_sd", json::Value(sd(tg)));
    o.set("bytes_read_per_token", json::Value(bytes_per_token));
    o.set("read_bandwidth_bytes_s", json::Value(bw));
    o.set("mem_bw_fraction", json::Value(frac));
    o.set("memory_bytes_per_token", json::Value(bytes_per_token));  // weights + KV read (bytes_read_per_token
                                                                     // becomes the expert bytes read from disk
                                                                     // when --ram is given)
    add_offload_metrics(o, metrics);
    o.set("decode_tok_s", json::Value(dec));  // the mean over repetitions (metrics: the last one's)
    std::printf("%s\n", o.dump().c_str());
  } else {
    std::printf("model %s (%s), %d threads, simd %s\n", a.model.c_str(), spec.arch_name.c_str(), threads,
                kernels::simd_level_name(kernels::best_simd_level()));
    std::printf("| test   | tok/s (mean) |     sd | tok/s (median) | tok/s (best) |\n"
                "|--------|--------------|--------|----------------|--------------|\n");
    std::printf("| pp%-4u | %12.2f | %6.2f | %14.2f | %12.2f |\n", a.prompt_tokens, mean(pp), sd(pp), median(pp),
                best(pp));
    std::printf("| tg%-4u | %12.2f | %6.2f | %14.2f | %12.2f |\n", a.gen_tokens, dec, sd(tg), median(tg), best(tg));
    std::printf("bytes read per decoded token: %.1f MB; read bandwidth %.2f GB/s; decode uses %.1f%% of it\n",
                bytes_per_token / 1e6, bw / 1e9, frac * 100);
    if (metrics.cached || planner) std::printf("%s", metrics.to_text().c_str());
  }
  return 0;
}

// Options only the grid form reads (the single form ignores none of its own).
struct GridOpts {
  std::string trace, csv, svg, predictors, budget_experts, device = "pcie4";
  std::vector<std::string> predictor;  // --predictor, once per grid entry
  uint64_t expert_bytes = 0;
  bool grid = false;
};

int dispatch(BenchArgs& a, const GridOpts& g) {
  const std::vector<std::string> policies = split_list(a.offload.policy);
  const std::vector<std::string> rams = split_list(a.offload.ram);
  std::vector<std::string> predictors = g.predictor;
  // --predictors: the `moe sim` form (',' separates entries, '+' combines parts).
  for (const std::string& p : split_list(g.predictors)) {
    std::string spec = p;
    std::replace(spec.begin(), spec.end(), '+', ',');
    predictors.push_back(spec);
  }
  const bool grid = g.grid || !g.trace.empty() || !g.csv.empty() || !g.svg.empty() || !g.predictors.empty() ||
                    !g.budget_experts.empty() || policies.size() > 1 || rams.size() > 1 || predictors.size() > 1;
  if (!grid) {
    if (a.model.empty()) throw CLI::ValidationError("-m,--model", "required (or --trace FILE for a trace grid)");
    if (!predictors.empty()) a.offload.predictor = predictors.front();
    return bench(a);
  }
  GridArgs ga;
  ga.model = a.model;
  ga.trace = g.trace;
  if (ga.model.empty() == ga.trace.empty())
    throw CLI::ValidationError("-m,--model", "give exactly one of -m MODEL or --trace FILE");
  ga.policies = policies;
  if (ga.policies.empty()) ga.policies = {"arc"};
  ga.predictors = predictors;
  if (ga.predictors.empty()) ga.predictors = {ga.trace.empty() ? a.offload.predictor : std::string("none")};
  for (const std::string& r : rams) ga.budgets.push_back(r == "none" ? 0 : parse_bytes(r));
  for (const std::string& r : split_list(g.budget_experts)) ga.budget_experts.push_back(parse_bytes(r));
  ga.reps = a.reps;
  ga.threads = a.threads;
  ga.prompt_tokens = a.prompt_tokens;
  ga.gen_tokens = a.gen_tokens;
  ga.n_batch = a.n_batch ? a.n_batch : 64;
  ga.device = g.device;
  ga.expert_bytes = g.expert_bytes;
  ga.offload = a.offload;
  ga.json = a.json;
  ga.csv = g.csv;
  ga.svg = g.svg;
  return run_grid(ga);
}

Registrar reg("bench", "Measure prefill and decode speed (CPU engine), or a grid of offloading configurations",
              [](CLI::App& app) -> Action {
  auto a = std::make_shared<BenchArgs>();
  auto g = std::make_shared<GridOpts>();
  app.add_option("-m,--model", a->model, "GGUF model file");
  app.add_option("-t,--threads", a->threads, "Threads (default: all cores)");
  app.add_option("-p,--prompt-tokens", a->prompt_tokens, "Prompt tokens to prefill");
  app.add_option("-n,--gen-tokens", a->gen_tokens, "Tokens to decode");
  app.add_option("-b,--batch-size", a->n_batch, "Prefill batch size (default 64 on the CPU, 512 with --vram)")
      ->check(CLI::PositiveNumber);
  app.add_option("-r,--reps", a->reps, "Repetitions")->check(CLI::PositiveNumber);
  app.add_flag("--no-bandwidth", a->no_bw, "Skip the read-bandwidth probe (mem_bw_fraction = 0)");
  app.add_flag("--json", a->json, "Print one JSON object (a grid: a JSON array, one object per point)");
  a->offload.add_to(app);
  // The grid: --policy and --ram take comma-separated lists; --predictor may be repeated (one grid
  // entry each; inside one, ',' still combines predictors as in `moe run`).
  app.get_option("--ram")->description(
      "Memory budget for the whole process (e.g. 3G): experts are served from a DRAM cache and read from the "
      "file on a miss. Comma-separated for a grid (4G,8G; 'none' = the memory map); with --trace, the cache "
      "tier's capacity. Default: no budget (memory map)");
  app.get_option("--policy")->description(
      "Expert cache eviction policy: lru, lfu, lfru, arc, static (belady with --trace); comma-separated for a grid");
  app.remove_option(app.get_option("--predictor"));
  app.add_option("--predictor", g->predictor,
                 "Expert prefetch predictors, comma-separated to combine: none, pregated, transition, popularity, "
                 "history. Repeat the option for a grid over predictors (default auto: pregated with a --ram "
                 "cache on the CPU, else none; none with --trace)");
  app.add_option("--predictors", g->predictors,
                 "Grid over predictors, `moe sim` style: comma-separated entries, '+' combines "
                 "(none,transition+popularity)");
  app.add_option("--trace", g->trace, "Run the grid on a routing trace (moe sim's replay) instead of a model");
  app.add_option("--budget-experts", g->budget_experts, "Trace grid: cache budgets in experts, comma-separated");
  app.add_option("--device", g->device, "Trace grid: device profile (as moe sim --device)")->capture_default_str();
  app.add_option("--expert-bytes", g->expert_bytes, "Trace grid: bytes of one expert (default: the trace's)");
  app.add_option("--csv", g->csv, "Grid: also write the rows as CSV to this file");
  app.add_option("--svg", g->svg, "Grid: also write an SVG plot (hit rate and tok/s against budget) to this file");
  app.add_flag("--grid", g->grid, "Use the grid output even for a single configuration");
  return [a, g] { return dispatch(*a, *g); };
});

}  // namespace
}  // namespace moe::tools
