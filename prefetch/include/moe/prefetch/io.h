// moe/prefetch/io.h — the expert transfer engine: reads byte ranges of one (GGUF) file into memory
// without going through the page cache.
//
// Backends (same interface, picked at open):
//   * Uring: io_uring (liburing) with O_DIRECT, the file and an aligned bounce arena registered with
//     the ring (plus any caller regions given in IoOptions::registered_regions), bounded queue depth,
//     batched submits, one dedicated reaper thread per reader.
//   * Pread: a pool of threads calling pread(2) (also O_DIRECT), used when io_uring_queue_init is
//     refused (seccomp'd containers, io_uring_disabled) or when forced (`--io pread`).
//   When open(O_DIRECT) fails with EINVAL (the filesystem refuses it) either backend reads buffered and
//   calls posix_fadvise(DONTNEED) on every range it read, so the page cache stays clean. Every fallback
//   is announced once through IoOptions::notice (never printed from inside the library).
//
// Alignment and copies (the contract of an IoPiece; `A` = IoReader::alignment(), 4096):
//   * IoPieceMode::Exact: the bytes [offset, offset+length) of the file land at dst[0, length).
//     If offset, length and dst are all multiples of A (or the file is read buffered), the kernel
//     reads straight into dst: zero copies. Otherwise the aligned superset is read into a bounce slot
//     of the reader's registered arena and the exact bytes are copied out (one memcpy).
//   * IoPieceMode::Slot: zero copies for any offset. dst must be A-aligned with room for
//     slot_bytes(offset, length) bytes; the aligned superset of the range is read into it and the
//     requested bytes start at dst + slot_inner_offset(offset). Bytes of the slot outside the range
//     hold neighbouring file data (or are untouched past end of file). The cache allocates expert
//     slots this way.
//   Pieces of one request that are adjacent in the file and in memory are coalesced into one extent;
//   unaligned pieces whose aligned supersets touch share bounce reads. Extents are split into chunks
//   of at most IoOptions::chunk_bytes (bounce chunks: bounce_slot_bytes) submitted concurrently.
//
// Threading contract: an IoReader is thread-safe: submit, cancel, wait, wait_for, poll, stats and
// shutdown may be called from any thread. Completions are reaped by the reader's own thread(s) (the
// io_uring reaper, or the pread workers); callbacks run on those threads, outside the reader's lock,
// and must be short. A callback may call submit() and cancel(), but never wait()/shutdown() on its
// own reader (the thread it would wait for is the one running it). Completions caused by cancel()
// are also delivered from the reader's threads, never from inside cancel(), so a caller may cancel
// while holding a lock its callback takes.
//
// Completion delivery: every request completes exactly once with an IoStatus. It is handed to the
// request's callback if it has one, otherwise it is queued for poll(). wait(ticket) blocks until the
// request completes and consumes it (it is then no longer returned by poll()); it also works on a
// callback request, before or after its callback ran (the last 1024 delivered callback requests are
// remembered). Waiting on a ticket that was consumed or forgotten returns an InvalidArgument status. Destination memory belongs to the
// reader from submit() until the completion is delivered, including after cancel() (an in-flight read
// may still be writing into it).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/error.h"

namespace moe::prefetch {

enum class IoBackend : uint8_t { Auto, Uring, Pread };
// Queued requests are issued in priority order (FIFO within one): demand jumps ahead of queued
// prefetch, prefetch ahead of speculative (guesses further ahead). Prefetch and speculative reads
// share the IoOptions::prefetch_depth limit on reads in flight.
enum class IoPriority : uint8_t { Demand = 0, Prefetch = 1, Speculative = 2 };
inline constexpr size_t kIoPriorities = 3;
enum class IoPieceMode : uint8_t { Exact, Slot };

// The O_DIRECT alignment this engine uses for offsets, lengths and addresses (bytes).
inline constexpr uint64_t kIoAlign = 4096;
// Bytes a Slot-mode destination needs for the range [offset, offset+length).
constexpr uint64_t slot_bytes(uint64_t offset, uint64_t length) {
  return ((offset + length + kIoAlign - 1) & ~(kIoAlign - 1)) - (offset & ~(kIoAlign - 1));
}
// Where the requested bytes start inside a Slot-mode destination.
constexpr uint64_t slot_inner_offset(uint64_t offset) { return offset & (kIoAlign - 1); }

// One contiguous range of the file and where it goes. length > 0; offset+length <= file size.
struct IoPiece {
  uint64_t offset = 0;  // bytes from the start of the file
  uint64_t length = 0;  // bytes
  void* dst = nullptr;  // Exact: length bytes; Slot: kIoAlign-aligned, slot_bytes(offset, length) bytes
  IoPieceMode mode = IoPieceMode::Exact;
};

struct IoStatus {
  ErrorCode code = ErrorCode::Ok;
  std::string message;  // names the file, offset and cause when code != Ok
  bool ok() const { return code == ErrorCode::Ok; }
};

struct IoCompletion {
  uint64_t ticket = 0;
  uint64_t tag = 0;     // the caller's tag from submit()
  IoStatus status;
  uint64_t bytes = 0;   // payload bytes requested (sum of piece lengths)
};

using IoCallback = std::function<void(const IoCompletion&)>;
using IoNotice = std::function<void(std::string_view)>;

// ---- fault injection (tests) -------------------------------------------------------------------
// A FaultPlan wraps the real reads of either backend: it truncates the length actually submitted,
// substitutes the result code after a real completion, or holds a completion back for a while. It
// never fakes data: the bytes always come from the file. Rules match a request by its ordinal (0 for
// the first submit() on the reader, 1 for the next, ...) and one of its chunks. Immutable once the
// reader is opened; shared between readers is fine.
struct IoFaultRule {
  enum class Kind : uint8_t {
    ShortRead,  // first attempt submits only `value` bytes (rounded down to kIoAlign under O_DIRECT,
                // at least one block), so the engine must resubmit the remainder
    Error,      // the first `times` attempts complete with -value (errno, e.g. EIO)
    Again,      // the first `times` attempts complete with -EAGAIN
    Delay,      // the first attempt's completion is delivered `value` milliseconds late
  };
  Kind kind = Kind::Error;
  uint64_t request = 0;   // request ordinal
  int32_t chunk = 0;      // chunk index within the request; -1 = every chunk
  uint64_t value = 0;     // ShortRead: bytes; Error: errno; Delay: milliseconds
  uint32_t times = 1;     // Error/Again: attempts affected
};

struct IoFaultPlan {
  std::vector<IoFaultRule> rules;
  bool refuse_uring = false;     // act as if io_uring_queue_init failed (ENOSYS)
  bool refuse_direct = false;    // act as if open(O_DIRECT) failed with EINVAL
  bool refuse_register = false;  // act as if buffer/file registration were refused (EPERM)
};

// ---- options and stats -------------------------------------------------------------------------
struct IoRegion {
  void* base = nullptr;  // kIoAlign-aligned memory the caller reads into often (a cache tier's arena)
  size_t bytes = 0;
};

struct IoOptions {
  IoBackend backend = IoBackend::Auto;
  bool direct = true;                    // O_DIRECT (falls back to buffered on EINVAL)
  uint32_t queue_depth = 32;             // max reads in flight (io_uring SQEs or pread workers' work)
  uint32_t pread_threads = 4;            // Pread backend: worker threads (its effective depth)
  uint32_t prefetch_depth = 0;           // max prefetch reads in flight; 0 = 3/4 of queue_depth, so a
                                         // demand read always finds a free slot
  uint64_t chunk_bytes = 4ull << 20;     // max bytes per read straight into caller memory
  uint64_t speculative_chunk_bytes = 512ull << 10;  // the same for IoPriority::Speculative requests
  uint64_t bounce_slot_bytes = 1ull << 20;  // bounce chunk size (multiple of kIoAlign)
  uint32_t bounce_slots = 32;            // bounce arena = bounce_slots * bounce_slot_bytes
  uint32_t max_retries = 16;             // EAGAIN/EINTR/zero-progress retries per chunk
  bool register_buffers = true;          // io_uring_register_buffers(arena + registered_regions)
  bool register_file = true;             // io_uring_register_files(fd)
  std::vector<IoRegion> registered_regions;
  IoNotice notice;                       // one-line notices about fallbacks (may be empty)
  std::shared_ptr<const IoFaultPlan> faults;  // tests only
};

struct IoStats {
  uint64_t requests = 0;        // submitted
  uint64_t completed = 0;       // delivered with Ok
  uint64_t failed = 0;          // delivered with an error other than Cancelled
  uint64_t cancelled = 0;       // delivered with Cancelled
  uint64_t bytes_requested = 0; // payload bytes of Ok requests
  uint64_t bytes_read = 0;      // bytes the kernel returned (aligned supersets included)
  uint64_t bytes_bounced = 0;   // bytes copied out of bounce slots
  uint64_t reads = 0;           // read submissions (resubmissions included), counted as they complete
  uint64_t resubmits = 0;       // short-read remainders
  uint64_t retries = 0;         // EAGAIN/EINTR retries
  uint64_t raised = 0;          // requests moved to a higher priority's queue by raise()
  uint32_t peak_depth = 0;      // max reads in flight at once
  double avg_depth = 0;         // time-weighted reads in flight while busy
  double busy_seconds = 0;      // time with at least one read in flight
  double gbps() const { return busy_seconds > 0 ? double(bytes_read) / busy_seconds / 1e9 : 0.0; }
};

enum class CancelResult : uint8_t {
  Dropped,     // was still queued: no IO issued; completes with Cancelled
  Discarding,  // reads were in flight: they finish, their data is discarded; completes with Cancelled
  NotFound,    // unknown ticket, already completed or already cancelled
};

class IoReader {
 public:
  // Opens `path` for reading. Throws moe::Error(Io) naming the path when it cannot be opened.
  static std::unique_ptr<IoReader> open(const std::string& path, IoOptions options = {});
  ~IoReader();  // shutdown() then release the ring, arena and fd

  // Queues one request: the pieces (an expert's gate/up/down slices) are read together and complete
  // as one. Returns its ticket (> 0). Throws moe::Error(InvalidArgument) for an empty request, a
  // zero-length piece, a range past the end of the file or a misaligned Slot destination; throws
  // moe::Error(Cancelled) after shutdown(). Allocation: one record per request.
  uint64_t submit(std::span<const IoPiece> pieces, IoPriority priority, uint64_t tag = 0,
                  IoCallback callback = {});

  // Cancels a request that became stale (see CancelResult). Never blocks on IO.
  CancelResult cancel(uint64_t ticket);

  // A request became more urgent (a speculative guess was confirmed, a prefetch is now demanded):
  // what of it is still queued moves to the back of `priority`'s queue; reads already in flight go on.
  // Its chunk sizes stay as submitted. Returns false when nothing of it is queued any more (already
  // issued, done, cancelled or unknown) or `priority` is not higher than its own. Never blocks on IO.
  bool raise(uint64_t ticket, IoPriority priority);

  // Blocks until the request completes; consumes its completion.
  IoStatus wait(uint64_t ticket);
  // Same with a bound; nullopt on timeout (the request is not consumed then).
  std::optional<IoStatus> wait_for(uint64_t ticket, std::chrono::milliseconds timeout);

  // Appends completed callback-less requests to `out` (non-blocking); returns how many.
  size_t poll(std::vector<IoCompletion>& out);

  // Stops accepting work: queued requests complete with Cancelled, reads in flight drain (their
  // requests complete normally unless only part of them was issued: then Cancelled). Returns once
  // the reaper threads have exited. Idempotent.
  void shutdown();

  IoStats stats() const;
  IoBackend backend() const;         // Uring or Pread (never Auto)
  bool direct() const;               // true when reads bypass the page cache via O_DIRECT
  bool buffers_registered() const;   // io_uring fixed buffers in use
  bool file_registered() const;      // io_uring fixed file in use
  int fd() const;                    // the underlying descriptor (for inspection only)
  uint64_t file_size() const;
  const std::string& path() const;

  struct Impl;
 private:
  explicit IoReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

const char* to_string(IoBackend b);

}  // namespace moe::prefetch
