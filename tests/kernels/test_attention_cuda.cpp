// GPU twin test of decode attention and the KV store (kernels/cuda/attention.cuh) against ops::attention
// and ops::f32_to_f16: GQA groups 1, 4 and 8, hd_k != hd_v, n_kv from the host and from device memory.
// Tolerance 1e-5 absolute (unit-scale values; the CPU sums the softmax in double, the GPU in f32). The
// f16 store is bit-exact (both round to nearest even). Exits with 77 without a CUDA device.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cuda/attention.cuh"
#include "cuda_test_util.h"
#include "moe/error.h"
#include "moe/kernels/ops.h"

using namespace moe;
namespace ops = moe::kernels::ops;

TEST_CASE("GpuAttentionMatchesCpu") {
  test::require_device("test_attention_cuda");
  std::mt19937_64 rng(41);
  struct Case { int n_head, n_head_kv, hd_k, hd_v, n_kv; bool device_n; };
  for (const Case c : {Case{8, 8, 64, 64, 1, false}, Case{16, 4, 128, 128, 300, false}, Case{32, 4, 128, 64, 1027, true},
                       Case{8, 1, 256, 256, 64, true}}) {
    CAPTURE(c.n_head);
    CAPTURE(c.n_kv);
    const int n_ctx = c.n_kv + 5;
    ops::AttnShape s;
    s.n_head = c.n_head;
    s.n_head_kv = c.n_head_kv;
    s.hd_k = c.hd_k;
    s.hd_v = c.hd_v;
    s.scale = 1.0f / std::sqrt(static_cast<float>(c.hd_k));
    const auto q = test::gaussian(static_cast<size_t>(c.n_head * c.hd_k), rng);
    const auto kf = test::gaussian(static_cast<size_t>(n_ctx) * c.n_head_kv * c.hd_k, rng);
    const auto vf = test::gaussian(static_cast<size_t>(n_ctx) * c.n_head_kv * c.hd_v, rng);
    std::vector<uint16_t> kc(kf.size()), vc(vf.size());
    ops::f32_to_f16_row(kf.data(), kc.data(), static_cast<int64_t>(kf.size()));
    ops::f32_to_f16_row(vf.data(), vc.data(), static_cast<int64_t>(vf.size()));
    std::vector<float> ref(static_cast<size_t>(c.n_head * c.hd_v)), scores(n_ctx);
    ops::attention(s, q.data(), kc.data(), vc.data(), c.n_kv, ref.data(), scores.data(), 0, c.n_head);
    test::Dev<float> dq(q), dout(ref.size()), dscores(static_cast<size_t>(c.n_head) * n_ctx);
    test::Dev<uint16_t> dk(kc), dv(vc);
    test::Dev<int32_t> dn(std::vector<int32_t>{c.n_kv});
    cuda::attention_decode(s, dq.p, dk.p, dv.p, n_ctx, c.device_n ? 0 : c.n_kv, c.device_n ? dn.p : nullptr, dout.p,
                           dscores.p);
    const auto gpu = dout.get();
    for (size_t i = 0; i < ref.size(); ++i) CHECK(std::fabs(gpu[i] - ref[i]) <= 1e-5f);
  }
}

TEST_CASE("GpuKvStoreMatchesCpuF16") {
  test::require_device("test_attention_cuda");
  std::mt19937_64 rng(42);
  const int n_ctx = 10;
  const int64_t k_row = 4 * 128, v_row = 4 * 64;
  const auto k = test::gaussian(k_row, rng, 100.0f), v = test::gaussian(v_row, rng, 1e-4f);  // normals, subnormals
  test::Dev<float> dk(k), dv(v);
  test::Dev<uint16_t> kc(std::vector<uint16_t>(n_ctx * k_row, 0)), vc(std::vector<uint16_t>(n_ctx * v_row, 0));
  test::Dev<int32_t> pos(std::vector<int32_t>{7});
  cuda::kv_store(dk.p, dv.p, kc.p, vc.p, k_row, v_row, pos.p, n_ctx);
  const auto hk = kc.get(), hv = vc.get();
  for (int64_t i = 0; i < k_row; ++i) CHECK(hk[7 * k_row + i] == ops::f32_to_f16(k[i]));
  for (int64_t i = 0; i < v_row; ++i) CHECK(hv[7 * v_row + i] == ops::f32_to_f16(v[i]));
  for (int64_t i = 0; i < 7 * k_row; ++i) REQUIRE(hk[i] == 0);  // other positions untouched
}

TEST_CASE("GpuAttentionArgumentChecks") {
  test::require_device("test_attention_cuda");
  test::Dev<float> d(64);
  test::Dev<uint16_t> h(64);
  ops::AttnShape s;
  s.n_head = 6;
  s.n_head_kv = 4;  // not a divisor
  s.hd_k = s.hd_v = 8;
  CHECK_THROWS_AS(cuda::attention_decode(s, d.p, h.p, h.p, 4, 1, nullptr, d.p, d.p), Error);
  s.n_head_kv = 2;
  CHECK_THROWS_AS(cuda::attention_decode(s, d.p, h.p, h.p, 4, 5, nullptr, d.p, d.p), Error);  // n_kv > n_ctx
}
