// tools/offload.h — the expert-offloading options shared by `moe run`, `moe bench` and `moe chat`
// (--ram, --policy, --cache-scope, --io, --no-direct, --profile) and the ExpertSource they build.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "moe/engine.h"
#include "moe/expert_store.h"

namespace moe::tools {

struct OffloadArgs {
  std::string ram;              // "" = no budget (experts read through the memory map)
  std::string policy = "lru";
  std::string scope = "global";
  std::string io = "auto";      // auto | uring | pread
  bool no_direct = false;
  std::string profile;          // usage profile for --policy static
  bool quiet = false;           // no notices on stderr

  void add_to(CLI::App& app);
  // Builds the source for `m` and sessions with options `so`. Prints the memory plan on stderr
  // when a budget is given (unless quiet). Throws moe::Error on an impossible budget.
  std::unique_ptr<ExpertSource> make_source(const Model& m, const SessionOptions& so) const;
};

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
