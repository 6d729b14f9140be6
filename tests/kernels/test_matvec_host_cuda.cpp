// Host half of the CUDA matvec twin test; runs on the CPU in every build (no CUDA toolkit or device
// needed). It checks the MOE_HD arithmetic the GPU kernels run (kernels/cuda/matvec_impl.cuh):
//  - every 32-element chunk decoder and every 4-element slice decoder (the matvec's per-lane decoder)
//    equals blocks.h's dequant_block (via dequantize_row) bit for bit, on random bytes of every
//    dequantizable type (all bit patterns, NaN equal to NaN), plus all 16 code-book entries;
//  - the exact int-to-float trick (u2f) equals static_cast<float> over its whole range;
//  - the warp emulation (the GPU's exact operation order) matches the CPU reference matvec
//    (moe::kernels::matmul_at Scalar = dequantize_row + f32 dot) within 4 * cols * 2^-24 * sum|w x|: both
//    are sums of the same exactly decoded products, in different orders.
#define MOE_TEST_NO_CUDA 1
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/matvec_impl.cuh"
#include "cuda_test_util.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/quant.h"

using namespace moe;

namespace {

std::vector<TensorType> dequantizable_types() {
  std::vector<TensorType> v;
  for (uint32_t raw = 0; raw < 64; ++raw) {
    const TypeTraits* tr = type_traits(raw);
    if (tr && tr->dequantizable) v.push_back(tr->type);
  }
  return v;
}

}  // namespace

TEST_CASE("ChunkDecodersMatchBlockDecodersBitForBit") {
  std::mt19937_64 rng(1234);
  for (TensorType t : dequantizable_types()) {
    CAPTURE(std::string(type_name(t)));
    const int64_t cols = traits(t).block_elems == 1 ? 256 : traits(t).block_elems * 4;
    const size_t rb = *row_bytes(t, cols);
    std::vector<uint8_t> q(rb);
    std::vector<float> ref(cols), got(cols);
    for (int rep = 0; rep < 50; ++rep) {
      for (auto& b : q) b = static_cast<uint8_t>(rng());
      REQUIRE(kernels::dequantize_row(t, q.data(), ref.data(), cols));
      for (int64_t c = 0; c < cols / 32; ++c) REQUIRE(cuda::mv::decode_chunk_rt(t, q.data(), c, got.data() + 32 * c));
      int bad = 0;
      for (int64_t i = 0; i < cols; ++i)
        if (!test::same_bits_or_nan(ref[i], got[i]) && bad++ < 3) {
          CAPTURE(i);
          CHECK(got[i] == ref[i]);
        }
      REQUIRE(bad == 0);
    }
  }
}

TEST_CASE("SliceDecodersMatchBlockDecodersBitForBit") {
  std::mt19937_64 rng(4321);
  for (TensorType t : dequantizable_types()) {
    CAPTURE(std::string(type_name(t)));
    const int64_t cols = traits(t).block_elems == 1 ? 256 : traits(t).block_elems * 4;
    const size_t rb = *row_bytes(t, cols);
    std::vector<uint8_t> q(rb);
    std::vector<float> ref(cols), got(cols);
    for (int rep = 0; rep < 200; ++rep) {
      for (auto& b : q) b = static_cast<uint8_t>(rng());
      if (rep % 2 == 1 && traits(t).block_elems == 1) {  // half the reps: finite gaussian floats
        const auto g = test::random_weights(t, 1, cols, rng);
        q.assign(g.begin(), g.end());
      }
      REQUIRE(kernels::dequantize_row(t, q.data(), ref.data(), cols));
      for (int64_t c = 0; c < cols / 32; ++c)
        for (int sl = 0; sl < cuda::mv::kSlices; ++sl)
          REQUIRE(cuda::mv::decode_slice_rt(t, q.data(), c, sl, got.data() + 32 * c + cuda::mv::kSlice * sl));
      int bad = 0;
      for (int64_t i = 0; i < cols; ++i)
        if (!test::same_bits_or_nan(ref[i], got[i]) && bad++ < 3) {
          CAPTURE(i);
          CHECK(got[i] == ref[i]);
        }
      REQUIRE(bad == 0);
    }
  }
}

TEST_CASE("ExactIntToFloatAndCodeBooks") {
  using namespace cuda::mv;
  for (uint32_t u = 0; u < (1u << 22); u += (u < 4096 ? 1 : 997))
    for (float bias : {0.0f, 1.0f, 4.0f, 8.0f, 16.0f, 32.0f, 128.0f}) {
      const float want = static_cast<float>(static_cast<int64_t>(u) - static_cast<int64_t>(bias));
      const float got = u2f(u, bias);
      REQUIRE(test::same_bits_or_nan(got, want));
    }
  for (uint32_t q = 0; q < 16; ++q) {
    CHECK(static_cast<int>(lut16(kIQ4NLLo, kIQ4NLHi, q)) - 128 == kernels::kvalue_iq4nl(static_cast<int>(q)));
    CHECK(static_cast<int>(lut16(kMXFP4Lo, kMXFP4Hi, q)) - 128 == kernels::kvalue_mxfp4(static_cast<int>(q)));
  }
}

TEST_CASE("WarpEmulationMatchesCpuReference") {
  std::mt19937_64 rng(99);
  for (TensorType t : dequantizable_types()) {
    CAPTURE(std::string(type_name(t)));
    for (int n : {1, 3, 8}) {
      CAPTURE(n);
      // 40 chunks: 2.5 warp steps of 16 chunks (a partial unrolled step, some groups idle at the tail)
      const int64_t rows = 13, cols = 1024 + 256;
      const auto W = test::random_weights(t, rows, cols, rng);
      const auto x = test::gaussian(static_cast<size_t>(n * cols), rng);
      std::vector<float> ref(static_cast<size_t>(n * rows)), emu(ref.size());
      kernels::matmul_at(kernels::SimdLevel::Scalar, t, W.data(), rows, cols, x.data(), n, ref.data(), nullptr);
      REQUIRE(cuda::mv::emulate_matvec(t, W.data(), *row_bytes(t, cols), rows, cols, x.data(), n, emu.data()));
      std::vector<float> w(cols);
      for (int tok = 0; tok < n; ++tok)
        for (int64_t r = 0; r < rows; ++r) {
          REQUIRE(kernels::dequantize_row(t, W.data() + r * *row_bytes(t, cols), w.data(), cols));
          double mag = 0;
          for (int64_t c = 0; c < cols; ++c) mag += std::fabs(double(w[c]) * x[tok * cols + c]);
          const double tol = 4.0 * cols * std::ldexp(1.0, -24) * mag + 1e-30;
          const float a = emu[tok * rows + r], b = ref[tok * rows + r];
          REQUIRE(std::isfinite(a));
          if (std::fabs(double(a) - b) > tol) {
            CAPTURE(r);
            CAPTURE(tok);
            CHECK(a == doctest::Approx(b));
          }
        }
    }
  }
}

TEST_CASE("SplitRowsMatchCpuReference") {
  // The same rows with 1 and 4 warps per row (matvec_experts / small dense matvecs): both within the
  // summation-order tolerance of the CPU reference; and warps_per_row's threshold.
  CHECK(cuda::mv::warps_per_row(cuda::mv::kSplitRows) == cuda::mv::kSplit);
  CHECK(cuda::mv::warps_per_row(cuda::mv::kSplitRows + 1) == 1);
  std::mt19937_64 rng(77);
  for (TensorType t : {TensorType::Q8_0, TensorType::Q4_K, TensorType::BF16}) {
    CAPTURE(std::string(type_name(t)));
    const int64_t rows = 5, cols = 4096 + 512;
    const auto W = test::random_weights(t, rows, cols, rng);
    const auto x = test::gaussian(static_cast<size_t>(2 * cols), rng);
    std::vector<float> ref(2 * rows), one(2 * rows), four(2 * rows);
    kernels::matmul_at(kernels::SimdLevel::Scalar, t, W.data(), rows, cols, x.data(), 2, ref.data(), nullptr);
    REQUIRE(cuda::mv::emulate_matvec(t, W.data(), *row_bytes(t, cols), rows, cols, x.data(), 2, one.data(), 1));
    REQUIRE(cuda::mv::emulate_matvec(t, W.data(), *row_bytes(t, cols), rows, cols, x.data(), 2, four.data(), 4));
    for (size_t i = 0; i < ref.size(); ++i) {
      const double tol = 1e-4 * (std::fabs(ref[i]) + 1.0);
      CHECK(std::fabs(double(one[i]) - ref[i]) <= tol);
      CHECK(std::fabs(double(four[i]) - ref[i]) <= tol);
    }
  }
}

TEST_CASE("EmulationIsIndependentOfTheBatch") {
  // Token t of a batch of n equals a batch of one with x_t: the kernel's accumulators are per token.
  std::mt19937_64 rng(5);
  const TensorType t = TensorType::Q4_K;
  const int64_t rows = 7, cols = 512;
  const auto W = test::random_weights(t, rows, cols, rng);
  const auto x = test::gaussian(5 * cols, rng);
  std::vector<float> all(5 * rows), one(rows);
  REQUIRE(cuda::mv::emulate_matvec(t, W.data(), *row_bytes(t, cols), rows, cols, x.data(), 5, all.data()));
  for (int tok = 0; tok < 5; ++tok) {
    REQUIRE(cuda::mv::emulate_matvec(t, W.data(), *row_bytes(t, cols), rows, cols, x.data() + tok * cols, 1, one.data()));
    for (int64_t r = 0; r < rows; ++r) CHECK(test::same_bits_or_nan(all[tok * rows + r], one[r]));
  }
}
