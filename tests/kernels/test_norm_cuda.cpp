// GPU twin test of RMSNorm (kernels/cuda/norm.cuh) against ops::rmsnorm: long rows (block kernel), head
// rows (warp kernel), with and without weights, in place. Tolerance 1e-5 relative to max|y| (the CPU sums
// in double, the GPU in f32). Exits with 77 (skipped) when no CUDA device is usable.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "cuda/norm.cuh"
#include "cuda_test_util.h"
#include "moe/error.h"
#include "moe/kernels/ops.h"

using namespace moe;

TEST_CASE("GpuRmsnormMatchesCpu") {
  test::require_device("test_norm_cuda");
  std::mt19937_64 rng(21);
  for (int64_t n : {64, 128, 256, 257, 2048, 5120}) {
    for (bool weighted : {true, false}) {
      CAPTURE(n);
      CAPTURE(weighted);
      const int64_t rows = 9;
      const auto x = test::gaussian(static_cast<size_t>(rows * n), rng, 3.0f);
      const auto w = test::gaussian(static_cast<size_t>(n), rng);
      std::vector<float> ref(x.size());
      for (int64_t r = 0; r < rows; ++r)
        kernels::ops::rmsnorm(x.data() + r * n, weighted ? w.data() : nullptr, ref.data() + r * n, n, 1e-6f);
      test::Dev<float> dx(x), dw(w), dy(x.size());
      cuda::rmsnorm(dx.p, weighted ? dw.p : nullptr, dy.p, rows, n, 1e-6f);
      cuda::rmsnorm(dx.p, weighted ? dw.p : nullptr, dx.p, rows, n, 1e-6f);  // in place
      const auto gpu = dy.get(), gpu_inplace = dx.get();
      float mx = 0;
      for (float v : ref) mx = std::max(mx, std::fabs(v));
      for (size_t i = 0; i < ref.size(); ++i) {
        CHECK(std::fabs(gpu[i] - ref[i]) <= 1e-5f * mx);
        CHECK(gpu_inplace[i] == gpu[i]);
      }
    }
  }
}

TEST_CASE("GpuRmsnormArgumentChecks") {
  test::require_device("test_norm_cuda");
  test::Dev<float> d(64);
  CHECK_THROWS_AS(cuda::rmsnorm(d.p, nullptr, d.p, 1, 0, 1e-5f), Error);
  CHECK_THROWS_AS(cuda::rmsnorm(d.p, nullptr, d.p, -1, 8, 1e-5f), Error);
  CHECK_NOTHROW(cuda::rmsnorm(d.p, nullptr, d.p, 0, 8, 1e-5f));
}
