// Shared offloading options for the moe tool (see offload.h).
#include "offload.h"

#include "cli.h"

#include <fmt/format.h>

#include <cstdio>

#include "moe/cache/profile.h"
#include "moe/error.h"

namespace moe::tools {

void OffloadArgs::add_to(CLI::App& app) {
  app.add_option("--ram", ram,
                 "Memory budget for the whole process (e.g. 3G): experts are served from a DRAM cache "
                 "and read from the file with O_DIRECT on a miss. Default: no budget (memory map)");
  app.add_option("--policy", policy, "Expert cache eviction policy: lru, lfu, lfru, arc, static")
      ->capture_default_str();
  app.add_option("--cache-scope", scope, "Cache pool: global, or layer (an equal quota per MoE layer)")
      ->capture_default_str();
  app.add_option("--io", io, "Expert reads: auto (io_uring, else pread), uring, pread")->capture_default_str();
  app.add_flag("--no-direct", no_direct, "Read experts through the page cache (no O_DIRECT)");
  app.add_option("--profile", profile, "Usage profile for --policy static (written by --save-profile)");
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
  o.session = so;
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
