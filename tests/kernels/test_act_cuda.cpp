// GPU twin test of the elementwise ops (kernels/cuda/act.cuh): SwiGLU/GeGLU and the sigmoid gate against
// ops::silu_mul / ops::gelu_mul / ops::sigmoid (1e-6 relative: expf/tanhf vs glibc); residual add, the row
// bias, gather/scatter and the weighted expert combine against the CPU's arithmetic (bit-exact: same roundings,
// same order). Exits with 77 without a CUDA device.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cuda/act.cuh"
#include "cuda_test_util.h"
#include "moe/error.h"
#include "moe/kernels/ops.h"

using namespace moe;
namespace ops = moe::kernels::ops;

TEST_CASE("GpuGluMatchesCpu") {
  test::require_device("test_act_cuda");
  std::mt19937_64 rng(61);
  for (cuda::Glu kind : {cuda::Glu::Silu, cuda::Glu::Gelu}) {
    const int64_t n = 100003;
    const auto g = test::gaussian(n, rng, 4.0f), u = test::gaussian(n, rng);
    auto ref = g;
    if (kind == cuda::Glu::Silu)
      ops::silu_mul(ref.data(), u.data(), n);
    else
      ops::gelu_mul(ref.data(), u.data(), n);
    test::Dev<float> dg(g), du(u);
    cuda::glu(kind, dg.p, du.p, n);
    const auto gpu = dg.get();
    for (int64_t i = 0; i < n; ++i)
      if (std::fabs(gpu[i] - ref[i]) > 1e-6f * std::fabs(ref[i]) + 1e-30f) CHECK(gpu[i] == doctest::Approx(ref[i]));
  }
}

TEST_CASE("GpuSigmoidMatchesCpu") {
  test::require_device("test_act_cuda");
  std::mt19937_64 rng(63);
  const int64_t n = 4099;
  const auto x = test::gaussian(n, rng, 6.0f);
  test::Dev<float> dx(x), dy(std::vector<float>(n, 0.0f));
  cuda::sigmoid(dx.p, dy.p, n);
  cuda::sigmoid(dx.p, dx.p, n);  // in place
  const auto gpu = dy.get(), inplace = dx.get();
  for (int64_t i = 0; i < n; ++i) {
    const float ref = ops::sigmoid(x[i]);
    if (std::fabs(gpu[i] - ref) > 1e-6f * std::fabs(ref) + 1e-30f) CHECK(gpu[i] == doctest::Approx(ref));
    CHECK(inplace[i] == gpu[i]);
  }
}

TEST_CASE("GpuRowOpsAreExact") {
  test::require_device("test_act_cuda");
  std::mt19937_64 rng(64);
  const int64_t rows = 37, cols = 2048 + 96;
  const auto x = test::gaussian(rows * cols, rng), b = test::gaussian(cols, rng);
  // add_rows: the bias on every row, one rounding as the CPU's y += b
  test::Dev<float> dy(x), db(b);
  cuda::add_rows(dy.p, db.p, rows, cols);
  const auto y = dy.get();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) REQUIRE(y[r * cols + c] == x[r * cols + c] + b[c]);
  // gather then scatter with the same permutation is the identity; gather picks the named rows
  std::vector<int32_t> perm(rows);
  for (int64_t i = 0; i < rows; ++i) perm[i] = static_cast<int32_t>((i * 11 + 5) % rows);
  test::Dev<float> dx(x), dg(static_cast<size_t>(rows * cols)), ds(static_cast<size_t>(rows * cols));
  test::Dev<int32_t> dp(perm);
  cuda::gather_rows(dx.p, cols, dp.p, rows, dg.p);
  cuda::scatter_rows(dg.p, cols, dp.p, rows, ds.p);
  const auto g = dg.get(), sc = ds.get();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c) REQUIRE(g[i * cols + c] == x[perm[i] * cols + c]);
  CHECK(sc == x);
  CHECK_THROWS_AS(cuda::gather_rows(dx.p, cols, dp.p, 70000, dg.p), Error);
  CHECK_THROWS_AS(cuda::add_rows(dy.p, db.p, -1, cols), Error);
}

TEST_CASE("GpuAddAndCombineAreBitExact") {
  test::require_device("test_act_cuda");
  std::mt19937_64 rng(62);
  const int64_t E = 2048 + 7, T = 3;
  const int k = 6;
  const int64_t e_stride = E + 9;
  const auto x = test::gaussian(T * E, rng), r = test::gaussian(T * E, rng);
  const auto e = test::gaussian(static_cast<size_t>(T * k * e_stride), rng);
  const auto w = test::gaussian(static_cast<size_t>(T * k), rng, 0.3f);
  // CPU: residual add, then per token y += w_j * e_j in increasing j (the engine's axpy loop).
  auto ref_add = x;
  for (int64_t i = 0; i < T * E; ++i) ref_add[i] += r[i];
  std::vector<float> ref_comb(T * E, 0.0f), ref_acc = x;
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      ops::axpy(w[t * k + j], e.data() + (t * k + j) * e_stride, ref_comb.data() + t * E, E);
      ops::axpy(w[t * k + j], e.data() + (t * k + j) * e_stride, ref_acc.data() + t * E, E);
    }
  test::Dev<float> dx(x), dr(r), de(e), dw(w), dc(T * E), dacc(x);
  cuda::add(dx.p, dr.p, T * E);
  cuda::combine(dc.p, de.p, e_stride, dw.p, k, T, E, false);
  cuda::combine(dacc.p, de.p, e_stride, dw.p, k, T, E, true);
  const auto g_add = dx.get(), g_comb = dc.get(), g_acc = dacc.get();
  for (int64_t i = 0; i < T * E; ++i) {
    REQUIRE(test::same_bits_or_nan(g_add[i], ref_add[i]));
    REQUIRE(test::same_bits_or_nan(g_comb[i], ref_comb[i]));
    REQUIRE(test::same_bits_or_nan(g_acc[i], ref_acc[i]));
  }
}

TEST_CASE("GpuActArgumentChecks") {
  test::require_device("test_act_cuda");
  test::Dev<float> d(64);
  CHECK_THROWS_AS(cuda::glu(cuda::Glu::Silu, d.p, d.p, -1), Error);
  CHECK_THROWS_AS(cuda::combine(d.p, d.p, 4, d.p, 2, 1, 8, false), Error);  // e_stride < n_embd
}
