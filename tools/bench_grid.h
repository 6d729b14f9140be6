// tools/bench_grid.h — the grid form of `moe bench`: policies x budgets x predictors, each point
// measured `reps` times, on a model (real generation through the engine with the tiered expert
// store, one model load for the whole grid, a fresh store + planner + session per point) or on a
// routing trace (replayed through moe::sim, the same objects `moe sim` uses). Every point is shown
// beside a baseline measured in the same run:
//   model: the memory-mapped source (no cache) with predictor none;
//   trace: a cache of 0 bytes (every expert streamed) with predictor none.
// Outputs: a table on stdout, or a JSON array (--json) with one object per (policy, predictor,
// budget); optionally a CSV file and a self-contained SVG plot (hit rate and decode tok/s against
// the budget, one line per policy, one row of panels per predictor).
//
// Thread-safety: run_grid() is called once from the tool's main thread.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "offload.h"

namespace moe::tools {

struct GridArgs {
  // Source: exactly one of model / trace.
  std::string model, trace;
  // Axes (already split). Budgets: model = whole-process --ram values (0 = no budget, the memory
  // map); trace = cache tier capacities in bytes.
  std::vector<std::string> policies;
  std::vector<std::string> predictors;  // each a predictor spec (parts joined by ',')
  std::vector<uint64_t> budgets;
  std::vector<uint64_t> budget_experts;  // trace only: budgets in experts (added to `budgets`)
  int reps = 3;
  // Model mode (as the single form).
  int threads = 0;
  uint32_t prompt_tokens = 64, gen_tokens = 32, n_batch = 64;
  // Trace mode.
  std::string device = "pcie4";
  uint64_t expert_bytes = 0;
  // Shared offload options (cache scope, IO, prefetch depth/threshold/guesses, cost-model rates; in
  // trace mode --link-gbps/--link-latency-us/--compute-gbps override the device profile).
  OffloadArgs offload;
  // Outputs.
  bool json = false;
  std::string csv, svg;
};

// Runs the grid and writes the outputs. Returns the exit code. Throws moe::Error on bad input
// (unknown policy/predictor, a budget below the store's minimum, unreadable files).
int run_grid(const GridArgs& a);

// Splits a comma-separated list, dropping empty items and surrounding blanks.
std::vector<std::string> split_list(const std::string& s, char sep = ',');

}  // namespace moe::tools
