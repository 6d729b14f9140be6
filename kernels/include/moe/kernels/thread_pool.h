// moe/kernels/thread_pool.h — a fixed pool of worker threads for the CPU kernels.
// Owns: n_threads-1 worker threads (the calling thread is the n-th participant) and the job slot they
// share. parallel_for blocks until every chunk ran; it allocates nothing and takes no lock on the hot
// path (workers spin briefly, then sleep on an atomic). Thread-safety: one parallel_for at a time per
// pool (calls from several threads at once are serialised by an internal mutex); the pool must outlive
// its calls; a parallel_for body must not call parallel_for on the same pool.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace moe::kernels {

// A non-owning reference to a callable void(size_t begin, size_t end, int thread). The callable must
// outlive the call it is passed to (always true for a lambda passed straight to parallel_for).
class ChunkFnRef {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, ChunkFnRef>>>
  ChunkFnRef(F&& f) noexcept  // NOLINT: implicit on purpose, like std::function_ref
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, size_t b, size_t e, int t) { (*static_cast<std::remove_reference_t<F>*>(o))(b, e, t); }) {}
  void operator()(size_t b, size_t e, int t) const { call_(obj_, b, e, t); }

 private:
  void* obj_;
  void (*call_)(void*, size_t, size_t, int);
};

class ThreadPool {
 public:
  // n_threads >= 1 participants in total (n_threads-1 workers are started). Values < 1 mean 1.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const noexcept { return n_threads_; }

  // Splits [0, n) into contiguous chunks of whole `grain`s (grain 0 means 1; the last chunk may be
  // shorter) and runs fn(begin, end, thread) on them, thread in [0, size()); the caller runs as thread 0.
  // Chunks shrink as the job runs (each claim takes about 1/(2 size()) of what is left) and are handed
  // out dynamically, so which thread runs a chunk is not fixed: fn must make its results
  // independent of `thread` (use it only to pick scratch space). Returns when all chunks finished.
  // Exceptions thrown by fn terminate the program (kernels do not throw).
  void parallel_for(size_t n, ChunkFnRef fn, size_t grain = 1);

 private:
  void worker_main(int index);
  void run_chunks(int thread);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;
  // The job. Written by the caller before a new generation is published in state_ (release), read by
  // workers that joined it (acquire); see thread_pool.cpp for the protocol.
  ChunkFnRef* job_fn_ = nullptr;
  size_t job_n_ = 0;
  size_t job_grain_ = 0;
  alignas(64) std::atomic<size_t> next_item_{0};
  alignas(64) std::atomic<uint64_t> state_{0};  // generation << 32 | closed bit 31 | workers inside
  alignas(64) std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace moe::kernels
