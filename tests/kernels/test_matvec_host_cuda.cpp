// Host half of the CUDA matvec twin test; runs on the CPU in every build (no CUDA toolkit or device
// needed). It checks the MOE_HD arithmetic the GPU kernels run (kernels/cuda/matvec_impl.cuh):
//  - every 32-element chunk decoder equals blocks.h's dequant_block (via dequantize_row) bit for bit, on
//    random bytes of every dequantizable type (all bit patterns, NaN equal to NaN);
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

TEST_CASE("WarpEmulationMatchesCpuReference") {
  std::mt19937_64 rng(99);
  for (TensorType t : dequantizable_types()) {
    CAPTURE(std::string(type_name(t)));
    for (int n : {1, 3, 8}) {
      CAPTURE(n);
      const int64_t rows = 13, cols = 1024 + 256;  // 40 chunks: some lanes take two, some one
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
