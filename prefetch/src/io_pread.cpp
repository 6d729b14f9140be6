// prefetch/src/io_pread.cpp — the pread(2) thread-pool backend of IoReader, used when io_uring is
// refused or not wanted. Each worker takes one chunk at a time from the reader's queues (so the
// depth is the number of workers), reads it with pread (O_DIRECT when the reader has it), resubmits
// short reads and retries EAGAIN/EINTR through the shared completion logic, and runs the callbacks
// of completed requests. Workers sleep on a condition variable tied to the reader's mutex.
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "moe/prefetch/io_detail.h"

namespace moe::prefetch::detail {
namespace {

class PreadBackend final : public Backend {
 public:
  explicit PreadBackend(IoReader::Impl& m) : m_(m) {}
  ~PreadBackend() override { join(); }

  void start() override {
    for (uint32_t i = 0; i < m_.opt.pread_threads; ++i) workers_.emplace_back([this] { loop(); });
  }

  void wake() override {
    { std::lock_guard lk(m_.mu); }  // why: orders this notify after the state change the caller made
    cv_.notify_all();
  }

  void join() override {
    for (auto& t : workers_)
      if (t.joinable()) t.join();
  }

 private:
  void loop() {
    for (;;) {
      m_.deliver_pending();
      Chunk* c = nullptr;
      {
        std::unique_lock lk(m_.mu);
        bool leave = false;
        cv_.wait(lk, [&] {
          c = m_.next_chunk_locked();
          leave = !c && m_.drained_locked();
          return c || leave || !m_.pending.empty();
        });
        if (leave) break;
      }
      if (!c) continue;  // deliveries only
      run(c);
      cv_.notify_all();  // a depth slot or bounce slot is free, or something awaits delivery
    }
    cv_.notify_all();  // let the other workers see the drained state
  }

  void run(Chunk* c) {
    for (;;) {
      const uint32_t len = m_.faults.submit_len(*c, c->len - c->done, m_.direct);
      c->cur_len = len;
      c->attempts++;
      const ssize_t n = ::pread(m_.fd, c->buf + c->done, len, off_t(c->off + c->done));
      int res = n < 0 ? -errno : int(n);
      uint64_t delay_ms = 0;
      res = m_.faults.complete_res(*c, res, delay_ms);
      if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      if (res == -EAGAIN) std::this_thread::sleep_for(std::chrono::microseconds(100));  // why: back off
      if (m_.handle(c, res) == Next::Finished) return;
    }
  }

  IoReader::Impl& m_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
};

}  // namespace

std::unique_ptr<Backend> make_pread_backend(IoReader::Impl& impl) { return std::make_unique<PreadBackend>(impl); }

}  // namespace moe::prefetch::detail
