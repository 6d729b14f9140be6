// moe/prefetch/io_detail.h — internals of the transfer engine shared by its backends (not a public
// API: only prefetch/src/io*.cpp include it).
//
// IoReader::Impl owns the request table, the two priority queues, the bounce arena, the statistics
// and the completion logic (short reads, retries, errors, copy-out, cancellation). A Backend only
// moves chunks: it asks next_chunk() for work, issues the read (through FaultHooks), and hands the
// result to handle(), which tells it whether to resubmit the same chunk.
//
// Thread-safety: every Impl member marked (mu) is guarded by Impl::mu. A Chunk that next_chunk()
// returned belongs to the backend thread that holds it until handle() returns Finished; its progress
// fields are touched by that thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "moe/prefetch/io.h"

namespace moe::prefetch::detail {

using Clock = std::chrono::steady_clock;

struct Request;

// One read of at most chunk_bytes (bounce: bounce_slot_bytes), resubmitted until `need` bytes are in.
struct Chunk {
  Request* req = nullptr;
  uint32_t index = 0;        // within the request
  uint32_t extent = 0;       // index into Request::extents
  uint64_t off = 0;          // file offset of byte 0 (aligned under O_DIRECT)
  uint32_t len = 0;          // bytes to read (aligned under O_DIRECT)
  uint32_t need = 0;         // bytes from byte 0 that must arrive (the rest may lie past end of file)
  uint8_t* buf = nullptr;    // where byte 0 lands (caller memory, or a bounce slot once issued)
  int32_t buf_index = -1;    // io_uring fixed-buffer index, -1 when none
  int32_t bounce_slot = -1;  // >= 0 while holding a bounce slot
  bool bounce = false;
  bool prefetch_class = false;  // counted in inflight_prefetch while in flight (its request's class at issue)
  // backend-owned progress
  uint32_t done = 0;         // bytes read so far
  uint32_t attempts = 0;     // submissions so far
  uint32_t retries = 0;      // EAGAIN/EINTR/no-progress retries so far
  uint32_t cur_len = 0;      // bytes asked in the current submission
  Clock::time_point due;     // Delay fault: when the held completion is released
  int held_res = 0;
};

// A run of file bytes read into one contiguous buffer (or into bounce slots, then copied out).
struct Extent {
  uint64_t off = 0, len = 0;   // file range read
  uint64_t need_end = 0;       // end of the last requested byte
  uint8_t* buf = nullptr;      // destination of `off` (nullptr for bounce extents)
  bool bounce = false;
  std::vector<uint32_t> pieces;  // bounce extents: pieces to copy out
};

struct Request {
  uint64_t ticket = 0, tag = 0, ordinal = 0, bytes = 0;
  IoPriority prio = IoPriority::Prefetch;
  std::vector<IoPiece> pieces;
  std::vector<Extent> extents;
  std::vector<Chunk> chunks;   // built once; never resized (backends hold Chunk pointers)
  IoCallback cb;
  // (mu)
  uint32_t next = 0;           // first chunk not yet issued
  uint32_t inflight = 0;
  bool in_queue = false;
  bool stop = false;           // issue no more chunks (error, cancel, shutdown)
  bool cancelled = false;
  bool done = false;           // status final
  bool delivered = false;      // callback returned (callback-less: true once done)
  bool consumed = false;       // wait()/poll() took it
  bool in_recent = false;      // delivered to its callback, listed in Impl::recent
  int waiters = 0;
  IoStatus status;
};

// The FaultPlan applied to real reads.
class FaultHooks {
 public:
  explicit FaultHooks(std::shared_ptr<const IoFaultPlan> plan) : plan_(std::move(plan)) {}
  bool active() const { return plan_ && !plan_->rules.empty(); }
  // Length to submit for attempt number c.attempts (before it is counted).
  uint32_t submit_len(const Chunk& c, uint32_t len, bool direct) const;
  // Result to report for the attempt just completed (c.attempts already counted); sets delay_ms.
  int complete_res(const Chunk& c, int res, uint64_t& delay_ms) const;
 private:
  const IoFaultRule* match(const Chunk& c, IoFaultRule::Kind kind) const;
  std::shared_ptr<const IoFaultPlan> plan_;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual void start() = 0;  // spawn threads
  virtual void wake() = 0;   // new work, pending deliveries or stopping
  virtual void join() = 0;   // threads exit once stopping and drained
};

enum class Next { Resubmit, Finished };

}  // namespace moe::prefetch::detail

namespace moe::prefetch {

struct IoReader::Impl {
  using Chunk = detail::Chunk;
  using Request = detail::Request;

  std::string path;
  int fd = -1;
  uint64_t size = 0;
  bool direct = false;
  IoOptions opt;
  IoBackend kind = IoBackend::Pread;
  uint32_t depth = 1;           // max chunks in flight
  uint32_t prefetch_depth = 1;  // max prefetch chunks in flight
  bool bufs_registered = false, file_registered = false;
  int32_t region_index0 = 1;    // fixed-buffer index of registered_regions[0] (0 is the arena if any)
  uint8_t* arena = nullptr;     // bounce slots (direct mode only)
  size_t arena_bytes = 0;
  detail::FaultHooks faults{nullptr};
  std::unique_ptr<detail::Backend> backend;

  mutable std::mutex mu;
  std::condition_variable cv_done;   // a request completed or was delivered
  // (mu)
  std::unordered_map<uint64_t, std::unique_ptr<Request>> reqs;
  std::deque<Request*> queue[kIoPriorities];  // by IoPriority: requests with chunks left to issue
  std::deque<uint64_t> pollq;        // completed callback-less tickets
  std::vector<Request*> pending;     // completed callback requests awaiting delivery
  std::deque<uint64_t> recent;       // delivered callback requests kept for a late wait()
  static constexpr size_t kRecent = 1024;
  std::vector<uint32_t> free_slots;  // bounce slots
  uint64_t next_ticket = 1, next_ordinal = 0;
  uint32_t inflight = 0, inflight_prefetch = 0;
  bool stopping = false, joined = false;
  IoStats st;
  detail::Clock::time_point last_change = detail::Clock::now();
  double depth_integral = 0;

  ~Impl();

  // Backend side. Call with mu held: the next chunk to issue, marked in flight, or nullptr.
  Chunk* next_chunk_locked();
  // Call without mu: the result (bytes, or -errno) of one submission of `c`.
  detail::Next handle(Chunk* c, int res);
  // Call without mu: runs the callbacks of completed requests (on the calling backend thread).
  void deliver_pending();
  // (mu) true once the backend may exit: stopping, nothing in flight, nothing to deliver.
  bool drained_locked() const { return stopping && inflight == 0 && pending.empty(); }
  // (mu) true when a chunk is ready to issue under the depth limits.
  bool has_work_locked() const;

  // Shared helpers.
  void build(Request& r);
  void complete_locked(Request* r);
  void remove_from_queue_locked(Request* r);
  void account_locked();
  void maybe_erase_locked(Request* r);
  std::string describe(const Chunk& c, int err) const;
  void notice(std::string_view msg) const { if (opt.notice) opt.notice(msg); }
};

namespace detail {
std::unique_ptr<Backend> make_uring_backend(IoReader::Impl& impl, std::string& why_not);
std::unique_ptr<Backend> make_pread_backend(IoReader::Impl& impl);
}  // namespace detail

}  // namespace moe::prefetch
