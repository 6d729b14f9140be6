// GPU twin test of the embedding lookup (kernels/cuda/embed.cuh) against kernels::dequantize_row of the
// selected rows, bit for bit, for every dequantizable type; out-of-range ids give NaN rows. Exits with 77
// without a CUDA device.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/embed.cuh"
#include "cuda_test_util.h"
#include "moe/error.h"
#include "moe/kernels/quant.h"

using namespace moe;

TEST_CASE("GpuEmbedMatchesDequantizeRow") {
  test::require_device("test_embed_cuda");
  std::mt19937_64 rng(71);
  for (uint32_t raw = 0; raw < 64; ++raw) {
    const TypeTraits* tr = type_traits(raw);
    if (!tr || !tr->dequantizable) continue;
    const TensorType t = tr->type;
    CAPTURE(std::string(tr->name));
    const int32_t n_vocab = 50;
    const int64_t E = 768;
    const size_t rb = *row_bytes(t, E);
    const auto table = test::random_weights(t, n_vocab, E, rng);
    const std::vector<int32_t> ids = {0, 49, 7, 7, 13, 50, -1};
    test::Dev<uint8_t> dt(table);
    test::Dev<int32_t> di(ids);
    test::Dev<float> dout(ids.size() * E);
    cuda::embed(t, dt.p, rb, n_vocab, di.p, static_cast<int64_t>(ids.size()), E, dout.p);
    const auto gpu = dout.get();
    std::vector<float> ref(E);
    for (size_t j = 0; j < ids.size(); ++j) {
      CAPTURE(j);
      if (ids[j] < 0 || ids[j] >= n_vocab) {
        for (int64_t i = 0; i < E; ++i) REQUIRE(std::isnan(gpu[j * E + i]));
        continue;
      }
      REQUIRE(kernels::dequantize_row(t, table.data() + ids[j] * rb, ref.data(), E));
      for (int64_t i = 0; i < E; ++i) REQUIRE(test::same_bits_or_nan(gpu[j * E + i], ref[i]));
    }
  }
}

TEST_CASE("GpuEmbedArgumentChecks") {
  test::require_device("test_embed_cuda");
  test::Dev<float> d(1024);
  test::Dev<int32_t> i(std::vector<int32_t>{0});
  CHECK_THROWS_AS(cuda::embed(TensorType::Q4_K, d.p, 144, 1, i.p, 1, 128, d.p), Error);  // 128 % 256
  CHECK_THROWS_AS(cuda::embed(TensorType::IQ2_XXS, d.p, 66, 1, i.p, 1, 256, d.p), Error);
}
