// GPU twin test of RoPE (kernels/cuda/rope.cuh) against ops::rope_cos_sin + ops::rope_apply: Normal and
// NeoX pairing, partial rotation (n_rot < head_dim), linear scaling and YaRN, positions 0 .. 1e5.
// Tolerance 2e-6 absolute on unit-scale inputs (device vs glibc double cos/sin and pow may round a float
// differently; everything else uses the CPU's roundings). Exits with 77 without a CUDA device.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cuda/rope.cuh"
#include "cuda_test_util.h"
#include "moe/error.h"
#include "moe/kernels/ops.h"

using namespace moe;
namespace ops = moe::kernels::ops;

TEST_CASE("GpuRopeMatchesCpu") {
  test::require_device("test_rope_cuda");
  std::mt19937_64 rng(31);
  const std::vector<int32_t> pos = {0, 1, 7, 511, 4095, 32768, 100000};
  const int64_t T = static_cast<int64_t>(pos.size());
  for (int variant = 0; variant < 6; ++variant) {
    CAPTURE(variant);
    ops::RopeParams p;
    p.mode = variant % 2 ? ops::RopeMode::NeoX : ops::RopeMode::Normal;
    const int head_dim = 128, n_heads = 5;
    p.n_rot = variant >= 4 ? 64 : 128;
    p.freq_base = variant >= 2 ? 1000000.0f : 10000.0f;
    if (variant == 2 || variant == 3) {  // YaRN x4
      p.freq_scale = 0.25f;
      p.ext_factor = 1.0f;
      p.orig_ctx = 4096;
      p.attn_factor = 1.0f;
    }
    if (variant == 5) p.freq_scale = 0.5f;  // linear
    const int64_t stride = n_heads * head_dim + 16;  // tokens not back to back
    auto x = test::gaussian(static_cast<size_t>(T * stride), rng);
    auto ref = x;
    std::vector<float> cs(p.n_rot);
    for (int64_t t = 0; t < T; ++t) {
      ops::rope_cos_sin(p, pos[t], cs.data());
      ops::rope_apply(p, cs.data(), ref.data() + t * stride, n_heads, head_dim);
    }
    test::Dev<float> dx(x);
    test::Dev<int32_t> dpos(pos);
    cuda::rope(p, dpos.p, dx.p, T, n_heads, head_dim, stride);
    const auto gpu = dx.get();
    for (size_t i = 0; i < gpu.size(); ++i) {
      if (std::fabs(gpu[i] - ref[i]) > 2e-6f) {
        CAPTURE(i);
        CHECK(gpu[i] == doctest::Approx(ref[i]));
      }
    }
  }
}

// The table form the engine uses: both tensors of one launch (q and k head counts), bit for bit the CPU's.
TEST_CASE("GpuRopeTableIsBitExact") {
  test::require_device("test_rope_cuda");
  std::mt19937_64 rng(32);
  const int n_ctx = 300;
  const std::vector<int32_t> pos = {0, 1, 7, 150, 299};
  const int64_t T = static_cast<int64_t>(pos.size());
  for (int variant = 0; variant < 3; ++variant) {
    CAPTURE(variant);
    ops::RopeParams p;
    p.mode = variant == 1 ? ops::RopeMode::NeoX : ops::RopeMode::Normal;
    p.n_rot = variant == 2 ? 32 : 64;
    p.freq_base = 500000.0f;
    if (variant == 1) {
      p.freq_scale = 0.25f;
      p.ext_factor = 1.0f;
      p.orig_ctx = 64;
    }
    const int head_dim = 64, na = 6, nb = 2;
    const int64_t sa = na * head_dim, sb = nb * head_dim + 8;
    const auto q = test::gaussian(static_cast<size_t>(T * sa), rng);
    const auto k = test::gaussian(static_cast<size_t>(T * sb), rng);
    auto rq = q, rk = k;
    std::vector<float> cs(p.n_rot);
    for (int64_t t = 0; t < T; ++t) {
      ops::rope_cos_sin(p, pos[t], cs.data());
      ops::rope_apply(p, cs.data(), rq.data() + t * sa, na, head_dim);
      ops::rope_apply(p, cs.data(), rk.data() + t * sb, nb, head_dim);
    }
    const auto table = cuda::rope_table_host(p, n_ctx);
    test::Dev<float> dq(q), dk(k), dt(table);
    test::Dev<int32_t> dpos(pos);
    cuda::rope_table(dt.p, p.n_rot, p.mode == ops::RopeMode::NeoX, n_ctx, dpos.p, T, dq.p, na, sa, dk.p, nb, sb,
                     head_dim);
    CHECK(dq.get() == rq);
    CHECK(dk.get() == rk);
  }
}

TEST_CASE("GpuRopeArgumentChecks") {
  test::require_device("test_rope_cuda");
  test::Dev<float> d(256);
  test::Dev<int32_t> pos(std::vector<int32_t>{0});
  ops::RopeParams p;
  p.n_rot = 3;
  CHECK_THROWS_AS(cuda::rope(p, pos.p, d.p, 1, 1, 64, 64), Error);
  p.n_rot = 128;
  CHECK_THROWS_AS(cuda::rope(p, pos.p, d.p, 1, 1, 64, 64), Error);
}
