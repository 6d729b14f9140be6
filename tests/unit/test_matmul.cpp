// Tests of moe/kernels/matmul.h and thread_pool.h: every dispatch level this CPU runs (scalar, AVX2,
// AVX-512), every type with a SIMD kernel, against the oracle dequantize_row (quant.h) + a double dot.
//
// Tolerances, per path, with the reason:
//  * F32 / F16 / BF16 weights (f32 activations, exact weight widening): only f32 rounding of the sum;
//    |y - ref| <= cols * 2^-23 * sum|w*x| (the recursive-summation bound, with a 2x margin).
//  * BF16 weights on AVX512_BF16 CPUs (vdpbf16ps): the activations are rounded to bfloat16 (relative
//    error <= 2^-8 each: 8 significant bits), so sum|w*x| * 2^-8 is added to the bound above; RMS
//    error below 5e-3.
//  * 8-bit activations (Q8_0-style blocks of 32 for Q4_0/Q8_0/MXFP4, Q8_K-style blocks of 256 for the
//    K-quants): each activation is rounded to a step of d = amax_block/127, an error <= d/2, so
//    |y - ref| <= sum_blocks (amax_b / 254) * sum_{c in b} |w_c|  (computed per row: a strict bound),
//    plus the f32 rounding term above. Typical error is far below the bound (errors cancel): the RMS
//    error relative to the RMS output is also asserted below 1e-2 (2e-2 for 256-blocks, see check()).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "moe/kernels/cpu_features.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/thread_pool.h"

using namespace moe;
using namespace moe::kernels;

namespace {

const TensorType kTypes[] = {TensorType::F32,  TensorType::F16,  TensorType::BF16, TensorType::Q4_0, TensorType::Q8_0,
                             TensorType::MXFP4, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K};

bool is_float_type(TensorType t) { return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16; }

// The activations a level's kernel for t uses (the error bound to check against).
enum class Acts { F32, Q8, BF16 };
Acts acts_for(TensorType t, SimdLevel lv) {
  if (lv == SimdLevel::Scalar || !matmul_has_simd(t, lv)) return Acts::F32;
  if (t == TensorType::BF16) return lv == SimdLevel::AVX512 && cpu_features().avx512bf16 ? Acts::BF16 : Acts::F32;
  return is_float_type(t) ? Acts::F32 : Acts::Q8;
}
size_t act_block(TensorType t) { return traits(t).block_elems == 256 ? 256 : 32; }

std::vector<SimdLevel> levels() {
  std::vector<SimdLevel> v{SimdLevel::Scalar};
  if (best_simd_level() >= SimdLevel::AVX2) v.push_back(SimdLevel::AVX2);
  if (best_simd_level() >= SimdLevel::AVX512) v.push_back(SimdLevel::AVX512);
  return v;
}

struct Problem {
  TensorType type;
  size_t rows, cols, n;
  std::vector<uint8_t> w;     // rows * row_bytes
  std::vector<float> wf;      // dequantized weights (the oracle's view)
  std::vector<float> x;       // n * cols
};

Problem make_problem(TensorType t, size_t rows, size_t cols, size_t n, uint32_t seed) {
  Problem p{t, rows, cols, n, {}, {}, {}};
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const size_t rb = static_cast<size_t>(*row_bytes(t, cols));
  p.w.resize(rows * rb);
  p.wf.resize(rows * cols);
  std::vector<float> src(cols);
  for (size_t r = 0; r < rows; ++r) {
    const float row_scale = std::exp2(float(int(rng() % 7)) - 3.0f);  // rows of different magnitude
    for (auto& v : src) v = u(rng) * row_scale;
    REQUIRE(quantize_row(t, src.data(), p.w.data() + r * rb, int64_t(cols)) == rb);
    REQUIRE(dequantize_row(t, p.w.data() + r * rb, p.wf.data() + r * cols, int64_t(cols)));
  }
  p.x.resize(n * cols);
  for (auto& v : p.x) v = u(rng) * 2.0f;
  // Some outliers and an all-zero block exercise the activation scales.
  if (cols >= 64) {
    p.x[3] = 8.0f;
    for (size_t c = 32; c < 64; ++c) p.x[c] = 0.0f;
  }
  return p;
}

// Checks Y (n x rows) against the oracle with the tolerances stated at the top of the file.
void check(const Problem& p, const std::vector<float>& Y, Acts acts) {
  const bool quantized_acts = acts == Acts::Q8;
  const size_t blk = act_block(p.type);
  double err2 = 0, ref2 = 0;
  for (size_t t = 0; t < p.n; ++t) {
    const float* x = p.x.data() + t * p.cols;
    for (size_t r = 0; r < p.rows; ++r) {
      const float* w = p.wf.data() + r * p.cols;
      double ref = 0, mag = 0, qbound = 0;
      for (size_t c = 0; c < p.cols; ++c) {
        ref += double(w[c]) * x[c];
        mag += std::fabs(double(w[c]) * x[c]);
      }
      if (quantized_acts) {
        for (size_t b = 0; b < p.cols / blk; ++b) {
          double amax = 0, wabs = 0;
          for (size_t c = b * blk; c < (b + 1) * blk; ++c) {
            amax = std::max(amax, std::fabs(double(x[c])));
            wabs += std::fabs(double(w[c]));
          }
          qbound += amax / 254.0 * wabs;
        }
      }
      if (acts == Acts::BF16) qbound = mag * std::ldexp(1.0, -8);
      const double tol = qbound * 1.0001 + double(p.cols) * std::ldexp(1.0, -23) * mag + 1e-30;
      const double got = Y[t * p.rows + r];
      const double err = std::fabs(got - ref);
      if (!(err <= tol)) {
        FAIL_CHECK("type " << type_name(p.type) << " rows " << p.rows << " cols " << p.cols << " n " << p.n
                           << " token " << t << " row " << r << ": got " << got << " ref " << ref << " tol " << tol);
        return;
      }
      err2 += (got - ref) * (got - ref);
      ref2 += ref * ref;
    }
  }
  // Typical (RMS) error relative to the RMS output; only meaningful over enough outputs (a single dot
  // can cancel to near zero).
  if (p.rows * p.n >= 64) {
    // 2e-2 for the 256-blocks: one scale per 256 activations is coarser, and token 0 carries an outlier
    // (8 against a typical amax of 2) that quarters the resolution of its whole block.
    const double rms = std::sqrt(err2 / std::max(ref2, 1e-30));
    if (quantized_acts) CHECK(rms < (blk == 256 ? 2e-2 : 1e-2));
    else if (acts == Acts::BF16) CHECK(rms < 5e-3);
    else CHECK(rms < 1e-5);
  }
}

std::vector<size_t> cols_for(TensorType t) {
  if (is_float_type(t)) return {1, 7, 16, 33, 300, 1024};
  if (traits(t).block_elems == 256) return {256, 768, 2048};
  return {32, 96, 288, 1024};
}

}  // namespace

TEST_CASE("cpu features are self-consistent") {
  const CpuFeatures& f = cpu_features();
  if (f.has_avx512_level()) CHECK(f.has_avx2_level());
  if (best_simd_level() == SimdLevel::AVX512) CHECK(f.has_avx512_level());
  MESSAGE("best simd level: " << simd_level_name(best_simd_level()) << " avx512bf16=" << f.avx512bf16);
}

TEST_CASE("thread pool runs every index exactly once") {
  for (int nt : {1, 2, 3, 5}) {
    ThreadPool pool(nt);
    CHECK(pool.size() == nt);
    for (size_t n : {size_t(0), size_t(1), size_t(2), size_t(7), size_t(64), size_t(1000), size_t(4097)}) {
      for (size_t grain : {size_t(0), size_t(1), size_t(3), size_t(16)}) {
        std::vector<std::atomic<int>> hits(n);
        std::atomic<int> bad_thread{0}, bad_split{0};
        pool.parallel_for(n, [&](size_t b, size_t e, int th) {
          if (th < 0 || th >= nt) bad_thread++;
          // Chunks are whole grains; only the one ending at n may be shorter.
          const size_t g = std::max<size_t>(grain, 1);
          if (b % g != 0 || (e != n && (e - b) % g != 0) || e <= b) bad_split++;
          for (size_t i = b; i < e; ++i) hits[i]++;
        }, grain);
        for (size_t i = 0; i < n; ++i) REQUIRE(hits[i].load() == 1);
        CHECK(bad_thread.load() == 0);
        CHECK(bad_split.load() == 0);
      }
    }
    // Many back-to-back small jobs (the decode pattern).
    std::atomic<size_t> sum{0};
    for (int k = 0; k < 2000; ++k) pool.parallel_for(8, [&](size_t b, size_t e, int) { sum += e - b; });
    CHECK(sum.load() == 16000);
  }
}

TEST_CASE("matvec and matmul match the dequantize + dot oracle at every level") {
  ThreadPool pool(2);
  uint32_t seed = 1;
  for (TensorType t : kTypes) {
    for (size_t cols : cols_for(t)) {
      for (size_t rows : {size_t(1), size_t(3), size_t(37)}) {
        const size_t n = 5;
        Problem p = make_problem(t, rows, cols, n, seed++);
        for (SimdLevel lv : levels()) {
          const std::string level_name = simd_level_name(lv);
          CAPTURE(level_name);
          const std::string type_str = type_name(t);
          CAPTURE(type_str);
          const Acts qacts = acts_for(t, lv);
          std::vector<float> Y(n * rows, -1.0f);
          matmul_at(lv, t, p.w.data(), rows, cols, p.x.data(), n, Y.data(), &pool);
          check(p, Y, qacts);
          // matvec per token: bit-identical to the batched result.
          std::vector<float> y(rows);
          for (size_t k = 0; k < n; ++k) {
            matmul_at(lv, t, p.w.data(), rows, cols, p.x.data() + k * cols, 1, y.data(), nullptr);
            CHECK(std::memcmp(y.data(), Y.data() + k * rows, rows * sizeof(float)) == 0);
          }
        }
      }
    }
  }
}

TEST_CASE("matmul: n = 1..70 tokens, 1 vs 2 threads bit-identical") {
  ThreadPool pool1(1), pool2(2);
  uint32_t seed = 100;
  for (TensorType t : kTypes) {
    const size_t cols = traits(t).block_elems == 256 ? 512 : (is_float_type(t) ? 200 : 160);
    const size_t rows = 29;
    Problem p = make_problem(t, rows, cols, 70, seed++);
    for (SimdLevel lv : levels()) {
      const std::string level_name = simd_level_name(lv);
          CAPTURE(level_name);
      const std::string type_str = type_name(t);
          CAPTURE(type_str);
      const Acts qacts = acts_for(t, lv);
      for (size_t n = 1; n <= 70; ++n) {
        CAPTURE(n);
        Problem sub = p;
        sub.n = n;
        std::vector<float> Y1(n * rows), Y2(n * rows), Y0(n * rows);
        matmul_at(lv, t, p.w.data(), rows, cols, p.x.data(), n, Y1.data(), &pool1);
        matmul_at(lv, t, p.w.data(), rows, cols, p.x.data(), n, Y2.data(), &pool2);
        matmul_at(lv, t, p.w.data(), rows, cols, p.x.data(), n, Y0.data(), nullptr);
        REQUIRE(std::memcmp(Y1.data(), Y2.data(), Y1.size() * sizeof(float)) == 0);
        REQUIRE(std::memcmp(Y1.data(), Y0.data(), Y1.size() * sizeof(float)) == 0);
        check(sub, Y1, qacts);
      }
    }
  }
}

TEST_CASE("larger matrices: 2 threads bit-identical to 1, many row chunks") {
  ThreadPool pool1(1), pool2(2);
  for (TensorType t : kTypes) {
    const size_t cols = 2048, rows = 515;  // several pool chunks and row blocks
    Problem p = make_problem(t, rows, cols, 9, 7);
    for (size_t n : {size_t(1), size_t(9)}) {
      std::vector<float> Y1(n * rows), Y2(n * rows);
      matmul(t, p.w.data(), rows, cols, p.x.data(), n, Y1.data(), &pool1);
      matmul(t, p.w.data(), rows, cols, p.x.data(), n, Y2.data(), &pool2);
      const std::string type_str = type_name(t);
          CAPTURE(type_str);
      REQUIRE(std::memcmp(Y1.data(), Y2.data(), Y1.size() * sizeof(float)) == 0);
      Problem sub = p;
      sub.n = n;
      check(sub, Y1, acts_for(t, best_simd_level()));
    }
  }
}

TEST_CASE("other dequantizable types go through the reference; bad arguments throw") {
  std::mt19937 rng(5);
  const size_t cols = 256, rows = 5;
  for (TensorType t : {TensorType::Q4_1, TensorType::Q5_0, TensorType::Q5_1}) {
    if (!traits(t).quantizable) continue;
    Problem p = make_problem(t, rows, cols, 2, 9);
    std::vector<float> Y(2 * rows);
    matmul(t, p.w.data(), rows, cols, p.x.data(), 2, Y.data(), nullptr);
    check(p, Y, Acts::F32);
  }
  std::vector<uint8_t> w(1024);
  std::vector<float> x(64), y(4);
  CHECK_THROWS_AS(matvec(TensorType::Q4_0, w.data(), 1, 33, x.data(), y.data(), nullptr), std::invalid_argument);
  CHECK_THROWS_AS(matvec(TensorType::I32, w.data(), 1, 4, x.data(), y.data(), nullptr), std::invalid_argument);
  CHECK(!matmul_supported(TensorType::I32));
  CHECK(matmul_supported(TensorType::Q4_K));
}

TEST_CASE("Q8_0 and K-quant batches (2..40 tokens) equal single-token products bit for bit") {
  // Rows 16k and 16k + tail (the AVX-512 panels' 16 rows, rows_t8's 8), several super-blocks, every
  // register-tile size, the AVX-512 tiles of 9..32 tokens (rows_q8_panel_n, rows_q45k_panel_n,
  // rows_q6k_panel_n) and a batch past them (32 + 8), at every SIMD level.
  ThreadPool pool(2);
  for (TensorType t : {TensorType::Q8_0, TensorType::Q4_K, TensorType::Q5_K, TensorType::Q6_K}) {
    // 16640 columns: 65 super-blocks, past rows_t8's 64-super-block step.
    for (size_t cols : {size_t(1024), size_t(2816), size_t(16640)}) {
      const size_t rows = 53;
      Problem p = make_problem(t, rows, cols, 40, 31);
      const std::string type_str = type_name(t);
      CAPTURE(type_str);
      CAPTURE(cols);
      for (SimdLevel lv : levels()) {
        if (lv == SimdLevel::Scalar) continue;
        const std::string level_name = simd_level_name(lv);
        CAPTURE(level_name);
        for (size_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 16, 31, 32, 33, 40}) {
          CAPTURE(n);
          std::vector<float> Y(n * rows), y(rows);
          matmul_at(lv, t, p.w.data(), rows, cols, p.x.data(), n, Y.data(), &pool);
          for (size_t k = 0; k < n; ++k) {
            matmul_at(lv, t, p.w.data(), rows, cols, p.x.data() + k * cols, 1, y.data(), nullptr);
            REQUIRE(std::memcmp(y.data(), Y.data() + k * rows, rows * sizeof(float)) == 0);
          }
          Problem sub = p;
          sub.n = n;
          check(sub, Y, acts_for(t, lv));
        }
      }
    }
  }
}

TEST_CASE("matmul_many: one dispatch, the same bits as separate matmul calls") {
  ThreadPool pool(2);
  const TensorType types[] = {TensorType::Q4_K, TensorType::Q6_K, TensorType::Q8_0, TensorType::F16, TensorType::BF16,
                              TensorType::Q4_1};
  std::vector<Problem> probs;
  uint32_t seed = 200;
  for (size_t n : {size_t(1), size_t(5)})
    for (TensorType t : types) {
      if (!traits(t).quantizable) continue;
      const size_t cols = traits(t).block_elems == 256 ? 512 : 256;
      probs.push_back(make_problem(t, 37 + probs.size(), cols, n, seed++));
    }
  std::vector<std::vector<float>> want(probs.size()), got(probs.size());
  std::vector<MatmulJob> jobs;
  for (size_t i = 0; i < probs.size(); ++i) {
    const Problem& p = probs[i];
    want[i].assign(p.n * p.rows, 0.0f);
    got[i].assign(p.n * p.rows, -1.0f);
    matmul(p.type, p.w.data(), p.rows, p.cols, p.x.data(), p.n, want[i].data(), nullptr);
    jobs.push_back(MatmulJob{p.type, p.w.data(), p.rows, p.cols, p.x.data(), p.n, got[i].data()});
  }
  // Two jobs sharing X (as an expert's gate and up): shared quantization, still exact.
  const Problem& p0 = probs[0];
  std::vector<float> twin(p0.n * p0.rows, -1.0f);
  jobs.push_back(MatmulJob{p0.type, p0.w.data(), p0.rows, p0.cols, p0.x.data(), p0.n, twin.data()});
  for (ThreadPool* pl : {&pool, static_cast<ThreadPool*>(nullptr)}) {
    matmul_many(jobs.data(), jobs.size(), pl);
    for (size_t i = 0; i < probs.size(); ++i) {
      const std::string type_str = type_name(probs[i].type);
      CAPTURE(type_str);
      REQUIRE(std::memcmp(want[i].data(), got[i].data(), want[i].size() * sizeof(float)) == 0);
    }
    REQUIRE(std::memcmp(want[0].data(), twin.data(), twin.size() * sizeof(float)) == 0);
  }
  matmul_many(jobs.data(), 0, &pool);  // no jobs: a no-op
  CHECK_THROWS_AS(([&] {
    MatmulJob bad{TensorType::Q4_K, p0.w.data(), 1, 100, p0.x.data(), 1, twin.data()};
    matmul_many(&bad, 1, &pool);
  }()), std::invalid_argument);
}
