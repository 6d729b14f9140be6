// tools/offload.h — the expert-offloading options shared by `moe run`, `moe bench` and `moe chat`
// (--ram, --policy, --cache-scope, --io, --no-direct, --profile) and the ExpertSource they build.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "moe/engine.h"
#include "moe/expert_store.h"
#include "moe/json.h"
#include "moe/planner.h"

namespace moe::tools {

struct OffloadArgs {
  std::string ram;              // "" = no budget (experts read through the memory map)
  // arc: never behind lru without prefetch here, and far ahead with it (lru lets prefetched experts
  // push out the hot ones: lru + pregated read more per token than lru alone).
  std::string policy = "arc";
  std::string scope = "global";
  std::string io = "auto";      // auto | uring | pread
  bool no_direct = false;
  bool no_mmap = false;         // --no-mmap: copy the model into RAM (huge pages) instead of mapping it
  uint32_t prefetch_inflight = StoreOptions{}.prefetch_inflight;  // --prefetch-inflight
  std::string profile;          // usage profile for --policy static
  bool quiet = false;           // no notices on stderr
  // Prefetch planner (--predictor, --prefetch-depth, --prefetch-threshold, --prefetch-budget,
  // --pregate-at, --link-gbps/--link-latency-us/--compute-gbps/--calibrate for the miss cost model).
  // auto: pregated when experts come from a DRAM cache on the CPU (--ram without --vram), else none.
  std::string predictor = "auto";
  uint32_t depth = 1;
  double threshold = 0;
  std::string step_budget;      // bytes per step; "" = unbounded
  uint32_t guesses = 0;         // per target layer; 0 = top-k
  std::string pregate_at = "attention";
  double link_gbps = 0, link_latency_us = -1, compute_gbps = 0;
  bool calibrate = false;
  // CUDA backend (--vram, --gpu-misses, --vram-policy, --gpu): "" = run on the CPU.
  std::string vram;
  std::string gpu_misses = "upload";  // upload | cpu
  std::string vram_policy = "lru";
  int gpu = 0;
  bool no_cuda_graph = false;
  bool exact_gemm = false;
  bool no_gpu_prefetch = false;

  void add_to(CLI::App& app);
  // Loads the model as --no-mmap says. Throws moe::Error (InvalidArgument) for --no-mmap with --ram (a
  // budget streams experts from the file; loading the whole file would defeat it).
  std::unique_ptr<Model> load_model(const std::string& path) const;
  // Copies the CUDA backend options into `so` (vram_bytes stays 0 without --vram). Throws
  // moe::Error (InvalidArgument) for an unknown --gpu-misses value.
  void apply_gpu(SessionOptions& so) const;
  // Builds the source for `m` and sessions with options `so`. Prints the memory plan on stderr
  // when a budget is given (unless quiet). Throws moe::Error on an impossible budget.
  std::unique_ptr<ExpertSource> make_source(const Model& m, const SessionOptions& so) const;
  // The predictor spec --predictor resolves to for a source that is (or is not) a DRAM cache: "auto"
  // becomes pregated or none.
  std::string predictor_for(bool cached_source) const;
  // The planner for `src` (nullptr when the predictor resolves to none). Predictions are only scored,
  // not fetched, when src is not a CachedExpertSource. Install it with Session::set_observer.
  std::unique_ptr<PrefetchPlanner> make_planner(const Model& m, ExpertSource& src, const SessionOptions& so) const;
  // The miss cost model: calibrated when --calibrate, then overridden by the rate flags.
  prefetch::MissCostModel cost_model(const Model& m, int threads) const;
};

// The decode metrics of `moe run --stats` and `moe bench --json`, from the source's and the
// planner's counters since their last reset (taken right after prefill) and the decode timing.
struct OffloadMetrics {
  bool cached = false;
  double decode_tok_s = 0, hit_rate = 0, prefetch_precision = 0, prefetch_recall = 0, overlap_ratio = 0;
  double stall_ms_per_token = 0, bytes_read_per_token = 0;
  StoreStats store;
  PlannerStats planner;
  uint64_t tokens = 0;
  json::Value to_json() const;  // top-level keys as named above, per-layer detail under "layers"
  std::string to_text() const;
};
OffloadMetrics offload_metrics(const ExpertSource& src, const PrefetchPlanner* planner, uint64_t decode_tokens,
                               double decode_seconds);
// Adds the metrics' keys to a JSON object (top level) and its "layers" array.
void add_offload_metrics(json::Value& o, const OffloadMetrics& m);
void reset_offload_stats(ExpertSource& src, PrefetchPlanner* planner);

// Stats of a cached source as a JSON fragment and a one-line text; empty/zero for the mmap source.
struct OffloadReport {
  bool cached = false;
  double hit_rate = 0;
  uint64_t bytes_read = 0, misses = 0, hits = 0;
  double stall_s = 0;
};
OffloadReport offload_report(const ExpertSource& src);
void reset_offload_stats(ExpertSource& src);

}  // namespace moe::tools
