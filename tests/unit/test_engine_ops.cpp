// The engine's small pieces, each against a hand-computed answer: CPU ops (f16, RMSNorm, RoPE pairing
// and YaRN, softmax, top-k, GQA attention with window and sinks, SwiGLU's gate, gpt-oss's clamped
// SwiGLU), the gating rule of each MoE family, and the sampler.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "moe/engine.h"
#include "moe/kernels/ops.h"
#include "moe/sampler.h"

using namespace moe;
namespace ops = moe::kernels::ops;

TEST_CASE("f16 conversion round trips and rounds to nearest even") {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.9604644775390625e-08f, 0.333251953125f})
    CHECK(ops::f16_to_f32(ops::f32_to_f16(v)) == v);
  CHECK(ops::f32_to_f16(1.0f) == 0x3c00);
  CHECK(ops::f32_to_f16(1e6f) == 0x7c00);                       // overflow -> inf
  CHECK(ops::f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);        // halfway, even mantissa stays
  CHECK(ops::f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);        // halfway, odd rounds up
  CHECK(std::isnan(ops::f16_to_f32(ops::f32_to_f16(NAN))));
  // Every finite half converts to f32 and back unchanged.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    REQUIRE(ops::f32_to_f16(ops::f16_to_f32(uint16_t(h))) == h);
  }
  // The row version (F16C where the CPU has it) gives f32_to_f16's bits for every non-NaN float: a sweep
  // of bit patterns (every exponent, ties, subnormal results, overflow), in rows with a scalar tail.
  std::vector<float> src;
  std::mt19937 rng(5);
  for (uint32_t e = 0; e < 256; ++e)
    for (int k = 0; k < 64; ++k) {
      const uint32_t bits = (rng() & 0x80000000u) | (e << 23) | (k < 4 ? (0x1000u * uint32_t(k)) : (rng() & 0x7fffffu));
      float f;
      std::memcpy(&f, &bits, 4);
      src.push_back(f);
    }
  src.push_back(std::numeric_limits<float>::quiet_NaN());
  std::vector<uint16_t> dst(src.size());
  ops::f32_to_f16_row(src.data(), dst.data(), int64_t(src.size()));
  for (size_t i = 0; i < src.size(); ++i) {
    if (std::isnan(src[i]))
      CHECK(std::isnan(ops::f16_to_f32(dst[i])));
    else
      REQUIRE(dst[i] == ops::f32_to_f16(src[i]));
  }
}

TEST_CASE("rmsnorm") {
  std::vector<float> x = {1, 2, 3, 4}, w = {1, 1, 2, 0.5f}, y(4);
  ops::rmsnorm(x.data(), w.data(), y.data(), 4, 0.0f);
  const float r = std::sqrt(30.0f / 4);
  CHECK(y[0] == doctest::Approx(1 / r));
  CHECK(y[2] == doctest::Approx(6 / r));
  CHECK(y[3] == doctest::Approx(2 / r));
}

TEST_CASE("layernorm: mean removed, population variance, weight and bias; aliasing allowed") {
  std::vector<float> x = {1, 2, 3, 6}, w = {1, 2, 1, 0.5f}, b = {0, 1, -1, 0}, y(4);
  // mean 3, population variance (4 + 1 + 0 + 9) / 4 = 3.5
  ops::layernorm(x.data(), w.data(), b.data(), y.data(), 4, 0.0f);
  const float s = std::sqrt(3.5f);
  CHECK(y[0] == doctest::Approx(-2 / s));
  CHECK(y[1] == doctest::Approx(-2 / s + 1));
  CHECK(y[2] == doctest::Approx(-1.0f));
  CHECK(y[3] == doctest::Approx(1.5f / s));
  ops::layernorm(x.data(), nullptr, nullptr, x.data(), 4, 1e-5f);  // in place, no affine
  CHECK(x[3] == doctest::Approx(3 / std::sqrt(3.5f + 1e-5f)));
  CHECK(x[0] + x[1] + x[2] + x[3] == doctest::Approx(0.0f).epsilon(1e-6));
}

TEST_CASE("rope pairs adjacent dims (normal) or halves (neox)") {
  ops::RopeParams p;
  p.n_rot = 4;
  p.freq_base = 100.0f;
  std::vector<float> cs(4);
  ops::rope_cos_sin(p, 3, cs.data());
  // theta_0 = 3, theta_1 = 3 * 100^(-1/2) = 0.3
  CHECK(cs[0] == doctest::Approx(std::cos(3.0)));
  CHECK(cs[3] == doctest::Approx(std::sin(0.3)));
  std::vector<float> x = {1, 0, 0, 1, 7}, y = x;  // head_dim 5: the 5th dim passes through
  ops::rope_apply(p, cs.data(), y.data(), 1, 5);
  CHECK(y[0] == doctest::Approx(std::cos(3.0)));
  CHECK(y[1] == doctest::Approx(std::sin(3.0)));
  CHECK(y[2] == doctest::Approx(-std::sin(0.3)));
  CHECK(y[3] == doctest::Approx(std::cos(0.3)));
  CHECK(y[4] == 7);
  p.mode = ops::RopeMode::NeoX;
  y = x;
  ops::rope_apply(p, cs.data(), y.data(), 1, 5);
  // pairs (0,2) with theta_0 and (1,3) with theta_1
  CHECK(y[0] == doctest::Approx(std::cos(3.0)));
  CHECK(y[2] == doctest::Approx(std::sin(3.0)));
  CHECK(y[1] == doctest::Approx(-std::sin(0.3)));
  CHECK(y[3] == doctest::Approx(std::cos(0.3)));
}

TEST_CASE("rope frequency scale and YaRN") {
  ops::RopeParams p;
  p.n_rot = 64;
  p.freq_base = 10000.0f;
  p.freq_scale = 0.25f;
  std::vector<float> a(64), b(64);
  ops::rope_cos_sin(p, 40, a.data());
  p.freq_scale = 1.0f;
  ops::rope_cos_sin(p, 10, b.data());
  for (int i = 0; i < 64; ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));  // linear interpolation
  // YaRN: high-frequency dims (ramp = 1) extrapolate (theta unscaled), low-frequency dims interpolate,
  // all scaled by mscale = 1 + 0.1 ln(1/s).
  p.freq_scale = 0.25f;
  p.ext_factor = 1.0f;
  p.orig_ctx = 4096;
  ops::rope_cos_sin(p, 100, a.data());
  const double msc = 1.0 + 0.1 * std::log(4.0);
  CHECK(a[0] == doctest::Approx(std::cos(100.0) * msc).epsilon(1e-5));  // dim 0: full extrapolation
  const double inv_last = std::pow(10000.0, -2.0 * 31 / 64);
  CHECK(a[62] == doctest::Approx(std::cos(100.0 * 0.25 * inv_last) * msc).epsilon(1e-5));  // interpolated
}

TEST_CASE("softmax and top-k") {
  std::vector<float> x = {1, 3, 3, 2, -1};
  std::vector<int> idx(3);
  ops::topk(x.data(), 5, 3, idx.data());
  CHECK(idx == std::vector<int>{1, 2, 3});  // tie 3/3 goes to the lower index first
  ops::topk(x.data(), 5, 1, idx.data());
  CHECK(idx[0] == 1);
  ops::softmax(x.data(), 5);
  CHECK(std::accumulate(x.begin(), x.end(), 0.0) == doctest::Approx(1.0));
  CHECK(x[1] == doctest::Approx(std::exp(3.0) / (std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0) + std::exp(-1.0))));
}

TEST_CASE("GQA attention over an f16 cache") {
  // 2 query heads sharing 1 KV head, hd 2, 2 cached positions.
  ops::AttnShape s{2, 1, 2, 2, 1.0f};
  std::vector<float> q = {1, 0, 0, 1};
  std::vector<float> kf = {1, 0, 0, 2}, vf = {1, 2, 3, 4};
  std::vector<uint16_t> k(4), v(4);
  ops::f32_to_f16_row(kf.data(), k.data(), 4);
  ops::f32_to_f16_row(vf.data(), v.data(), 4);
  std::vector<float> out(4), scores(2);
  ops::attention(s, q.data(), k.data(), v.data(), 2, out.data(), scores.data(), 0, 2);
  // head 0: scores (1, 0) -> w = (e/(e+1), 1/(e+1)); head 1: scores (0, 2)
  const double w0 = std::exp(1.0) / (std::exp(1.0) + 1), w1 = 1 / (1 + std::exp(2.0));
  CHECK(out[0] == doctest::Approx(w0 * 1 + (1 - w0) * 3));
  CHECK(out[1] == doctest::Approx(w0 * 2 + (1 - w0) * 4));
  CHECK(out[2] == doctest::Approx(w1 * 1 + (1 - w1) * 3));
  // one position: output is that value
  ops::attention(s, q.data(), k.data(), v.data(), 1, out.data(), scores.data(), 0, 2);
  CHECK(out[3] == 2.0f);
}

TEST_CASE("attention window and sinks (gpt-oss)") {
  // 1 head, hd 1, 3 cached positions: keys 1, 2, 3 (q = 1, scale 1), values 10, 20, 30.
  ops::AttnShape s{1, 1, 1, 1, 1.0f};
  const float q = 1.0f;
  std::vector<float> kf = {1, 2, 3}, vf = {10, 20, 30};
  std::vector<uint16_t> k(3), v(3);
  ops::f32_to_f16_row(kf.data(), k.data(), 3);
  ops::f32_to_f16_row(vf.data(), v.data(), 3);
  std::vector<float> scores(3);
  float out = 0, full = 0;
  // kv0 = 0 and no sinks: attention() itself.
  ops::attention(s, &q, k.data(), v.data(), 3, &full, scores.data(), 0, 1);
  ops::attention_window(s, &q, k.data(), v.data(), 0, 3, nullptr, &out, scores.data(), 0, 1);
  CHECK(out == full);
  // Window of the last 2 positions: softmax over keys 2, 3 only.
  ops::attention_window(s, &q, k.data(), v.data(), 1, 3, nullptr, &out, scores.data(), 0, 1);
  const double e2 = std::exp(2.0), e3 = std::exp(3.0);
  CHECK(out == doctest::Approx((20 * e2 + 30 * e3) / (e2 + e3)));
  // A sink logit 2.5 joins the denominator with no value: the weights sum to less than 1.
  const float sink = 2.5f;
  ops::attention_window(s, &q, k.data(), v.data(), 1, 3, &sink, &out, scores.data(), 0, 1);
  CHECK(out == doctest::Approx((20 * e2 + 30 * e3) / (e2 + e3 + std::exp(2.5))));
  const float big = 50.0f;
  ops::attention_window(s, &q, k.data(), v.data(), 0, 3, &big, &out, scores.data(), 0, 1);
  // A sink far above every score takes almost all the weight: the output is nearly 0, with no overflow.
  const double tail = 10 * std::exp(1.0 - 50) + 20 * std::exp(2.0 - 50) + 30 * std::exp(3.0 - 50);
  CHECK(std::isfinite(out));
  CHECK(out == doctest::Approx(tail).epsilon(1e-3).scale(0));
}

TEST_CASE("SwiGLU gate: silu(g) * u within 1e-6 relative of expf, the same bits anywhere in the array") {
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.0f, 6.0f);
  const int64_t n = 20011;  // not a multiple of 8: a padded tail
  std::vector<float> g(n), u(n);
  for (int64_t i = 0; i < n; ++i) {
    g[i] = nd(rng);
    u[i] = nd(rng);
  }
  g[0] = 0.0f;
  g[1] = 88.0f;
  g[2] = -60.0f;
  g[3] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> y = g;
  ops::silu_mul(y.data(), u.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double ref = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
    if (std::isnan(g[i])) {
      CHECK(std::isnan(y[i]));
      continue;
    }
    CHECK(std::fabs(y[i] - ref) <= 1e-6 * std::fabs(ref) + 1e-30);
  }
  // Every element again at every offset of a short call (tails of 1..7): bit-identical.
  for (int64_t i = 0; i < 64; ++i)
    for (int64_t len = 1; len <= 9; ++len) {
      if (i + len > n) continue;
      std::vector<float> part(g.begin() + i, g.begin() + i + len);
      ops::silu_mul(part.data(), u.data() + i, len);
      for (int64_t j = 0; j < len; ++j)
        if (!std::isnan(y[i + j])) CHECK(std::memcmp(&part[size_t(j)], &y[i + j], 4) == 0);
    }
}

TEST_CASE("clamped SwiGLU (gpt-oss): x = min(g, 7), y = clamp(u, -7, 7), x sigmoid(1.702 x) (y + 1)") {
  std::vector<float> g = {0.5f, -2.0f, 9.0f, 3.0f, -20.0f}, u = {1.0f, -0.5f, 2.0f, 12.0f, -9.0f};
  std::vector<float> y = g;
  ops::swiglu_oai_mul(y.data(), u.data(), int64_t(y.size()));
  auto ref = [](double x, double up) {
    x = std::min(x, 7.0);
    up = std::clamp(up, -7.0, 7.0);
    return x / (1 + std::exp(-1.702 * x)) * (up + 1);
  };
  for (size_t i = 0; i < g.size(); ++i) CHECK(y[i] == doctest::Approx(ref(g[i], u[i])));
  CHECK(y[2] == doctest::Approx(7.0 / (1 + std::exp(-1.702 * 7.0)) * 3.0));  // gate clamped at 7
  CHECK(y[3] == doctest::Approx(3.0 / (1 + std::exp(-1.702 * 3.0)) * 8.0));  // up clamped at 7
  CHECK(y[4] == doctest::Approx(-20.0 / (1 + std::exp(1.702 * 20.0)) * -6.0));  // no lower clamp on the gate
}

// ---- gating: each family's published rule on the same logits ----
namespace {
struct GateOut {
  std::vector<int32_t> ids;
  std::vector<float> w;
};
GateOut gate(const Gating& g, std::vector<float> logits, uint32_t k) {
  GateOut o{std::vector<int32_t>(k), std::vector<float>(k)};
  std::vector<float> probs(logits.size());
  std::vector<int32_t> idx(logits.size());
  apply_gating(g, logits.data(), uint32_t(logits.size()), k, o.ids.data(), o.w.data(), probs.data(), idx.data());
  return o;
}
const std::vector<float> kLogits = {0.5f, 2.0f, -1.0f, 1.0f, 0.0f, 1.5f};
double softmax_all(int i) {
  double s = 0;
  for (float l : kLogits) s += std::exp(double(l));
  return std::exp(double(kLogits[i])) / s;
}
}  // namespace

TEST_CASE("gating: Mixtral (top-k on logits, softmax over the k)") {
  Gating g;
  g.topk_before_norm = true;
  auto o = gate(g, kLogits, 2);
  CHECK(o.ids == std::vector<int32_t>{1, 5});  // ascending ids
  const double z = std::exp(2.0) + std::exp(1.5);
  CHECK(o.w[0] == doctest::Approx(std::exp(2.0) / z));
  CHECK(o.w[1] == doctest::Approx(std::exp(1.5) / z));
}

TEST_CASE("gating: Qwen2-MoE and OLMoE (softmax over all, top-k, not renormalised)") {
  Gating g;  // defaults: softmax, no renorm
  auto o = gate(g, kLogits, 3);
  CHECK(o.ids == std::vector<int32_t>{1, 3, 5});
  CHECK(o.w[0] == doctest::Approx(softmax_all(1)));
  CHECK(o.w[1] == doctest::Approx(softmax_all(3)));
  CHECK(o.w[2] == doctest::Approx(softmax_all(5)));
  CHECK(o.w[0] + o.w[1] + o.w[2] < 0.95f);
}

TEST_CASE("gating: Qwen3-MoE (softmax over all, top-k, renormalised)") {
  Gating g;
  g.renormalize = true;
  auto o = gate(g, kLogits, 3);
  const double z = softmax_all(1) + softmax_all(3) + softmax_all(5);
  CHECK(o.w[0] == doctest::Approx(softmax_all(1) / z));
  CHECK(o.w[2] == doctest::Approx(softmax_all(5) / z));
  // renormalised softmax over the top-k equals Mixtral's rule
  Gating mix;
  mix.topk_before_norm = true;
  auto m = gate(mix, kLogits, 3);
  for (int j = 0; j < 3; ++j) CHECK(o.w[j] == doctest::Approx(m.w[j]));
}

TEST_CASE("gating: sigmoid and routed scale") {
  Gating g;
  g.func = GatingFunc::Sigmoid;
  g.scale = 2.5f;
  auto o = gate(g, kLogits, 2);
  CHECK(o.ids == std::vector<int32_t>{1, 5});
  CHECK(o.w[0] == doctest::Approx(2.5 / (1 + std::exp(-2.0))));
}

// ---- sampler ----
TEST_CASE("sampler: greedy, determinism, truncation, penalties") {
  std::vector<float> logits = {0.1f, 2.0f, 1.9f, -3.0f, 0.5f};
  SamplerParams p;
  p.temperature = 0;
  Sampler greedy(p, 5);
  CHECK(greedy.sample(logits, {}) == 1);
  // repetition penalty on token 1 (2.0 / 1.5 = 1.33 < 1.9) moves greedy to token 2
  p.repeat_penalty = 1.5f;
  Sampler pen(p, 5);
  std::vector<int32_t> hist = {1};
  CHECK(pen.sample(logits, hist) == 2);
  // presence/frequency penalties subtract per occurrence
  p.repeat_penalty = 1.0f;
  p.frequency_penalty = 0.06f;
  Sampler freq(p, 5);
  std::vector<int32_t> h2 = {1, 1};
  CHECK(freq.sample(logits, h2) == 2);   // 2.0 - 0.12 < 1.9
  std::vector<int32_t> h1 = {1};
  CHECK(freq.sample(logits, h1) == 1);   // 2.0 - 0.06 > 1.9

  SamplerParams t;
  t.temperature = 1.0f;
  t.top_k = 0;
  t.top_p = 1.0f;
  t.min_p = 0.0f;
  t.seed = 42;
  Sampler a(t, 5), b(t, 5);
  std::vector<int32_t> sa, sb;
  for (int i = 0; i < 50; ++i) {
    sa.push_back(a.sample(logits, {}));
    sb.push_back(b.sample(logits, {}));
  }
  CHECK(sa == sb);  // same seed, same sequence
  // Frequencies follow softmax(logits) at temperature 1 (loose bound, 20000 draws).
  Sampler c(t, 5);
  std::map<int, int> cnt;
  const int N = 20000;
  for (int i = 0; i < N; ++i) ++cnt[c.sample(logits, {})];
  double z = 0;
  for (float l : logits) z += std::exp(double(l));
  for (int i = 0; i < 5; ++i) CHECK(cnt[i] / double(N) == doctest::Approx(std::exp(double(logits[i])) / z).epsilon(0.1).scale(0.01));

  // top-k = 2 only ever yields the two best; min-p 0.5 removes tokens below half the best's probability
  t.top_k = 2;
  Sampler k2(t, 5);
  for (int i = 0; i < 200; ++i) {
    int s = k2.sample(logits, {});
    CHECK((s == 1 || s == 2));
  }
  t.top_k = 0;
  t.min_p = 0.5f;
  Sampler mp(t, 5);
  for (int i = 0; i < 200; ++i) {
    int s = mp.sample(logits, {});
    CHECK((s == 1 || s == 2));
  }
  t.min_p = 0;
  t.top_p = 0.3f;  // the best token alone holds > 0.3
  Sampler tp(t, 5);
  for (int i = 0; i < 50; ++i) CHECK(tp.sample(logits, {}) == 1);
}

TEST_CASE("gating: DeepSeek-V3 (sigmoid, bias for the choice only, group-limited, renormalised, scaled)") {
  // 8 experts in 4 groups of 2; logits chosen so each rule changes the answer.
  const std::vector<float> logits = {2.0f, -2.0f, 1.0f, 1.0f, 0.0f, 0.5f, 1.8f, -3.0f};
  const uint32_t n = uint32_t(logits.size());
  std::vector<float> bias = {0.0f, 0.0f, 0.0f, 0.0f, 0.6f, 0.0f, 0.0f, 0.0f};
  auto sig = [](float x) { return 1.0 / (1.0 + std::exp(-double(x))); };
  auto run = [&](const Gating& g, const float* b, uint32_t k) {
    GateOut o{std::vector<int32_t>(k), std::vector<float>(k)};
    std::vector<float> probs(n), sel(2 * n);
    std::vector<int32_t> idx(n);
    apply_gating(g, logits.data(), n, k, o.ids.data(), o.w.data(), probs.data(), idx.data(), b, sel.data());
    return o;
  };
  Gating g;
  g.func = GatingFunc::Sigmoid;
  g.renormalize = true;
  g.scale = 2.5f;
  // No bias, no groups: the best two scores, experts 0 (2.0) and 6 (1.8).
  auto plain = run(g, nullptr, 2);
  CHECK(plain.ids == std::vector<int32_t>{0, 6});
  // Bias: expert 4 (0 + 0.6 -> sigmoid 0.5 + 0.6 = 1.1) beats 6 (0.858) for the choice, but its
  // weight is its unbiased score sigmoid(0) = 0.5.
  auto biased = run(g, bias.data(), 2);
  CHECK(biased.ids == std::vector<int32_t>{0, 4});
  const double z = sig(2.0f) + sig(0.0f);
  CHECK(biased.w[0] == doctest::Approx(2.5 * sig(2.0f) / z));
  CHECK(biased.w[1] == doctest::Approx(2.5 * sig(0.0f) / z));
  // Groups {0,1} {2,3} {4,5} {6,7}, scored by the sum of their two best biased scores: group 2
  // (1.1 + 0.622) and group 1 (0.731 + 0.731) beat group 0 (0.881 + 0.119) and group 3 (0.858 + 0.047),
  // so expert 0 (the best single score) cannot be chosen.
  g.n_group = 4;
  g.topk_group = 2;
  auto grouped = run(g, bias.data(), 3);
  CHECK(grouped.ids == std::vector<int32_t>{2, 3, 4});
  double sum = 0;
  for (float w : grouped.w) sum += w;
  CHECK(sum == doctest::Approx(2.5));  // renormalised, then scaled
  // Softmax scores (V2 with groups), no bias: groups {0,1} (e^2 + e^-2) and {6,7} (e^1.8 + e^-3) win,
  // so the third expert is 1 rather than 2 or 3 (e^1 each).
  g.func = GatingFunc::Softmax;
  g.renormalize = false;
  g.scale = 1.0f;
  auto v2 = run(g, nullptr, 3);
  CHECK(v2.ids == std::vector<int32_t>{0, 1, 6});
  g.n_group = 0;
  CHECK(run(g, nullptr, 3).ids == std::vector<int32_t>{0, 2, 6});  // without groups (2/3 tie: lower id)
}
