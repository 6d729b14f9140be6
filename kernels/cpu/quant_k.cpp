// kernels/cpu/quant_k.cpp — quantizers with searched scales: Q4_K, Q5_K (affine sub-blocks of 32 with a
// 6-bit scale and min under fp16 super-block scales), Q6_K (symmetric sub-blocks of 16 with int8
// scales) and IQ4_NL (non-linear 4-bit code book). Pure functions; thread-safe.
//
// Method (our own, in the spirit of llama.cpp's reference quantizers; no importance matrix):
//  1. each sub-block is fitted by least squares over a small grid of candidate scales around the
//     range-based one: for each candidate the integer codes are chosen by rounding, then the scale (and
//     min) that minimise the squared error for those codes are solved in closed form; best error wins;
//  2. the sub-block scales are quantized against the super-block scale(s), which are stored as fp16;
//  3. the codes are re-chosen for the stored (rounded) scales, then the super-block scale(s) are
//     re-fitted by least squares for those codes and kept when the error drops.
// Inputs must be finite; the results are deterministic (no randomness, fixed iteration counts).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "moe/kernels/blocks.h"
#include "moe/kernels/half.h"
#include "quant_internal.h"



namespace moe::kernels::detail {
namespace {

int round_clamp(float v, int lo, int hi) {
  if (!(v > static_cast<float>(lo))) return lo;  // also catches NaN
  if (v >= static_cast<float>(hi)) return hi;
  return static_cast<int>(std::lround(v));
}

// ---- affine fit: x ~= a*L - m, L in [0, nmax], a >= 0, m >= 0 ----
struct Affine {
  float a = 0.0f;
  float m = 0.0f;  // subtracted: value = a*L - m
};

// Squared error of codes L under (a, m).
double affine_err(const float* x, int n, const int* L, float a, float m) {
  double e = 0;
  for (int i = 0; i < n; ++i) {
    const double r = static_cast<double>(a) * L[i] - m - x[i];
    e += r * r;
  }
  return e;
}

// Least-squares (a, m) for fixed codes; m clamped at >= 0 (the format stores a non-negative min).
Affine affine_solve(const float* x, int n, const int* L) {
  double sl = 0, sll = 0, sx = 0, slx = 0;
  for (int i = 0; i < n; ++i) {
    sl += L[i];
    sll += static_cast<double>(L[i]) * L[i];
    sx += x[i];
    slx += static_cast<double>(L[i]) * x[i];
  }
  Affine r;
  const double det = n * sll - sl * sl;
  if (det > 0) {
    const double a = (n * slx - sl * sx) / det;
    const double b = (sll * sx - sl * slx) / det;  // x ~= a*L + b
    if (b <= 0) {
      r.a = static_cast<float>(a);
      r.m = static_cast<float>(-b);
      if (r.a >= 0) return r;
    }
  }
  // min pinned at 0: a = <L,x>/<L,L>
  r.m = 0.0f;
  r.a = sll > 0 ? static_cast<float>(std::max(0.0, slx / sll)) : 0.0f;
  return r;
}

void affine_codes(const float* x, int n, int nmax, float a, float m, int* L) {
  const float ia = a > 0 ? 1.0f / a : 0.0f;
  for (int i = 0; i < n; ++i) L[i] = a > 0 ? round_clamp((x[i] + m) * ia, 0, nmax) : 0;
}

// Best (a, m) for one sub-block over a grid of candidate scales.
Affine affine_fit(const float* x, int n, int nmax) {
  float xmin = x[0], xmax = x[0];
  for (int i = 1; i < n; ++i) {
    xmin = std::min(xmin, x[i]);
    xmax = std::max(xmax, x[i]);
  }
  xmin = std::min(xmin, 0.0f);  // the min term can only shift down
  Affine best;
  best.m = -xmin;
  if (xmax <= xmin) return best;  // constant non-negative block... or all equal negatives: a = 0, m = -xmin
  int L[32], Lc[32];
  best.a = (xmax - xmin) / static_cast<float>(nmax);
  affine_codes(x, n, nmax, best.a, best.m, L);
  double best_err = affine_err(x, n, L, best.a, best.m);
  for (int step = -10; step <= 10; ++step) {
    const float iscale = (static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / (xmax - xmin);
    for (int i = 0; i < n; ++i) Lc[i] = round_clamp((x[i] - xmin) * iscale, 0, nmax);
    Affine c = affine_solve(x, n, Lc);
    // One alternation: re-pick the codes for the fitted (a, m) and re-fit.
    for (int it = 0; it < 2; ++it) {
      const double e = affine_err(x, n, Lc, c.a, c.m);
      if (e < best_err) {
        best_err = e;
        best = c;
      }
      if (it == 1 || c.a <= 0) break;
      affine_codes(x, n, nmax, c.a, c.m, Lc);
      c = affine_solve(x, n, Lc);
    }
  }
  return best;
}

// Packs 8 six-bit scales and mins into the 12-byte Q4_K/Q5_K layout (inverse of k_scale_min).
void pack_scale_min(const int* sc, const int* m, uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

// Shared Q4_K / Q5_K path: codes L (0..nmax) for 256 values, stored d/dmin and 6-bit sc/m.
void quantize_kaffine(const float* x, int nmax, uint16_t* d_out, uint16_t* dmin_out, int* sc, int* mn, int* L) {
  Affine sub[8];
  float max_a = 0, max_m = 0;
  for (int s = 0; s < 8; ++s) {
    sub[s] = affine_fit(x + 32 * s, 32, nmax);
    max_a = std::max(max_a, sub[s].a);
    max_m = std::max(max_m, sub[s].m);
  }
  // Super-block scales: sub-block scales become 6-bit multiples of d (resp. dmin).
  const uint16_t dh = f32_to_fp16(max_a / 63.0f), mh = f32_to_fp16(max_m / 63.0f);
  float d = fp16_to_f32(dh), dmin = fp16_to_f32(mh);
  for (int s = 0; s < 8; ++s) {
    sc[s] = d > 0 ? round_clamp(sub[s].a / d, 0, 63) : 0;
    mn[s] = dmin > 0 ? round_clamp(sub[s].m / dmin, 0, 63) : 0;
  }
  auto codes = [&](float dd, float dm, int* out) {
    for (int s = 0; s < 8; ++s) {
      const float a = dd * static_cast<float>(sc[s]);
      affine_codes(x + 32 * s, 32, nmax, a, dm * static_cast<float>(mn[s]), out + 32 * s);
    }
  };
  auto total_err = [&](float dd, float dm, const int* l) {
    double e = 0;
    for (int s = 0; s < 8; ++s)
      e += affine_err(x + 32 * s, 32, l + 32 * s, dd * static_cast<float>(sc[s]), dm * static_cast<float>(mn[s]));
    return e;
  };
  codes(d, dmin, L);
  double err = total_err(d, dmin, L);
  // Refit (d, dmin) for the chosen integer sc/m and codes: value = d*(sc*L) - dmin*m, linear in both.
  double suu = 0, svv = 0, suv = 0, sux = 0, svx = 0;
  for (int i = 0; i < 256; ++i) {
    const double u = static_cast<double>(sc[i / 32]) * L[i], v = -static_cast<double>(mn[i / 32]);
    suu += u * u;
    svv += v * v;
    suv += u * v;
    sux += u * x[i];
    svx += v * x[i];
  }
  const double det = suu * svv - suv * suv;
  if (det > 0) {
    const double nd = (sux * svv - svx * suv) / det, ndm = (svx * suu - sux * suv) / det;
    if (nd > 0 && ndm >= 0) {
      const uint16_t dh2 = f32_to_fp16(static_cast<float>(nd)), mh2 = f32_to_fp16(static_cast<float>(ndm));
      const float d2 = fp16_to_f32(dh2), dmin2 = fp16_to_f32(mh2);
      int L2[256];
      codes(d2, dmin2, L2);
      const double err2 = total_err(d2, dmin2, L2);
      if (std::isfinite(d2) && std::isfinite(dmin2) && err2 < err) {
        *d_out = dh2;
        *dmin_out = mh2;
        std::memcpy(L, L2, sizeof L2);
        return;
      }
    }
  }
  *d_out = dh;
  *dmin_out = mh;
}

// ---- symmetric fit: x ~= a*L, L in [lo, hi] ----

// Best scale a for one sub-block of n values (n <= 32), codes in [-nneg, npos].
float sym_fit(const float* x, int n, int nneg, int npos) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax == 0) return 0.0f;
  double sxx = 0;
  for (int i = 0; i < n; ++i) sxx += static_cast<double>(x[i]) * x[i];
  float best_a = max / static_cast<float>(-nneg);
  double best_err = INFINITY;
  for (int step = -12; step <= 12; ++step) {
    const float iscale = -(static_cast<float>(nneg) + 0.1f * static_cast<float>(step)) / max;
    double sxl = 0, sll = 0;
    for (int i = 0; i < n; ++i) {
      const int l = round_clamp(iscale * x[i], -nneg, npos);
      sxl += static_cast<double>(x[i]) * l;
      sll += static_cast<double>(l) * l;
    }
    if (sll <= 0) continue;
    const double err = sxx - sxl * sxl / sll;  // residual of the least-squares scale sxl/sll
    if (err < best_err) {
      best_err = err;
      best_a = static_cast<float>(sxl / sll);
    }
  }
  return best_a;
}

}  // namespace

void quantize_block(const float* x, BlockQ4_K* b) noexcept {
  int sc[8], mn[8], L[256];
  quantize_kaffine(x, 15, &b->d, &b->dmin, sc, mn, L);
  pack_scale_min(sc, mn, b->scales);
  for (int p = 0; p < 4; ++p)
    for (int l = 0; l < 32; ++l)
      b->qs[32 * p + l] = static_cast<uint8_t>(L[64 * p + l] | (L[64 * p + 32 + l] << 4));
}

void quantize_block(const float* x, BlockQ5_K* b) noexcept {
  int sc[8], mn[8], L[256];
  quantize_kaffine(x, 31, &b->d, &b->dmin, sc, mn, L);
  pack_scale_min(sc, mn, b->scales);
  std::memset(b->qh, 0, sizeof b->qh);
  for (int i = 0; i < 256; ++i) b->qh[i & 31] |= static_cast<uint8_t>((L[i] >> 4) << (i >> 5));
  for (int p = 0; p < 4; ++p)
    for (int l = 0; l < 32; ++l)
      b->qs[32 * p + l] = static_cast<uint8_t>((L[64 * p + l] & 0xF) | ((L[64 * p + 32 + l] & 0xF) << 4));
}

void quantize_block(const float* x, BlockQ6_K* b) noexcept {
  float a[16];
  float amax = 0, max = 0;
  for (int s = 0; s < 16; ++s) {
    a[s] = sym_fit(x + 16 * s, 16, 32, 31);
    if (std::fabs(a[s]) > amax) {
      amax = std::fabs(a[s]);
      max = a[s];
    }
  }
  int L[256];
  if (amax == 0) {
    std::memset(b, 0, sizeof *b);
    for (int i = 0; i < 256; ++i) L[i] = 0;
  } else {
    // int8 sub-block scales: the largest magnitude maps to -128 (so d has the opposite sign).
    const float iscale = -128.0f / max;
    int sc[16];
    for (int s = 0; s < 16; ++s) sc[s] = round_clamp(iscale * a[s], -128, 127);
    auto codes = [&](float d, int* out) {
      for (int s = 0; s < 16; ++s) {
        const float as = d * static_cast<float>(sc[s]);
        const float ia = as != 0 ? 1.0f / as : 0.0f;
        for (int l = 0; l < 16; ++l) out[16 * s + l] = as != 0 ? round_clamp(x[16 * s + l] * ia, -32, 31) : 0;
      }
    };
    auto err_of = [&](float d, const int* l) {
      double e = 0;
      for (int i = 0; i < 256; ++i) {
        const double r = static_cast<double>(d) * sc[i / 16] * l[i] - x[i];
        e += r * r;
      }
      return e;
    };
    uint16_t dh = f32_to_fp16(1.0f / iscale);
    float d = fp16_to_f32(dh);
    codes(d, L);
    double err = err_of(d, L);
    // Refit d for the chosen codes: value = d * (sc*L).
    double suu = 0, sux = 0;
    for (int i = 0; i < 256; ++i) {
      const double u = static_cast<double>(sc[i / 16]) * L[i];
      suu += u * u;
      sux += u * x[i];
    }
    if (suu > 0) {
      const uint16_t dh2 = f32_to_fp16(static_cast<float>(sux / suu));
      const float d2 = fp16_to_f32(dh2);
      int L2[256];
      codes(d2, L2);
      const double err2 = err_of(d2, L2);
      if (std::isfinite(d2) && err2 < err) {
        dh = dh2;
        std::memcpy(L, L2, sizeof L2);
      }
    }
    b->d = dh;
    for (int s = 0; s < 16; ++s) b->scales[s] = static_cast<int8_t>(sc[s]);
  }
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int* q = L + 128 * h;
      const int q0 = q[l] + 32, q1 = q[l + 32] + 32, q2 = q[l + 64] + 32, q3 = q[l + 96] + 32;
      b->ql[64 * h + l] = static_cast<uint8_t>((q0 & 0xF) | ((q2 & 0xF) << 4));
      b->ql[64 * h + 32 + l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
      b->qh[32 * h + l] = static_cast<uint8_t>((q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6));
    }
  }
}

namespace {
// Nearest IQ4_NL code to v (v in units of the block scale).
int nearest_iq4nl(float v) {
  int best = 0;
  float be = std::fabs(v - static_cast<float>(kvalue_iq4nl(0)));
  for (int k = 1; k < 16; ++k) {
    const float e = std::fabs(v - static_cast<float>(kvalue_iq4nl(k)));
    if (e < be) {
      be = e;
      best = k;
    }
  }
  return best;
}
}  // namespace

void quantize_block(const float* x, BlockIQ4_NL* b) noexcept {
  float amax = 0, max = 0;
  for (int i = 0; i < QK4_NL; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  int q[QK4_NL];
  if (amax == 0) {
    std::memset(b, 0, sizeof *b);
    return;
  }
  // Candidates: the largest magnitude mapped near the code book's end (-127), refit by least squares.
  double sxx = 0;
  for (int i = 0; i < QK4_NL; ++i) sxx += static_cast<double>(x[i]) * x[i];
  float best_d = max / -127.0f;
  double best_err = INFINITY;
  for (int step = -10; step <= 10; ++step) {
    const float id = (-127.0f + 2.0f * static_cast<float>(step)) / max;
    double sxk = 0, skk = 0;
    for (int i = 0; i < QK4_NL; ++i) {
      const double k = kvalue_iq4nl(nearest_iq4nl(x[i] * id));
      sxk += k * x[i];
      skk += k * k;
    }
    if (skk <= 0) continue;
    const double err = sxx - sxk * sxk / skk;
    if (err < best_err) {
      best_err = err;
      best_d = static_cast<float>(sxk / skk);
    }
  }
  b->d = f32_to_fp16(best_d);
  const float d = fp16_to_f32(b->d);
  const float id = d != 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < QK4_NL; ++i) q[i] = d != 0 ? nearest_iq4nl(x[i] * id) : 8;  // code 8 is +1: near 0
  for (int j = 0; j < QK4_NL / 2; ++j) b->qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}

}  // namespace moe::kernels::detail
