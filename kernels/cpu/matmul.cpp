// matmul / matvec (moe/kernels/matmul.h): argument checks, dispatch by SimdLevel, the scalar reference
// level (dequantize_row + f32 dot), activation quantization (Q8_0-style blocks of 32 with per-block
// d*sum, Q8_K-style blocks of 256 with sums per 16; the quantizers live with the ISA kernels) and the
// rows x tokens tiling around the ISA kernels; matmul_many runs several products' rows under one
// parallel_for.
// Thread-safety: scratch is thread_local (grown on first use, never shrunk), so concurrent calls from
// different threads are safe and steady-state calls allocate nothing.
#include "moe/kernels/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "matmul_internal.h"
#include "moe/kernels/cpu_features.h"
#include "moe/kernels/quant.h"

namespace moe::kernels {
namespace {

using detail::ActKind;
using detail::ActView;
using detail::KernelTable;

struct Tables {
  KernelTable avx2{};
  KernelTable avx512{};
  SimdLevel best = SimdLevel::Scalar;
};

const Tables& tables() {
  static const Tables t = [] {
    Tables r;
    const CpuFeatures& f = cpu_features();
#if defined(__x86_64__)
    if (f.has_avx2_level()) {
      detail::fill_table_avx2(r.avx2);
      r.best = SimdLevel::AVX2;
    }
    if (f.has_avx512_level()) {
      detail::fill_table_avx512(r.avx512);
      r.best = SimdLevel::AVX512;
    }
#else
    (void)f;
#endif
    // MOE_SIMD=avx2|scalar caps the level (to measure or rule out a code path on a wider CPU); it never
    // raises it past what the CPU has.
    if (const char* e = std::getenv("MOE_SIMD"); e && *e) {
      const std::string v = e;
      if (v == "scalar") r.best = SimdLevel::Scalar;
      else if (v == "avx2") r.best = std::min(r.best, SimdLevel::AVX2);
      else if (v != "avx512")
        std::fprintf(stderr, "moe: ignoring MOE_SIMD='%s' (use avx512, avx2 or scalar)\n", e);
    }
    return r;
  }();
  return t;
}

const KernelTable* table_for(SimdLevel level) {
  const Tables& t = tables();
  if (level > t.best) level = t.best;
  switch (level) {
    case SimdLevel::AVX512: return &t.avx512;
    case SimdLevel::AVX2: return &t.avx2;
    default: return nullptr;
  }
}

struct ActScratch {
  std::vector<int8_t> q;
  std::vector<float> d, s;
  std::vector<int32_t> qsum;
  std::vector<int16_t> bsums;
  std::vector<uint16_t> h;
  std::vector<ActView> views;
};

// f32 to bfloat16, rounded to nearest even (a NaN stays a quiet NaN; overflow rounds to infinity).
inline uint16_t bf16_rne(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Fills sc.views[0..n) for kind; quantizes the tokens (in parallel when there are several).
const ActView* prepare_acts(ActScratch& sc, const KernelTable& tab, ActKind kind, const float* X, size_t n,
                            size_t cols, ThreadPool* pool) {
  if (sc.views.size() < n) sc.views.resize(n);
  if (kind == ActKind::F32) {
    for (size_t t = 0; t < n; ++t) sc.views[t] = ActView{X + t * cols, nullptr, nullptr, nullptr, nullptr, nullptr};
    return sc.views.data();
  }
  if (kind == ActKind::BF16) {
    if (sc.h.size() < n * cols) sc.h.resize(n * cols);
    for (size_t t = 0; t < n; ++t) {
      uint16_t* h = sc.h.data() + t * cols;
      const float* x = X + t * cols;
      for (size_t c = 0; c < cols; ++c) h[c] = bf16_rne(x[c]);
      sc.views[t] = ActView{};
      sc.views[t].h = h;
    }
    return sc.views.data();
  }
  const size_t blk = kind == ActKind::Q8_256 ? 256 : 32;
  const size_t nb = cols / blk;
  if (sc.q.size() < n * cols) sc.q.resize(n * cols);
  if (sc.d.size() < n * nb) sc.d.resize(n * nb);
  if (kind != ActKind::Q8_256 && sc.s.size() < n * nb) sc.s.resize(n * nb);
  if (kind != ActKind::Q8_256 && sc.qsum.size() < n * nb) sc.qsum.resize(n * nb);
  if (kind == ActKind::Q8_256 && sc.bsums.size() < n * cols / 16) sc.bsums.resize(n * cols / 16);
  for (size_t t = 0; t < n; ++t) {
    ActView& v = sc.views[t];
    v = ActView{};
    v.q = sc.q.data() + t * cols;
    v.d = sc.d.data() + t * nb;
    if (kind != ActKind::Q8_256) {
      v.s = sc.s.data() + t * nb;
      v.qsum = sc.qsum.data() + t * nb;
    } else v.bsums = sc.bsums.data() + t * cols / 16;
  }
  ActView* views = sc.views.data();
  auto quant = [&](size_t t0, size_t t1, int) {
    for (size_t t = t0; t < t1; ++t) {
      ActView& v = views[t];
      if (kind != ActKind::Q8_256)
        tab.quant32(X + t * cols, cols, const_cast<int8_t*>(v.q), const_cast<float*>(v.d), const_cast<float*>(v.s),
                    const_cast<int32_t*>(v.qsum), kind == ActKind::Q8_32P);
      else
        tab.quant256(X + t * cols, cols, const_cast<int8_t*>(v.q), const_cast<float*>(v.d),
                            const_cast<int16_t*>(v.bsums));
    }
  };
  // Small batches (an expert's few tokens) quantize on the caller: a parallel_for costs more than it saves.
  if (pool && n > 1 && n * cols >= (size_t(64) << 10)) pool->parallel_for(n, quant, 1);
  else quant(0, n, 0);
  return views;
}

// ---- the scalar reference level ----

float dot_f32(const float* a, const float* b, size_t n) {
  // Four interleaved partial sums in a fixed order (deterministic, lets the CPU overlap the adds).
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

void scalar_rows(TensorType wt, const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const float* X,
                 size_t n, float* Y, size_t ldy) {
  thread_local std::vector<float> row;
  if (row.size() < cols) row.resize(cols);
  for (size_t r = r0; r < r1; ++r) {
    const float* w;
    if (wt == TensorType::F32) {
      w = reinterpret_cast<const float*>(W + r * rb);
    } else {
      dequantize_row(wt, W + r * rb, row.data(), static_cast<int64_t>(cols));
      w = row.data();
    }
    for (size_t t = 0; t < n; ++t) Y[t * ldy + r] = dot_f32(w, X + t * cols, cols);
  }
}

[[noreturn]] void bad_arg(const std::string& what) { throw std::invalid_argument("moe::kernels::matmul: " + what); }

}  // namespace

const char* simd_level_name(SimdLevel l) noexcept {
  switch (l) {
    case SimdLevel::Scalar: return "scalar";
    case SimdLevel::AVX2: return "avx2";
    case SimdLevel::AVX512: return "avx512";
  }
  return "unknown";
}

SimdLevel best_simd_level() noexcept { return tables().best; }

bool matmul_supported(TensorType wt) noexcept {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(wt));
  return tr && tr->dequantizable;
}

bool matmul_has_simd(TensorType wt, SimdLevel level) noexcept {
  const KernelTable* t = table_for(level);
  const uint32_t i = static_cast<uint32_t>(wt);
  return t && level <= best_simd_level() && i < uint32_t(detail::kNumTypes) && t->fn[i] != nullptr;
}

namespace {

// One product's dispatch decisions (see matmul_at) and its rows' work.
struct Plan {
  TensorType wt;
  const uint8_t* W;
  size_t rows, cols, n, rb;
  const float* X;
  float* Y;
  detail::TileFn fn;          // null: the scalar reference
  const ActView* acts;        // fn's activations (set by the caller after planning)
  ActKind kind;
  size_t tile, rblock, tblock, grain;
};

Plan make_plan(SimdLevel level, TensorType wt, const void* W, size_t rows, size_t cols, const float* X, size_t n,
               float* Y) {
  if (!matmul_supported(wt)) bad_arg(std::string("unsupported weight type ") + type_name(wt));
  const auto rbo = row_bytes(wt, cols);
  if (!rbo) bad_arg(std::string("cols ") + std::to_string(cols) + " is not a multiple of the " + type_name(wt) +
                    " block size");
  Plan p{};
  p.wt = wt;
  p.W = static_cast<const uint8_t*>(W);
  p.rows = rows;
  p.cols = cols;
  p.n = n;
  p.rb = static_cast<size_t>(*rbo);
  p.X = X;
  p.Y = Y;
  const KernelTable* table = table_for(level);
  const uint32_t ti = static_cast<uint32_t>(wt);
  p.fn = table && ti < uint32_t(detail::kNumTypes) ? table->fn[ti] : nullptr;
  p.kind = p.fn ? table->act[ti] : ActKind::F32;
  p.tile = p.fn ? size_t(std::max(1, table->tile[ti])) : size_t(detail::kMaxTile);
  // Cache blocking for batches: a block of weight rows (~128 KiB) is re-read from L2 for each tile of
  // p.tile tokens, and the tokens go in blocks whose activations fit beside it in L2 (~512 KiB: f32
  // activations are 4x larger than quantized ones). With a single tile the whole chunk is one block
  // (pure streaming). Weights are read from memory once per token block (once for n <= 128 quantized).
  const size_t ntiles = (n + p.tile - 1) / p.tile;
  // Row blocks are multiples of 16 (the AVX-512 Q8_0 kernel's panel height) where there is room.
  p.rblock = ntiles <= 1 ? rows : std::max<size_t>(1, (size_t(128) << 10) / p.rb);
  if (p.rblock > 16 && p.rblock < rows) p.rblock &= ~size_t(15);
  const size_t act_el = !p.fn || p.kind == ActKind::F32 ? 4 : (p.kind == ActKind::BF16 ? 2 : 1);
  const size_t act_bytes = cols * act_el + 1;
  p.tblock = std::max<size_t>(p.tile, (size_t(512) << 10) / act_bytes / p.tile * p.tile);
  // Grain: several rows per chunk so chunk bookkeeping is negligible; for large batches a chunk is
  // a whole cache block.
  p.grain = p.fn ? std::max<size_t>(ntiles <= 1 ? 16 : p.rblock, 1) : 16;
  return p;
}

// Rows [r0, r1) of the product for every token.
void run_rows(const Plan& p, size_t r0, size_t r1) {
  if (!p.fn) {
    scalar_rows(p.wt, p.W, p.rb, r0, r1, p.cols, p.X, p.n, p.Y, p.rows);
    return;
  }
  for (size_t tb0 = 0; tb0 < p.n; tb0 += p.tblock) {
    const size_t tb1 = std::min(p.n, tb0 + p.tblock);
    for (size_t b0 = r0; b0 < r1; b0 += p.rblock) {
      const size_t b1 = std::min(r1, b0 + p.rblock);
      for (size_t t0 = tb0; t0 < tb1; t0 += p.tile) {
        const int nt = static_cast<int>(std::min<size_t>(p.tile, tb1 - t0));
        p.fn(p.W, p.rb, b0, b1, p.cols, p.acts + t0, nt, p.Y + t0 * p.rows, p.rows);
      }
    }
  }
}

}  // namespace

void matmul_at(SimdLevel level, TensorType wt, const void* W, size_t rows, size_t cols, const float* X, size_t n,
               float* Y, ThreadPool* pool) {
  Plan p = make_plan(level, wt, W, rows, cols, X, n, Y);
  if (n == 0 || rows == 0) return;
  if (p.fn) {
    thread_local ActScratch sc;
    p.acts = prepare_acts(sc, *table_for(level), p.kind, X, n, cols, pool);
  }
  auto body = [&](size_t r0, size_t r1, int) { run_rows(p, r0, r1); };
  if (pool) pool->parallel_for(rows, body, p.grain);
  else body(0, rows, 0);
}

void matmul_many(const MatmulJob* jobs, size_t n_jobs, ThreadPool* pool) {
  // Scratch grows on first use and is reused (nothing allocates in the steady state).
  thread_local std::vector<Plan> plans;
  thread_local std::vector<ActScratch> scratch;
  thread_local std::vector<size_t> first_piece;  // prefix sums of the jobs' piece counts
  if (plans.size() < n_jobs) plans.resize(n_jobs);
  if (scratch.size() < n_jobs) scratch.resize(n_jobs);
  if (first_piece.size() < n_jobs + 1) first_piece.resize(n_jobs + 1);
  const SimdLevel level = best_simd_level();
  const KernelTable* table = table_for(level);
  first_piece[0] = 0;
  for (size_t j = 0; j < n_jobs; ++j) {
    const MatmulJob& jb = jobs[j];
    Plan& p = plans[j];
    p = make_plan(level, jb.type, jb.W, jb.rows, jb.cols, jb.X, jb.n, jb.Y);
    if (jb.n == 0) p.rows = 0;
    if (p.fn && p.rows > 0) {
      // A job with the same activations as an earlier one (an expert's gate and up) shares them.
      p.acts = nullptr;
      for (size_t i = 0; i < j && !p.acts; ++i)
        if (plans[i].acts && plans[i].X == p.X && plans[i].n == p.n && plans[i].cols == p.cols && plans[i].kind == p.kind)
          p.acts = plans[i].acts;
      // prepare_acts quantizes an expert's few tokens on the caller (cheaper than a parallel_for), a
      // batch's many on the pool.
      if (!p.acts) p.acts = prepare_acts(scratch[j], *table, p.kind, p.X, p.n, p.cols, pool);
    }
    first_piece[j + 1] = first_piece[j] + (p.rows + p.grain - 1) / p.grain;
  }
  const size_t pieces = first_piece[n_jobs];
  if (pieces == 0) return;
  const Plan* pl = plans.data();
  const size_t* fp = first_piece.data();
  auto body = [&](size_t q0, size_t q1, int) {
    size_t j = 0;
    while (fp[j + 1] <= q0) ++j;
    for (size_t q = q0; q < q1;) {
      while (fp[j + 1] <= q) ++j;
      const size_t q_end = std::min(q1, fp[j + 1]);
      const Plan& p = pl[j];
      run_rows(p, (q - fp[j]) * p.grain, std::min(p.rows, (q_end - fp[j]) * p.grain));
      q = q_end;
    }
  };
  if (pool) pool->parallel_for(pieces, body, 1);
  else body(0, pieces, 0);
}

void matmul(TensorType wt, const void* W, size_t rows, size_t cols, const float* X, size_t n, float* Y,
            ThreadPool* pool) {
  matmul_at(best_simd_level(), wt, W, rows, cols, X, n, Y, pool);
}

void matvec(TensorType wt, const void* W, size_t rows, size_t cols, const float* x, float* y, ThreadPool* pool) {
  matmul_at(best_simd_level(), wt, W, rows, cols, x, 1, y, pool);
}

}  // namespace moe::kernels
