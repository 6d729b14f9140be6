// runtime/src/store/expert_store.cpp — CachedExpertSource: the DRAM expert cache over the model file
// (moe/expert_store.h), the memory plan of `--ram`, and the make_expert_source factory.
//
// Locking: `mu_` (this file) guards the per-slot IO records, the pinned handles handed out by
// acquire(), and the counters; the ResidencyManager has its own mutex. Order: mu_ -> manager (the
// manager never calls back). IO callbacks run on the reader's threads and take mu_ for their whole
// body (Complete/AbortFetch + bookkeeping + notify), so a waiter that checks the entry's state under
// mu_ cannot miss the wake-up. reader->submit() is called without mu_; reader->cancel() may be called
// under it (the reader never delivers a completion from inside cancel()).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <vector>

#include "moe/error.h"
#include "moe/expert_store.h"

namespace moe {

namespace {

using cache::EntryState;
using cache::ExpertKey;
using cache::kNoSlot;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kPage = 4096;
// The reader's bounce arena: Slot-mode reads never bounce, so keep it one small block (it is
// registered with io_uring, which pins it resident).
constexpr uint64_t kBounceBytes = 64 * 1024;

double gib(uint64_t b) { return double(b) / double(1ull << 30); }
double mib(uint64_t b) { return double(b) / double(1ull << 20); }

// The Slot-mode layout of one expert: where each slice's aligned superset starts in the slot.
// Pieces: gate, up, down, then the optional biases (gpt-oss) gate_bias, up_bias, down_bias; an absent
// piece (nbytes 0) takes no room.
constexpr int kPieces = 6;
struct SlotLayout {
  uint64_t off[kPieces] = {};  // byte offset of each slice's superset in the slot
  uint64_t total = 0;          // bytes of the slot used
};

std::array<const Slice*, kPieces> pieces_of(const ExpertSlices& s) {
  return {&s.gate, &s.up, &s.down, &s.gate_bias, &s.up_bias, &s.down_bias};
}

SlotLayout layout_of(const ExpertSlices& s) {
  SlotLayout l;
  const auto sl = pieces_of(s);
  for (int i = 0; i < kPieces; ++i) {
    l.off[i] = l.total;
    if (sl[i]->nbytes) l.total += prefetch::slot_bytes(sl[i]->offset, sl[i]->nbytes);
  }
  return l;
}

// Pins held by the calling thread, per source (a source's acquire() that finds every slot pinned
// fails at once when all those pins are this thread's own). Sources are named by a process-unique id,
// not their address, so a later source at the same address never inherits a stale count.
struct ThreadPins {
  uint64_t src;
  uint32_t n;
};
thread_local std::vector<ThreadPins> t_pins;
std::atomic<uint64_t> g_next_source_id{1};

uint32_t& thread_pins(uint64_t src) {
  for (ThreadPins& p : t_pins)
    if (p.src == src) return p.n;
  t_pins.push_back({src, 0});
  return t_pins.back().n;
}

}  // namespace

// ---- memory plan --------------------------------------------------------------------------------

uint64_t session_memory_bytes(const Model& m, const SessionOptions& o) {
  const ModelSpec& s = m.spec();
  const uint64_t n_ctx = o.n_ctx ? o.n_ctx : std::min<uint32_t>(s.n_ctx_train ? s.n_ctx_train : 4096, 4096);
  const uint64_t B = std::max<uint32_t>(1, o.n_batch), E = s.n_embd;
  const uint64_t T = uint64_t(std::max(1, o.n_threads));
  const uint64_t HQ = uint64_t(s.n_head) * s.head_dim_k, HK = uint64_t(s.n_head_kv) * s.head_dim_k,
                 HV = uint64_t(s.n_head_kv) * s.head_dim_v, HO = uint64_t(s.n_head) * s.head_dim_v;
  uint64_t max_ff = 0, max_e = 1, max_k = 1;
  for (uint32_t il = 0; il < s.n_layer && il < s.layers.size(); ++il) {
    const LayerSpec& ls = s.layers[il];
    max_ff = std::max<uint64_t>({max_ff, ls.n_ff_expert, ls.n_ff_shared, ls.n_ff_dense});
    if (ls.is_moe) {
      max_e = std::max<uint64_t>(max_e, ls.n_expert);
      max_k = std::max<uint64_t>(max_k, ls.n_expert_used);
    }
  }
  const bool mla = s.kv_lora_rank > 0;  // latent attention: one cached row per position, no V cache
  const uint64_t kv = uint64_t(s.n_layer) * n_ctx * (HK + (mla ? 0 : HV)) * 2;  // f16
  uint64_t floats = B * (5 * E + HQ + HK + HV + HO + max_e + 2 * max_ff + 1) + T * n_ctx + 4 * max_e +
                    s.n_vocab + 4 * B * max_k + 2 * (max_e + 1) + 2 * uint64_t(s.n_layer) * max_k + s.head_dim_k +
                    std::min<uint64_t>(B, 4) * max_k * E + max_e;  // resident-first outputs, flags
  if (s.fused_qkv) floats += B * (HQ + HK + HV);  // Session::qkv_
  if (s.moe_parallel_dense) floats += B * E;     // Session::x0_
  if (mla) {  // Session::attention_mla's scratch
    const uint64_t H = s.n_head, dk = s.mla_head_dim_k, dv = s.mla_head_dim_v, r = s.kv_lora_rank,
                   nope = dk - s.n_rot;
    floats += B * (H * dk + s.q_lora_rank + H * dv) + H * B * (std::max(nope, r) + std::max(r, dv));
  }
  // The kernels' thread_local activation scratch: ~1.25 bytes per activation per calling thread.
  const uint64_t act =
      T * B * std::max<uint64_t>({E, max_ff, HO, s.q_lora_rank, uint64_t(s.n_head) * s.mla_head_dim_v}) * 2;
  return kv + floats * 4 + act;
}

StoreMemoryPlan plan_store_memory(const Model& m, const StoreOptions& o) {
  StoreMemoryPlan p;
  const ModelSpec& s = m.spec();
  const ExpertTable& t = m.experts();
  p.budget = o.ram_budget_bytes;
  p.dense = t.dense_bytes() + m.file().data_offset();
  p.sessions = uint64_t(std::max<uint32_t>(1, o.n_sessions)) * session_memory_bytes(m, o.session);
  p.overhead = o.overhead_bytes + kBounceBytes;
  p.resident = p.dense + p.sessions + p.overhead;
  uint32_t n_moe = 0, max_k = 0;
  for (uint32_t il = 0; il < t.n_layer(); ++il) {
    if (!t.is_moe_layer(il)) continue;
    ++n_moe;
    max_k = std::max(max_k, s.layers[il].n_expert_used);
    for (uint32_t e = 0; e < s.layers[il].n_expert; ++e) {
      const ExpertSlices* es = t.at(il, e);
      if (!es) continue;
      ++p.n_experts;
      p.slot_bytes = std::max(p.slot_bytes, layout_of(*es).total);
    }
  }
  max_k = std::max<uint32_t>(max_k, 1);
  // Global: one token's experts of one layer must fit at once. Layer scope: every layer's quota must.
  p.min_slots = o.scope == cache::Scope::Layer ? max_k * std::max<uint32_t>(n_moe, 1) : max_k;
  p.min_slots = std::min(p.min_slots, std::max<uint32_t>(p.n_experts, 1));
  p.minimum = p.resident + uint64_t(p.min_slots) * p.slot_bytes;
  if (p.fits() && p.slot_bytes > 0) {
    const uint64_t n = (p.budget - p.resident) / p.slot_bytes;
    p.slots = static_cast<uint32_t>(std::min<uint64_t>(n, p.n_experts));
    p.arena = uint64_t(p.slots) * p.slot_bytes;
  }
  return p;
}

std::string StoreMemoryPlan::to_text() const {
  return fmt::format("budget {:.1f} MiB = dense {:.1f} MiB + sessions {:.1f} MiB + overhead {:.1f} MiB + "
                     "arena {} x {:.2f} MiB slots ({:.1f} MiB); minimum {:.1f} MiB ({:.3f} GiB)",
                     mib(budget), mib(dense), mib(sessions), mib(overhead), slots, mib(slot_bytes), mib(arena),
                     mib(minimum), gib(minimum));
}

std::string StoreStats::to_text() const {
  return fmt::format("experts: {} acquires, hit rate {:.1f}% ({} hits, {} in-flight, {} misses), {} evictions, "
                     "{:.1f} MiB read, stall {:.3f} s, prefetch {} issued / {} used / {} wasted / {} cancelled / {} "
                     "raised",
                     acquires, 100.0 * hit_rate(), hits, inflight_hits, misses, evictions, mib(bytes_read),
                     stall_seconds, prefetches, prefetch_hits, prefetch_wasted, prefetch_cancelled, io.raised);
}

// ---- the source ---------------------------------------------------------------------------------

struct CachedExpertSource::Impl {
  // One slot's current read (valid while `active`).
  struct SlotIo {
    uint64_t gen = 0;        // bumped at each fetch of the slot
    uint64_t ticket = 0;     // 0 until submit() returned
    bool active = false;     // a read is in flight
    bool prefetch = false;   // issued by prefetch()
    bool demanded = false;   // an acquire waits for it (not cancellable then)
    bool cancel_req = false; // cancel_prefetch() came before the ticket was known
    prefetch::IoPriority raise_to = prefetch::IoPriority::Speculative;  // raise_locked() before the ticket
    prefetch::IoStatus status;  // the last completion's status (read by a waiter holding a pin)
  };

  const Model& m;
  StoreOptions opt;
  const uint64_t id = g_next_source_id.fetch_add(1);  // names this source in t_pins
  StoreMemoryPlan plan;
  std::string path;
  uint32_t n_layer = 0, n_expert = 0;
  std::vector<SlotLayout> layout;  // per dense key (layer * n_expert + expert)
  uint8_t* arena = nullptr;
  size_t arena_len = 0;
  std::unique_ptr<cache::ResidencyManager> mgr;
  std::unique_ptr<prefetch::IoReader> reader;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::vector<SlotIo> io;                         // per slot
  std::vector<uint32_t> io_slot_of_key;           // per key: slot of its read in flight, or kNoSlot
  std::vector<std::vector<cache::Handle>> held;   // per key: pins handed out by acquire()
  uint32_t inflight = 0;                          // reads in flight
  uint32_t held_total = 0;                        // pins handed out and not yet released
  uint64_t events = 0;                            // completions + releases (wakes slot waiters)
  // counters (under mu)
  uint64_t acquires = 0, prefetches = 0, prefetch_cancelled = 0, io_errors = 0;
  uint64_t stall_ns = 0;
  std::vector<uint64_t> stall_ns_layer;           // per layer (sized at construction)
  prefetch::IoStats io_base;  // the reader's (cumulative) stats at the last reset_stats()

  Impl(const Model& model, const StoreOptions& o) : m(model), opt(o) {}

  uint32_t key_index(uint32_t l, uint32_t e) const { return l * n_expert + e; }
  uint8_t* slot_base(uint32_t slot) const { return arena + uint64_t(slot) * plan.slot_bytes; }

  ExpertWeights views(uint32_t layer, uint32_t expert, uint32_t slot) const {
    const ExpertSlices& es = *m.experts().at(layer, expert);
    const SlotLayout& l = layout[key_index(layer, expert)];
    const uint8_t* base = slot_base(slot);
    const uint32_t E = m.spec().n_embd, F = m.spec().layers[layer].n_ff_expert;
    auto view = [&](const Slice& s, uint64_t off, uint32_t rows, uint32_t cols) {
      WeightView v;
      v.data = base + off + prefetch::slot_inner_offset(s.offset);
      v.type = s.type;
      v.rows = rows;
      v.cols = cols;
      v.nbytes = s.nbytes;
      return v;
    };
    ExpertWeights w{view(es.gate, l.off[0], F, E), view(es.up, l.off[1], F, E), view(es.down, l.off[2], E, F),
                    {}, {}, {}};
    if (es.gate_bias.nbytes) w.gate_bias = view(es.gate_bias, l.off[3], 1, F);
    if (es.up_bias.nbytes) w.up_bias = view(es.up_bias, l.off[4], 1, F);
    if (es.down_bias.nbytes) w.down_bias = view(es.down_bias, l.off[5], 1, E);
    return w;
  }

  // Completion of a read (reader thread).
  void on_io(uint32_t slot, ExpertKey k, uint64_t gen, const prefetch::IoCompletion& c) {
    std::lock_guard<std::mutex> g(mu);
    SlotIo& s = io[slot];
    MOE_ASSERT(s.gen == gen && s.active, "store: completion of a slot that is not in flight");
    s.active = false;
    s.ticket = 0;
    s.status = c.status;
    io_slot_of_key[key_index(k.layer, k.expert)] = kNoSlot;
    if (c.status.ok()) {
      mgr->CompleteFetch(k);
    } else {
      if (c.status.code == ErrorCode::Cancelled) ++prefetch_cancelled;
      else ++io_errors;
      mgr->AbortFetch(k);
    }
    --inflight;
    ++events;
    cv.notify_all();
  }

  // The prefetch read into `slot` became more urgent (a guess confirmed, an acquire waits for it): what
  // of it is still queued moves up to `p` (under mu). Before submit() returned, the submitter does it.
  void raise_locked(uint32_t slot, prefetch::IoPriority p) {
    SlotIo& s = io[slot];
    if (!s.active || !s.prefetch) return;
    if (s.ticket == 0) {
      s.raise_to = std::min(s.raise_to, p);
      return;
    }
    reader->raise(s.ticket, p);
  }

  // An acquire waits (or will wait) for the read of key `ki` in flight into `slot`: it is no longer
  // cancellable, and what of it is still queued goes at demand priority (under mu).
  void demand_locked(uint32_t ki, uint32_t slot) {
    if (io_slot_of_key[ki] != slot) return;
    io[slot].demanded = true;
    raise_locked(slot, prefetch::IoPriority::Demand);
  }

  // Submits the read of `k` into `slot` (reserved InFlight by the caller). Throws on a submit error
  // after aborting the reservation.
  void start_read(ExpertKey k, uint32_t slot, bool is_prefetch,
                  prefetch::IoPriority prio = prefetch::IoPriority::Prefetch) {
    const uint32_t ki = key_index(k.layer, k.expert);
    uint64_t gen;
    {
      std::lock_guard<std::mutex> g(mu);
      SlotIo& s = io[slot];
      gen = ++s.gen;
      s.active = true;
      s.ticket = 0;
      s.prefetch = is_prefetch;
      s.demanded = !is_prefetch;
      s.cancel_req = false;
      s.raise_to = prefetch::IoPriority::Speculative;
      s.status = {};
      io_slot_of_key[ki] = slot;
      ++inflight;
      if (is_prefetch) ++prefetches;
    }
    const ExpertSlices& es = *m.experts().at(k.layer, k.expert);
    const SlotLayout& l = layout[ki];
    uint8_t* base = slot_base(slot);
    prefetch::IoPiece pieces[kPieces];
    size_t n_pieces = 0;
    const auto sl = pieces_of(es);
    for (int i = 0; i < kPieces; ++i)
      if (sl[i]->nbytes)
        pieces[n_pieces++] = {sl[i]->offset, sl[i]->nbytes, base + l.off[i], prefetch::IoPieceMode::Slot};
    uint64_t ticket = 0;
    try {
      ticket = reader->submit(std::span<const prefetch::IoPiece>(pieces, n_pieces),
                              is_prefetch ? prio : prefetch::IoPriority::Demand,
                              k.pack(), [this, slot, k, gen](const prefetch::IoCompletion& c) { on_io(slot, k, gen, c); });
    } catch (const Error& e) {
      std::lock_guard<std::mutex> g(mu);
      io[slot].active = false;
      io_slot_of_key[ki] = kNoSlot;
      --inflight;
      ++events;
      mgr->AbortFetch(k);
      cv.notify_all();
      throw Error(e.code(), fmt::format("cannot read expert {} of layer {} from '{}': {}", k.expert, k.layer, path,
                                        e.what()));
    }
    std::lock_guard<std::mutex> g(mu);
    SlotIo& s = io[slot];
    if (s.gen == gen && s.active) {
      s.ticket = ticket;
      if (s.cancel_req && !s.demanded) reader->cancel(ticket);
      else if (s.raise_to < prio) reader->raise(ticket, s.raise_to);
    }
  }
};

CachedExpertSource::CachedExpertSource(const Model& m, const StoreOptions& o) : impl_(std::make_unique<Impl>(m, o)) {
  Impl& I = *impl_;
  I.path = m.file().path();
  const ExpertTable& t = m.experts();
  I.n_layer = t.n_layer();
  I.n_expert = t.n_expert();
  I.plan = plan_store_memory(m, o);
  const StoreMemoryPlan& p = I.plan;
  if (p.n_experts == 0 || p.slot_bytes == 0)
    fail(ErrorCode::InvalidArgument, "'{}': the model has no routed experts to cache", I.path);
  if (!p.fits())
    fail(ErrorCode::InvalidArgument,
         "--ram {} bytes ({:.3f} GiB) is below the minimum of {} bytes ({:.3f} GiB) for '{}': dense weights "
         "{:.1f} MiB + KV cache and scratch {:.1f} MiB + overhead {:.1f} MiB + {} expert slots of {:.2f} MiB",
         p.budget, gib(p.budget), p.minimum, gib(p.minimum), I.path, mib(p.dense), mib(p.sessions),
         mib(p.overhead), p.min_slots, mib(p.slot_bytes));

  // Per-key layouts (a dense key table; keys of dense layers stay empty).
  I.layout.resize(size_t(I.n_layer) * I.n_expert);
  std::vector<bool> moe_layers(I.n_layer, false);
  for (uint32_t il = 0; il < I.n_layer; ++il) {
    if (!t.is_moe_layer(il)) continue;
    moe_layers[il] = true;
    for (uint32_t e = 0; e < I.n_expert; ++e) {
      const ExpertSlices* es = t.at(il, e);
      if (!es) continue;
      I.layout[I.key_index(il, e)] = layout_of(*es);
    }
  }

  // Residency manager.
  cache::TierConfig tc;
  tc.name = "dram";
  tc.budget_bytes = p.arena;
  tc.slot_bytes = p.slot_bytes;
  tc.n_layer = I.n_layer;
  tc.n_expert = I.n_expert;
  tc.moe_layers = moe_layers;
  tc.scope = o.scope;
  tc.prefetched_unused_first = o.prefetched_unused_first;
  cache::PolicyParams pp;
  pp.profile = o.profile;
  pp.static_hot_slots = o.static_hot_slots;
  if (o.policy == "belady")
    fail(ErrorCode::InvalidArgument, "cache policy 'belady' needs the future and exists only in `moe sim`");
  cache::CacheStatus cs;
  I.mgr = cache::ResidencyManager::create(tc, o.policy, pp, &cs);
  if (!I.mgr)
    fail(ErrorCode::InvalidArgument, "cannot create the expert cache (policy '{}'): {}", o.policy, cs.message);
  if (I.mgr->slot_count() < p.min_slots)
    fail(ErrorCode::InvalidArgument, "--ram {} bytes gives the cache {} usable slots, fewer than the {} needed",
         p.budget, I.mgr->slot_count(), p.min_slots);

  // The arena: one anonymous mapping (page-aligned, returned to the system on destruction).
  I.arena_len = std::max<uint64_t>(p.arena, kPage);
  void* a = ::mmap(nullptr, I.arena_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED)
    fail(ErrorCode::OutOfMemory, "cannot map a {:.1f} MiB expert arena for '{}'", mib(I.arena_len), I.path);
  I.arena = static_cast<uint8_t*>(a);
#ifdef MADV_HUGEPAGE
  if (o.huge_pages) ::madvise(a, I.arena_len, MADV_HUGEPAGE);  // why: experts are streamed, TLB misses add up
#endif
  I.io.resize(I.mgr->slot_count());
  I.io_slot_of_key.assign(I.layout.size(), kNoSlot);
  I.held.resize(I.layout.size());
  I.stall_ns_layer.assign(I.n_layer, 0);

  // The reader: registered regions of whole slots, at most 1 GiB each (io_uring's per-buffer limit).
  prefetch::IoOptions io;
  io.backend = o.io_backend;
  io.direct = o.direct;
  io.queue_depth = std::max<uint32_t>(1, o.queue_depth);
  io.pread_threads = std::max<uint32_t>(1, o.io_threads);
  io.prefetch_depth = std::max<uint32_t>(1, std::min(o.prefetch_inflight, io.queue_depth));
  io.bounce_slot_bytes = kBounceBytes;
  io.bounce_slots = 1;
  io.notice = o.notice;
  io.faults = o.faults;
  const uint64_t per_region = std::max<uint64_t>(1, (1ull << 30) / p.slot_bytes) * p.slot_bytes;
  for (uint64_t off = 0; off < p.arena; off += per_region)
    io.registered_regions.push_back({I.arena + off, size_t(std::min(per_region, p.arena - off))});
  try {
    I.reader = prefetch::IoReader::open(I.path, std::move(io));
  } catch (...) {
    ::munmap(I.arena, I.arena_len);
    I.arena = nullptr;
    throw;
  }

  // The mapping: no readahead into expert ranges (MADV_RANDOM on the whole map); the dense tensors
  // read ahead once (MADV_WILLNEED on their pages). Expert pages that loading the model pulled into
  // the page cache (mmap readahead around the norms it decoded can be MiBs per fault) are dropped:
  // they would be charged to the process's memory and never used (experts are read with O_DIRECT).
  const auto bytes = m.file().bytes();
  const uintptr_t map0 = reinterpret_cast<uintptr_t>(bytes.data());
  // Tensors of layers never run (glm4moe's NextN layers) are treated like the experts' ranges: not read.
  const auto& names = t.expert_tensor_names();
  const auto& skipped = t.skipped_tensor_names();
  const bool page_aligned_map = map0 % kPage == 0 && !bytes.empty();
  if (page_aligned_map) ::madvise(const_cast<uint8_t*>(bytes.data()), bytes.size(), MADV_RANDOM);
  for (const gguf::TensorInfo& ti : m.file().tensors()) {
    if (ti.nbytes == 0) continue;
    if (std::find(names.begin(), names.end(), ti.name) != names.end() ||
        std::find(skipped.begin(), skipped.end(), ti.name) != skipped.end()) {
      // Whole pages inside the tensor only: a boundary page may hold dense bytes.
      const uint64_t b = (ti.offset + kPage - 1) & ~(kPage - 1), e = (ti.offset + ti.nbytes) & ~(kPage - 1);
      if (e > b) ::posix_fadvise(I.reader->fd(), off_t(b), off_t(e - b), POSIX_FADV_DONTNEED);
    } else if (page_aligned_map) {
      const uint64_t b = ti.offset & ~(kPage - 1),
                     e = std::min<uint64_t>((ti.offset + ti.nbytes + kPage - 1) & ~(kPage - 1), bytes.size());
      if (e > b) ::madvise(reinterpret_cast<void*>(map0 + b), e - b, MADV_WILLNEED);
    }
  }
}

CachedExpertSource::~CachedExpertSource() {
  Impl& I = *impl_;
  if (I.reader) I.reader->shutdown();  // drains: every callback has run when it returns
  {
    std::lock_guard<std::mutex> g(I.mu);
    for (auto& v : I.held) v.clear();  // unreleased acquires (a caller bug): drop their pins
  }
  I.reader.reset();
  I.mgr.reset();
  if (I.arena) ::munmap(I.arena, I.arena_len);
}

ExpertWeights CachedExpertSource::acquire(uint32_t layer, uint32_t expert) {
  Impl& I = *impl_;
  MOE_ASSERT(layer < I.n_layer && expert < I.n_expert && I.m.experts().is_moe_layer(layer),
             "store: acquire of an expert outside the model's MoE layers");
  const ExpertKey k{layer, expert};
  const uint32_t ki = I.key_index(layer, expert);
  cache::Handle h = I.mgr->Lookup(k);
  if (h && h.state_at_lookup() == EntryState::Resident) {
    // Hit: the hot path (two uncontended locks, no allocation after the first use of the key).
    const uint32_t slot = h.slot();
    {
      std::lock_guard<std::mutex> g(I.mu);
      ++I.acquires;
      I.held[ki].push_back(std::move(h));
      ++I.held_total;
    }
    ++thread_pins(I.id);
    return I.views(layer, expert, slot);
  }

  const auto t0 = Clock::now();
  auto add_stall = [&] {
    const uint64_t ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
    std::lock_guard<std::mutex> g(I.mu);
    I.stall_ns += ns;
    I.stall_ns_layer[layer] += ns;
  };
  bool own_read = false;
  if (h) {  // in flight (a prefetch or another thread's read): make it uncancellable and urgent
    std::lock_guard<std::mutex> g(I.mu);
    I.demand_locked(ki, h.slot());
  }
  for (int attempt = 0;; ++attempt) {
    if (!h) {
      // Reserve a slot; when every slot is pinned or in flight, wait for a completion or a release.
      const auto wait_start = Clock::now();
      for (;;) {
        uint64_t ev0;  // events before the reservation attempt (a completion or release after it: retry)
        {
          std::lock_guard<std::mutex> g(I.mu);
          ev0 = I.events;
        }
        cache::Reservation r = I.mgr->BeginFetch(k, cache::FetchKind::Demand, /*pin=*/true,
                                                 I.m.experts().at(layer, expert)->bytes());
        if (r.status == cache::ReserveStatus::Reserved) {
          h = std::move(r.handle);
          own_read = true;
          try {
            I.start_read(k, h.slot(), /*is_prefetch=*/false);
          } catch (...) {
            h.release();
            add_stall();
            throw;
          }
          break;
        }
        if (r.status == cache::ReserveStatus::AlreadyPresent) {
          h = std::move(r.handle);
          std::lock_guard<std::mutex> g(I.mu);
          I.demand_locked(ki, h.slot());
          break;
        }
        if (r.status != cache::ReserveStatus::NoSlot) {
          add_stall();
          fail(ErrorCode::InvalidArgument, "expert cache of '{}': no slot for expert {} of layer {} ({})", I.path,
               expert, layer, cache::reserve_status_name(r.status));
        }
        std::unique_lock<std::mutex> lk(I.mu);
        if (I.events != ev0) continue;  // a read completed or a slot was released since: try again
        // Only a true self-deadlock fails at once: every slot pinned by this thread's acquires (a slot
        // reserved by another thread's prefetch that has not started its read yet is waited for).
        if (I.inflight == 0 && I.held_total <= thread_pins(I.id) && I.held_total >= I.mgr->slot_count()) {
          lk.unlock();
          add_stall();
          fail(ErrorCode::InvalidArgument,
               "expert cache of '{}': all {} slots are pinned by this thread's own acquires; --ram {} bytes is "
               "too small for the experts it holds at once", I.path, I.mgr->slot_count(), I.plan.budget);
        }
        const uint64_t ev = I.events;
        const auto limit = wait_start + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(I.opt.pinned_wait_seconds));
        if (!I.cv.wait_until(lk, limit, [&] { return I.events != ev; })) {
          lk.unlock();
          add_stall();
          fail(ErrorCode::InvalidArgument,
               "expert cache of '{}': every one of its {} slots stayed pinned for {:.0f} s; raise --ram", I.path,
               I.mgr->slot_count(), I.opt.pinned_wait_seconds);
        }
      }
    }
    // Wait for the data.
    EntryState st;
    prefetch::IoStatus status;
    {
      std::unique_lock<std::mutex> lk(I.mu);
      I.cv.wait(lk, [&] { return I.mgr->state(h) != EntryState::InFlight; });
      st = I.mgr->state(h);
      if (st == EntryState::Aborted) status = I.io[h.slot()].status;
    }
    if (st == EntryState::Resident) break;
    h.release();
    if ((own_read && status.code != ErrorCode::Cancelled) || attempt >= 8) {
      add_stall();
      fail(status.code == ErrorCode::Ok ? ErrorCode::Io : status.code, "cannot read expert {} of layer {} from '{}': {}",
           expert, layer, I.path, status.message.empty() ? std::string("the read was abandoned") : status.message);
    }
    own_read = false;  // a prefetch failed or was cancelled under us: read it on demand
  }
  const uint32_t slot = h.slot();
  {
    std::lock_guard<std::mutex> g(I.mu);
    ++I.acquires;
    const uint64_t ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
    I.stall_ns += ns;
    I.stall_ns_layer[layer] += ns;
    I.held[ki].push_back(std::move(h));
    ++I.held_total;
  }
  ++thread_pins(I.id);
  return I.views(layer, expert, slot);
}

void CachedExpertSource::release(uint32_t layer, uint32_t expert) noexcept {
  Impl& I = *impl_;
  if (layer >= I.n_layer || expert >= I.n_expert) return;
  const uint32_t ki = I.key_index(layer, expert);
  cache::Handle h;
  {
    std::lock_guard<std::mutex> g(I.mu);
    auto& v = I.held[ki];
    if (v.empty()) return;  // not acquired (a caller bug): nothing to drop
    h = std::move(v.back());
    v.pop_back();
    --I.held_total;
    h.release();
    ++I.events;
  }
  I.cv.notify_all();
  uint32_t& n = thread_pins(I.id);
  if (n) --n;
}

bool CachedExpertSource::prefetch(uint32_t layer, uint32_t expert, bool speculative) {
  Impl& I = *impl_;
  if (layer >= I.n_layer || expert >= I.n_expert || !I.m.experts().is_moe_layer(layer)) return false;
  const ExpertKey k{layer, expert};
  cache::Reservation r = I.mgr->BeginFetch(k, cache::FetchKind::Prefetch, /*pin=*/false,
                                           I.m.experts().at(layer, expert)->bytes());
  if (r.status == cache::ReserveStatus::AlreadyPresent) {
    if (!speculative) {  // a speculative read now guessed one layer ahead: read it at prefetch priority
      std::lock_guard<std::mutex> g(I.mu);
      if (I.io_slot_of_key[I.key_index(layer, expert)] == r.slot) I.raise_locked(r.slot, prefetch::IoPriority::Prefetch);
    }
    return true;
  }
  if (r.status != cache::ReserveStatus::Reserved) return false;
  I.start_read(k, r.slot, /*is_prefetch=*/true,
               speculative ? prefetch::IoPriority::Speculative : prefetch::IoPriority::Prefetch);
  return true;
}

void CachedExpertSource::will_acquire(uint32_t layer, uint32_t expert) noexcept {
  Impl& I = *impl_;
  if (layer >= I.n_layer || expert >= I.n_expert || !I.m.experts().is_moe_layer(layer)) return;
  const ExpertKey k{layer, expert};
  const uint32_t ki = I.key_index(layer, expert);
  try {
    cache::Reservation r = I.mgr->BeginFetch(k, cache::FetchKind::EarlyDemand, /*pin=*/false,
                                             I.m.experts().at(layer, expert)->bytes());
    if (r.status == cache::ReserveStatus::AlreadyPresent) {
      std::lock_guard<std::mutex> g(I.mu);
      I.demand_locked(ki, r.slot);
    } else if (r.status == cache::ReserveStatus::Reserved) {
      I.start_read(k, r.slot, /*is_prefetch=*/false);
    }
  } catch (...) {
    // start_read aborted the reservation; the acquire reads again and reports the cause.
  }
}

bool CachedExpertSource::cancel_prefetch(uint32_t layer, uint32_t expert) {
  Impl& I = *impl_;
  if (layer >= I.n_layer || expert >= I.n_expert) return false;
  std::lock_guard<std::mutex> g(I.mu);
  const uint32_t slot = I.io_slot_of_key[I.key_index(layer, expert)];
  if (slot == kNoSlot) return false;
  Impl::SlotIo& s = I.io[slot];
  if (!s.active || !s.prefetch || s.demanded) return false;
  if (s.ticket == 0) {
    s.cancel_req = true;  // the submitter cancels once it knows the ticket
    return true;
  }
  return I.reader->cancel(s.ticket) != prefetch::CancelResult::NotFound;
}

bool CachedExpertSource::drop_prefetch(uint32_t layer, uint32_t expert) {
  Impl& I = *impl_;
  if (layer >= I.n_layer || expert >= I.n_expert) return false;
  if (cancel_prefetch(layer, expert)) return true;
  std::lock_guard<std::mutex> g(I.mu);  // why under mu: an acquire pins under it, so no race with a pin
  if (!I.held[I.key_index(layer, expert)].empty()) return false;
  return I.mgr->Erase(ExpertKey{layer, expert});
}

void CachedExpertSource::wait_idle() {
  Impl& I = *impl_;
  std::unique_lock<std::mutex> lk(I.mu);
  I.cv.wait(lk, [&] { return I.inflight == 0; });
}

bool CachedExpertSource::resident(uint32_t layer, uint32_t expert) const noexcept {
  const Impl& I = *impl_;
  if (layer >= I.n_layer || expert >= I.n_expert) return false;
  return I.mgr->Peek(ExpertKey{layer, expert}) == EntryState::Resident;
}

cache::EntryState CachedExpertSource::state(uint32_t layer, uint32_t expert) const {
  return impl_->mgr->Peek(ExpertKey{layer, expert});
}

const StoreMemoryPlan& CachedExpertSource::plan() const noexcept { return impl_->plan; }

StoreStats CachedExpertSource::stats() const {
  const Impl& I = *impl_;
  StoreStats s;
  s.tier = I.mgr->stats();
  s.io = I.reader->stats();
  {
    std::lock_guard<std::mutex> g(I.mu);
    const prefetch::IoStats& b = I.io_base;
    s.io.requests -= b.requests;
    s.io.completed -= b.completed;
    s.io.failed -= b.failed;
    s.io.cancelled -= b.cancelled;
    s.io.bytes_requested -= b.bytes_requested;
    s.io.bytes_read -= b.bytes_read;
    s.io.bytes_bounced -= b.bytes_bounced;
    s.io.reads -= b.reads;
    s.io.resubmits -= b.resubmits;
    s.io.retries -= b.retries;
    s.io.raised -= b.raised;
    s.io.busy_seconds -= b.busy_seconds;
    s.acquires = I.acquires;
    s.prefetches = I.prefetches;
    s.prefetch_cancelled = I.prefetch_cancelled;
    s.io_errors = I.io_errors;
    s.stall_seconds = double(I.stall_ns) * 1e-9;
    s.stall_seconds_per_layer.resize(I.stall_ns_layer.size());
    for (size_t l = 0; l < I.stall_ns_layer.size(); ++l) s.stall_seconds_per_layer[l] = double(I.stall_ns_layer[l]) * 1e-9;
  }
  const cache::LayerStats t = s.tier.total();
  s.hits = t.hits;
  s.inflight_hits = t.inflight_hits;
  s.misses = t.misses;
  s.evictions = t.evictions;
  s.prefetch_hits = t.prefetch_hits;
  s.prefetch_wasted = t.prefetch_wasted;
  s.payload_bytes = t.bytes_in;
  s.bytes_read = s.io.bytes_read;
  return s;
}

void CachedExpertSource::reset_stats() {
  Impl& I = *impl_;
  I.mgr->reset_stats();
  const prefetch::IoStats io = I.reader->stats();
  std::lock_guard<std::mutex> g(I.mu);
  I.acquires = I.prefetches = I.prefetch_cancelled = I.io_errors = 0;
  I.stall_ns = 0;
  std::fill(I.stall_ns_layer.begin(), I.stall_ns_layer.end(), uint64_t(0));
  I.io_base = io;  // the reader's counters are cumulative: stats() subtracts this snapshot
}

prefetch::IoBackend CachedExpertSource::io_backend() const { return impl_->reader->backend(); }
bool CachedExpertSource::io_direct() const { return impl_->reader->direct(); }
const std::string& CachedExpertSource::policy_name() const noexcept { return impl_->opt.policy; }

std::unique_ptr<ExpertSource> make_expert_source(const Model& m, const StoreOptions& o) {
  if (o.ram_budget_bytes == 0) return std::make_unique<MmapExpertSource>(m);
  return std::make_unique<CachedExpertSource>(m, o);
}

}  // namespace moe
