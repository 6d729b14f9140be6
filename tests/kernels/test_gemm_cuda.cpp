// GPU twin test of the prefill GEMM (kernels/cuda/gemm.cuh: dequantized tiles + cuBLAS SGEMM) against
// kernels::matmul_at Scalar (dequantize_row + f32 dot) for several types, batch sizes and workspace sizes
// (one tile, many tiles, a ragged last tile). Tolerance: 1e-4 * sum|w x| + 1e-5 per output (same decoded
// products, different summation order; cuBLAS default math, no TF32). Exits with 77 without a CUDA device.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/gemm.cuh"
#include "cuda_test_util.h"
#include "moe/error.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/quant.h"

using namespace moe;

TEST_CASE("GpuGemmMatchesCpuMatmul") {
  test::require_device("test_gemm_cuda");
  std::mt19937_64 rng(81);
  cuda::Blas blas;
  for (TensorType t : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q4_0, TensorType::Q8_0,
                       TensorType::Q4_K, TensorType::Q6_K, TensorType::MXFP4, TensorType::IQ4_XS}) {
    CAPTURE(std::string(type_name(t)));
    const int64_t rows = 300, cols = 1024;
    const size_t rb = *row_bytes(t, cols);
    const auto W = test::random_weights(t, rows, cols, rng);
    std::vector<float> w(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) REQUIRE(kernels::dequantize_row(t, W.data() + r * rb, w.data() + r * cols, cols));
    for (int64_t n : {1, 17, 64}) {
      for (size_t ws : {size_t(cols), size_t(cols) * 64, size_t(cols) * rows}) {
        CAPTURE(n);
        CAPTURE(ws);
        const auto X = test::gaussian(static_cast<size_t>(n * cols), rng);
        std::vector<float> ref(static_cast<size_t>(n * rows));
        kernels::matmul_at(kernels::SimdLevel::Scalar, t, W.data(), rows, cols, X.data(), n, ref.data(), nullptr);
        test::Dev<uint8_t> dW(W);
        test::Dev<float> dX(X), dY(ref.size()), dws(ws);
        cuda::gemm(blas, t, dW.p, rb, rows, cols, dX.p, n, dY.p, dws.p, ws);
        const auto gpu = dY.get();
        int bad = 0;
        for (int64_t tok = 0; tok < n; ++tok)
          for (int64_t r = 0; r < rows; ++r) {
            double mag = 0;
            for (int64_t c = 0; c < cols; ++c) mag += std::fabs(double(w[r * cols + c]) * X[tok * cols + c]);
            const float a = gpu[tok * rows + r], b = ref[tok * rows + r];
            if (!(std::fabs(double(a) - b) <= 1e-4 * mag + 1e-5) && bad++ < 3) CHECK(a == doctest::Approx(b));
          }
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("GpuGemmArgumentChecks") {
  test::require_device("test_gemm_cuda");
  cuda::Blas blas;
  test::Dev<float> d(4096);
  CHECK_THROWS_AS(cuda::gemm(blas, TensorType::Q4_0, d.p, 18, 4, 64, d.p, 1, d.p, d.p, 32), Error);  // ws < cols
  CHECK_THROWS_AS(cuda::gemm(blas, TensorType::IQ2_XXS, d.p, 66, 1, 256, d.p, 1, d.p, d.p, 4096), Error);
}
