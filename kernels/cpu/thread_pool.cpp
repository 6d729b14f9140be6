// ThreadPool (moe/kernels/thread_pool.h): n-1 workers plus the caller.
// Job protocol: state_ packs (generation << 32) | closed bit (1 << 31) | workers inside the job.
// The caller writes the job fields and publishes a new generation (release). A worker joins a job with a
// CAS that only succeeds while that generation is current and open, runs chunks, and leaves (release).
// The caller, after running chunks itself, waits until no worker is inside and closes the job with a CAS;
// a worker that wakes late finds it closed and skips it. So the caller never waits for a worker that
// has not started (important when threads outnumber cores), and no worker touches a finished job.
// Workers spin ~100 us (yielding after a few spins: decode issues hundreds of jobs per token and a futex
// wake-up per job would cost more than a small matvec), then sleep in atomic::wait.
#include "moe/kernels/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOE_CPU_RELAX() _mm_pause()
#else
#define MOE_CPU_RELAX() ((void)0)
#endif

namespace moe::kernels {
namespace {
constexpr uint64_t kClosed = uint64_t(1) << 31;
constexpr uint64_t kInsideMask = kClosed - 1;
inline uint32_t gen_of(uint64_t s) { return static_cast<uint32_t>(s >> 32); }
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  workers_.reserve(size_t(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(call_mutex_);
    stop_.store(true, std::memory_order_seq_cst);
    const uint64_t s = state_.load(std::memory_order_relaxed);
    state_.store((uint64_t(gen_of(s) + 1) << 32) | kClosed, std::memory_order_seq_cst);
  }
  state_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::run_chunks(int thread) {
  const size_t n = job_n_, grain = job_grain_, div = size_t(n_threads_) * 2;
  size_t b = next_item_.load(std::memory_order_relaxed);
  for (;;) {
    if (b >= n) break;
    // Guided: a claim takes 1/(2 threads) of what is left, in whole grains, so the first chunks are long
    // streams and the last ones are single grains (a slow thread leaves little for the other to wait on).
    size_t len = (n - b + div - 1) / div;
    len = std::min(n - b, (len + grain - 1) / grain * grain);
    if (!next_item_.compare_exchange_weak(b, b + len, std::memory_order_relaxed)) continue;
    (*job_fn_)(b, b + len, thread);
    b = next_item_.load(std::memory_order_relaxed);
  }
}

void ThreadPool::worker_main(int index) {
  uint32_t seen = 0;
  for (;;) {
    uint64_t s = state_.load(std::memory_order_acquire);
    if (gen_of(s) == seen) {
      auto t0 = std::chrono::steady_clock::now();
      int spins = 0;
      while (gen_of(s = state_.load(std::memory_order_acquire)) == seen) {
        if (++spins < 128) {
          MOE_CPU_RELAX();
          continue;
        }
        std::this_thread::yield();  // let a thread with work have this core on a busy machine
        if ((spins & 15) == 0 && std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(100)) {
          // Dekker pair with parallel_for: sleepers_++ then re-read state_ (seq_cst) here; the caller
          // publishes then reads sleepers_. Either we see the new job or the caller sees us and notifies.
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          state_.wait(s, std::memory_order_seq_cst);
          sleepers_.fetch_sub(1, std::memory_order_relaxed);
        }
      }
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = gen_of(s);
    // Join unless the job is already closed (or replaced).
    bool joined = false;
    while (gen_of(s) == seen && !(s & kClosed)) {
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        joined = true;
        break;
      }
    }
    if (!joined) continue;
    run_chunks(index);
    state_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::parallel_for(size_t n, ChunkFnRef fn, size_t grain) {
  if (n == 0) return;
  if (grain == 0) grain = 1;
  if (n_threads_ == 1 || n <= grain) {
    fn(0, n, 0);
    return;
  }
  std::lock_guard<std::mutex> lock(call_mutex_);
  job_fn_ = &fn;
  job_n_ = n;
  job_grain_ = grain;
  next_item_.store(0, std::memory_order_relaxed);
  const uint32_t gen = gen_of(state_.load(std::memory_order_relaxed)) + 1;
  state_.store(uint64_t(gen) << 32, std::memory_order_seq_cst);  // publishes the job fields
  if (sleepers_.load(std::memory_order_seq_cst) > 0) state_.notify_all();  // no syscall while all spin
  run_chunks(0);
  // Every chunk is claimed; wait for workers still inside, then close the job.
  uint64_t s = state_.load(std::memory_order_acquire);
  for (int spins = 0;; ++spins) {
    if ((s & kInsideMask) == 0 &&
        state_.compare_exchange_weak(s, s | kClosed, std::memory_order_acq_rel, std::memory_order_acquire))
      break;
    if (spins < 1024) MOE_CPU_RELAX();
    else std::this_thread::yield();  // a worker inside may be waiting for this core
    s = state_.load(std::memory_order_acquire);
  }
}

}  // namespace moe::kernels
