// Benchmarks of moe/kernels/matmul.h (tools for `moe bench`, not tests): DRAM read bandwidth and the
// weight bandwidth matvec reaches per type. Each call allocates its own buffers (benchmarks are not on
// the hot path). Thread-safety: as matvec; the pool runs one benchmark at a time.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "moe/kernels/matmul.h"
#include "moe/kernels/quant.h"

namespace moe::kernels {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t[], FreeDeleter>;

Buffer alloc_buffer(size_t bytes) {
  void* p = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  if (!p) throw std::bad_alloc();
  return Buffer(static_cast<uint8_t*>(p));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Sums [p, p+n) as 64-bit lanes with four independent SSE2 accumulators (two loads per cycle are
// enough to saturate one core's share of DRAM bandwidth).
uint64_t read_sum(const uint8_t* p, size_t n) {
#if defined(__x86_64__)
  __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm_add_epi64(a0, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i)));
    a1 = _mm_add_epi64(a1, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 16)));
    a2 = _mm_add_epi64(a2, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 32)));
    a3 = _mm_add_epi64(a3, _mm_load_si128(reinterpret_cast<const __m128i*>(p + i + 48)));
  }
  a0 = _mm_add_epi64(_mm_add_epi64(a0, a1), _mm_add_epi64(a2, a3));
  uint64_t lanes[2];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(lanes), a0);
  uint64_t s = lanes[0] + lanes[1];
  for (; i < n; ++i) s += p[i];
  return s;
#else
  uint64_t s = 0;
  for (size_t i = 0; i < n; ++i) s += p[i];
  return s;
#endif
}

}  // namespace

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, int reps) {
  bytes = std::max<size_t>(bytes / 4096 * 4096, 4096);
  Buffer buf = alloc_buffer(bytes);
  std::memset(buf.get(), 1, bytes);  // fault the pages in before timing
  const size_t nthreads = size_t(pool.size());
  std::vector<uint64_t> sink(nthreads * 8, 0);
  double best = 0.0;
  for (int rep = 0; rep < std::max(1, reps); ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    // One contiguous slice per 4 KiB page run; chunks are page multiples.
    const size_t pages = bytes / 4096;
    pool.parallel_for(pages, [&](size_t b, size_t e, int t) {
      sink[size_t(t) * 8] += read_sum(buf.get() + b * 4096, (e - b) * 4096);
    }, 256);
    const double s = seconds_since(t0);
    best = std::max(best, double(bytes) / s);
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep + v;
  (void)keep;
  return best;
}

double measure_matvec_bandwidth(TensorType wt, ThreadPool& pool, size_t bytes, int reps, SimdLevel level) {
  if (!matmul_supported(wt) || !traits(wt).quantizable) return 0.0;
  const size_t cols = 4096;
  const size_t rb = static_cast<size_t>(*row_bytes(wt, cols));
  const size_t rows = std::max<size_t>(1, bytes / rb);
  const size_t total = rows * rb;
  Buffer w = alloc_buffer(total);
  // Quantize 64 random rows and repeat them: the contents do not matter for bandwidth.
  const size_t seed_rows = std::min<size_t>(64, rows);
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> tmp(cols);
  for (size_t r = 0; r < seed_rows; ++r) {
    for (auto& v : tmp) v = dist(rng);
    quantize_row(wt, tmp.data(), w.get() + r * rb, static_cast<int64_t>(cols));
  }
  for (size_t r = seed_rows; r < rows; ++r) std::memcpy(w.get() + r * rb, w.get() + (r % seed_rows) * rb, rb);
  std::vector<float> x(cols), y(rows);
  for (auto& v : x) v = dist(rng);
  matmul_at(level, wt, w.get(), rows, cols, x.data(), 1, y.data(), &pool);  // warm-up (scratch, pages)
  double best = 0.0;
  for (int rep = 0; rep < std::max(1, reps); ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    matmul_at(level, wt, w.get(), rows, cols, x.data(), 1, y.data(), &pool);
    best = std::max(best, double(total) / seconds_since(t0));
  }
  return best;
}

}  // namespace moe::kernels
