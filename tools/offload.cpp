// Shared offloading options for the moe tool (see offload.h).
#include "offload.h"

#include "cli.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "moe/cache/profile.h"
#include "moe/error.h"
#include "moe/kernels/thread_pool.h"

namespace moe::tools {

void OffloadArgs::apply_gpu(SessionOptions& so) const {
  if (vram.empty()) return;
  so.vram_bytes = parse_bytes(vram);
  so.gpu_device = gpu;
  so.vram_policy = vram_policy;
  so.quiet_backend = quiet;
  so.cuda_graph = !no_cuda_graph;
  so.gpu_exact_gemm = exact_gemm;
  so.gpu_prefetch = !no_gpu_prefetch;
  if (gpu_misses == "upload")
    so.gpu_miss = GpuMissMode::Upload;
  else if (gpu_misses == "cpu")
    so.gpu_miss = GpuMissMode::Cpu;
  else if (gpu_misses == "auto")
    so.gpu_miss = GpuMissMode::Auto;
  else
    fail(ErrorCode::InvalidArgument, "--gpu-misses '{}': expected upload, cpu or auto", gpu_misses);
}

void OffloadArgs::add_to(CLI::App& app) {
  app.add_option("--vram", vram,
                 "Run on the GPU with this much device memory (e.g. 12G): dense weights, KV cache and "
                 "scratch first, the rest caches experts. Default: CPU only");
  app.add_option("--gpu-misses", gpu_misses,
                 "With --vram, an expert not in VRAM is: upload (copied in, computed on the GPU; the same "
                 "tokens for every budget), cpu (computed on the CPU now, copied in for later) or auto (each "
                 "layer's misses split between the CPU and uploads so both finish together)")
      ->capture_default_str();
  app.add_option("--vram-policy", vram_policy, "With --vram, the VRAM expert cache's eviction policy")
      ->capture_default_str();
  app.add_option("--gpu", gpu, "With --vram, the CUDA device index")->capture_default_str();
  app.add_flag("--no-cuda-graph", no_cuda_graph,
               "With --vram and every expert resident, launch each decode kernel instead of replaying the "
               "captured decode graph");
  app.add_flag("--no-gpu-prefetch", no_gpu_prefetch,
               "With --vram, do not upload the experts the next layer's router predicts (pre-gated) while a layer "
               "computes");
  app.add_flag("--gpu-exact-gemm", exact_gemm,
               "With --vram, prefill GEMMs over quantized weights use full f32 products (default: TF32 tensor "
               "cores, 10-bit mantissa inputs, f32 accumulation)");
  app.add_option("--ram", ram,
                 "Memory budget for the whole process (e.g. 3G): experts are served from a DRAM cache "
                 "and read from the file with O_DIRECT on a miss. Default: no budget (memory map)");
  app.add_option("--policy", policy, "Expert cache eviction policy: lru, lfu, lfru, arc, static")
      ->capture_default_str();
  app.add_option("--cache-scope", scope, "Cache pool: global, or layer (an equal quota per MoE layer)")
      ->capture_default_str();
  app.add_option("--io", io, "Expert reads: auto (io_uring, else pread), uring, pread")->capture_default_str();
  app.add_flag("--no-direct", no_direct, "Read experts through the page cache (no O_DIRECT)");
  app.add_flag("--no-mmap", no_mmap,
               "Copy the whole model into RAM (transparent huge pages) instead of mapping the file: faster "
               "weight streaming, but the OS cannot reclaim that memory. Not with --ram");
  app.add_option("--profile", profile, "Usage profile for --policy static (written by --save-profile)");
  app.add_option("--predictor", predictor,
                 "Expert prefetch predictors, comma-separated to combine: none, pregated, transition, popularity, "
                 "history; auto = pregated with --ram on the CPU, else none")
      ->capture_default_str();
  app.add_option("--prefetch-depth", depth, "Prefetch layers N+1 .. N+d while layer N computes")->capture_default_str();
  app.add_option("--prefetch-threshold", threshold, "Skip guesses whose probability is below this (0..1)")
      ->capture_default_str();
  app.add_option("--prefetch-budget", step_budget, "Bytes of new prefetch reads per layer step (e.g. 64M); default unbounded");
  app.add_option("--prefetch-inflight", prefetch_inflight,
                 "Prefetch reads in flight at once (more: bandwidth on a fast drive; fewer: an urgent read waits less)")
      ->capture_default_str()
      ->check(CLI::Range(1, 32));
  app.add_option("--prefetch-guesses", guesses, "Guesses per predicted layer (default: the model's top-k)");
  app.add_option("--pregate-at", pregate_at, "Pre-gated input: attention (after layer N's attention) or layer (after it)")
      ->capture_default_str();
  app.add_option("--link-gbps", link_gbps, "Cost model: expert link bandwidth in GB/s (default: calibrated or 2)");
  app.add_option("--link-latency-us", link_latency_us, "Cost model: per-transfer latency in us");
  app.add_option("--compute-gbps", compute_gbps, "Cost model: expert compute rate in GB/s of weights");
  app.add_flag("--calibrate", calibrate, "Cost model: probe the link and compute rates at start-up");
}

std::string OffloadArgs::predictor_for(bool cached_source) const {
  if (predictor != "auto") return predictor;
  return cached_source && vram.empty() ? "pregated" : "none";
}

std::unique_ptr<PrefetchPlanner> OffloadArgs::make_planner(const Model& m, ExpertSource& src,
                                                           const SessionOptions& so) const {
  PlannerOptions po;
  po.predictor = predictor_for(dynamic_cast<CachedExpertSource*>(&src) != nullptr);
  po.depth = depth;
  po.threshold = threshold;
  po.guesses_per_layer = guesses;
  if (!step_budget.empty()) po.step_budget_bytes = parse_bytes(step_budget);
  if (pregate_at == "attention") po.pregate_point = PregatePoint::AfterAttention;
  else if (pregate_at == "layer") po.pregate_point = PregatePoint::AfterLayer;
  else fail(ErrorCode::InvalidArgument, "--pregate-at must be attention or layer, not '{}'", pregate_at);
  auto p = std::make_unique<PrefetchPlanner>(m, dynamic_cast<CachedExpertSource*>(&src), po, so.n_batch);
  if (!p->active()) return nullptr;
  return p;
}

prefetch::MissCostModel OffloadArgs::cost_model(const Model& m, int threads) const {
  prefetch::CostModelParams p;
  if (calibrate) {
    kernels::ThreadPool pool(std::max(1, threads));
    p = calibrate_cost_model(m, pool);
  }
  if (link_gbps > 0) p.link_bytes_per_s = link_gbps * 1e9;
  if (link_latency_us >= 0) p.link_latency_s = link_latency_us * 1e-6;
  if (compute_gbps > 0) p.compute_bytes_per_s = compute_gbps * 1e9;
  return prefetch::MissCostModel(p);
}

OffloadMetrics offload_metrics(const ExpertSource& src, const PrefetchPlanner* planner, uint64_t decode_tokens,
                               double decode_seconds) {
  OffloadMetrics r;
  r.tokens = decode_tokens;
  r.decode_tok_s = decode_seconds > 0 ? double(decode_tokens) / decode_seconds : 0;
  if (planner) {
    r.planner = planner->stats();
    const PredictionCounts t = r.planner.plan_total();
    r.prefetch_precision = t.precision();
    r.prefetch_recall = t.recall();
  }
  if (const auto* c = dynamic_cast<const CachedExpertSource*>(&src)) {
    r.cached = true;
    r.store = c->stats();
    r.hit_rate = r.store.hit_rate();
    // Transfer time hidden behind compute / all transfer time: the reader's busy time (some read in
    // flight) less the time the engine stalled waiting (stalls happen while reads are in flight).
    const double busy = r.store.io.busy_seconds;
    r.overlap_ratio = busy > 0 ? std::clamp((busy - r.store.stall_seconds) / busy, 0.0, 1.0) : 0.0;
    if (decode_tokens) {
      r.stall_ms_per_token = r.store.stall_seconds * 1e3 / double(decode_tokens);
      r.bytes_read_per_token = double(r.store.bytes_read) / double(decode_tokens);
    }
  }
  return r;
}

void add_offload_metrics(json::Value& o, const OffloadMetrics& m) {
  o.set("decode_tok_s", json::Value(m.decode_tok_s));
  o.set("hit_rate", json::Value(m.hit_rate));
  o.set("prefetch_precision", json::Value(m.prefetch_precision));
  o.set("prefetch_recall", json::Value(m.prefetch_recall));
  o.set("overlap_ratio", json::Value(m.overlap_ratio));
  o.set("stall_ms_per_token", json::Value(m.stall_ms_per_token));
  if (!o.get("bytes_read_per_token")) o.set("bytes_read_per_token", json::Value(m.bytes_read_per_token));
  if (m.cached) {
    o.set("bytes_read_per_token", json::Value(m.bytes_read_per_token));
    o.set("io_busy_s", json::Value(m.store.io.busy_seconds));
    o.set("stall_s", json::Value(m.store.stall_seconds));
    o.set("prefetches", json::Value(m.store.prefetches));
    o.set("prefetch_hits", json::Value(m.store.prefetch_hits));
    o.set("prefetch_wasted", json::Value(m.store.prefetch_wasted));
    o.set("prefetch_cancelled", json::Value(m.planner.cancel_requests));
    o.set("reads_raised", json::Value(m.store.io.raised));  // queued reads moved up (IoReader::raise)
  }
  json::Value layers = json::Value::array();
  const std::vector<double>& stall = m.store.stall_seconds_per_layer;
  for (size_t l = 0; l < std::max(m.planner.plan.size(), stall.size()); ++l) {
    json::Value e = json::Value::object();
    e.set("layer", json::Value(uint64_t(l)));
    if (l < m.planner.plan.size()) {
      e.set("prefetch_precision", json::Value(m.planner.plan[l].precision()));
      e.set("prefetch_recall", json::Value(m.planner.plan[l].recall()));
      for (size_t c = 0; c < m.planner.predictor_names.size(); ++c)
        e.set(m.planner.predictor_names[c] + "_recall_1", json::Value(m.planner.ahead1[c][l].recall()));
    }
    if (l < stall.size() && m.tokens) e.set("stall_ms_per_token", json::Value(stall[l] * 1e3 / double(m.tokens)));
    layers.push(std::move(e));
  }
  o.set("layers", std::move(layers));
}

json::Value OffloadMetrics::to_json() const {
  json::Value o = json::Value::object();
  add_offload_metrics(o, *this);
  return o;
}

std::string OffloadMetrics::to_text() const {
  std::string s = fmt::format(
      "decode {:.2f} tok/s | hit rate {:.1f}% | prefetch precision {:.1f}%, recall {:.1f}% | overlap {:.1f}% | "
      "stall {:.2f} ms/token | {:.2f} MB read/token\n",
      decode_tok_s, 100 * hit_rate, 100 * prefetch_precision, 100 * prefetch_recall, 100 * overlap_ratio,
      stall_ms_per_token, bytes_read_per_token / 1e6);
  if (cached) {
    s += store.to_text() + "\n";
    if (tokens && !store.stall_seconds_per_layer.empty()) {
      s += "stall ms/token by layer:";
      for (double v : store.stall_seconds_per_layer) s += fmt::format(" {:.1f}", v * 1e3 / double(tokens));
      s += "\n";
    }
  }
  if (!planner.predictor_names.empty()) s += planner.to_text();
  return s;
}

void reset_offload_stats(ExpertSource& src, PrefetchPlanner* planner) {
  reset_offload_stats(src);
  if (planner) planner->reset_stats();
}

std::unique_ptr<Model> OffloadArgs::load_model(const std::string& path) const {
  if (no_mmap && !ram.empty())
    fail(ErrorCode::InvalidArgument, "--no-mmap loads the whole model into RAM; it cannot be combined with --ram {}",
         ram);
  return Model::load(path, no_mmap);
}

std::unique_ptr<ExpertSource> OffloadArgs::make_source(const Model& m, const SessionOptions& so) const {
  StoreOptions o;
  if (!ram.empty()) o.ram_budget_bytes = parse_bytes(ram);
  o.policy = policy;
  if (!cache::parse_scope(scope, &o.scope))
    fail(ErrorCode::InvalidArgument, "--cache-scope must be global or layer, not '{}'", scope);
  if (io == "auto") o.io_backend = prefetch::IoBackend::Auto;
  else if (io == "uring") o.io_backend = prefetch::IoBackend::Uring;
  else if (io == "pread") o.io_backend = prefetch::IoBackend::Pread;
  else fail(ErrorCode::InvalidArgument, "--io must be auto, uring or pread, not '{}'", io);
  o.direct = !no_direct;
  o.prefetch_inflight = prefetch_inflight;
  o.session = so;
  // With a planner, fresh prefetches must not be the first victims; it drops its stale ones itself.
  const std::string pred = predictor_for(true);
  if (!pred.empty() && pred != "none") o.prefetched_unused_first = false;
  if (!profile.empty()) {
    auto p = std::make_shared<cache::UsageProfile>();
    cache::CacheStatus st = cache::read_usage_profile(profile, p.get());
    if (!st.ok()) fail(ErrorCode::Corrupt, "{}", st.message);
    o.profile = p;
  }
  if (!quiet) o.notice = [](std::string_view s) { fmt::print(stderr, "moe: {}\n", s); };
  auto src = make_expert_source(m, o);
  if (!quiet && o.ram_budget_bytes) {
    if (auto* c = dynamic_cast<CachedExpertSource*>(src.get()))
      fmt::print(stderr, "moe: expert cache: {}\n", c->plan().to_text());
  }
  return src;
}

OffloadReport offload_report(const ExpertSource& src) {
  OffloadReport r;
  if (const auto* c = dynamic_cast<const CachedExpertSource*>(&src)) {
    StoreStats s = c->stats();
    r.cached = true;
    r.hit_rate = s.hit_rate();
    r.bytes_read = s.bytes_read;
    r.misses = s.misses;
    r.hits = s.hits + s.inflight_hits;
    r.stall_s = s.stall_seconds;
  }
  return r;
}

void reset_offload_stats(ExpertSource& src) {
  if (auto* c = dynamic_cast<CachedExpertSource*>(&src)) c->reset_stats();
}

}  // namespace moe::tools
