// prefetch/src/io.cpp — IoReader: opening (O_DIRECT with buffered fallback), request planning
// (coalescing, alignment, chunking), the priority queues, completion logic, cancellation, shutdown,
// fault hooks and statistics. The backends (io_uring.cpp, io_pread.cpp) only move chunks.
// Thread-safety: see moe/prefetch/io.h (public) and io_detail.h (which fields the mutex guards).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <system_error>

#include "moe/prefetch/io_detail.h"

namespace moe::prefetch {

using detail::Chunk;
using detail::Clock;
using detail::Extent;
using detail::Next;
using detail::Request;

namespace {

constexpr uint64_t align_down(uint64_t v) { return v & ~(kIoAlign - 1); }
constexpr uint64_t align_up(uint64_t v) { return (v + kIoAlign - 1) & ~(kIoAlign - 1); }
bool aligned_ptr(const void* p) { return (reinterpret_cast<uintptr_t>(p) & (kIoAlign - 1)) == 0; }

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

}  // namespace

const char* to_string(IoBackend b) {
  switch (b) {
    case IoBackend::Auto: return "auto";
    case IoBackend::Uring: return "io_uring";
    case IoBackend::Pread: return "pread";
  }
  return "?";
}

// ---- fault hooks ---------------------------------------------------------------------------------

const IoFaultRule* detail::FaultHooks::match(const Chunk& c, IoFaultRule::Kind kind) const {
  if (!plan_) return nullptr;
  for (const IoFaultRule& r : plan_->rules) {
    if (r.kind == kind && r.request == c.req->ordinal && (r.chunk < 0 || uint32_t(r.chunk) == c.index))
      return &r;
  }
  return nullptr;
}

uint32_t detail::FaultHooks::submit_len(const Chunk& c, uint32_t len, bool direct) const {
  if (!active() || c.attempts != 0) return len;
  const IoFaultRule* r = match(c, IoFaultRule::Kind::ShortRead);
  if (!r) return len;
  uint64_t n = std::min<uint64_t>(len, r->value);
  if (direct) n = std::max<uint64_t>(kIoAlign, align_down(n));  // O_DIRECT needs whole blocks
  return uint32_t(std::min<uint64_t>(n, len));
}

int detail::FaultHooks::complete_res(const Chunk& c, int res, uint64_t& delay_ms) const {
  delay_ms = 0;
  if (!active()) return res;
  const uint32_t attempt = c.attempts - 1;
  if (const IoFaultRule* r = match(c, IoFaultRule::Kind::Delay); r && attempt == 0) delay_ms = r->value;
  if (const IoFaultRule* r = match(c, IoFaultRule::Kind::Error); r && attempt < r->times)
    return -int(r->value);
  if (const IoFaultRule* r = match(c, IoFaultRule::Kind::Again); r && attempt < r->times) return -EAGAIN;
  return res;
}

// ---- opening -------------------------------------------------------------------------------------

IoReader::IoReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

IoReader::~IoReader() { shutdown(); }

IoReader::Impl::~Impl() {
  backend.reset();  // the ring goes before the fd and arena it registered
  if (fd >= 0) ::close(fd);
  std::free(arena);
}

std::unique_ptr<IoReader> IoReader::open(const std::string& path, IoOptions options) {
  auto im = std::make_unique<Impl>();
  im->path = path;
  im->opt = std::move(options);
  IoOptions& o = im->opt;
  im->faults = detail::FaultHooks(o.faults);
  const IoFaultPlan* plan = o.faults.get();

  if (o.queue_depth == 0 || o.pread_threads == 0)
    fail(ErrorCode::InvalidArgument, "io: queue_depth and pread_threads must be > 0 (opening '{}')", path);
  if (o.chunk_bytes < kIoAlign || o.chunk_bytes % kIoAlign || o.chunk_bytes > (1ull << 30) ||
      o.speculative_chunk_bytes < kIoAlign || o.speculative_chunk_bytes % kIoAlign ||
      o.bounce_slot_bytes < kIoAlign || o.bounce_slot_bytes % kIoAlign || o.bounce_slot_bytes > (1ull << 30) ||
      o.bounce_slots == 0)
    fail(ErrorCode::InvalidArgument,
         "io: chunk_bytes and bounce_slot_bytes must be multiples of {} up to 1 GiB, bounce_slots > 0 "
         "(opening '{}')", kIoAlign, path);

  const int base_flags = O_RDONLY | O_CLOEXEC;
  if (o.direct) {
    int fd = -1;
    if (plan && plan->refuse_direct) errno = EINVAL;
    else fd = ::open(path.c_str(), base_flags | O_DIRECT);
    if (fd >= 0) {
      im->fd = fd;
      im->direct = true;
    } else if (errno != EINVAL) {
      fail(ErrorCode::Io, "cannot open '{}': {}", path, errno_text(errno));
    } else {
      im->notice(fmt::format("moe: '{}': the filesystem refuses O_DIRECT; using buffered reads "
                             "(page cache dropped after each read)", path));
    }
  }
  if (im->fd < 0) {
    im->fd = ::open(path.c_str(), base_flags);
    if (im->fd < 0) fail(ErrorCode::Io, "cannot open '{}': {}", path, errno_text(errno));
    ::posix_fadvise(im->fd, 0, 0, POSIX_FADV_RANDOM);  // why: readahead would fill the page cache
  }
  struct stat sb{};
  if (::fstat(im->fd, &sb) != 0) fail(ErrorCode::Io, "cannot stat '{}': {}", path, errno_text(errno));
  im->size = uint64_t(sb.st_size);

  if (im->direct) {
    im->arena_bytes = size_t(o.bounce_slots) * o.bounce_slot_bytes;
    void* p = nullptr;
    if (posix_memalign(&p, kIoAlign, im->arena_bytes) != 0)
      fail(ErrorCode::OutOfMemory, "io: cannot allocate a {} byte bounce arena for '{}'", im->arena_bytes, path);
    im->arena = static_cast<uint8_t*>(p);
    im->free_slots.resize(o.bounce_slots);
    std::iota(im->free_slots.rbegin(), im->free_slots.rend(), 0u);  // pop_back hands out slot 0 first
  }
  for (const IoRegion& r : o.registered_regions)
    if (!aligned_ptr(r.base) || r.bytes == 0)
      fail(ErrorCode::InvalidArgument, "io: registered region {} (+{} bytes) is not {}-aligned", r.base, r.bytes,
           kIoAlign);

  if (o.backend != IoBackend::Pread) {
    std::string why;
    im->backend = detail::make_uring_backend(*im, why);
    if (!im->backend) {
      if (o.backend == IoBackend::Uring)
        fail(ErrorCode::Unsupported, "io: io_uring was requested for '{}' but is unavailable: {}", path, why);
      im->notice(fmt::format("moe: io_uring unavailable ({}); using the pread thread pool", why));
    } else {
      im->kind = IoBackend::Uring;
    }
  }
  if (!im->backend) {
    im->kind = IoBackend::Pread;
    im->backend = detail::make_pread_backend(*im);
  }
  im->depth = im->kind == IoBackend::Uring ? o.queue_depth : std::min(o.queue_depth, o.pread_threads);
  im->prefetch_depth = o.prefetch_depth ? std::min(o.prefetch_depth, im->depth)
                                        : std::max<uint32_t>(1, im->depth - std::max<uint32_t>(1, im->depth / 4));
  if (im->depth == 1) im->prefetch_depth = 1;
  im->backend->start();
  return std::unique_ptr<IoReader>(new IoReader(std::move(im)));
}

// ---- planning ------------------------------------------------------------------------------------

void IoReader::Impl::build(Request& r) {
  std::vector<uint32_t> order(r.pieces.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return r.pieces[a].offset < r.pieces[b].offset; });
  int last_direct = -1, last_bounce = -1;
  auto add_direct = [&](uint64_t off, uint64_t len, uint64_t need_end, uint8_t* buf) {
    if (last_direct >= 0) {
      Extent& e = r.extents[size_t(last_direct)];
      // Coalesce: adjacent in the file and in memory -> one larger read.
      if (e.off + e.len == off && e.buf + e.len == buf) {
        e.len += len;
        e.need_end = std::max(e.need_end, need_end);
        return;
      }
    }
    Extent e;
    e.off = off, e.len = len, e.need_end = need_end, e.buf = buf;
    r.extents.push_back(std::move(e));
    last_direct = int(r.extents.size() - 1);
  };
  for (uint32_t i : order) {
    const IoPiece& p = r.pieces[i];
    auto* dst = static_cast<uint8_t*>(p.dst);
    if (!direct) {  // buffered: exact ranges straight into place
      uint8_t* at = p.mode == IoPieceMode::Slot ? dst + slot_inner_offset(p.offset) : dst;
      add_direct(p.offset, p.length, p.offset + p.length, at);
      continue;
    }
    const uint64_t a0 = align_down(p.offset), a1 = align_up(p.offset + p.length);
    if (p.mode == IoPieceMode::Slot) {
      add_direct(a0, a1 - a0, p.offset + p.length, dst);
    } else if (p.offset % kIoAlign == 0 && p.length % kIoAlign == 0 && aligned_ptr(dst)) {
      add_direct(p.offset, p.length, p.offset + p.length, dst);
    } else {
      if (last_bounce >= 0 && a0 <= r.extents[size_t(last_bounce)].off + r.extents[size_t(last_bounce)].len) {
        Extent& e = r.extents[size_t(last_bounce)];  // share the aligned blocks
        e.len = std::max(e.off + e.len, a1) - e.off;
        e.need_end = std::max(e.need_end, p.offset + p.length);
        e.pieces.push_back(i);
      } else {
        Extent e;
        e.off = a0, e.len = a1 - a0, e.need_end = p.offset + p.length, e.bounce = true;
        e.pieces.push_back(i);
        r.extents.push_back(std::move(e));
        last_bounce = int(r.extents.size() - 1);
      }
    }
  }
  // Speculative reads in smaller chunks: one in flight delays a more urgent read by less.
  const uint64_t direct_step =
      r.prio == IoPriority::Speculative ? std::min(opt.chunk_bytes, opt.speculative_chunk_bytes) : opt.chunk_bytes;
  size_t n = 0;
  for (const Extent& e : r.extents) {
    const uint64_t step = e.bounce ? opt.bounce_slot_bytes : direct_step;
    n += (e.len + step - 1) / step;
  }
  r.chunks.resize(n);
  size_t k = 0;
  for (uint32_t ei = 0; ei < r.extents.size(); ++ei) {
    const Extent& e = r.extents[ei];
    const uint64_t step = e.bounce ? opt.bounce_slot_bytes : direct_step;
    for (uint64_t o = 0; o < e.len; o += step, ++k) {
      Chunk& c = r.chunks[k];
      c.req = &r;
      c.index = uint32_t(k);
      c.extent = ei;
      c.off = e.off + o;
      c.len = uint32_t(std::min(step, e.len - o));
      c.need = uint32_t(std::min<uint64_t>(c.len, e.need_end - c.off));
      c.bounce = e.bounce;
      if (!e.bounce) {
        c.buf = e.buf + o;
        for (size_t ri = 0; ri < opt.registered_regions.size() && bufs_registered; ++ri) {
          const auto* base = static_cast<uint8_t*>(opt.registered_regions[ri].base);
          if (c.buf >= base && c.buf + c.len <= base + opt.registered_regions[ri].bytes) {
            c.buf_index = int32_t(ri) + region_index0;
            break;
          }
        }
      }
    }
  }
}

// ---- submit / cancel / wait / poll ---------------------------------------------------------------

uint64_t IoReader::submit(std::span<const IoPiece> pieces, IoPriority priority, uint64_t tag, IoCallback callback) {
  Impl& m = *impl_;
  if (pieces.empty()) fail(ErrorCode::InvalidArgument, "io: empty request for '{}'", m.path);
  if (size_t(priority) >= kIoPriorities)
    fail(ErrorCode::InvalidArgument, "io: unknown priority {} for '{}'", int(priority), m.path);
  auto r = std::make_unique<Request>();
  for (const IoPiece& p : pieces) {
    if (p.length == 0 || !p.dst)
      fail(ErrorCode::InvalidArgument, "io: empty piece or null destination (offset {}) for '{}'", p.offset, m.path);
    if (p.offset > m.size || p.length > m.size - p.offset)
      fail(ErrorCode::InvalidArgument, "io: range [{}, {}) is past the end of '{}' ({} bytes)", p.offset,
           p.offset + p.length, m.path, m.size);
    if (p.mode == IoPieceMode::Slot && !aligned_ptr(p.dst))
      fail(ErrorCode::InvalidArgument, "io: slot destination {} is not {}-aligned (offset {} of '{}')", p.dst,
           kIoAlign, p.offset, m.path);
    r->bytes += p.length;
  }
  r->pieces.assign(pieces.begin(), pieces.end());
  r->prio = priority;
  r->tag = tag;
  r->cb = std::move(callback);
  m.build(*r);
  uint64_t ticket;
  {
    std::lock_guard lk(m.mu);
    if (m.stopping) fail(ErrorCode::Cancelled, "io: reader for '{}' is shut down", m.path);
    ticket = r->ticket = m.next_ticket++;
    r->ordinal = m.next_ordinal++;
    r->in_queue = true;
    m.queue[size_t(priority)].push_back(r.get());
    m.st.requests++;
    m.reqs.emplace(ticket, std::move(r));
  }
  m.backend->wake();
  return ticket;
}

CancelResult IoReader::cancel(uint64_t ticket) {
  Impl& m = *impl_;
  CancelResult res;
  {
    std::lock_guard lk(m.mu);
    auto it = m.reqs.find(ticket);
    if (it == m.reqs.end()) return CancelResult::NotFound;
    Request* r = it->second.get();
    if (r->done || r->cancelled) return CancelResult::NotFound;
    r->cancelled = true;
    r->stop = true;
    m.remove_from_queue_locked(r);
    if (r->inflight == 0) {
      m.complete_locked(r);
      res = CancelResult::Dropped;
    } else {
      res = CancelResult::Discarding;  // completes when its reads drain
    }
  }
  m.backend->wake();
  return res;
}

bool IoReader::raise(uint64_t ticket, IoPriority priority) {
  Impl& m = *impl_;
  if (size_t(priority) >= kIoPriorities) return false;
  {
    std::lock_guard lk(m.mu);
    auto it = m.reqs.find(ticket);
    if (it == m.reqs.end()) return false;
    Request* r = it->second.get();
    if (r->done || r->cancelled || r->stop || !r->in_queue || priority >= r->prio) return false;
    m.remove_from_queue_locked(r);
    r->prio = priority;
    r->in_queue = true;
    m.queue[size_t(priority)].push_back(r);
    m.st.raised++;
  }
  m.backend->wake();
  return true;
}

std::optional<IoStatus> IoReader::wait_for(uint64_t ticket, std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  std::unique_lock lk(m.mu);
  auto it = m.reqs.find(ticket);
  if (it == m.reqs.end() || it->second->consumed)
    return IoStatus{ErrorCode::InvalidArgument, fmt::format("io: ticket {} is unknown, expired or already consumed", ticket)};
  Request* r = it->second.get();
  r->waiters++;
  const bool ok = m.cv_done.wait_for(lk, timeout, [&] { return r->done; });
  r->waiters--;
  if (!ok) return std::nullopt;
  IoStatus s = r->status;
  if (!r->consumed) {
    r->consumed = true;
    if (!r->cb)
      if (auto q = std::find(m.pollq.begin(), m.pollq.end(), ticket); q != m.pollq.end()) m.pollq.erase(q);
  }
  m.maybe_erase_locked(r);
  return s;
}

IoStatus IoReader::wait(uint64_t ticket) {
  for (;;) {
    if (auto s = wait_for(ticket, std::chrono::hours(1))) return *s;
  }
}

size_t IoReader::poll(std::vector<IoCompletion>& out) {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  size_t n = 0;
  while (!m.pollq.empty()) {
    const uint64_t t = m.pollq.front();
    m.pollq.pop_front();
    auto it = m.reqs.find(t);
    if (it == m.reqs.end() || it->second->consumed) continue;
    Request* r = it->second.get();
    r->consumed = true;
    out.push_back(IoCompletion{r->ticket, r->tag, r->status, r->bytes});
    ++n;
    m.maybe_erase_locked(r);
  }
  return n;
}

void IoReader::shutdown() {
  Impl& m = *impl_;
  {
    std::lock_guard lk(m.mu);
    if (m.joined) return;
    if (!m.stopping) {
      m.stopping = true;
      for (auto& q : m.queue) {
        for (Request* r : q) {
          r->in_queue = false;
          r->stop = true;
          r->cancelled = true;  // some of it was never issued
          if (r->inflight == 0) m.complete_locked(r);
        }
        q.clear();
      }
    }
  }
  m.backend->wake();
  m.backend->join();
  m.deliver_pending();  // anything completed after the threads left (none expected)
  std::lock_guard lk(m.mu);
  m.joined = true;
}

IoStats IoReader::stats() const {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  m.account_locked();
  IoStats s = m.st;
  s.avg_depth = s.busy_seconds > 0 ? m.depth_integral / s.busy_seconds : 0.0;
  return s;
}

IoBackend IoReader::backend() const { return impl_->kind; }
bool IoReader::direct() const { return impl_->direct; }
bool IoReader::buffers_registered() const { return impl_->bufs_registered; }
bool IoReader::file_registered() const { return impl_->file_registered; }
int IoReader::fd() const { return impl_->fd; }
uint64_t IoReader::file_size() const { return impl_->size; }
const std::string& IoReader::path() const { return impl_->path; }

// ---- core ----------------------------------------------------------------------------------------

void IoReader::Impl::account_locked() {
  const auto now = Clock::now();
  const double dt = std::chrono::duration<double>(now - last_change).count();
  if (inflight > 0) {
    st.busy_seconds += dt;
    depth_integral += dt * inflight;
  }
  last_change = now;
}

void IoReader::Impl::remove_from_queue_locked(Request* r) {
  if (!r->in_queue) return;
  auto& q = queue[size_t(r->prio)];
  if (auto it = std::find(q.begin(), q.end(), r); it != q.end()) q.erase(it);
  r->in_queue = false;
}

bool IoReader::Impl::has_work_locked() const {
  if (inflight >= depth) return false;
  if (!queue[0].empty()) return true;
  return (!queue[1].empty() || !queue[2].empty()) && inflight_prefetch < prefetch_depth;
}

Chunk* IoReader::Impl::next_chunk_locked() {
  for (size_t prio = 0; prio < kIoPriorities; ++prio) {
    if (inflight >= depth) return nullptr;
    if (prio != size_t(IoPriority::Demand) && inflight_prefetch >= prefetch_depth) return nullptr;
    auto& q = queue[prio];
    if (q.empty()) continue;
    Request* r = q.front();
    Chunk& c = r->chunks[r->next];
    if (c.bounce) {
      if (free_slots.empty()) return nullptr;  // wait for a slot (freed by completions in flight)
      c.bounce_slot = int32_t(free_slots.back());
      free_slots.pop_back();
      c.buf = arena + size_t(c.bounce_slot) * opt.bounce_slot_bytes;
      c.buf_index = bufs_registered ? 0 : -1;
    }
    if (++r->next == r->chunks.size()) {
      q.pop_front();
      r->in_queue = false;
    }
    account_locked();
    r->inflight++;
    inflight++;
    c.prefetch_class = r->prio != IoPriority::Demand;  // raise() may change r->prio while c is in flight
    if (c.prefetch_class) inflight_prefetch++;
    st.peak_depth = std::max(st.peak_depth, inflight);
    return &c;
  }
  return nullptr;
}

std::string IoReader::Impl::describe(const Chunk& c, int err) const {
  return fmt::format("read of '{}' failed at offset {} ({} bytes): {}", path, c.off + c.done, c.len - c.done,
                     errno_text(err));
}

Next IoReader::Impl::handle(Chunk* c, int res) {
  Request* r = c->req;
  std::string error;
  bool chunk_ok = false;
  if (res == -EAGAIN || res == -EINTR) {
    if (c->retries++ < opt.max_retries) {
      std::lock_guard lk(mu);
      st.reads++;
      st.retries++;
      return Next::Resubmit;
    }
    error = describe(*c, -res) + fmt::format(" (after {} retries)", opt.max_retries);
  } else if (res < 0) {
    error = describe(*c, -res);
  } else if (res == 0) {
    if (c->done >= c->need) chunk_ok = true;  // end of file inside the aligned tail
    else
      error = fmt::format("read of '{}' hit end of file at offset {} ({} bytes still expected; was the file "
                          "truncated?)", path, c->off + c->done, c->need - c->done);
  } else {
    c->done += uint32_t(res);
    {
      std::lock_guard lk(mu);
      st.bytes_read += uint64_t(res);
    }
    if (c->done >= c->need || c->done >= c->len) {
      chunk_ok = true;
    } else {
      const uint32_t before = c->done - uint32_t(res);
      if (direct) c->done = uint32_t(align_down(c->done));  // O_DIRECT resumes on a block boundary
      if (c->done <= before && c->retries++ >= opt.max_retries)
        error = fmt::format("read of '{}' made no progress at offset {} after {} retries", path, c->off + c->done,
                            opt.max_retries);
      if (error.empty()) {
        std::lock_guard lk(mu);
        st.reads++;
        st.resubmits++;
        return Next::Resubmit;
      }
    }
  }

  // The chunk is finished. Copy-out and page-cache hygiene run outside the lock.
  uint64_t bounced = 0;
  if (chunk_ok) {
    bool discard;
    {
      std::lock_guard lk(mu);
      discard = r->cancelled || !r->status.ok();
    }
    if (c->bounce && !discard) {
      const Extent& e = r->extents[c->extent];
      const uint64_t valid_end = c->off + std::min(c->done, c->len);
      for (uint32_t pi : e.pieces) {
        const IoPiece& p = r->pieces[pi];
        const uint64_t lo = std::max(p.offset, c->off), hi = std::min(p.offset + p.length, valid_end);
        if (hi > lo) {
          std::memcpy(static_cast<uint8_t*>(p.dst) + (lo - p.offset), c->buf + (lo - c->off), hi - lo);
          bounced += hi - lo;
        }
      }
    }
    if (!direct) {  // whole pages: fadvise keeps partially covered edge pages otherwise
      const uint64_t a0 = align_down(c->off), a1 = align_up(c->off + c->done);
      ::posix_fadvise(fd, off_t(a0), off_t(a1 - a0), POSIX_FADV_DONTNEED);
    }
  }

  std::lock_guard lk(mu);
  st.reads++;
  st.bytes_bounced += bounced;
  if (!error.empty() && r->status.ok() && !r->cancelled) {
    r->status = IoStatus{ErrorCode::Io, std::move(error)};
    r->stop = true;
    remove_from_queue_locked(r);
  }
  if (c->bounce_slot >= 0) {
    free_slots.push_back(uint32_t(c->bounce_slot));
    c->bounce_slot = -1;
  }
  account_locked();
  inflight--;
  if (c->prefetch_class) inflight_prefetch--;
  r->inflight--;
  if (r->inflight == 0 && (r->stop || r->next == r->chunks.size())) complete_locked(r);
  return Next::Finished;
}

void IoReader::Impl::complete_locked(Request* r) {
  if (r->done) return;
  if (r->cancelled) r->status = IoStatus{ErrorCode::Cancelled, fmt::format("io: request {} on '{}' was cancelled",
                                                                             r->ticket, path)};
  r->done = true;
  // No chunk of r is in flight any more: release the plan now (the record may live on a while).
  std::vector<IoPiece>().swap(r->pieces);
  std::vector<detail::Extent>().swap(r->extents);
  std::vector<Chunk>().swap(r->chunks);
  if (r->status.ok()) {
    st.completed++;
    st.bytes_requested += r->bytes;
  } else if (r->status.code == ErrorCode::Cancelled) {
    st.cancelled++;
  } else {
    st.failed++;
  }
  if (r->cb) {
    pending.push_back(r);
  } else {
    r->delivered = true;
    pollq.push_back(r->ticket);
  }
  cv_done.notify_all();
}

void IoReader::Impl::maybe_erase_locked(Request* r) {
  if (!r->done || !r->delivered || r->waiters > 0) return;
  if (r->consumed) {
    reqs.erase(r->ticket);
  } else if (r->cb && !r->in_recent) {
    // Delivered to its callback; kept a while so that a late wait(ticket) still gets the status.
    r->in_recent = true;
    recent.push_back(r->ticket);
    while (recent.size() > kRecent) {
      reqs.erase(recent.front());
      recent.pop_front();
    }
  }
}

void IoReader::Impl::deliver_pending() {
  std::vector<Request*> todo;
  {
    std::lock_guard lk(mu);
    if (pending.empty()) return;
    todo.swap(pending);
  }
  for (Request* r : todo) {
    // The record stays alive: it is erased only once delivered is set below.
    IoCompletion c{r->ticket, r->tag, r->status, r->bytes};
    try {
      r->cb(c);
    } catch (...) {
      // A callback must not throw (it runs on the reaper thread): a programmer error.
      MOE_ASSERT(false, "io: a completion callback threw");
    }
  }
  std::lock_guard lk(mu);
  for (Request* r : todo) {
    r->delivered = true;
    maybe_erase_locked(r);
  }
  cv_done.notify_all();
}

}  // namespace moe::prefetch
