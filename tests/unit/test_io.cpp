// Transfer engine (moe/prefetch/io.h): data correctness against the file on both backends, O_DIRECT
// really in use, fallbacks (buffered, pread, registration refused), and the robustness contract
// driven by fault injection on real reads: short reads, EIO, EAGAIN, slow completions, cancellation,
// shutdown with work in flight, demand-before-prefetch. Single-threaded test driver; the readers
// under test run their own threads.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <cstdlib>
#include <cstring>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "moe/error.h"
#include "moe/prefetch/io.h"

using namespace moe;
using namespace moe::prefetch;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kFileBytes = (64ull << 20) + 1234;  // not a block multiple: exercises the EOF tail

struct AlignedBuf {
  uint8_t* p = nullptr;
  size_t n = 0;
  explicit AlignedBuf(size_t bytes) : n(bytes) {
    void* q = nullptr;
    REQUIRE(posix_memalign(&q, kIoAlign, bytes ? bytes : kIoAlign) == 0);
    p = static_cast<uint8_t*>(q);
  }
  ~AlignedBuf() { std::free(p); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
};

// Writes (once) a file of pseudo-random bytes and returns its contents.
const std::vector<uint8_t>& test_data() {
  static std::vector<uint8_t> data = [] {
    std::vector<uint8_t> d(kFileBytes);
    std::mt19937_64 rng(42);
    for (size_t i = 0; i + 8 <= d.size(); i += 8) {
      const uint64_t v = rng();
      std::memcpy(&d[i], &v, 8);
    }
    for (size_t i = d.size() / 8 * 8; i < d.size(); ++i) d[i] = uint8_t(i * 7);
    return d;
  }();
  return data;
}

std::string write_file(const std::string& path, const std::vector<uint8_t>& d) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  size_t off = 0;
  while (off < d.size()) {
    ssize_t n = ::write(fd, d.data() + off, d.size() - off);
    REQUIRE(n > 0);
    off += size_t(n);
  }
  ::fsync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // start with a cold page cache
  ::close(fd);
  return path;
}

const std::string& data_path() {
  static std::string p = write_file(std::string(MOE_TEST_TMP) + "/io_data.bin", test_data());
  return p;
}

IoOptions opts(IoBackend b) {
  IoOptions o;
  o.backend = b;
  return o;
}

std::shared_ptr<IoFaultPlan> plan_with(std::vector<IoFaultRule> rules) {
  auto p = std::make_shared<IoFaultPlan>();
  p->rules = std::move(rules);
  return p;
}

IoFaultRule rule(IoFaultRule::Kind k, uint64_t request, uint64_t value, uint32_t times = 1, int32_t chunk = 0) {
  IoFaultRule r;
  r.kind = k, r.request = request, r.value = value, r.times = times, r.chunk = chunk;
  return r;
}

bool same(const uint8_t* got, uint64_t off, uint64_t len) {
  return std::memcmp(got, test_data().data() + off, len) == 0;
}

// Fraction of the file's pages resident in the page cache.
double resident_fraction(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  struct stat sb{};
  ::fstat(fd, &sb);
  void* m = ::mmap(nullptr, size_t(sb.st_size), PROT_READ, MAP_SHARED, fd, 0);
  REQUIRE(m != MAP_FAILED);
  const size_t pg = size_t(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((size_t(sb.st_size) + pg - 1) / pg);
  REQUIRE(::mincore(m, size_t(sb.st_size), vec.data()) == 0);
  size_t res = 0;
  for (unsigned char v : vec) res += v & 1;
  ::munmap(m, size_t(sb.st_size));
  ::close(fd);
  return double(res) / double(vec.size());
}

void drop_cache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// Random requests of 1..3 pieces, aligned and unaligned, Exact and Slot, checked byte for byte.
void random_reads(IoReader& r, uint64_t seed, int requests) {
  std::mt19937_64 rng(seed);
  struct Req {
    uint64_t ticket;
    std::vector<IoPiece> pieces;
    std::vector<std::unique_ptr<AlignedBuf>> bufs;
  };
  std::vector<Req> reqs(static_cast<size_t>(requests));
  for (auto& q : reqs) {
    const int n = 1 + int(rng() % 3);
    for (int i = 0; i < n; ++i) {
      IoPiece p;
      const bool aligned = rng() % 2;
      p.length = 1 + rng() % (aligned ? 3ull << 20 : 600000);
      if (aligned) p.length = (p.length + kIoAlign - 1) / kIoAlign * kIoAlign;
      p.offset = rng() % (kFileBytes - p.length);
      if (aligned) p.offset = p.offset / kIoAlign * kIoAlign;
      if (rng() % 8 == 0) p.offset = kFileBytes - p.length;  // the tail, up to end of file
      p.mode = rng() % 4 == 0 ? IoPieceMode::Slot : IoPieceMode::Exact;
      const uint64_t shift = (p.mode == IoPieceMode::Exact && rng() % 2) ? 1 + rng() % 63 : 0;
      auto b = std::make_unique<AlignedBuf>(slot_bytes(p.offset, p.length) + 64);
      p.dst = b->p + shift;
      q.pieces.push_back(p);
      q.bufs.push_back(std::move(b));
    }
    q.ticket = r.submit(q.pieces, rng() % 3 ? IoPriority::Prefetch : IoPriority::Demand, q.ticket);
  }
  for (auto& q : reqs) {
    IoStatus s = r.wait(q.ticket);
    REQUIRE_MESSAGE(s.ok(), s.message);
    for (const IoPiece& p : q.pieces) {
      const uint8_t* got = static_cast<const uint8_t*>(p.dst);
      if (p.mode == IoPieceMode::Slot) got += slot_inner_offset(p.offset);
      REQUIRE_MESSAGE(same(got, p.offset, p.length), "offset ", p.offset, " length ", p.length);
    }
  }
}

const IoBackend kBackends[] = {IoBackend::Uring, IoBackend::Pread};

// A reader with prefetch_depth 1 whose first request is held `hold_ms` by a Delay fault, so the requests
// after it queue and the queues decide their order. Request `tag` reads 256 KiB at (tag % 100) * 512 KiB
// into its own buffer; completions are recorded in order.
struct HeldReader {
  std::unique_ptr<IoReader> r;
  std::vector<std::unique_ptr<AlignedBuf>> bufs;
  std::map<uint64_t, uint64_t> ticket;  // tag -> ticket
  std::mutex mu;
  std::vector<uint64_t> order;  // tags as they completed

  HeldReader(IoBackend b, uint64_t hold_ms) {
    IoOptions o = opts(b);
    o.prefetch_depth = 1;  // one prefetch-class read in flight at a time
    o.faults = plan_with({rule(IoFaultRule::Kind::Delay, 0, hold_ms)});
    r = IoReader::open(data_path(), o);
  }
  uint64_t submit(uint64_t tag, IoPriority prio) {
    bufs.push_back(std::make_unique<AlignedBuf>(256 << 10));
    IoPiece p{(tag % 100) * (512 << 10), 256 << 10, bufs.back()->p};
    return ticket[tag] = r->submit({&p, 1}, prio, tag, [this](const IoCompletion& c) {
      std::lock_guard lk(mu);
      order.push_back(c.tag);
    });
  }
  // Submits the held request and waits until the reader has issued it: it is the only request, so
  // nothing overtakes it. (Without this wait, a slow reader thread could find later requests queued and
  // rightly issue one of them first.) peak_depth counts issued reads; reads counts them as they complete.
  void submit_held(uint64_t tag, IoPriority prio) {
    submit(tag, prio);
    for (int spin = 0; spin < 5000 && r->stats().peak_depth == 0; ++spin)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(r->stats().peak_depth == 1);
    REQUIRE(r->stats().reads == 0);  // still held
  }
  // Waits for every request not yet consumed, then joins the reader (a callback may still be running
  // when wait() returns).
  void finish(const std::vector<uint64_t>& consumed = {}) {
    for (auto [tag, t] : ticket)
      if (std::find(consumed.begin(), consumed.end(), tag) == consumed.end()) REQUIRE(r->wait(t).ok());
    r->shutdown();
  }
  std::string order_text() {
    std::lock_guard lk(mu);
    std::string s;
    for (uint64_t v : order) s += std::to_string(v) + " ";
    return s;
  }
};

}  // namespace

TEST_CASE("random aligned and unaligned reads match the file on both backends") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    auto r = IoReader::open(data_path(), opts(b));
    CHECK(r->backend() == b);
    CHECK(r->direct());
    CHECK(r->file_size() == kFileBytes);
    random_reads(*r, 7 + uint64_t(b), 120);
    IoStats s = r->stats();
    CHECK(s.requests == 120);
    CHECK(s.completed == 120);
    CHECK(s.failed == 0);
    CHECK(s.peak_depth >= 1);
    CHECK(s.bytes_read > 0);
    if (b == IoBackend::Uring) {
      CHECK(r->file_registered());
      CHECK(r->buffers_registered());
    }
  }
}

TEST_CASE("adjacent pieces are coalesced and huge reads are chunked") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    auto r = IoReader::open(data_path(), opts(b));
    AlignedBuf buf(3 << 20);
    // gate/up/down-like slices adjacent in the file and in memory: one read.
    IoPiece p[3] = {{1 << 20, 1 << 20, buf.p + (1 << 20)}, {0, 1 << 20, buf.p}, {2 << 20, 1 << 20, buf.p + (2 << 20)}};
    REQUIRE(r->wait(r->submit(p, IoPriority::Demand)).ok());
    CHECK(same(buf.p, 0, 3 << 20));
    CHECK(r->stats().reads == 1);
    // 20 MiB in one piece: 5 chunks of 4 MiB.
    AlignedBuf big(20 << 20);
    IoPiece q{8 << 20, 20 << 20, big.p};
    REQUIRE(r->wait(r->submit({&q, 1}, IoPriority::Demand)).ok());
    CHECK(same(big.p, 8 << 20, 20 << 20));
    CHECK(r->stats().reads == 6);
    // Unaligned neighbours share bounce blocks.
    std::vector<uint8_t> a(5000), c(7000);
    IoPiece u[2] = {{100, 5000, a.data()}, {5100, 7000, c.data()}};
    REQUIRE(r->wait(r->submit(u, IoPriority::Prefetch)).ok());
    CHECK(same(a.data(), 100, 5000));
    CHECK(same(c.data(), 5100, 7000));
    CHECK(r->stats().reads == 7);
    CHECK(r->stats().bytes_bounced == 12000);
  }
}

TEST_CASE("O_DIRECT is really used and the page cache stays cold") {
  drop_cache(data_path());
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    auto r = IoReader::open(data_path(), opts(b));
    REQUIRE(r->direct());
    CHECK((::fcntl(r->fd(), F_GETFL) & O_DIRECT) != 0);
    AlignedBuf buf(kFileBytes + kIoAlign);
    IoPiece p{0, kFileBytes, buf.p};
    REQUIRE(r->wait(r->submit({&p, 1}, IoPriority::Demand)).ok());
    CHECK(same(buf.p, 0, kFileBytes));
    CHECK(resident_fraction(data_path()) < 0.05);
  }
}

TEST_CASE("buffered fallback when the filesystem refuses O_DIRECT") {
  auto plan = std::make_shared<IoFaultPlan>();
  plan->refuse_direct = true;  // the EINVAL path of open(O_DIRECT)
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    drop_cache(data_path());
    std::vector<std::string> notices;
    IoOptions o = opts(b);
    o.faults = plan;
    o.notice = [&](std::string_view s) { notices.emplace_back(s); };
    auto r = IoReader::open(data_path(), o);
    CHECK_FALSE(r->direct());
    CHECK((::fcntl(r->fd(), F_GETFL) & O_DIRECT) == 0);
    REQUIRE(notices.size() == 1);
    CHECK(notices[0].find("O_DIRECT") != std::string::npos);
    CHECK(notices[0].find(data_path()) != std::string::npos);
    random_reads(*r, 99, 40);
    CHECK(resident_fraction(data_path()) < 0.05);  // fadvise(DONTNEED) after every read
  }
  // tmpfs: older kernels refuse O_DIRECT (EINVAL -> fallback), newer ones accept it. Either way the
  // data must be right.
  if (::access("/dev/shm", W_OK) == 0) {
    std::vector<uint8_t> small(test_data().begin(), test_data().begin() + (1 << 20) + 77);
    const std::string p = write_file("/dev/shm/moe_test_io_" + std::to_string(::getpid()), small);
    std::vector<std::string> notices;
    IoOptions o;
    o.notice = [&](std::string_view s) { notices.emplace_back(s); };
    auto r = IoReader::open(p, o);
    CHECK(notices.size() == (r->direct() ? 0u : 1u));
    std::vector<uint8_t> got(small.size() - 3);
    IoPiece q{3, got.size(), got.data()};
    CHECK(r->wait(r->submit({&q, 1}, IoPriority::Demand)).ok());
    CHECK(std::memcmp(got.data(), small.data() + 3, got.size()) == 0);
    r.reset();
    ::unlink(p.c_str());
  }
}

TEST_CASE("pread fallback when io_uring is refused; registration refusal is survivable") {
  auto plan = std::make_shared<IoFaultPlan>();
  plan->refuse_uring = true;
  std::vector<std::string> notices;
  IoOptions o;
  o.faults = plan;
  o.notice = [&](std::string_view s) { notices.emplace_back(s); };
  auto r = IoReader::open(data_path(), o);
  CHECK(r->backend() == IoBackend::Pread);
  REQUIRE(notices.size() == 1);
  CHECK(notices[0].find("io_uring") != std::string::npos);
  random_reads(*r, 5, 20);
  r.reset();

  o.backend = IoBackend::Uring;  // explicitly asked for: refusing is an error, not a silent fallback
  CHECK_THROWS_AS(IoReader::open(data_path(), o), moe::Error);

  auto plan2 = std::make_shared<IoFaultPlan>();
  plan2->refuse_register = true;
  notices.clear();
  o.faults = plan2;
  r = IoReader::open(data_path(), o);
  CHECK(r->backend() == IoBackend::Uring);
  CHECK_FALSE(r->buffers_registered());
  CHECK_FALSE(r->file_registered());
  CHECK(notices.size() == 2);
  random_reads(*r, 6, 20);
}

TEST_CASE("short reads are resubmitted for the remainder") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    IoOptions o = opts(b);
    o.faults = plan_with({rule(IoFaultRule::Kind::ShortRead, 0, 5000, 1, -1),
                          rule(IoFaultRule::Kind::ShortRead, 1, 100, 1, -1)});
    auto r = IoReader::open(data_path(), o);
    AlignedBuf buf(6 << 20);
    IoPiece p{4096, 6 << 20, buf.p};  // two chunks, each first cut to one block
    REQUIRE(r->wait(r->submit({&p, 1}, IoPriority::Demand)).ok());
    CHECK(same(buf.p, 4096, 6 << 20));
    std::vector<uint8_t> u(300001);
    IoPiece q{12345, u.size(), u.data()};  // bounce path
    REQUIRE(r->wait(r->submit({&q, 1}, IoPriority::Demand)).ok());
    CHECK(same(u.data(), 12345, u.size()));
    CHECK(r->stats().resubmits >= 3);
  }
}

TEST_CASE("EIO becomes an error naming the file and offset") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    IoOptions o = opts(b);
    o.faults = plan_with({rule(IoFaultRule::Kind::Error, 1, EIO)});
    auto r = IoReader::open(data_path(), o);
    AlignedBuf buf(1 << 20), buf0(4096);
    IoPiece p0{0, 4096, buf0.p};
    IoPiece p1{3 << 20, 1 << 20, buf.p};
    const uint64_t t0 = r->submit({&p0, 1}, IoPriority::Demand);
    const uint64_t t1 = r->submit({&p1, 1}, IoPriority::Demand);
    CHECK(r->wait(t0).ok());
    IoStatus s = r->wait(t1);
    CHECK(s.code == ErrorCode::Io);
    CHECK(s.message.find(data_path()) != std::string::npos);
    CHECK(s.message.find("offset " + std::to_string(3 << 20)) != std::string::npos);
    CHECK(s.message.find("Input/output error") != std::string::npos);
    CHECK(r->stats().failed == 1);
    // The reader keeps working afterwards.
    IoPiece p2{5 << 20, 1 << 20, buf.p};
    CHECK(r->wait(r->submit({&p2, 1}, IoPriority::Demand)).ok());
    CHECK(same(buf.p, 5 << 20, 1 << 20));
  }
}

TEST_CASE("EAGAIN is retried, but only a bounded number of times") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    IoOptions o = opts(b);
    o.max_retries = 5;
    o.faults = plan_with({rule(IoFaultRule::Kind::Again, 0, 0, 3), rule(IoFaultRule::Kind::Again, 1, 0, 1000)});
    auto r = IoReader::open(data_path(), o);
    AlignedBuf buf(1 << 20);
    IoPiece p{1 << 20, 1 << 20, buf.p};
    CHECK(r->wait(r->submit({&p, 1}, IoPriority::Demand)).ok());
    CHECK(same(buf.p, 1 << 20, 1 << 20));
    CHECK(r->stats().retries == 3);
    IoStatus s = r->wait(r->submit({&p, 1}, IoPriority::Demand));
    CHECK(s.code == ErrorCode::Io);
    CHECK(s.message.find("retries") != std::string::npos);
  }
}

TEST_CASE("a slow completion does not hold back the others") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    IoOptions o = opts(b);
    o.faults = plan_with({rule(IoFaultRule::Kind::Delay, 0, 300)});
    auto r = IoReader::open(data_path(), o);
    std::mutex mu;
    std::vector<uint64_t> order;
    auto cb = [&](const IoCompletion& c) {
      std::lock_guard lk(mu);
      order.push_back(c.tag);
    };
    AlignedBuf a(1 << 20), c(1 << 20);
    IoPiece pa{0, 1 << 20, a.p}, pc{1 << 20, 1 << 20, c.p};
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t ta = r->submit({&pa, 1}, IoPriority::Demand, 0, cb);
    const uint64_t tc = r->submit({&pc, 1}, IoPriority::Demand, 1, cb);
    CHECK(r->wait(tc).ok());
    CHECK(r->wait(ta).ok());
    CHECK(std::chrono::steady_clock::now() - t0 >= 250ms);
    CHECK(same(a.p, 0, 1 << 20));
    // Callbacks may still be running right after wait(): shutdown joins the reaper.
    r->shutdown();
    REQUIRE(order.size() == 2);
    CHECK(order[0] == 1);
    CHECK(order[1] == 0);
  }
}

TEST_CASE("cancellation drops queued requests and discards in-flight ones") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    IoOptions o = opts(b);
    o.queue_depth = 2;
    o.pread_threads = 2;
    o.prefetch_depth = 2;
    o.faults = plan_with({rule(IoFaultRule::Kind::Delay, 0, 300), rule(IoFaultRule::Kind::Delay, 1, 300)});
    auto r = IoReader::open(data_path(), o);
    std::vector<std::unique_ptr<AlignedBuf>> bufs;
    std::vector<uint64_t> tickets;
    std::atomic<int> callbacks{0};
    for (int i = 0; i < 12; ++i) {
      bufs.push_back(std::make_unique<AlignedBuf>(1 << 20));
      std::memset(bufs.back()->p, 0xAB, 1 << 20);
      IoPiece p{uint64_t(i) << 20, 1 << 20, bufs.back()->p};
      tickets.push_back(r->submit({&p, 1}, IoPriority::Prefetch, uint64_t(i), [&](const IoCompletion&) { callbacks++; }));
    }
    std::this_thread::sleep_for(50ms);  // requests 0 and 1 are in flight (held 300 ms), the rest queued
    CHECK(r->cancel(tickets[0]) == CancelResult::Discarding);
    CHECK(r->cancel(tickets[5]) == CancelResult::Dropped);
    CHECK(r->cancel(tickets[5]) == CancelResult::NotFound);
    CHECK(r->cancel(987654) == CancelResult::NotFound);
    CHECK(r->wait(tickets[5]).code == ErrorCode::Cancelled);
    CHECK(r->wait(tickets[0]).code == ErrorCode::Cancelled);
    for (int i : {1, 2, 3, 4, 6, 7, 8, 9, 10, 11}) {
      IoStatus s = r->wait(tickets[size_t(i)]);
      CHECK_MESSAGE(s.ok(), i, ": ", s.message);
      CHECK(same(bufs[size_t(i)]->p, uint64_t(i) << 20, 1 << 20));
    }
    // The dropped request never touched its memory.
    std::vector<uint8_t> sentinel(1 << 20, 0xAB);
    CHECK(std::memcmp(bufs[5]->p, sentinel.data(), 1 << 20) == 0);
    r->shutdown();
    CHECK(callbacks == 12);
    CHECK(r->stats().cancelled == 2);
  }
}

TEST_CASE("shutdown with work in flight drains and does not hang") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    IoOptions o = opts(b);
    o.queue_depth = 4;
    o.pread_threads = 4;
    std::vector<IoFaultRule> rules;  // every read is slow: most requests are still queued at shutdown
    for (uint64_t i = 0; i < 60; ++i) rules.push_back(rule(IoFaultRule::Kind::Delay, i, 150));
    o.faults = plan_with(rules);
    auto r = IoReader::open(data_path(), o);
    AlignedBuf buf(60 << 16);
    std::atomic<int> ok{0}, cancelled{0}, other{0};
    for (int i = 0; i < 60; ++i) {
      IoPiece p{uint64_t(i) << 20, 1 << 16, buf.p + (uint64_t(i) << 16)};
      r->submit({&p, 1}, i < 2 ? IoPriority::Demand : IoPriority::Prefetch, 0, [&](const IoCompletion& c) {
        if (c.status.ok()) ok++;
        else if (c.status.code == ErrorCode::Cancelled) cancelled++;
        else other++;
      });
    }
    std::this_thread::sleep_for(20ms);
    auto done = std::async(std::launch::async, [&] { r->shutdown(); });
    REQUIRE(done.wait_for(10s) == std::future_status::ready);
    CHECK(ok + cancelled == 60);
    CHECK(ok >= 2);          // the reads in flight drained to completion
    CHECK(cancelled >= 40);  // queued ones were failed
    CHECK(other == 0);
    IoPiece p{0, 4096, buf.p};
    CHECK_THROWS_AS(r->submit({&p, 1}, IoPriority::Demand), moe::Error);
    r->shutdown();  // idempotent
  }
}

TEST_CASE("a demand request overtakes queued prefetches") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    IoOptions o = opts(b);
    // Two prefetch reads in flight, both held for 800 ms: the other 98 stay queued behind them (even
    // under TSan) until the demand has been submitted.
    o.prefetch_depth = 2;
    o.faults = plan_with({rule(IoFaultRule::Kind::Delay, 0, 800), rule(IoFaultRule::Kind::Delay, 1, 800)});
    auto r = IoReader::open(data_path(), o);
    std::vector<std::unique_ptr<AlignedBuf>> bufs;
    for (int i = 0; i < 100; ++i) bufs.push_back(std::make_unique<AlignedBuf>(256 << 10));
    std::mutex mu;
    std::vector<uint64_t> order;
    auto cb = [&](const IoCompletion& c) {
      std::lock_guard lk(mu);
      order.push_back(c.tag);
    };
    for (uint64_t i = 0; i < 100; ++i) {
      IoPiece p{i * (512 << 10), 256 << 10, bufs[i]->p};
      r->submit({&p, 1}, IoPriority::Prefetch, i, cb);
    }
    AlignedBuf d(256 << 10);
    IoPiece p{40 << 20, 256 << 10, d.p};
    const uint64_t t = r->submit({&p, 1}, IoPriority::Demand, 1000, cb);
    CHECK(r->wait(t).ok());
    CHECK(same(d.p, 40 << 20, 256 << 10));
    r->shutdown();
    REQUIRE(order.size() == 101);
    const size_t pos = size_t(std::find(order.begin(), order.end(), 1000) - order.begin());
    CAPTURE(pos);
    CHECK(pos == 0);  // before the held reads and everything queued
  }
}

TEST_CASE("queued prefetches go before queued speculative reads, which are chunked smaller") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    HeldReader h(b, 2000);  // 2 s: every other request is queued behind it, even under TSan
    h.submit_held(0, IoPriority::Speculative);
    for (uint64_t i = 1; i < 20; ++i) h.submit(i, IoPriority::Speculative);
    for (uint64_t i = 100; i < 120; ++i) h.submit(i, IoPriority::Prefetch);
    h.finish();
    CHECK(h.r->stats().peak_depth <= 1);  // prefetch_depth 1: never two prefetch-class reads at once
    const std::string completion_order = h.order_text();
    CAPTURE(completion_order);
    REQUIRE(h.order.size() == 40);
    // The held read first, then the 20 prefetches in submission order, then the speculative reads.
    CHECK(h.order[0] == 0);
    for (size_t i = 0; i < 20; ++i) CHECK(h.order[1 + i] == 100 + i);
    for (size_t i = 1; i < 20; ++i) CHECK(h.order[20 + i] == i);
  }
  // 2 MiB: one read at Prefetch priority, four 512 KiB reads at Speculative; the bytes are the same.
  auto r = IoReader::open(data_path(), opts(IoBackend::Auto));
  AlignedBuf a(2 << 20), c(2 << 20);
  IoPiece pa{4 << 20, 2 << 20, a.p}, pc{4 << 20, 2 << 20, c.p};
  REQUIRE(r->wait(r->submit({&pa, 1}, IoPriority::Prefetch)).ok());
  CHECK(r->stats().reads == 1);
  REQUIRE(r->wait(r->submit({&pc, 1}, IoPriority::Speculative)).ok());
  CHECK(r->stats().reads == 5);
  CHECK(same(c.p, 4 << 20, 2 << 20));
  CHECK_THROWS_AS(r->submit({&pa, 1}, IoPriority(7)), Error);
}

TEST_CASE("raise() moves a queued request up: speculative to prefetch, or to demand past the prefetch limit") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    HeldReader h(b, 2000);
    h.submit_held(0, IoPriority::Speculative);
    for (uint64_t i = 1; i <= 5; ++i) h.submit(i, IoPriority::Speculative);
    for (uint64_t i = 100; i <= 104; ++i) h.submit(i, IoPriority::Prefetch);
    IoReader& r = *h.r;
    CHECK_FALSE(r.raise(h.ticket[0], IoPriority::Demand));        // in flight: nothing queued to move
    CHECK_FALSE(r.raise(h.ticket[100], IoPriority::Speculative));  // not a raise
    CHECK_FALSE(r.raise(h.ticket[101], IoPriority::Prefetch));     // its own priority
    CHECK_FALSE(r.raise(999999, IoPriority::Demand));              // unknown
    CHECK(r.raise(h.ticket[3], IoPriority::Prefetch));             // behind the queued prefetches
    CHECK(r.raise(h.ticket[5], IoPriority::Demand));               // a demand read: issued at once
    REQUIRE(r.wait(h.ticket[5]).ok());
    {
      std::lock_guard lk(h.mu);
      CHECK(std::find(h.order.begin(), h.order.end(), 0) == h.order.end());  // it overtook the held read
    }
    h.finish({5});
    const IoStats st = r.stats();
    CHECK(st.raised == 2u);
    CHECK(st.peak_depth <= 2);  // the held prefetch-class read and the raised demand read
    const std::string completion_order = h.order_text();
    CAPTURE(completion_order);
    const std::vector<uint64_t> want = {5, 0, 100, 101, 102, 103, 104, 3, 1, 2, 4};
    CHECK(h.order == want);
    CHECK(same(h.bufs[5]->p, 5 * (512 << 10), 256 << 10));  // request 5 read into its buffer
  }
}

TEST_CASE("poll delivers callback-less completions exactly once") {
  auto r = IoReader::open(data_path());
  std::vector<uint8_t> a(1000), c(1000);
  IoPiece pa{10, 1000, a.data()}, pc{20000, 1000, c.data()};
  const uint64_t ta = r->submit({&pa, 1}, IoPriority::Demand, 11);
  const uint64_t tc = r->submit({&pc, 1}, IoPriority::Demand, 22);
  CHECK(r->wait(ta).ok());
  CHECK(r->wait(ta).code == ErrorCode::InvalidArgument);  // consumed
  std::vector<IoCompletion> got;
  for (int i = 0; i < 1000 && got.empty(); ++i) {
    r->poll(got);
    if (got.empty()) std::this_thread::sleep_for(1ms);
  }
  REQUIRE(got.size() == 1);
  CHECK(got[0].ticket == tc);
  CHECK(got[0].tag == 22);
  CHECK(got[0].bytes == 1000);
  CHECK(got[0].status.ok());
  CHECK(same(c.data(), 20000, 1000));
  CHECK(r->wait(tc).code == ErrorCode::InvalidArgument);
  CHECK(r->poll(got) == 0);
}

TEST_CASE("bad input is rejected with the file named") {
  CHECK_THROWS_WITH_AS(IoReader::open(std::string(MOE_TEST_TMP) + "/no_such_file.bin"),
                       doctest::Contains("no_such_file.bin"), moe::Error);
  auto r = IoReader::open(data_path());
  std::vector<uint8_t> a(10);
  IoPiece past{kFileBytes - 5, 10, a.data()};
  CHECK_THROWS_WITH_AS(r->submit({&past, 1}, IoPriority::Demand), doctest::Contains("io_data.bin"), moe::Error);
  IoPiece slot{0, 10, a.data() + 1, IoPieceMode::Slot};
  CHECK_THROWS_AS(r->submit({&slot, 1}, IoPriority::Demand), moe::Error);
  CHECK_THROWS_AS(r->submit({}, IoPriority::Demand), moe::Error);
  IoOptions bad;
  bad.chunk_bytes = 1000;
  CHECK_THROWS_AS(IoReader::open(data_path(), bad), moe::Error);
}

TEST_CASE("throughput check (reported, not asserted on time)") {
  for (IoBackend b : kBackends) {
    const std::string backend_name = to_string(b);
    CAPTURE(backend_name);
    drop_cache(data_path());
    auto r = IoReader::open(data_path(), opts(b));
    AlignedBuf buf(64 << 20);
    std::vector<uint64_t> t;
    for (uint64_t off = 0; off < (64 << 20); off += 4 << 20) {  // expert-sized requests, 4 MiB each
      IoPiece p{off, 4 << 20, buf.p + off};
      t.push_back(r->submit({&p, 1}, IoPriority::Prefetch));
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t x : t) REQUIRE(r->wait(x).ok());
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(same(buf.p, 0, 64 << 20));
    IoStats s = r->stats();
    CHECK(s.bytes_read == (64ull << 20));
    CHECK(s.avg_depth > 0);
    CHECK(s.busy_seconds > 0);
    CHECK(s.peak_depth <= 32);
    MESSAGE(backend_name, ": ", s.bytes_read / 1e6, " MB in ", secs, " s wall, ", s.gbps(),
            " GB/s over busy time, avg depth ", s.avg_depth, ", peak ", s.peak_depth);
  }
}
