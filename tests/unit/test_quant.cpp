// Block formats and the scalar reference (de)quantizers (moe/kernels/quant.h, blocks.h, half.h):
// known-answer vectors from shared/data/quant-vectors (every file in the folder), fp16/bf16 conversion
// edge cases, round trips with per-type error bounds, special values and argument checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "moe/gguf.h"
#include "moe/kernels/blocks.h"
#include "moe/kernels/half.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/types.h"

using namespace moe;
using namespace moe::kernels;

namespace {

// Distance in units in the last place between two floats (0 when both are NaN or equal, incl. +-0).
int64_t ulp_diff(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return 0;
  if (a == b) return 0;
  auto key = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i < 0 ? static_cast<int64_t>(std::numeric_limits<int32_t>::min()) - i : static_cast<int64_t>(i);
  };
  const int64_t d = key(a) - key(b);
  return d < 0 ? -d : d;
}

// Deterministic normal samples on every platform (std::normal_distribution is implementation-defined).
struct Rng {
  explicit Rng(uint64_t seed) : g(seed) {}
  std::mt19937_64 g;
  double uniform() { return (static_cast<double>(g() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  float gauss() {
    const double u = uniform(), v = uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
  }
};

std::vector<float> gaussian(size_t n, uint64_t seed, float sigma = 1.0f) {
  Rng r(seed);
  std::vector<float> x(n);
  for (auto& v : x) v = sigma * r.gauss();
  return x;
}

// Gaussian with about 1% outliers of 8-30 sigma (as in real weight matrices with a few large channels).
std::vector<float> with_outliers(size_t n, uint64_t seed) {
  Rng r(seed);
  std::vector<float> x(n);
  for (auto& v : x) {
    v = r.gauss();
    if (r.uniform() < 0.01) v = static_cast<float>((r.uniform() < 0.5 ? -1 : 1) * (8 + 22 * r.uniform()));
  }
  return x;
}

double nrmse(const std::vector<float>& ref, const std::vector<float>& got) {
  double se = 0, ss = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(got[i]) - ref[i];
    se += d * d;
    ss += static_cast<double>(ref[i]) * ref[i];
  }
  return ss > 0 ? std::sqrt(se / ss) : std::sqrt(se);
}

std::vector<float> roundtrip(TensorType t, const std::vector<float>& x) {
  const auto bytes = row_bytes(t, x.size());
  REQUIRE(bytes.has_value());
  std::vector<uint8_t> q(*bytes + 1, 0xAB);
  const size_t wrote = quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
  REQUIRE(wrote == *bytes);
  CHECK(q[*bytes] == 0xAB);  // nothing written past the row
  std::vector<float> y(x.size(), -12345.0f);
  REQUIRE(dequantize_row(t, q.data(), y.data(), static_cast<int64_t>(x.size())));
  return y;
}

// Known-answer tolerance per type, in ulps. Our decoders do the same roundings in the same order as
// the gguf-py reference, so every type is expected bit-exact; the K-quant families (and IQ4_XS), whose
// formula rounds twice (d*scale, then times the code, minus dmin*min), are allowed one ulp as the data
// README allows, in case a compiler reorders; the test also counts how many were not exact.
int max_ulps(TensorType t) {
  switch (t) {
    case TensorType::Q2_K:
    case TensorType::Q3_K:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K:
    case TensorType::IQ4_XS: return 1;
    default: return 0;  // one rounding (d*q), or d*q + m with the same two roundings as the reference
  }
}

// The types the data README promises vectors for: a missing file is a failure, not a skip.
const char* const kVectorTypes[] = {"BF16", "F16",  "Q4_0", "Q4_1",   "Q5_0",   "Q5_1",  "Q8_0", "Q2_K",
                                    "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4", "TQ2_0"};

std::vector<TensorType> quantizable_types() {
  std::vector<TensorType> out;
  for (uint32_t raw = 0; raw < 64; ++raw)
    if (const TypeTraits* tr = type_traits(raw); tr && tr->quantizable) out.push_back(tr->type);
  return out;
}

// Normalized RMSE (sqrt(sum err^2 / sum x^2)) bounds for the round trips: measured on this reference
// (gaussian / with outliers, 64 Ki elements) plus about 15% margin.
struct Bound {
  TensorType t;
  double gauss;    // bound on N(0,1) data
  double outlier;  // bound on N(0,1) + 1% outliers
};
const Bound kBounds[] = {
    // f32: exact. f16: 11-bit significand, relative error <= 2^-11 per element (measured 2.1e-4).
    {TensorType::F32, 0.0, 0.0},
    {TensorType::F16, 3e-4, 3e-4},
    // bf16: 8-bit significand, relative error <= 2^-8 per element (measured 1.7e-3).
    {TensorType::BF16, 2.5e-3, 2.5e-3},
    // 8-bit codes under the block's max-abs scale: step ~ 2.1 sigma / 127, RMS step/sqrt(12) ~ 0.5%
    // (measured 0.53% / 1.1%: an outlier widens its block's step).
    {TensorType::Q8_0, 0.0062, 0.013},
    // Q8_K: the same over 256 elements, whose max is larger (measured 0.69% / 2.3%).
    {TensorType::Q8_K, 0.008, 0.027},
    // 4-bit symmetric, the max-abs element on code 0 (measured 8.6% / 16.3%).
    {TensorType::Q4_0, 0.10, 0.19},
    // 4-bit affine over [min, max] (measured 7.8% / 11.1%).
    {TensorType::Q4_1, 0.09, 0.13},
    // 5-bit symmetric / affine: about half of the 4-bit error (measured 4.3% / 8.8%, 3.8% / 5.3%).
    {TensorType::Q5_0, 0.05, 0.10},
    {TensorType::Q5_1, 0.044, 0.062},
    // K-quants: least-squares scale/min per sub-block, 6-bit (Q6_K: 8-bit) sub-block scales under fp16
    // super-block scales (measured Q4_K 7.1% / 10.2%, Q5_K 3.5% / 5.1%, Q6_K 1.7% / 3.2%).
    {TensorType::Q4_K, 0.08, 0.118},
    {TensorType::Q5_K, 0.041, 0.059},
    {TensorType::Q6_K, 0.02, 0.037},
    // IQ4_NL: non-linear 4-bit code book for bell-shaped data, searched scale (measured 7.4% / 12.5%).
    {TensorType::IQ4_NL, 0.085, 0.145},
    // MXFP4: 8 E2M1 magnitudes under a power-of-two scale, coarse (measured 11.5% / 16.9%).
    {TensorType::MXFP4, 0.13, 0.195},
};

const Bound* bound_for(TensorType t) {
  for (const auto& b : kBounds)
    if (b.t == t) return &b;
  return nullptr;
}

}  // namespace

TEST_CASE("BlockSizesMatchTheTypeTable") {
  CHECK(sizeof(BlockQ4_0) == traits(TensorType::Q4_0).block_bytes);
  CHECK(sizeof(BlockQ4_1) == traits(TensorType::Q4_1).block_bytes);
  CHECK(sizeof(BlockQ5_0) == traits(TensorType::Q5_0).block_bytes);
  CHECK(sizeof(BlockQ5_1) == traits(TensorType::Q5_1).block_bytes);
  CHECK(sizeof(BlockQ8_0) == traits(TensorType::Q8_0).block_bytes);
  CHECK(sizeof(BlockQ8_1) == traits(TensorType::Q8_1).block_bytes);
  CHECK(sizeof(BlockQ2_K) == traits(TensorType::Q2_K).block_bytes);
  CHECK(sizeof(BlockQ3_K) == traits(TensorType::Q3_K).block_bytes);
  CHECK(sizeof(BlockQ4_K) == traits(TensorType::Q4_K).block_bytes);
  CHECK(sizeof(BlockQ5_K) == traits(TensorType::Q5_K).block_bytes);
  CHECK(sizeof(BlockQ6_K) == traits(TensorType::Q6_K).block_bytes);
  CHECK(sizeof(BlockQ8_K) == traits(TensorType::Q8_K).block_bytes);
  CHECK(sizeof(BlockIQ4_NL) == traits(TensorType::IQ4_NL).block_bytes);
  CHECK(sizeof(BlockIQ4_XS) == traits(TensorType::IQ4_XS).block_bytes);
  CHECK(sizeof(BlockMXFP4) == traits(TensorType::MXFP4).block_bytes);
  CHECK(sizeof(BlockTQ2_0) == traits(TensorType::TQ2_0).block_bytes);
}

TEST_CASE("KnownAnswerVectors") {
  const std::filesystem::path dir = std::filesystem::path(MOE_SHARED_DATA) / "quant-vectors";
  REQUIRE(std::filesystem::is_directory(dir));
  std::set<std::string> seen;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".gguf") continue;
    const std::string stem = entry.path().stem().string();
    seen.insert(stem);
    CAPTURE(stem);
    auto f = gguf::GgufFile::open(entry.path().string());
    const gguf::TensorInfo* q = f->find_tensor("q");
    const gguf::TensorInfo* e = f->find_tensor("expected");
    REQUIRE(q != nullptr);
    REQUIRE(e != nullptr);
    REQUIRE(e->type == TensorType::F32);
    REQUIRE(q->n_elements() == e->n_elements());
    const auto named = type_from_name(stem);
    REQUIRE(named.has_value());
    CHECK(*named == q->type);  // the file name says the type
    REQUIRE(traits(q->type).dequantizable);

    const int64_t n = static_cast<int64_t>(q->n_elements());
    std::vector<float> got(static_cast<size_t>(n));
    std::vector<float> want(static_cast<size_t>(n));
    std::memcpy(want.data(), f->data(*e).data(), static_cast<size_t>(n) * 4);
    // Row by row, as the engine does (each row is a whole number of blocks).
    const int64_t cols = static_cast<int64_t>(q->ne[0]);
    const uint64_t rb = q->row_bytes();
    for (int64_t r = 0; r < n / cols; ++r)
      REQUIRE(dequantize_row(q->type, f->data(*q).data() + r * rb, got.data() + r * cols, cols));

    const int tol = max_ulps(q->type);
    int64_t worst = 0, inexact = 0, bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t u = ulp_diff(got[i], want[i]);
      worst = std::max(worst, u);
      inexact += u != 0;
      if (u > tol && bad++ < 3) {
        CAPTURE(i);
        CHECK(got[i] == want[i]);
      }
    }
    MESSAGE(stem << ": " << n << " values, " << inexact << " not bit-exact, worst " << worst << " ulp (tolerance "
                 << tol << ")");
    CHECK(bad == 0);
    CHECK(worst <= tol);
  }
  for (const char* t : kVectorTypes) {
    CAPTURE(t);
    CHECK(seen.count(t) == 1);
  }
}

TEST_CASE("HalfConversions") {
  SUBCASE("every f16 pattern round-trips through f32") {
    for (uint32_t h = 0; h < 65536; ++h) {
      const float f = fp16_to_f32(static_cast<uint16_t>(h));
      const uint16_t back = f32_to_fp16(f);
      if (std::isnan(f)) {
        CHECK((back & 0x7c00) == 0x7c00);
        CHECK((back & 0x3ff) != 0);
        CHECK((back & 0x8000) == (h & 0x8000));
      } else {
        CHECK(back == h);
      }
    }
  }
  SUBCASE("known values") {
    CHECK(fp16_to_f32(0x3c00) == 1.0f);
    CHECK(fp16_to_f32(0xc000) == -2.0f);
    CHECK(fp16_to_f32(0x7bff) == 65504.0f);
    CHECK(fp16_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
    CHECK(fp16_to_f32(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
    CHECK(std::isinf(fp16_to_f32(0x7c00)));
    CHECK(std::signbit(fp16_to_f32(0x8000)));
  }
  SUBCASE("round to nearest even, overflow and underflow") {
    CHECK(f32_to_fp16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);                           // tie -> even
    CHECK(f32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);                       // tie -> even (up)
    CHECK(f32_to_fp16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);  // above tie
    CHECK(f32_to_fp16(65504.0f) == 0x7bff);
    CHECK(f32_to_fp16(65519.0f) == 0x7bff);
    CHECK(f32_to_fp16(65520.0f) == 0x7c00);  // the tie above the max rounds to inf
    CHECK(f32_to_fp16(1e10f) == 0x7c00);
    CHECK(f32_to_fp16(-1e10f) == 0xfc00);
    CHECK(f32_to_fp16(std::numeric_limits<float>::infinity()) == 0x7c00);
    CHECK(f32_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);                           // tie -> even (0)
    CHECK(f32_to_fp16(std::ldexp(1.0f, -25) * 1.0001f) == 0x0001);                 // above the tie
    CHECK(f32_to_fp16(std::ldexp(3.0f, -25)) == 0x0002);                           // 1.5 ulp tie -> 2
    CHECK(f32_to_fp16(-1e-30f) == 0x8000);
    CHECK(f32_to_fp16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)) == 0x0400);  // carries into normal
    const uint16_t n = f32_to_fp16(std::numeric_limits<float>::quiet_NaN());
    CHECK((n & 0x7c00) == 0x7c00);
    CHECK((n & 0x3ff) != 0);
  }
  SUBCASE("f16 conversion agrees with a double-precision model on random floats") {
    Rng r(7);
    for (int i = 0; i < 200000; ++i) {
      const float f = static_cast<float>((r.uniform() - 0.5) * std::ldexp(1.0, static_cast<int>(r.g() % 50) - 30));
      const uint16_t h = f32_to_fp16(f);
      const double back = fp16_to_f32(h);
      // Neighbours must not be closer.
      const double up = fp16_to_f32(static_cast<uint16_t>(h + 1));
      const double lo = (h & 0x7fff) ? fp16_to_f32(static_cast<uint16_t>(h - 1)) : back;
      if (std::isinf(back)) continue;
      CHECK(std::fabs(back - f) <= std::fabs(up - f));
      CHECK(std::fabs(back - f) <= std::fabs(lo - f));
    }
  }
  SUBCASE("bf16") {
    CHECK(bf16_to_f32(0x3f80) == 1.0f);
    CHECK(f32_to_bf16(1.0f) == 0x3f80);
    CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);                      // tie -> even
    CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);                  // tie -> even (up)
    CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -16)) == 0x3f81);
    CHECK(f32_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // rounds to inf
    CHECK(f32_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
    CHECK(f32_to_bf16(-std::numeric_limits<float>::infinity()) == 0xff80);
    const uint16_t n = f32_to_bf16(std::numeric_limits<float>::quiet_NaN());
    CHECK(std::isnan(bf16_to_f32(n)));
    uint32_t snan_bits = 0x7f800001u;  // signalling NaN whose payload is only in the dropped bits
    float snan;
    std::memcpy(&snan, &snan_bits, 4);
    CHECK(std::isnan(bf16_to_f32(f32_to_bf16(snan))));
    for (uint32_t b = 0; b < 65536; ++b) {
      const float f = bf16_to_f32(static_cast<uint16_t>(b));
      if (!std::isnan(f)) CHECK(f32_to_bf16(f) == b);
    }
  }
}

TEST_CASE("RoundTripErrorBounds") {
  constexpr size_t kN = 256 * 256;
  const auto g = gaussian(kN, 1234);
  const auto o = with_outliers(kN, 99);
  const auto types = quantizable_types();
  CHECK(types.size() == std::size(kBounds));
  for (TensorType t : types) {
    CAPTURE(std::string(type_name(t)));
    const Bound* b = bound_for(t);
    REQUIRE(b != nullptr);  // every quantizable type states its bound
    const double eg = nrmse(g, roundtrip(t, g));
    const double eo = nrmse(o, roundtrip(t, o));
    MESSAGE(std::string(type_name(t)) << ": nrmse gaussian " << eg << " outliers " << eo);
    CHECK(eg <= b->gauss);
    CHECK(eo <= b->outlier);
  }
}

TEST_CASE("KQuantsBeatTheirNaiveScales") {
  // The searched quantizers must do clearly better than the simplest scale of the same bit width.
  const auto g = gaussian(256 * 64, 5);
  CHECK(nrmse(g, roundtrip(TensorType::Q4_K, g)) < 0.95 * nrmse(g, roundtrip(TensorType::Q4_1, g)));
  CHECK(nrmse(g, roundtrip(TensorType::Q5_K, g)) < 0.95 * nrmse(g, roundtrip(TensorType::Q5_1, g)));
  CHECK(nrmse(g, roundtrip(TensorType::IQ4_NL, g)) < 0.9 * nrmse(g, roundtrip(TensorType::Q4_0, g)));
}

TEST_CASE("RepresentableValuesAreExact") {
  const auto g = gaussian(4096, 3, 10.0f);
  SUBCASE("f32") { CHECK(roundtrip(TensorType::F32, g) == g); }
  SUBCASE("bf16") {
    std::vector<float> x(g.size());
    for (size_t i = 0; i < g.size(); ++i) x[i] = bf16_to_f32(f32_to_bf16(g[i]));
    x[0] = std::numeric_limits<float>::infinity();
    x[1] = -0.0f;
    x[2] = 1e-38f;  // subnormal-ish small values keep their 8-bit significand
    x[2] = bf16_to_f32(f32_to_bf16(x[2]));
    CHECK(roundtrip(TensorType::BF16, x) == x);
  }
  SUBCASE("f16") {
    std::vector<float> x(g.size());
    for (size_t i = 0; i < g.size(); ++i) x[i] = fp16_to_f32(f32_to_fp16(g[i]));
    x[0] = std::ldexp(1.0f, -24);
    x[1] = 65504.0f;
    CHECK(roundtrip(TensorType::F16, x) == x);
  }
  SUBCASE("q8_0 / q4_0 blocks already on their grid come back unchanged") {
    // x = d*q with d a power of two and the extreme code present in each block.
    std::vector<float> x8(256), x4(256);
    Rng r(11);
    for (size_t i = 0; i < 256; ++i) {
      x8[i] = (i % 32 == 0) ? 127 * 0.25f : static_cast<float>(static_cast<int>(r.g() % 255) - 127) * 0.25f;
      x4[i] = (i % 32 == 0) ? -8 * 0.5f : static_cast<float>(static_cast<int>(r.g() % 16) - 8) * 0.5f;
    }
    CHECK(roundtrip(TensorType::Q8_0, x8) == x8);
    CHECK(roundtrip(TensorType::Q8_K, x8) == x8);
    CHECK(roundtrip(TensorType::Q4_0, x4) == x4);
  }
  SUBCASE("mxfp4 on its grid") {
    std::vector<float> x(64);
    Rng r(12);
    for (size_t i = 0; i < 64; ++i) x[i] = std::ldexp(static_cast<float>(kvalue_mxfp4(static_cast<int>(r.g() % 16))), -3);
    x[0] = 12 * std::ldexp(1.0f, -3);
    x[32] = -12 * std::ldexp(1.0f, -3);
    CHECK(roundtrip(TensorType::MXFP4, x) == x);
  }
}

TEST_CASE("ZerosAndConstantBlocks") {
  for (TensorType t : quantizable_types()) {
    CAPTURE(std::string(type_name(t)));
    const size_t qk = traits(t).block_elems;
    const size_t n = std::max<size_t>(qk, 256) * 2;
    const std::vector<float> zeros(n, 0.0f);
    const auto z = roundtrip(t, zeros);
    for (float v : z) CHECK(v == 0.0f);
    // All-equal blocks: the format's scale precision limits the error. fp16 scales (and 6-bit
    // sub-block scales multiplied back) keep it within ~2e-3 relative; MXFP4 rounds the value to its
    // E2M1 grid under a power-of-two scale: up to 25% (values in [1.5, 2) * 2^k clip to 1.5 * 2^k).
    const double tol = t == TensorType::MXFP4 ? 0.25 : t == TensorType::BF16 ? 4e-3 : 2e-3;
    for (float c : {1.0f, -2.5f, 0.3f, 1000.0f, -0.07f}) {
      CAPTURE(c);
      const std::vector<float> x(n, c);
      const auto y = roundtrip(t, x);
      double worst = 0;
      for (float v : y) worst = std::max(worst, std::fabs(static_cast<double>(v) - c) / std::fabs(c));
      CHECK(worst <= tol);
    }
  }
}

TEST_CASE("TinyAndHugeMagnitudes") {
  // fp16-scaled formats: sigma 1e-2 .. 1e3 stays within the fp16 range of their scales (the bound is
  // 1.3x the unit-scale one: small scales lose a little to fp16 subnormal spacing). Formats with f32 or
  // E8M0 scales, and bf16, take 1e-30 .. 1e30.
  for (TensorType t : quantizable_types()) {
    CAPTURE(std::string(type_name(t)));
    const bool wide = t == TensorType::F32 || t == TensorType::BF16 || t == TensorType::Q8_K || t == TensorType::MXFP4;
    const Bound* b = bound_for(t);
    REQUIRE(b != nullptr);
    const std::vector<float> sigmas = wide ? std::vector<float>{1e-30f, 1e-6f, 1e6f, 1e30f} : std::vector<float>{1e-2f, 1e3f};
    for (float s : sigmas) {
      CAPTURE(s);
      const auto x = gaussian(256 * 16, 77, s);
      const auto y = roundtrip(t, x);
      for (float v : y) REQUIRE(std::isfinite(v));
      CHECK(nrmse(x, y) <= 1.3 * b->gauss + 1e-12);
    }
  }
}

TEST_CASE("ArgumentChecks") {
  std::vector<float> x(257, 1.0f), y(257, 7.0f);
  std::vector<uint8_t> buf(4096, 0);
  for (uint32_t raw = 0; raw < 64; ++raw) {
    const TypeTraits* tr = type_traits(raw);
    if (!tr) continue;
    CAPTURE(tr->name);
    if (tr->block_elems > 1) {
      // n not a multiple of the block size: refused, output untouched.
      CHECK(quantize_row(tr->type, x.data(), buf.data(), tr->block_elems + 1) == 0);
      CHECK_FALSE(dequantize_row(tr->type, buf.data(), y.data(), tr->block_elems - 1));
      CHECK(y[0] == 7.0f);
    }
    CHECK(quantize_row(tr->type, x.data(), buf.data(), -static_cast<int64_t>(tr->block_elems)) == 0);
    CHECK_FALSE(dequantize_row(tr->type, buf.data(), y.data(), -static_cast<int64_t>(tr->block_elems)));
    // The flags are the truth: a type the table does not flag is refused, a flagged one works.
    std::fill(buf.begin(), buf.end(), 0);
    const int64_t n = std::max<int64_t>(tr->block_elems, 1);
    CHECK(dequantize_row(tr->type, buf.data(), y.data(), n) == tr->dequantizable);
    const size_t wrote = quantize_row(tr->type, x.data(), buf.data(), n);
    CHECK(wrote == (tr->quantizable ? *row_bytes(tr->type, n) : 0));
    std::fill(y.begin(), y.end(), 7.0f);
  }
  CHECK_FALSE(dequantize_row(static_cast<TensorType>(31), buf.data(), y.data(), 32));
  CHECK(quantize_row(static_cast<TensorType>(31), x.data(), buf.data(), 32) == 0);
}

TEST_CASE("Q8_KBlockSumsAndQ8_1Decode") {
  const auto x = gaussian(256, 21);
  BlockQ8_K b;
  REQUIRE(quantize_row(TensorType::Q8_K, x.data(), &b, 256) == sizeof b);
  for (int i = 0; i < 16; ++i) {
    int s = 0;
    for (int j = 0; j < 16; ++j) s += b.qs[16 * i + j];
    CHECK(b.bsums[i] == s);
  }
  int max_code = 0;
  for (int8_t q : b.qs) max_code = std::max(max_code, std::abs(static_cast<int>(q)));
  CHECK(max_code == 127);  // the largest magnitude uses the full code range

  BlockQ8_1 q1;
  q1.d = f32_to_fp16(0.5f);
  q1.s = f32_to_fp16(0.0f);
  for (int j = 0; j < 32; ++j) q1.qs[j] = static_cast<int8_t>(j - 16);
  float y[32];
  REQUIRE(dequantize_row(TensorType::Q8_1, &q1, y, 32));
  for (int j = 0; j < 32; ++j) CHECK(y[j] == 0.5f * static_cast<float>(j - 16));
}

TEST_CASE("UnalignedBuffers") {
  // The CPU entry points accept any alignment (blocks are copied through locals).
  const auto x = gaussian(512, 8);
  for (TensorType t : {TensorType::Q4_K, TensorType::Q8_0, TensorType::F16, TensorType::Q6_K}) {
    CAPTURE(std::string(type_name(t)));
    const size_t bytes = *row_bytes(t, 512);
    std::vector<uint8_t> aligned(bytes), odd(bytes + 1);
    REQUIRE(quantize_row(t, x.data(), aligned.data(), 512) == bytes);
    REQUIRE(quantize_row(t, x.data(), odd.data() + 1, 512) == bytes);
    CHECK(std::memcmp(aligned.data(), odd.data() + 1, bytes) == 0);
    std::vector<float> y1(512), y2(513);
    REQUIRE(dequantize_row(t, aligned.data(), y1.data(), 512));
    REQUIRE(dequantize_row(t, odd.data() + 1, y2.data() + 1, 512));
    CHECK(std::memcmp(y1.data(), y2.data() + 1, 512 * 4) == 0);
  }
}
