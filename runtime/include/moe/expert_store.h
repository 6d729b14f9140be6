// moe/expert_store.h — the DRAM expert store: serves routed experts from a fixed arena of slots
// filled from the GGUF file with io_uring + O_DIRECT (pread fallback), so a model larger than RAM runs.
//
// Memory model (`--ram BYTES` is the budget of the WHOLE process):
//   budget = dense weights (read through the model's mmap; they become resident as they are read)
//          + KV cache and scratch of the sessions (estimated from the spec and SessionOptions)
//          + a fixed overhead margin (code, heap, tokenizer, IO buffers)
//          + the expert arena (slots * slot_bytes, one aligned mapping registered with io_uring).
// slot_bytes = the largest Slot-mode footprint of an expert: its gate, up and down slices (and its
// per-expert biases, gpt-oss) laid out back to back, each as the 4096-aligned superset of its file
// range (moe/prefetch/io.h), so every read lands in the slot with zero copies. plan_store_memory()
// computes the split and the minimum; CachedExpertSource refuses a budget below the minimum with
// moe::Error(InvalidArgument) stating it.
//
// Expert bytes never go through the page cache (O_DIRECT; when the filesystem refuses it the reader
// falls back to buffered reads, drops the pages it read, and announces it through StoreOptions::notice).
// The mapped file is advised MADV_RANDOM (no readahead into expert ranges) and the dense tensors
// MADV_WILLNEED (read ahead once, as the engine reads them through the mmap).
//
// Thread-safety: CachedExpertSource is thread-safe: acquire/release/prefetch/cancel_prefetch/stats may
// be called from any thread (sessions sharing the source, a prefetch planner); IO completions run on
// the reader's threads. acquire() blocks (on IO, or on a release when every slot is pinned); release()
// never blocks on IO. Each acquire must be released once, by the same thread preferably (the "every
// slot is pinned by this thread" diagnosis counts pins per thread).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "moe/cache/profile.h"
#include "moe/cache/residency.h"
#include "moe/cache/stats.h"
#include "moe/engine.h"
#include "moe/prefetch/io.h"

namespace moe {

struct StoreOptions {
  // Bytes of memory for the whole process (resident set), as `--ram`. 0 = no budget: the factory
  // returns the page-cache baseline (MmapExpertSource).
  uint64_t ram_budget_bytes = 0;
  // Eviction policy: lru, lfu, lfru, arc, static (needs `profile`). belady is simulator-only.
  std::string policy = "lru";
  cache::Scope scope = cache::Scope::Global;
  std::shared_ptr<const cache::UsageProfile> profile;  // static policy: the hot set's source
  uint32_t static_hot_slots = 0;                        // 0 = the policy's default (3/4 of a pool)
  // IO.
  prefetch::IoBackend io_backend = prefetch::IoBackend::Auto;
  bool direct = true;         // O_DIRECT (the reader falls back to buffered reads when refused)
  uint32_t queue_depth = 32;  // reads in flight
  // Prefetch (and speculative) reads in flight, at most queue_depth. Few, so a demand read or a more
  // urgent prefetch queues behind little. On the NVMe drive measured (fio, 2 MiB O_DIRECT reads) one
  // or two in flight already gave its full 2.0-2.4 GB/s; with 24 in flight (the old default) every
  // read finished as late as the last, and decode stalled 40% longer.
  uint32_t prefetch_inflight = 2;
  uint32_t io_threads = 4;    // pread backend workers
  std::shared_ptr<const prefetch::IoFaultPlan> faults;  // tests only
  std::function<void(std::string_view)> notice;         // one-line notices (fallbacks); may be empty
  // What the rest of the process needs resident (for the split).
  SessionOptions session;           // the sessions' options (KV cache and scratch are sized from them)
  uint32_t n_sessions = 1;          // sessions that will run at once
  uint64_t overhead_bytes = 64ull << 20;  // code, heap, tokenizer, thread stacks
  bool huge_pages = true;           // madvise(MADV_HUGEPAGE) on the arena (fewer TLB misses)
  // Seconds acquire() waits for a slot to be released when every slot is pinned by other threads,
  // before failing.
  double pinned_wait_seconds = 30.0;
  // Evict prefetched-and-not-yet-used entries before asking the policy. A planner that prefetches
  // several layers ahead turns this off (fresh prefetches would be the first victims of the current
  // layer's misses) and drops its stale prefetches itself (drop_prefetch).
  bool prefetched_unused_first = true;
};

// How the budget splits. All values in bytes unless noted.
struct StoreMemoryPlan {
  uint64_t budget = 0;          // StoreOptions::ram_budget_bytes
  uint64_t dense = 0;           // non-expert tensors + the file's header (mapped, resident when read)
  uint64_t sessions = 0;        // KV caches + scratch of n_sessions sessions
  uint64_t overhead = 0;        // fixed margin + the IO reader's own buffers
  uint64_t resident = 0;        // dense + sessions + overhead: what is not the arena
  uint64_t slot_bytes = 0;      // one slot (largest expert's Slot-mode footprint)
  uint32_t min_slots = 0;       // slots the store cannot run with fewer of
  uint64_t minimum = 0;         // resident + min_slots * slot_bytes: the smallest valid budget
  uint32_t n_experts = 0;       // routed experts in the model (all MoE layers)
  uint32_t slots = 0;           // slots the budget pays for (capped at n_experts); 0 when !fits()
  uint64_t arena = 0;           // slots * slot_bytes
  bool fits() const noexcept { return budget >= minimum; }
  std::string to_text() const;  // one line: "budget X = dense A + sessions B + overhead C + arena N x S"
};

// KV cache + scratch bytes of one Session with options `o` on model `m` (an upper estimate of what
// Session's constructor allocates, plus the kernels' per-thread activation scratch).
uint64_t session_memory_bytes(const Model& m, const SessionOptions& o);
// The split of o.ram_budget_bytes for model `m`. Never throws for a small budget (fits() is false).
StoreMemoryPlan plan_store_memory(const Model& m, const StoreOptions& o);

// Counters since construction or reset_stats().
struct StoreStats {
  uint64_t acquires = 0;        // acquire() calls
  uint64_t hits = 0;            // found resident
  uint64_t inflight_hits = 0;   // found in flight (waited for a prefetch or another thread's fetch)
  uint64_t misses = 0;          // demand fetches
  uint64_t evictions = 0;
  uint64_t prefetches = 0;      // prefetch reads issued
  uint64_t prefetch_hits = 0;   // prefetched experts later used
  uint64_t prefetch_wasted = 0; // prefetched experts evicted unused
  uint64_t prefetch_cancelled = 0;
  uint64_t io_errors = 0;       // reads that failed (demand or prefetch)
  uint64_t bytes_read = 0;      // bytes the kernel read (aligned supersets included)
  uint64_t payload_bytes = 0;   // expert bytes that became resident
  double stall_seconds = 0;     // time acquire() spent waiting (IO or a free slot)
  std::vector<double> stall_seconds_per_layer;  // the same, per layer
  cache::TierStats tier;        // the residency manager's snapshot
  prefetch::IoStats io;         // the reader's snapshot
  double hit_rate() const noexcept {
    const uint64_t n = hits + inflight_hits + misses;
    return n ? double(hits) / double(n) : 0.0;
  }
  std::string to_text() const;  // one line for `moe run`/`bench`
};

// An ExpertSource backed by a DRAM cache of expert slots filled from the model file.
class CachedExpertSource final : public ExpertSource {
 public:
  // Plans the memory (plan_store_memory), allocates and registers the arena, opens the reader.
  // Throws moe::Error: InvalidArgument for a budget below the minimum (the message states the minimum
  // in bytes and GiB and the split), for an unknown policy or a static policy without a profile;
  // Io when the file cannot be opened; Unsupported for experts with per-expert biases.
  // `m` must outlive the source.
  CachedExpertSource(const Model& m, const StoreOptions& o);
  ~CachedExpertSource() override;  // drains in-flight reads; every acquire must have been released
  CachedExpertSource(const CachedExpertSource&) = delete;
  CachedExpertSource& operator=(const CachedExpertSource&) = delete;

  // Views into the expert's slot, valid until release(). Hit: pins and returns. In flight: waits for
  // the read. Miss: reserves a slot (evicting per the policy), reads the three slices as one Demand
  // request and waits. Throws moe::Error(Io) naming the file, offset and cause when the read fails
  // (the slot is freed; the source stays usable), InvalidArgument when every slot stays pinned.
  // PRECONDITION: layer is a MoE layer, expert < its n_expert.
  ExpertWeights acquire(uint32_t layer, uint32_t expert) override;
  void release(uint32_t layer, uint32_t expert) noexcept override;
  // Resident now (a hit for the next acquire unless evicted first). Never blocks on IO.
  bool resident(uint32_t layer, uint32_t expert) const noexcept override;
  // Starts the demand read of an absent expert now (a slot is reserved unpinned, evicting per the
  // policy; the access that follows counts as the miss it is). An in-flight prefetch of it becomes
  // uncancellable. Does nothing when no slot is free or the submit fails (acquire retries).
  void will_acquire(uint32_t layer, uint32_t expert) noexcept override;

  // Starts an asynchronous read of the expert at Prefetch priority (a demand read overtakes queued
  // prefetches). Returns true when a read was started or the expert is already resident / in flight;
  // false when no slot could be had (every slot pinned or in flight) — prefetch is best effort.
  // Completion marks the expert resident from the IO thread; an error only frees the slot (a later
  // acquire reads it again on demand). `speculative`: at the reader's lowest priority, behind every
  // queued prefetch (guesses further ahead, read while the link would otherwise idle). A read that is
  // still queued moves up when it becomes more urgent: a non-speculative prefetch() of an expert being
  // read speculatively raises it to Prefetch priority, and acquire() / will_acquire() raise a queued
  // prefetch to Demand (IoReader::raise).
  bool prefetch(uint32_t layer, uint32_t expert, bool speculative = false);
  // Cancels a prefetch that is still queued or in flight and not yet waited for by an acquire.
  // Returns true when a cancellation was requested (the slot is freed when the reader delivers it).
  bool cancel_prefetch(uint32_t layer, uint32_t expert);
  // A prefetch turned out stale: cancels it when still in flight (as cancel_prefetch), or frees its
  // slot when it is resident and unpinned. Returns true when either happened. The caller must know
  // the entry was prefetched and not used since (the store does not check).
  bool drop_prefetch(uint32_t layer, uint32_t expert);
  // Blocks until no read is in flight (tests, shutdown of a planner).
  void wait_idle();

  cache::EntryState state(uint32_t layer, uint32_t expert) const;  // Peek (no accounting)
  const StoreMemoryPlan& plan() const noexcept;
  StoreStats stats() const;
  void reset_stats();
  prefetch::IoBackend io_backend() const;
  bool io_direct() const;
  const std::string& policy_name() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The source `moe run --ram` uses: MmapExpertSource when o.ram_budget_bytes == 0, else a
// CachedExpertSource (same errors as its constructor). `m` must outlive the source.
std::unique_ptr<ExpertSource> make_expert_source(const Model& m, const StoreOptions& o);

}  // namespace moe
