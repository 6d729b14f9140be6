// prefetch/src/io_uring.cpp — the io_uring backend of IoReader: one ring and one reaper thread per
// reader. The thread owns the ring exclusively (no other thread touches it): it pulls chunks from
// the reader's queues up to the queue depth, prepares one SQE each (fixed file / fixed buffer when
// registered), submits them in one batch, then blocks for completions. Other threads wake it through
// an eventfd that is polled by the ring itself, so a single wait covers both new work and finished
// reads. Delay faults are held in a list and released by a timed wait.
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <system_error>
#include <thread>

#include "moe/prefetch/io_detail.h"

namespace moe::prefetch::detail {
namespace {

std::string errtext(int err) { return std::error_code(err, std::generic_category()).message(); }

class UringBackend final : public Backend {
 public:
  explicit UringBackend(IoReader::Impl& m) : m_(m) {}

  ~UringBackend() override {
    join();
    // why: the ring's teardown is asynchronous; unregistering first unpins the buffers now, so their
    // memory is free when the caller unmaps it (not charged until a kernel worker gets to it).
    if (ring_ok_ && m_.bufs_registered) io_uring_unregister_buffers(&ring_);
    if (ring_ok_) io_uring_queue_exit(&ring_);
    if (efd_ >= 0) ::close(efd_);
  }

  // Sets up the ring and registrations; returns false (with why) when io_uring is refused.
  bool init(std::string& why) {
    const IoFaultPlan* plan = m_.opt.faults.get();
    if (plan && plan->refuse_uring) {
      why = "io_uring_queue_init: " + errtext(ENOSYS) + " (fault plan)";
      return false;
    }
    const unsigned entries = m_.opt.queue_depth + 1;  // + the eventfd poll
    io_uring_params p{};
    p.flags = IORING_SETUP_COOP_TASKRUN;  // why: we always enter the kernel to wait; skip the IPIs
    int ret = io_uring_queue_init_params(entries, &ring_, &p);
    if (ret == -EINVAL) {  // older kernel: no COOP_TASKRUN
      p = io_uring_params{};
      ret = io_uring_queue_init_params(entries, &ring_, &p);
    }
    if (ret < 0) {
      why = "io_uring_queue_init: " + errtext(-ret);
      return false;
    }
    ring_ok_ = true;
    efd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd_ < 0) {
      why = "eventfd: " + errtext(errno);
      return false;
    }
    const bool refuse = plan && plan->refuse_register;
    if (m_.opt.register_file) {
      ret = refuse ? -EPERM : io_uring_register_files(&ring_, &m_.fd, 1);
      if (ret == 0) m_.file_registered = true;
      else m_.notice(fmt::format("moe: io_uring refused to register '{}' ({}); using its plain descriptor",
                                 m_.path, errtext(-ret)));
    }
    std::vector<iovec> iov;
    if (m_.arena) iov.push_back(iovec{m_.arena, m_.arena_bytes});
    m_.region_index0 = int32_t(iov.size());
    for (const IoRegion& r : m_.opt.registered_regions) iov.push_back(iovec{r.base, r.bytes});
    if (m_.opt.register_buffers && !iov.empty()) {
      ret = refuse ? -EPERM : io_uring_register_buffers(&ring_, iov.data(), unsigned(iov.size()));
      if (ret == 0) m_.bufs_registered = true;
      else m_.notice(fmt::format("moe: io_uring refused to register {} buffers for '{}' ({}); reads pin pages "
                                 "per request", iov.size(), m_.path, errtext(-ret)));
    }
    return true;
  }

  void start() override { thread_ = std::thread([this] { loop(); }); }

  void wake() override {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(efd_, &one, sizeof one);  // EAGAIN = counter saturated: still woken
  }

  void join() override {
    if (thread_.joinable()) thread_.join();
  }

 private:
  static void* wake_tag() { return reinterpret_cast<void*>(uintptr_t(1)); }  // chunks are never at 1

  void arm_poll() {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    io_uring_prep_poll_add(s, efd_, POLLIN);
    io_uring_sqe_set_data(s, wake_tag());
    poll_armed_ = true;
  }

  void prep(Chunk* c) {
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    MOE_ASSERT(s != nullptr, "io_uring: submission queue full (depth accounting broken)");
    const uint32_t len = m_.faults.submit_len(*c, c->len - c->done, m_.direct);
    c->cur_len = len;
    c->attempts++;
    uint8_t* dst = c->buf + c->done;
    const uint64_t off = c->off + c->done;
    const int fd = m_.file_registered ? 0 : m_.fd;
    if (c->buf_index >= 0) io_uring_prep_read_fixed(s, fd, dst, len, off, c->buf_index);
    else io_uring_prep_read(s, fd, dst, len, off);
    if (m_.file_registered) s->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data(s, c);
  }

  void process(Chunk* c, int res) {
    if (m_.handle(c, res) == Next::Resubmit) resubmit_.push_back(c);
  }

  void loop() {
    std::vector<Chunk*> batch;
    std::vector<std::pair<Chunk*, int>> done;
    for (;;) {
      m_.deliver_pending();
      batch.clear();
      bool exit_now;
      {
        std::lock_guard lk(m_.mu);
        while (Chunk* c = m_.next_chunk_locked()) batch.push_back(c);
        exit_now = m_.drained_locked();
      }
      if (exit_now) break;
      for (Chunk* c : resubmit_) prep(c);
      resubmit_.clear();
      for (Chunk* c : batch) prep(c);
      if (!poll_armed_) arm_poll();
      int ret = io_uring_submit(&ring_);  // one syscall for the whole batch
      (void)ret;  // a refused submit leaves the SQEs queued; the next iteration resubmits them

      io_uring_cqe* cqe = nullptr;
      if (held_.empty()) {
        ret = io_uring_wait_cqe(&ring_, &cqe);
      } else {
        auto due = held_.front()->due;
        for (Chunk* c : held_) due = std::min(due, c->due);
        const auto wait = std::max<int64_t>(
            0, std::chrono::duration_cast<std::chrono::nanoseconds>(due - Clock::now()).count());
        __kernel_timespec ts{wait / 1000000000, wait % 1000000000};
        ret = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
      }
      (void)ret;  // -EINTR / -ETIME: fall through and look at what is there

      done.clear();
      unsigned head, n = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++n;
        void* d = io_uring_cqe_get_data(cqe);
        if (d == wake_tag()) {
          uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(efd_, &v, sizeof v);
          poll_armed_ = false;
        } else {
          done.emplace_back(static_cast<Chunk*>(d), cqe->res);
        }
      }
      io_uring_cq_advance(&ring_, n);
      const auto now = Clock::now();
      for (auto [c, res] : done) {
        uint64_t delay_ms = 0;
        res = m_.faults.complete_res(*c, res, delay_ms);
        if (delay_ms) {
          c->due = now + std::chrono::milliseconds(delay_ms);
          c->held_res = res;
          held_.push_back(c);
        } else {
          process(c, res);
        }
      }
      for (size_t i = 0; i < held_.size();) {
        if (held_[i]->due <= Clock::now()) {
          Chunk* c = held_[i];
          held_[i] = held_.back();
          held_.pop_back();
          process(c, c->held_res);
        } else {
          ++i;
        }
      }
    }
  }

  IoReader::Impl& m_;
  io_uring ring_{};
  bool ring_ok_ = false;
  int efd_ = -1;
  bool poll_armed_ = false;
  std::thread thread_;
  std::vector<Chunk*> resubmit_;  // chunks whose next submission is due (short read, EAGAIN)
  std::vector<Chunk*> held_;      // completions held back by a Delay fault
};

}  // namespace

std::unique_ptr<Backend> make_uring_backend(IoReader::Impl& impl, std::string& why_not) {
  auto b = std::make_unique<UringBackend>(impl);
  if (!b->init(why_not)) return nullptr;
  return b;
}

}  // namespace moe::prefetch::detail
