// GPU twin test of decode and batched attention and the KV store (kernels/cuda/attention.cuh) against
// ops::attention and ops::f32_to_f16: GQA groups 1, 2, 4 and 8, hd_k != hd_v, n_kv from the host and from device
// memory, causal batches, positions split over up to 64 blocks.
// Tolerance 1e-5 absolute (unit-scale values; the CPU sums the softmax in double, the GPU in f32). The
// f16 store is bit-exact (both round to nearest even). Exits with 77 without a CUDA device.
#include <doctest/doctest.h>

#include <algorithm>
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

// The batched online-softmax attention: several causal query tokens per launch (each its own n_kv), and one
// token split over many blocks (decode), against ops::attention per token.
TEST_CASE("GpuBatchedAttentionMatchesCpu") {
  test::require_device("test_attention_cuda");
  std::mt19937_64 rng(43);
  struct Case { int n_head, n_head_kv, hd_k, hd_v, n_tokens, kv0, n_split; };
  for (const Case c : {Case{8, 8, 64, 64, 1, 0, 1}, Case{16, 4, 128, 128, 37, 0, 1}, Case{16, 4, 128, 128, 5, 300, 1},
                       Case{32, 4, 128, 64, 1, 1026, 16}, Case{8, 1, 256, 256, 3, 61, 7}, Case{4, 2, 80, 80, 1, 0, 32},
                       Case{8, 8, 64, 512, 2, 130, 3}, Case{16, 16, 128, 128, 1, 4095, 64}}) {
    CAPTURE(c.n_head);
    CAPTURE(c.n_tokens);
    CAPTURE(c.kv0);
    CAPTURE(c.n_split);
    const int n_ctx = c.kv0 + c.n_tokens + 3;
    ops::AttnShape s;
    s.n_head = c.n_head;
    s.n_head_kv = c.n_head_kv;
    s.hd_k = c.hd_k;
    s.hd_v = c.hd_v;
    s.scale = 1.0f / std::sqrt(static_cast<float>(c.hd_k));
    const auto q = test::gaussian(static_cast<size_t>(c.n_tokens) * c.n_head * c.hd_k, rng);
    const auto kf = test::gaussian(static_cast<size_t>(n_ctx) * c.n_head_kv * c.hd_k, rng);
    const auto vf = test::gaussian(static_cast<size_t>(n_ctx) * c.n_head_kv * c.hd_v, rng);
    std::vector<uint16_t> kc(kf.size()), vc(vf.size());
    ops::f32_to_f16_row(kf.data(), kc.data(), static_cast<int64_t>(kf.size()));
    ops::f32_to_f16_row(vf.data(), vc.data(), static_cast<int64_t>(vf.size()));
    const size_t out_row = static_cast<size_t>(c.n_head) * c.hd_v;
    std::vector<float> ref(c.n_tokens * out_row), scores(n_ctx);
    std::vector<int32_t> n_kv(c.n_tokens);
    for (int t = 0; t < c.n_tokens; ++t) {
      n_kv[t] = c.kv0 + t + 1;  // causal: token t sees the cache and the tokens before it
      ops::attention(s, q.data() + size_t(t) * c.n_head * c.hd_k, kc.data(), vc.data(), n_kv[t],
                     ref.data() + t * out_row, scores.data(), 0, c.n_head);
    }
    test::Dev<float> dq(q), dout(ref.size()),
        dpart(std::max<size_t>(1, cuda::attention_partials_floats(s, c.n_tokens, c.n_split)));
    test::Dev<uint16_t> dk(kc), dv(vc);
    test::Dev<int32_t> dn(n_kv);
    cuda::attention(s, dq.p, dk.p, dv.p, n_ctx, dn.p, c.n_tokens, dout.p, c.n_split, dpart.p);
    const auto gpu = dout.get();
    for (size_t i = 0; i < ref.size(); ++i)
      if (std::fabs(gpu[i] - ref[i]) > 1e-5f) CHECK(gpu[i] == doctest::Approx(ref[i]).epsilon(0));
  }
}

TEST_CASE("GpuKvStoreTokensWritesEveryRow") {
  test::require_device("test_attention_cuda");
  std::mt19937_64 rng(44);
  const int n_ctx = 12, n = 4;
  const int64_t k_row = 2 * 64, v_row = 2 * 32;
  const auto k = test::gaussian(n * k_row, rng), v = test::gaussian(n * v_row, rng);
  test::Dev<float> dk(k), dv(v);
  test::Dev<uint16_t> kc(std::vector<uint16_t>(n_ctx * k_row, 0)), vc(std::vector<uint16_t>(n_ctx * v_row, 0));
  const std::vector<int32_t> pos = {3, 4, 5, 99};  // the last is out of range: not written
  test::Dev<int32_t> dpos(pos);
  cuda::kv_store_tokens(dk.p, dv.p, kc.p, vc.p, k_row, v_row, dpos.p, n, n_ctx);
  const auto hk = kc.get(), hv = vc.get();
  for (int t = 0; t < 3; ++t) {
    for (int64_t i = 0; i < k_row; ++i) CHECK(hk[pos[t] * k_row + i] == ops::f32_to_f16(k[t * k_row + i]));
    for (int64_t i = 0; i < v_row; ++i) CHECK(hv[pos[t] * v_row + i] == ops::f32_to_f16(v[t * v_row + i]));
  }
  for (int64_t i = 0; i < 3 * k_row; ++i) REQUIRE(hk[i] == 0);
  for (int64_t i = 6 * k_row; i < n_ctx * k_row; ++i) REQUIRE(hk[i] == 0);
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
  test::Dev<int32_t> n1(std::vector<int32_t>{1});
  CHECK_THROWS_AS(cuda::attention(s, d.p, h.p, h.p, 4, n1.p, 1, d.p, 2, nullptr), Error);  // split without partials
  CHECK_THROWS_AS(cuda::attention(s, d.p, h.p, h.p, 4, nullptr, 1, d.p, 1, nullptr), Error);
  s.hd_v = 1024;
  CHECK_THROWS_AS(cuda::attention(s, d.p, h.p, h.p, 4, n1.p, 1, d.p, 1, nullptr), Error);
}
