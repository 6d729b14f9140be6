// GPU twin test of routing (kernels/cuda/router.cuh) against moe::apply_gating (the CPU engine's gating):
// softmax and sigmoid, top-k before or after normalisation, renormalisation, routed scale; 8..256 experts,
// k 1..8, many tokens. Expert ids must be identical (random logits have no near ties); weights within 1e-5
// relative. Exits with 77 without a CUDA device.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cuda/router.cuh"
#include "cuda_test_util.h"
#include "moe/engine.h"
#include "moe/error.h"
#include "moe/model.h"

using namespace moe;

TEST_CASE("GpuRouterMatchesApplyGating") {
  test::require_device("test_router_cuda");
  std::mt19937_64 rng(51);
  struct Shape { int n_expert, k; };
  for (const Shape sh : {Shape{8, 2}, Shape{60, 4}, Shape{128, 8}, Shape{256, 8}, Shape{32, 1}}) {
    for (int flags = 0; flags < 8; ++flags) {
      Gating g;
      g.func = flags & 1 ? GatingFunc::Sigmoid : GatingFunc::Softmax;
      g.topk_before_norm = flags & 2;
      g.renormalize = flags & 4;
      g.scale = flags == 5 ? 2.5f : 1.0f;
      cuda::RouterParams p;
      p.sigmoid = g.func == GatingFunc::Sigmoid;
      p.topk_before_norm = g.topk_before_norm;
      p.renormalize = g.renormalize;
      p.scale = g.scale;
      CAPTURE(sh.n_expert);
      CAPTURE(sh.k);
      CAPTURE(flags);
      const int T = 33;
      const auto logits = test::gaussian(static_cast<size_t>(T * sh.n_expert), rng, 2.0f);
      std::vector<int32_t> ref_ids(T * sh.k), idx(sh.n_expert);
      std::vector<float> ref_w(T * sh.k), probs(sh.n_expert);
      for (int t = 0; t < T; ++t)
        apply_gating(g, logits.data() + t * sh.n_expert, sh.n_expert, sh.k, ref_ids.data() + t * sh.k,
                     ref_w.data() + t * sh.k, probs.data(), idx.data());
      test::Dev<float> dl(logits), dw(ref_w.size());
      test::Dev<int32_t> di(ref_ids.size());
      cuda::route(p, dl.p, T, sh.n_expert, sh.k, di.p, dw.p);
      const auto ids = di.get();
      const auto w = dw.get();
      for (size_t i = 0; i < ids.size(); ++i) {
        CHECK(ids[i] == ref_ids[i]);
        CHECK(std::fabs(w[i] - ref_w[i]) <= 1e-5f * std::fabs(ref_w[i]) + 1e-9f);
      }
    }
  }
}

TEST_CASE("GpuRouterArgumentChecks") {
  test::require_device("test_router_cuda");
  test::Dev<float> d(64);
  test::Dev<int32_t> i(64);
  cuda::RouterParams p;
  CHECK_THROWS_AS(cuda::route(p, d.p, 1, 4, 5, i.p, d.p), Error);  // k > n_expert
  p.has_bias = true;
  CHECK_THROWS_AS(cuda::route(p, d.p, 1, 8, 2, i.p, d.p), Error);
}
