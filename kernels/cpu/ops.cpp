// kernels/cpu/ops.cpp — scalar implementations of moe/kernels/ops.h (norms, RoPE, softmax, GLU,
// top-k, f16, attention with optional window and sinks). Pure functions; thread-safe.
#include "moe/kernels/ops.h"

#include "moe/kernels/cpu_features.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moe::kernels::ops {

float f16_to_f32(uint16_t h) noexcept {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: value = man * 2^-24
      float v = static_cast<float>(man) * 5.9604644775390625e-8f;
      std::memcpy(&bits, &v, 4);
      bits |= sign;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) noexcept {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (ax < 0x38800000u) {                                               // below the smallest normal
    // Subnormal or zero: value / 2^-24 rounded to nearest even.
    float a;
    std::memcpy(&a, &ax, 4);
    float m = a * 16777216.0f;  // exact scaling by 2^24
    float r = std::nearbyint(m);  // default rounding mode: nearest even
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(r));
  }
  // Normal: rebias exponent, round mantissa from 23 to 10 bits, nearest even.
  uint32_t mant_odd = (ax >> 13) & 1u;
  ax += 0xfffu + mant_odd;
  uint32_t h = ((ax >> 13) - (112u << 10));
  return static_cast<uint16_t>(sign | h);
}

#if defined(__x86_64__)
namespace {
// AVX2 + FMA + F16C usable (the x86 versions below). cpu_features() rather than __builtin_cpu_supports:
// clang 14 does not know the "f16c" feature name, and cpu_features() also checks that the OS saves the
// ymm state.
bool have_f16c() {
  static const bool ok = cpu_features().has_avx2_level();
  return ok;
}
// F16C rounds to nearest even as f32_to_f16 does: the same bits (NaNs stay NaN).
__attribute__((target("avx2,f16c"))) void f32_to_f16_row_f16c(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}
}  // namespace
#endif

void f32_to_f16_row(const float* src, uint16_t* dst, int64_t n) noexcept {
#if defined(__x86_64__)
  if (have_f16c()) return f32_to_f16_row_f16c(src, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}
void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n) noexcept {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) noexcept {
  // double: the mean of squares of a few thousand values loses bits in f32. Four partial sums in a fixed
  // order (element i goes to sum i mod 4): the adds overlap instead of waiting on one chain.
  double s4[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) s4[j] += static_cast<double>(x[i + j]) * x[i + j];
  for (; i < n; ++i) s4[i % 4] += static_cast<double>(x[i]) * x[i];
  const double ss = (s4[0] + s4[1]) + (s4[2] + s4[3]);
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  if (w) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv;
  }
}

void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps) noexcept {
  double sum = 0;  // double, like rmsnorm: the statistics of a few thousand values lose bits in f32
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(n);
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += (x[i] - mean) * (x[i] - mean);
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  const float m = static_cast<float>(mean);
  for (int64_t i = 0; i < n; ++i) {
    float v = (x[i] - m) * inv;
    if (w) v *= w[i];
    if (b) v += b[i];
    y[i] = v;
  }
}

namespace {
// The rotary dimension (in [0, n_rot)) whose wavelength fits `n_rot_pos` rotations into orig_ctx.
float yarn_corr_dim(int n_rot, float orig_ctx, float n_rotations, float base) {
  return static_cast<float>(n_rot) * std::log(orig_ctx / (n_rotations * 2.0f * static_cast<float>(M_PI))) /
         (2.0f * std::log(base));
}
}  // namespace

void rope_cos_sin(const RopeParams& p, int64_t pos, float* cs) noexcept {
  const int half = p.n_rot / 2;
  float low = 0, high = 0;
  float mscale = p.attn_factor;
  if (p.ext_factor != 0.0f) {
    float ctx = p.orig_ctx > 0 ? p.orig_ctx : 4096.0f;
    low = std::max(0.0f, std::floor(yarn_corr_dim(p.n_rot, ctx, p.beta_fast, p.freq_base)));
    high = std::min(static_cast<float>(p.n_rot - 1), std::ceil(yarn_corr_dim(p.n_rot, ctx, p.beta_slow, p.freq_base)));
    // YaRN's attention temperature: sqrt(1/t) = 0.1 ln(s) + 1 with s = 1/freq_scale.
    mscale *= 1.0f + 0.1f * std::log(1.0f / p.freq_scale);
  }
  for (int i = 0; i < half; ++i) {
    // theta_extrap = pos * base^(-2i/n_rot); computed in double so long contexts keep precision.
    double inv_freq = std::pow(static_cast<double>(p.freq_base), -2.0 * i / p.n_rot);
    double theta_extrap = static_cast<double>(pos) * inv_freq;
    if (p.freq_factors) theta_extrap /= p.freq_factors[i];
    double theta_interp = p.freq_scale * theta_extrap;
    double theta = theta_interp;
    if (p.ext_factor != 0.0f) {
      float y = (static_cast<float>(i) - low) / std::max(0.001f, high - low);
      float ramp = 1.0f - std::min(1.0f, std::max(0.0f, y));
      double mix = static_cast<double>(ramp) * p.ext_factor;
      theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
    }
    cs[2 * i] = static_cast<float>(std::cos(theta)) * mscale;
    cs[2 * i + 1] = static_cast<float>(std::sin(theta)) * mscale;
  }
}

void rope_apply(const RopeParams& p, const float* cs, float* x, int n_heads, int head_dim) noexcept {
  const int half = p.n_rot / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const int a = p.mode == RopeMode::Normal ? 2 * i : i;
      const int b = p.mode == RopeMode::Normal ? 2 * i + 1 : i + half;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
  }
}

void softmax(float* x, int64_t n) noexcept {
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

namespace {

void silu_mul_scalar(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

#if defined(__x86_64__)
// e^x for 8 floats: x = k ln2 + r (|r| <= ln2/2; ln2 in two parts, Cody-Waite), e^r = 1 + r + r^2 P(r)
// with Cephes' degree-5 minimax P, times 2^k built in the exponent bits: within a few ulp of expf.
// x is clamped to [-87.3, 88.3] so 2^k stays a normal float; a NaN stays NaN (min/max return their
// second operand when one is NaN).
__attribute__((target("avx2,fma"))) inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-87.3f), _mm256_min_ps(_mm256_set1_ps(88.3f), x));
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
// Eight elements of silu(g) * u in the scalar version's order: g / (1 + e^-g) * u.
__attribute__((target("avx2,fma"))) inline __m256 silu_mul8(__m256 g, __m256 u) {
  const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}
// The last n % 8 elements go through the same code (padded), so an element's bits do not depend on
// its position in the array.
__attribute__((target("avx2,fma"))) void silu_mul_avx2(float* g, const float* u, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(g + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
  if (i < n) {
    alignas(32) float tg[8] = {}, tu[8] = {};
    std::memcpy(tg, g + i, size_t(n - i) * sizeof(float));
    std::memcpy(tu, u + i, size_t(n - i) * sizeof(float));
    _mm256_store_ps(tg, silu_mul8(_mm256_load_ps(tg), _mm256_load_ps(tu)));
    std::memcpy(g + i, tg, size_t(n - i) * sizeof(float));
  }
}
#endif

}  // namespace

// SwiGLU's gate: the AVX2 version (a polynomial e^x, 8 lanes) where the CPU has it; exp was a quarter of
// the non-matmul time of a prefill. The CUDA twin (expf) agrees within 1e-6 relative.
void silu_mul(float* g, const float* u, int64_t n) noexcept {
#if defined(__x86_64__)
  if (have_f16c()) return silu_mul_avx2(g, u, n);
#endif
  silu_mul_scalar(g, u, n);
}

void gelu_mul(float* g, const float* u, int64_t n) noexcept {
  constexpr float k = 0.7978845608028654f;  // sqrt(2/pi)
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    g[i] = 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x))) * u[i];
  }
}

void swiglu_oai_mul(float* g, const float* u, int64_t n, float alpha, float limit) noexcept {
  for (int64_t i = 0; i < n; ++i) {
    const float x = std::min(g[i], limit);
    const float y = std::min(std::max(u[i], -limit), limit);
    g[i] = x / (1.0f + std::exp(-alpha * x)) * (y + 1.0f);
  }
}

void axpy(float a, const float* x, float* y, int64_t n) noexcept {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void topk(const float* x, int n, int k, int* idx) noexcept {
  // k is small (<= a few dozen): insertion into a sorted prefix, O(n k), no allocation.
  int m = 0;
  for (int i = 0; i < n; ++i) {
    if (m == k && !(x[i] > x[idx[k - 1]])) continue;
    int j = m < k ? m++ : k - 1;
    while (j > 0 && x[i] > x[idx[j - 1]]) {
      idx[j] = idx[j - 1];
      --j;
    }
    idx[j] = i;
  }
}

namespace {

// q . k over d elements of an f16 row, and y += w * v (f16 row). Scalar versions are the reference;
// the F16C+FMA versions (chosen once at run time) convert 8 halves per instruction — the scalar bit
// twiddling was 15% of a prefill profile.
float dot_f16_scalar(const float* q, const uint16_t* k, int d) {
  float acc = 0;
  for (int i = 0; i < d; ++i) acc += q[i] * f16_to_f32(k[i]);
  return acc;
}
void axpy_f16_scalar(float w, const uint16_t* v, float* y, int d) {
  for (int i = 0; i < d; ++i) y[i] += w * f16_to_f32(v[i]);
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c,fma"))) float dot_f16_avx2(const float* q, const uint16_t* k, int d) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= d; i += 8) {
    __m256 kf = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k + i)));
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), kf, acc);
  }
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  float r = _mm_cvtss_f32(lo);
  for (; i < d; ++i) r += q[i] * f16_to_f32(k[i]);
  return r;
}
__attribute__((target("avx2,f16c,fma"))) void axpy_f16_avx2(float w, const uint16_t* v, float* y, int d) {
  const __m256 wv = _mm256_set1_ps(w);
  int i = 0;
  for (; i + 8 <= d; i += 8) {
    __m256 vf = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(wv, vf, _mm256_loadu_ps(y + i)));
  }
  for (; i < d; ++i) y[i] += w * f16_to_f32(v[i]);
}
#endif

}  // namespace

void attention(const AttnShape& s, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
               int n_kv, float* out, float* scores, int h0, int h1) noexcept {
  attention_window(s, q, k_cache, v_cache, 0, n_kv, nullptr, out, scores, h0, h1);
}

void attention_window(const AttnShape& s, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                      int kv0, int n_kv, const float* sinks, float* out, float* scores, int h0, int h1) noexcept {
  auto dot = dot_f16_scalar;
  auto axpy_h = axpy_f16_scalar;
#if defined(__x86_64__)
  if (have_f16c()) {
    dot = dot_f16_avx2;
    axpy_h = axpy_f16_avx2;
  }
#endif
  const int group = s.n_head / s.n_head_kv;
  const int64_t k_stride = s.k_stride ? s.k_stride : static_cast<int64_t>(s.n_head_kv) * s.hd_k;
  const int64_t v_stride = s.v_stride ? s.v_stride : static_cast<int64_t>(s.n_head_kv) * s.hd_v;
  const int n = n_kv - kv0;
  float* sc = scores + kv0;
  for (int h = h0; h < h1; ++h) {
    const int kvh = h / group;
    const float* qh = q + static_cast<int64_t>(h) * s.hd_k;
    if (s.softcap > 0.0f) {
      const float sc_in = s.scale / s.softcap;
      for (int t = kv0; t < n_kv; ++t)
        scores[t] =
            std::tanh(dot(qh, k_cache + t * k_stride + static_cast<int64_t>(kvh) * s.hd_k, s.hd_k) * sc_in) * s.softcap;
    } else {
      for (int t = kv0; t < n_kv; ++t)
        scores[t] = dot(qh, k_cache + t * k_stride + static_cast<int64_t>(kvh) * s.hd_k, s.hd_k) * s.scale;
    }
    if (!sinks) {
      softmax(sc, n);
    } else {
      // softmax over the n scores and the sink logit, keeping only the scores' n probabilities.
      float mx = sinks[h];
      for (int i = 0; i < n; ++i) mx = std::max(mx, sc[i]);
      double sum = std::exp(static_cast<double>(sinks[h]) - mx);
      for (int i = 0; i < n; ++i) {
        sc[i] = std::exp(sc[i] - mx);
        sum += sc[i];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int i = 0; i < n; ++i) sc[i] *= inv;
    }
    float* oh = out + static_cast<int64_t>(h) * s.hd_v;
    for (int d = 0; d < s.hd_v; ++d) oh[d] = 0;
    for (int t = kv0; t < n_kv; ++t)
      axpy_h(scores[t], v_cache + t * v_stride + static_cast<int64_t>(kvh) * s.hd_v, oh, s.hd_v);
  }
}

}  // namespace moe::kernels::ops
