// Private to kernels/cpu: the SIMD tile kernels, written once and compiled twice: by dot_avx2.cpp
// (-mavx2 -mfma -mf16c; u8 x s8 dots with vpmaddubsw + vpmaddwd) and by dot_avx512.cpp (adds
// AVX-512 F/BW/VL/VNNI/BF16; the same 256-bit code uses vpdpbusd / vpdpwssd, and the float kernels use
// 512-bit vectors). The including file defines MOE_DOT_NS (a distinct namespace) and, for the AVX-512
// build, MOE_DOT_AVX512. Everything here has internal linkage and calls only compiler intrinsics, so no
// AVX code can leak into a baseline translation unit through a shared inline function.
//
// Block layouts (bytes; d/dmin are IEEE f16, little-endian), as in GGUF:
//   Q4_0  (18): d, qs[16]        x[i] = d*((qs[i]&15)-8), x[i+16] = d*((qs[i]>>4)-8), i<16
//   Q8_0  (34): d, qs[32] int8   x[i] = d*qs[i]
//   MXFP4 (17): e (E8M0), qs[16] x[i] = 2^(e-128)*K[qs[i]&15], x[i+16] = ..K[qs[i]>>4],
//               K = {0,1,2,3,4,6,8,12,0,-1,-2,-3,-4,-6,-8,-12} (twice the FP4 E2M1 values)
//   Q4_K (144): d, dmin, scales[12] (8 6-bit scales + 8 6-bit mins), qs[128]: chunk j<4 of 64 elements:
//               low nibbles of qs[32j..32j+31] are sub-block 2j, high nibbles sub-block 2j+1;
//               x = d*sc[s]*q - dmin*m[s]
//   Q5_K (176): as Q4_K plus qh[32] after the scales: bit s of qh[l] is the 5th bit of element 32s+l
//   Q6_K (210): ql[128], qh[64], scales[16] int8, d. Half h<2 (128 elements): for l<32
//               e[l]    = ql[64h+l]&15    | ((qh[32h+l]>>0)&3)<<4, e[l+32] = ql[64h+l+32]&15 | ((..>>2)&3)<<4
//               e[l+64] = ql[64h+l]>>4    | ((qh[32h+l]>>4)&3)<<4, e[l+96] = ql[64h+l+32]>>4 | ((..>>6)&3)<<4
//               x = d*scales[8h + l/16 + 2c]*(e-32) for chunk c = 0..3
// Activations (ActView): Q8_32 blocks for Q8_0, Q8_32P (pair-interleaved, see matmul_internal.h) for
// the nibble types Q4_0/MXFP4, Q8_256 blocks for the K-quants, f32 for F32/F16/BF16. Integer sums stay in int32 within a block/super-block (bounds noted per kernel).
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "matmul_internal.h"
#include "moe/kernels/cpu_features.h"

// GCC 12's own intrinsic headers (_mm512_castps512_ps256 via _mm256_undefined_pd) trip
// -Wmaybe-uninitialized / -Wuninitialized; the value is fully defined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

// Small fixed-trip loops (tokens of a tile, sub-blocks of a super-block) must be fully unrolled: they
// index register arrays and build shuffle constants from the loop counter.
#define MOE_UNROLL _Pragma("GCC unroll 16")

namespace moe::kernels::detail {
namespace MOE_DOT_NS {
namespace {

inline uint16_t ld16(const uint8_t* p) { uint16_t v; __builtin_memcpy(&v, p, 2); return v; }
inline uint32_t ld32(const uint8_t* p) { uint32_t v; __builtin_memcpy(&v, p, 4); return v; }
inline float f16f(const uint8_t* p) { return _cvtsh_ss(ld16(p)); }
inline __m256i ldu(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Sum of u8*s8 products, four per int32 lane. AVX2: pairs saturate at int16, callers keep
// u*|s|*2 <= 32767 (u <= 128 with |s| <= 127).
inline __m256i dot_us(__m256i u, __m256i s) {
#ifdef MOE_DOT_AVX512
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}
// acc + sum over pairs of (u8*s8 pair sums) * int16 scales.
inline __m256i dot_us_scaled(__m256i acc, __m256i u, __m256i s, __m256i sc16) {
#ifdef MOE_DOT_AVX512
  return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, s), sc16);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc16));
#endif
}

// Expands the 16 packed nibbles at p: low nibbles to bytes 0..15, high nibbles to bytes 16..31.
inline __m256i nibbles32(const uint8_t* p) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// ---------------- 32-element block types with Q8_32 activations ----------------
// Blocks go in groups of 8: per block and token an int32 dot of the unsigned weight codes u with q
// (8 lanes), the 8 dots reduced to one vector of 8 block sums, then per group and token
//   acc += float(sums) * (dw * d_x);  corr += dw * s_x   (s_x = d_x * sum q, vectors of 8 blocks)
// and y = sum(acc) - offset * sum(corr), because w = dw * (u - offset). Per-block scalar work (f16
// decode, broadcast, scale multiply) becomes one vector op per 8 blocks.

inline __m128i gather_u16x8(const uint8_t* p, size_t stride) {
  __m128i v = _mm_cvtsi32_si128(ld16(p));
  v = _mm_insert_epi16(v, ld16(p + 1 * stride), 1);
  v = _mm_insert_epi16(v, ld16(p + 2 * stride), 2);
  v = _mm_insert_epi16(v, ld16(p + 3 * stride), 3);
  v = _mm_insert_epi16(v, ld16(p + 4 * stride), 4);
  v = _mm_insert_epi16(v, ld16(p + 5 * stride), 5);
  v = _mm_insert_epi16(v, ld16(p + 6 * stride), 6);
  v = _mm_insert_epi16(v, ld16(p + 7 * stride), 7);
  return v;
}

// Scale decoding of the nibble types (their codes are decoded by the Nib* policies below).
struct Q4_0 {
  static constexpr size_t kBytes = 18;
  static float scale(const uint8_t* b) { return f16f(b); }
  static __m256 scales8(const uint8_t* b) { return _mm256_cvtph_ps(gather_u16x8(b, kBytes)); }
};

struct MXFP4 {
  static constexpr size_t kBytes = 17;
  // Scale 2^(e-128) (half of E8M0's 2^(e-127), because K holds twice the FP4 values).
  static float scale(const uint8_t* b) {
    const uint32_t e = b[0];
    const uint32_t bits = e < 2 ? (0x00200000u << e) : ((e - 1) << 23);  // 2^(e-128), subnormal for e<2
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
  }
  static __m256 scales8(const uint8_t* b) {
    __m128i v = _mm_cvtsi32_si128(b[0]);
    v = _mm_insert_epi8(v, b[1 * kBytes], 1);
    v = _mm_insert_epi8(v, b[2 * kBytes], 2);
    v = _mm_insert_epi8(v, b[3 * kBytes], 3);
    v = _mm_insert_epi8(v, b[4 * kBytes], 4);
    v = _mm_insert_epi8(v, b[5 * kBytes], 5);
    v = _mm_insert_epi8(v, b[6 * kBytes], 6);
    v = _mm_insert_epi8(v, b[7 * kBytes], 7);
    const __m256i e = _mm256_cvtepu8_epi32(v);
    const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
    const __m256i small = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
    const __m256i is_small = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(normal, small, is_small));
  }
};

struct Q8_0 {
  static constexpr size_t kBytes = 34;
  static constexpr float kOffset = 0.0f;
  static __m256i decode(const uint8_t* b) { return ldu(b + 2); }
  static float scale(const uint8_t* b) { return f16f(b); }
  static __m256 scales8(const uint8_t* b) { return _mm256_cvtph_ps(gather_u16x8(b, kBytes)); }
  // Signed x signed through |w| * (x * sign(w)): |w| <= 128, |x| <= 127.
  static __m256i dot(__m256i w, const int8_t* x) {
    return dot_us(_mm256_abs_epi8(w), _mm256_sign_epi8(ldu(x), w));
  }
};

// Reduces 8 vectors of 8 int32 to one vector whose lane i is the sum of s[i].
inline __m256i reduce8(const __m256i* s) {
  const __m256i h0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
  const __m256i h4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                          _mm256_permute2x128_si256(h0123, h4567, 0x31));
}

// ---- nibble-packed types (Q4_0, MXFP4) with Q8_32P activations ----
// One 256-bit load holds the 16 code bytes of blocks 2j and 2j+1 ([2j | 2j+1]); its low nibbles meet
// activation bytes [2j: 0..15][2j+1: 0..15] and its high nibbles [2j: 16..31][2j+1: 16..31] (the
// Q8_32P layout), so one dot covers two blocks: lanes 0..3 block 2j, lanes 4..7 block 2j+1.
struct NibQ4_0 {
  static constexpr size_t kBytes = 18, kQs = 2;
  static constexpr float kOffset = 8.0f;
  static __m256i map(__m256i nib) { return nib; }
  static float scale(const uint8_t* b) { return Q4_0::scale(b); }
  static __m256 scales8(const uint8_t* b) { return Q4_0::scales8(b); }
};
struct NibMXFP4 {
  static constexpr size_t kBytes = 17, kQs = 1;
  static constexpr float kOffset = 12.0f;
  static __m256i map(__m256i nib) {
    const __m256i lut = _mm256_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0,
                                         12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
    return _mm256_shuffle_epi8(lut, nib);
  }
  static float scale(const uint8_t* b) { return MXFP4::scale(b); }
  static __m256 scales8(const uint8_t* b) { return MXFP4::scales8(b); }
};

// u8 x s8 dot of two 32-byte halves, summed: codes <= 24 keep every int16 pair sum <= 24*127*4.
inline __m256i dot2_us(__m256i u0, __m256i x0, __m256i u1, __m256i x1) {
#ifdef MOE_DOT_AVX512
  return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u0, x0), u1, x1);
#else
  const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(u0, x0), _mm256_maddubs_epi16(u1, x1));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
#endif
}

// The row kernels read a block or super-block and then spend long on its integer sums, so the hardware
// prefetchers, which follow the misses, keep too few lines in flight when memory is slow to answer: on
// a VM whose single core swept memory at 15 GB/s, one thread read Q4_K rows at 8 GB/s and two at 14.
// Each super-block (or group of 8 blocks) therefore asks for the lines kStreamAhead bytes further on (in
// the same row or the rows after it, which these kernels read next) into L1: Q4_K one thread 13 GB/s,
// two 21 (one token, 2048 columns), Q4_K decode 19.5 -> 26-28 tok/s (AVX-512), 17.8 -> 28.9 (AVX2);
// Q8_0 one token 9.6-10.4 -> 11.8-12.0 GB/s (two threads 17.9 -> 20.3-21.5), Q4_0 7.8-8.6 -> 10.9-12.3
// (14.4 -> 19.0). 2048 beat 4096 and 8192 end to end. Past the matrix end this only names addresses
// (never faults).
constexpr size_t kStreamAhead = 2048;
template <size_t kBytes>
inline void stream_ahead(const uint8_t* blk) {
  const uintptr_t p = reinterpret_cast<uintptr_t>(blk) + kStreamAhead;  // an address, maybe past the end
  MOE_UNROLL
  for (size_t o = 0; o < kBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

template <class B, int NT>
inline void group_nib_full(const uint8_t* p, size_t b, const ActView* a, __m256* acc, __m256* corr) {
  stream_ahead<8 * B::kBytes>(p);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  __m256i lo[4], hi[4];
  MOE_UNROLL
  for (int j = 0; j < 4; ++j) {
    const uint8_t* p0 = p + 2 * j * B::kBytes + B::kQs;
    const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p0))),
                                              _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0 + B::kBytes)), 1);
    lo[j] = B::map(_mm256_and_si256(v, m4));
    hi[j] = B::map(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
  }
  const __m256 dw = B::scales8(p);
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) {
    const int8_t* xq = a[t].q + b * 32;
    __m256i s[4];
    MOE_UNROLL
    for (int j = 0; j < 4; ++j) s[j] = dot2_us(lo[j], ldu(xq + 64 * j), hi[j], ldu(xq + 64 * j + 32));
    // [b0 b2 b4 b6 | b1 b3 b5 b7] -> natural order.
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    const __m256i sums = _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, _mm256_loadu_ps(a[t].d + b)), acc[t]);
    corr[t] = _mm256_fmadd_ps(dw, _mm256_loadu_ps(a[t].s + b), corr[t]);
  }
}

// The last k < 8 blocks of a row (b0 = first of them, nb = blocks per row), block by block.
template <class B, int NT>
inline void group_nib_tail(const uint8_t* p, size_t b0, int k, size_t nb, const ActView* a, __m256* acc, __m256* corr) {
  alignas(32) float dws[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  __m256i u[8];
  for (int i = 0; i < 8; ++i) {
    u[i] = i < k ? B::map(nibbles32(p + i * B::kBytes + B::kQs)) : _mm256_setzero_si256();
    if (i < k) dws[i] = B::scale(p + i * B::kBytes);
  }
  const __m256 dw = _mm256_load_ps(dws);
  const size_t paired_end = nb & ~size_t(1);
  for (int t = 0; t < NT; ++t) {
    alignas(32) float dxs[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sxs[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    __m256i s[8];
    for (int i = 0; i < 8; ++i) {
      if (i >= k) { s[i] = _mm256_setzero_si256(); continue; }
      const size_t g = b0 + size_t(i);
      size_t lo_off, hi_off;  // where elements 0..15 and 16..31 of block g sit (Q8_32P)
      if (g < paired_end) {
        lo_off = 64 * (g / 2) + 16 * (g & 1);
        hi_off = lo_off + 32;
      } else {
        lo_off = 32 * g;
        hi_off = lo_off + 16;
      }
      const __m256i x = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a[t].q + hi_off)),
                                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[t].q + lo_off)));
      s[i] = dot_us(u[i], x);
      dxs[i] = a[t].d[g];
      sxs[i] = a[t].s[g];
    }
    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(s)), _mm256_mul_ps(dw, _mm256_load_ps(dxs)), acc[t]);
    corr[t] = _mm256_fmadd_ps(dw, _mm256_load_ps(sxs), corr[t]);
  }
}

template <class B, int NT>
void rows_nib(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y,
              size_t ldy) {
  const size_t nb = cols / 32;
  for (size_t r = r0; r < r1; ++r) {
    const uint8_t* w = W + r * rb;
    __m256 acc[NT], corr[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) acc[t] = corr[t] = _mm256_setzero_ps();
    size_t b = 0;
    for (; b + 8 <= nb; b += 8) group_nib_full<B, NT>(w + b * B::kBytes, b, a, acc, corr);
    if (b < nb) group_nib_tail<B, NT>(w + b * B::kBytes, b, int(nb - b), nb, a, acc, corr);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) Y[t * ldy + r] = hsum8(acc[t]) - B::kOffset * hsum8(corr[t]);
  }
}

// One group of k <= 8 blocks starting at block b (kFull: k == 8, no bounds care).
template <class B, int NT, bool kFull>
inline void group_q32(const uint8_t* p, size_t b, int k, const ActView* a, __m256* acc, __m256* corr) {
  __m256i u[8];
  __m256 dw;
  if (kFull) {
    stream_ahead<8 * B::kBytes>(p);
    MOE_UNROLL
    for (int i = 0; i < 8; ++i) u[i] = B::decode(p + i * B::kBytes);
    dw = B::scales8(p);
  } else {
    alignas(32) float dws[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; ++i) {
      u[i] = i < k ? B::decode(p + i * B::kBytes) : _mm256_setzero_si256();
      if (i < k) dws[i] = B::scale(p + i * B::kBytes);
    }
    dw = _mm256_load_ps(dws);
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) {
    const int8_t* xq = a[t].q + b * 32;
    __m256i s[8];
    __m256 dx, sx;
    if (kFull) {
      MOE_UNROLL
      for (int i = 0; i < 8; ++i) s[i] = B::dot(u[i], xq + 32 * i);
      dx = _mm256_loadu_ps(a[t].d + b);
      sx = _mm256_loadu_ps(a[t].s + b);
    } else {
      alignas(32) float dxs[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sxs[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int i = 0; i < 8; ++i) {
        s[i] = i < k ? B::dot(u[i], xq + 32 * i) : _mm256_setzero_si256();
        if (i < k) { dxs[i] = a[t].d[b + i]; sxs[i] = a[t].s[b + i]; }
      }
      dx = _mm256_load_ps(dxs);
      sx = _mm256_load_ps(sxs);
    }
    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(s)), _mm256_mul_ps(dw, dx), acc[t]);
    if (B::kOffset != 0.0f) corr[t] = _mm256_fmadd_ps(dw, sx, corr[t]);
  }
}

#ifdef MOE_DOT_AVX512
// Q8_0 with AVX-512 VNNI, 16 rows at a time with rows in the vector lanes. Per block of 32 columns the
// 16 rows' 32 code bytes are transposed in registers into 8 vectors Z_k (lane i = bytes 4k..4k+3 of
// row i) and flipped to u = w + 128 (unsigned); then per token 8 vpdpbusd with the token's 4 activation
// bytes broadcast give the 16 rows' sums of (w + 128) * q, minus 128 * sum(q) (exact) = the exact
// integer block dot. No horizontal reduction: per token and block one convert, one scale product
// dw[rows] * dx and one FMA into that token's 16-row accumulator. The transpose is shared by all the
// tokens of the tile. The float sums follow rows_q32's order exactly (block b goes to partial sum
// b mod 8 with the same fl(dw * dx) scale and FMA, then hsum8's tree), and the integer block dots are
// exact either way, so each row's value does not depend on the tile, the panel, the token count or
// the kernel (matvec == matmul, bit for bit).
// Bounds: a lane sums 32 products of at most 255 * 128 (< 2^21).
inline __m512i q8_panel_col(const __m512i* u, int k, int hi) {
  const __m512i lo_idx = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
  const __m512i hi_idx = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  return _mm512_permutex2var_epi64(u[k], hi ? hi_idx : lo_idx, u[k + 4]);
}

// The 32 bytes at rp[i] + off of 16 rows, transposed: Z[k] lane i = bytes 4k..4k+3 of row i. Rows j and
// j + 8 go side by side, then an 8x8 dword transpose inside each 256-bit half.
inline void panel_t32(const uint8_t* const* rp, size_t off, __m512i* Z) {
  __m512i A[8];
  MOE_UNROLL
  for (int j = 0; j < 8; ++j)
    A[j] = _mm512_inserti64x4(_mm512_castsi256_si512(ldu(rp[j] + off)), ldu(rp[j + 8] + off), 1);
  __m512i T[8], U[8];
  MOE_UNROLL
  for (int h = 0; h < 2; ++h) {
    __m512i* a4 = A + 4 * h;
    T[4 * h + 0] = _mm512_unpacklo_epi32(a4[0], a4[1]);
    T[4 * h + 1] = _mm512_unpackhi_epi32(a4[0], a4[1]);
    T[4 * h + 2] = _mm512_unpacklo_epi32(a4[2], a4[3]);
    T[4 * h + 3] = _mm512_unpackhi_epi32(a4[2], a4[3]);
    U[4 * h + 0] = _mm512_unpacklo_epi64(T[4 * h + 0], T[4 * h + 2]);  // cols 0 | 4
    U[4 * h + 1] = _mm512_unpackhi_epi64(T[4 * h + 0], T[4 * h + 2]);  // cols 1 | 5
    U[4 * h + 2] = _mm512_unpacklo_epi64(T[4 * h + 1], T[4 * h + 3]);  // cols 2 | 6
    U[4 * h + 3] = _mm512_unpackhi_epi64(T[4 * h + 1], T[4 * h + 3]);  // cols 3 | 7
  }
  MOE_UNROLL
  for (int k = 0; k < 4; ++k) {
    Z[k] = q8_panel_col(U, k, 0);
    Z[k + 4] = q8_panel_col(U, k, 1);
  }
}

// The 16 bytes at rp[i] + off of 16 rows, transposed: C[c] lane i = bytes 4c..4c+3 of row i (a 4x4 dword
// transpose inside each 128-bit lane; lane l of X[m] holds row 4l + m).
inline void panel_t16(const uint8_t* const* rp, size_t off, __m512i* C) {
  auto ld128 = [&](int i) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(rp[i] + off)); };
  __m512i X[4];
  MOE_UNROLL
  for (int m = 0; m < 4; ++m) {
    __m512i v = _mm512_castsi128_si512(ld128(m));
    v = _mm512_inserti32x4(v, ld128(m + 4), 1);
    v = _mm512_inserti32x4(v, ld128(m + 8), 2);
    X[m] = _mm512_inserti32x4(v, ld128(m + 12), 3);
  }
  const __m512i t0 = _mm512_unpacklo_epi32(X[0], X[1]), t1 = _mm512_unpackhi_epi32(X[0], X[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(X[2], X[3]), t3 = _mm512_unpackhi_epi32(X[2], X[3]);
  C[0] = _mm512_unpacklo_epi64(t0, t2);
  C[1] = _mm512_unpackhi_epi64(t0, t2);
  C[2] = _mm512_unpacklo_epi64(t1, t3);
  C[3] = _mm512_unpackhi_epi64(t1, t3);
}

// Row pointers of a 16-row panel starting at row r; rows past r1 repeat the last row (computed, not stored).
inline size_t panel_rows(const uint8_t* W, size_t rb, size_t r, size_t r1, const uint8_t** rp) {
  const size_t nr = r1 - r < 16 ? r1 - r : 16;
  MOE_UNROLL
  for (int i = 0; i < 16; ++i) rp[i] = W + (r + (size_t(i) < nr ? size_t(i) : nr - 1)) * rb;
  return nr;
}

// Part `step` of `steps` of the next 16-row panel (its rows follow rp[0]'s: 16 * rb contiguous bytes), into
// L2. The hardware prefetchers lose track of 16 interleaved row streams; into L1 the lines would evict the
// panel being read. Past the matrix end this only names addresses (a prefetch never faults).
inline void panel_prefetch_next(const uint8_t* const* rp, size_t rb, size_t step, size_t steps) {
  const uintptr_t next = reinterpret_cast<uintptr_t>(rp[0]) + 16 * rb;
  const size_t len = (16 * rb + steps - 1) / steps;
  for (size_t o = step * len; o < (step + 1) * len; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(next + o), _MM_HINT_T1);
}

// Stores the panel's first nr rows (lanes) of each token's accumulator at Y[t * ldy + i].
template <int NT>
inline void panel_store(const __m512* acc, size_t nr, float* Y, size_t ldy) {
  const __mmask16 mk = static_cast<__mmask16>((1u << nr) - 1u);
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(Y + t * ldy, mk, acc[t]);
}

inline __m512i bcast32(const void* p) {
  return _mm512_set1_epi32(static_cast<int>(ld32(static_cast<const uint8_t*>(p))));
}

// A Q4_K/Q5_K super-block header of a 16-row panel: d and dmin, and the 6-bit scales and mins as in
// kscales, for 16 rows at once: bytes s of sc4[0] | sc4[1] (mn4 likewise).
struct Q45kHead {
  __m512 dv, dmv;
  __m512i sc4[2], mn4[2];
};
inline Q45kHead q45k_head(const uint8_t* const* rp, size_t off) {
  const __m512i m4 = _mm512_set1_epi8(0x0f), m3f = _mm512_set1_epi8(0x3f), m03 = _mm512_set1_epi8(0x03);
  __m512i C[4];  // d | dmin, scales bytes 0..3, 4..7, 8..11
  panel_t16(rp, off, C);
  Q45kHead h;
  h.dv = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(C[0]));
  h.dmv = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(C[0], 16)));
  h.sc4[0] = _mm512_and_si512(C[1], m3f);
  h.sc4[1] = _mm512_or_si512(_mm512_and_si512(C[3], m4),
                             _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(C[1], 6), m03), 4));
  h.mn4[0] = _mm512_and_si512(C[2], m3f);
  h.mn4[1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(C[3], 4), m4),
                             _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(C[2], 6), m03), 4));
  return h;
}

// The mins of sub-block s as int16 pairs (m_s, m_s), against a token's two 16-element sums (vpdpwssd).
template <int S>
inline __m512i q45k_min_pair(const Q45kHead& h) {
  const __m512i m = _mm512_and_si512(_mm512_srli_epi32(h.mn4[S / 4], 8 * (S % 4)), _mm512_set1_epi32(0xff));
  return _mm512_or_si512(m, _mm512_slli_epi32(m, 16));
}

// Chunk J's codes of a 16-row panel: L[k] (sub-block 2J) and H[k] (2J + 1), lane i = 4 codes of row i;
// for Q5_K (kHigh) bit 2J (2J + 1) of each qh byte (QH, transposed) becomes bit 4. scl / sch: the two
// sub-blocks' scales.
template <bool kHigh, int J>
inline void q45k_chunk(const uint8_t* const* rp, size_t off, const __m512i* QH, const Q45kHead& h, __m512i* L,
                       __m512i* H, __m512i& scl, __m512i& sch) {
  constexpr size_t kQs = kHigh ? 48 : 16;
  const __m512i m4 = _mm512_set1_epi8(0x0f), m10 = _mm512_set1_epi8(0x10), mff = _mm512_set1_epi32(0xff);
  __m512i Z[8];
  panel_t32(rp, off + kQs + 32 * J, Z);
  MOE_UNROLL
  for (int k = 0; k < 8; ++k) {
    L[k] = _mm512_and_si512(Z[k], m4);
    H[k] = _mm512_and_si512(_mm512_srli_epi16(Z[k], 4), m4);
    if constexpr (kHigh) {
      constexpr int sl = 2 * J, sh = 2 * J + 1;
      const __m512i bl = sl >= 4 ? _mm512_srli_epi32(QH[k], sl - 4) : _mm512_slli_epi32(QH[k], 4 - sl);
      const __m512i bh = sh >= 4 ? _mm512_srli_epi32(QH[k], sh - 4) : _mm512_slli_epi32(QH[k], 4 - sh);
      L[k] = _mm512_or_si512(L[k], _mm512_and_si512(bl, m10));
      H[k] = _mm512_or_si512(H[k], _mm512_and_si512(bh, m10));
    }
  }
  scl = _mm512_and_si512(_mm512_srli_epi32(h.sc4[J / 2], 16 * (J % 2)), mff);
  sch = _mm512_and_si512(_mm512_srli_epi32(h.sc4[J / 2], 16 * (J % 2) + 8), mff);
}

// One token's scaled sums over a 64-element chunk (x): scl * (sub-block 2j's dot) + sch * (2j + 1's), for
// rows_q45k_panel_n's token loop. Four chains (exact integers: the split does not change the sums) so the
// dot latency overlaps.
inline __m512i q45k_token_chunk(const __m512i* L, const __m512i* H, const int8_t* x, __m512i scl, __m512i sch) {
  __m512i dl = _mm512_setzero_si512(), dh = dl, dl2 = dl, dh2 = dl;
  MOE_UNROLL
  for (int k = 0; k < 4; ++k) {
    dl = _mm512_dpbusd_epi32(dl, L[k], bcast32(x + 4 * k));
    dh = _mm512_dpbusd_epi32(dh, H[k], bcast32(x + 32 + 4 * k));
    dl2 = _mm512_dpbusd_epi32(dl2, L[k + 4], bcast32(x + 16 + 4 * k));
    dh2 = _mm512_dpbusd_epi32(dh2, H[k + 4], bcast32(x + 48 + 4 * k));
  }
  return _mm512_add_epi32(_mm512_mullo_epi32(_mm512_add_epi32(dl, dl2), scl),
                          _mm512_mullo_epi32(_mm512_add_epi32(dh, dh2), sch));
}

// Calls f(std::integral_constant<int, 0>{}) .. f(<N - 1>): compile-time indices for shift counts.
template <class F, int... I>
inline void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
inline void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

// Q4_K and Q5_K (kHigh), 16 rows at a time with rows in the vector lanes (see rows_q8_panel): per
// super-block the 16 rows' headers and code chunks are transposed in registers, shared by every token.
// Per row, token and super-block the sums are exact integers
//   isum = sum_s sc_s * dot_s,   msum = sum_s m_s * (sum of the token's q over sub-block s),
// and the row's single float accumulator takes acc = fma(float(isum), fl(d * dx), acc), then
// acc = fma(-float(msum), fl(dmin * dx), acc), super-block by super-block: the value of a row depends on
// nothing but that row and that token (not the tile, the panel or the token count).
// Bounds: |dot_s| <= 31 * 127 * 32, sc <= 63, 8 sub-blocks: |isum| < 2^26; |msum| <= 63 * 4064 * 8 < 2^22.
template <bool kHigh, int NT>
void rows_q45k_panel(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y,
                     size_t ldy) {
  constexpr size_t kBytes = kHigh ? 176 : 144;
  const size_t nb = cols / 256;
  for (size_t r = r0; r < r1; r += 16) {
    const uint8_t* rp[16];
    const size_t nr = panel_rows(W, rb, r, r1, rp);
    __m512 acc[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; ++b) {
      const size_t off = b * kBytes;
      panel_prefetch_next(rp, rb, b, nb);
      const Q45kHead hd = q45k_head(rp, off);
      __m512i isum[NT], msum[NT];
      MOE_UNROLL
      for (int t = 0; t < NT; ++t) isum[t] = msum[t] = _mm512_setzero_si512();
      static_for<8>([&](auto s) {
        const __m512i mm = q45k_min_pair<decltype(s)::value>(hd);
        MOE_UNROLL
        for (int t = 0; t < NT; ++t) msum[t] = _mm512_dpwssd_epi32(msum[t], mm, bcast32(a[t].bsums + b * 16 + 2 * s));
      });
      __m512i QH[8];
      if constexpr (kHigh) panel_t32(rp, off + 16, QH);
      static_for<4>([&](auto j) {
        __m512i L[8], H[8], scl, sch;
        q45k_chunk<kHigh, decltype(j)::value>(rp, off, QH, hd, L, H, scl, sch);
        MOE_UNROLL
        for (int t = 0; t < NT; ++t) {
          // Two chains per token: the NT unrolled tokens already overlap the dot latency (the four chains
          // of q45k_token_chunk, which rows_q45k_panel_n's token loop needs, cost 5-10% here).
          const int8_t* x = a[t].q + b * 256 + 64 * j;
          __m512i dl = _mm512_setzero_si512(), dh = _mm512_setzero_si512();
          MOE_UNROLL
          for (int k = 0; k < 8; ++k) {
            dl = _mm512_dpbusd_epi32(dl, L[k], bcast32(x + 4 * k));
            dh = _mm512_dpbusd_epi32(dh, H[k], bcast32(x + 32 + 4 * k));
          }
          isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(dl, scl), _mm512_mullo_epi32(dh, sch)));
        }
      });
      MOE_UNROLL
      for (int t = 0; t < NT; ++t) {
        const __m512 dx = _mm512_set1_ps(a[t].d[b]);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(hd.dv, dx), acc[t]);
        acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum[t]), _mm512_mul_ps(hd.dmv, dx), acc[t]);
      }
    }
    panel_store<NT>(acc, nr, Y + r, ldy);
  }
}

constexpr int kPanelTok = 32;

// The frame of the any-tile K-quant panel kernels: per 16-row panel, each token's float accumulator
// (accm) and exact integer super-block sum (isumm) in L1; sb(rp, off, b, accm, isumm) runs super-block b
// (at byte off of each row) for all n tokens; then the panel's first nr rows are stored.
template <size_t kBytes, class SuperBlock>
inline void panel_n_frame(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, int n, float* Y,
                          size_t ldy, SuperBlock&& sb) {
  const size_t nb = cols / 256;
  alignas(64) float accm[kPanelTok][16];
  alignas(64) int32_t isumm[kPanelTok][16];
  for (size_t r = r0; r < r1; r += 16) {
    const uint8_t* rp[16];
    const size_t nr = panel_rows(W, rb, r, r1, rp);
    for (int t = 0; t < n; ++t) _mm512_store_ps(accm[t], _mm512_setzero_ps());
    for (size_t b = 0; b < nb; ++b) {
      panel_prefetch_next(rp, rb, b, nb);
      sb(static_cast<const uint8_t* const*>(rp), b * kBytes, b, accm, isumm);
    }
    const __mmask16 mk = static_cast<__mmask16>((1u << nr) - 1u);
    for (int t = 0; t < n; ++t) _mm512_mask_storeu_ps(Y + t * ldy + r, mk, _mm512_load_ps(accm[t]));
  }
}

// rows_q45k_panel for any number of tokens n <= kPanelTok: the super-block's transposed codes stay in
// registers while a loop over the tokens (not unrolled) keeps each token's state (the 16 rows' float
// accumulator and the exact integer isum) in an L1 array. A large tile pays for the transposes once
// (the register-tile kernel pays once per 8 tokens). Same integers, same float operations in the same
// order per row and token: the same bits as rows_q45k_panel.
template <bool kHigh>
void rows_q45k_panel_n(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, int n,
                       float* Y, size_t ldy) {
  panel_n_frame<kHigh ? 176 : 144>(W, rb, r0, r1, cols, n, Y, ldy, [&](const uint8_t* const* rp, size_t off, size_t b,
                                                                       float (*accm)[16], int32_t (*isumm)[16]) {
    const Q45kHead hd = q45k_head(rp, off);
    __m512i QH[8];
    if constexpr (kHigh) panel_t32(rp, off + 16, QH);
    static_for<4>([&](auto j) {
      __m512i L[8], H[8], scl, sch;
      q45k_chunk<kHigh, decltype(j)::value>(rp, off, QH, hd, L, H, scl, sch);
      for (int t = 0; t < n; ++t) {
        const __m512i part = q45k_token_chunk(L, H, a[t].q + b * 256 + 64 * j, scl, sch);
        _mm512_store_si512(isumm[t], j == 0 ? part : _mm512_add_epi32(_mm512_load_si512(isumm[t]), part));
      }
    });
    __m512i mm[8];
    static_for<8>([&](auto s) { mm[s] = q45k_min_pair<decltype(s)::value>(hd); });
    for (int t = 0; t < n; ++t) {
      __m512i msum = _mm512_setzero_si512();
      MOE_UNROLL
      for (int s = 0; s < 8; ++s) msum = _mm512_dpwssd_epi32(msum, mm[s], bcast32(a[t].bsums + b * 16 + 2 * s));
      const __m512 dx = _mm512_set1_ps(a[t].d[b]);
      __m512 acc = _mm512_load_ps(accm[t]);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(isumm[t])), _mm512_mul_ps(hd.dv, dx), acc);
      acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(hd.dmv, dx), acc);
      _mm512_store_ps(accm[t], acc);
    }
  });
}

// Q6_K panel helpers. q6k_pairs: the 16 groups' int8 scales (C = panel_t16 of the scales) as int16 pairs
// P[2c] = (sc_4c, sc_4c+1) and P[2c + 1] = (sc_4c+2, sc_4c+3), against a token's 16-element sums (vpdpwssd).
inline void q6k_pairs(const __m512i* C, __m512i* P) {
  MOE_UNROLL
  for (int c = 0; c < 4; ++c) {
    const __m512i lo = _mm512_srai_epi16(_mm512_slli_epi16(C[c], 8), 8);  // words: sc_4c, sc_4c+2
    const __m512i hi = _mm512_srai_epi16(C[c], 8);                        // words: sc_4c+1, sc_4c+3
    P[2 * c] = _mm512_mask_blend_epi16(0xAAAAAAAAu, lo, _mm512_slli_epi32(hi, 16));
    P[2 * c + 1] = _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(lo, 16), hi);
  }
}

// Chunk c of half H's 6-bit codes: low (nib 0) or high (nib 1) nibbles of Q (ql, transposed) with two
// bits of HB (qh, transposed); sl / sh: the scales of groups 8H + 2c (l < 16) and 8H + 2c + 1
// (byte 2c (2c + 1) mod 4 of C[2H + c / 2], sign-extended).
template <int Hf, int Cc>
inline void q6k_chunk(const __m512i* Q, const __m512i* HB, const __m512i* C, __m512i* U, __m512i& sl, __m512i& sh) {
  const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
  constexpr int nib = Cc / 2;
  MOE_UNROLL
  for (int k = 0; k < 8; ++k) {
    const __m512i q = nib ? _mm512_and_si512(_mm512_srli_epi16(Q[k], 4), m4) : _mm512_and_si512(Q[k], m4);
    const __m512i hb = Cc == 0 ? _mm512_slli_epi16(HB[k], 4) : Cc == 1 ? _mm512_slli_epi16(HB[k], 2)
                     : Cc == 2 ? HB[k] : _mm512_srli_epi16(HB[k], 2);
    U[k] = _mm512_or_si512(q, _mm512_and_si512(hb, m30));
  }
  constexpr int g = 8 * Hf + 2 * Cc;
  sl = _mm512_srai_epi32(_mm512_slli_epi32(C[g / 4], 24 - 8 * (g % 4)), 24);
  sh = _mm512_srai_epi32(_mm512_slli_epi32(C[g / 4], 16 - 8 * (g % 4)), 24);
}

// One token's scaled sums over a chunk of 32 elements (x): sl * (its first 16) + sh * (its last 16).
inline __m512i q6k_token_chunk(const __m512i* U, const int8_t* x, __m512i sl, __m512i sh) {
  __m512i dl = _mm512_setzero_si512(), dh = _mm512_setzero_si512();
  MOE_UNROLL
  for (int k = 0; k < 4; ++k) {
    dl = _mm512_dpbusd_epi32(dl, U[k], bcast32(x + 4 * k));
    dh = _mm512_dpbusd_epi32(dh, U[k + 4], bcast32(x + 16 + 4 * k));
  }
  return _mm512_add_epi32(_mm512_mullo_epi32(dl, sl), _mm512_mullo_epi32(dh, sh));
}

// The 16 rows' f16 scales d (bytes 208..209 of each row's super-block) gathered through memory.
inline __m512 q6k_d(const uint8_t* const* rp, size_t off) {
  alignas(32) uint16_t dh[16];
  MOE_UNROLL
  for (int i = 0; i < 16; ++i) dh[i] = static_cast<uint16_t>(ld16(rp[i] + off + 208));
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(dh)));
}

// Q6_K, 16 rows at a time with rows in the vector lanes (see rows_q45k_panel). Per row, token and
// super-block the exact integer total  tot = sum_g sc_g * dot_g - 32 * sum_g sc_g * (sum of q over group g)
// (16 groups of 16), then acc = fma(float(tot), fl(d * dx), acc), super-block by super-block.
// Bounds: |dot_g| <= 63 * 127 * 16, |sc| <= 128: |tot| < 2^29 (as rows_q6k).
template <int NT>
void rows_q6k_panel(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y,
                    size_t ldy) {
  const size_t nb = cols / 256;
  for (size_t r = r0; r < r1; r += 16) {
    const uint8_t* rp[16];
    const size_t nr = panel_rows(W, rb, r, r1, rp);
    __m512 acc[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; ++b) {
      const size_t off = b * 210;
      panel_prefetch_next(rp, rb, b, nb);
      __m512i C[4];  // scales bytes 0..3, 4..7, 8..11, 12..15 (int8)
      panel_t16(rp, off + 192, C);
      const __m512 dv = q6k_d(rp, off);
      __m512i isum[NT], corr[NT], P[8];
      MOE_UNROLL
      for (int t = 0; t < NT; ++t) isum[t] = corr[t] = _mm512_setzero_si512();
      // corr: the scales as int16 pairs (sc_2p, sc_2p+1) against the token's 16-element sums 2p, 2p+1.
      q6k_pairs(C, P);
      MOE_UNROLL
      for (int c = 0; c < 4; ++c) {
        MOE_UNROLL
        for (int t = 0; t < NT; ++t) {
          const int16_t* bs = a[t].bsums + b * 16 + 4 * c;
          corr[t] = _mm512_dpwssd_epi32(corr[t], P[2 * c], bcast32(bs));
          corr[t] = _mm512_dpwssd_epi32(corr[t], P[2 * c + 1], bcast32(bs + 2));
        }
      }
      static_for<2>([&](auto h) {
        __m512i HB[8];
        panel_t32(rp, off + 128 + 32 * h, HB);
        static_for<2>([&](auto half) {  // ql bytes 64h..64h+31 (chunks 0, 2), then +32 (chunks 1, 3)
          __m512i Q[8];
          panel_t32(rp, off + 64 * h + 32 * half, Q);
          static_for<2>([&](auto nib) {
            constexpr int c = decltype(half)::value + 2 * decltype(nib)::value;  // elements 128h + 32c + l
            __m512i U[8], sl, sh;
            q6k_chunk<decltype(h)::value, c>(Q, HB, C, U, sl, sh);
            MOE_UNROLL
            for (int t = 0; t < NT; ++t)
              isum[t] = _mm512_add_epi32(isum[t], q6k_token_chunk(U, a[t].q + b * 256 + 128 * h + 32 * c, sl, sh));
          });
        });
      });
      MOE_UNROLL
      for (int t = 0; t < NT; ++t) {
        const __m512i tot = _mm512_sub_epi32(isum[t], _mm512_slli_epi32(corr[t], 5));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_mul_ps(dv, _mm512_set1_ps(a[t].d[b])), acc[t]);
      }
    }
    panel_store<NT>(acc, nr, Y + r, ldy);
  }
}

// rows_q6k_panel for any number of tokens n <= kPanelTok (see rows_q45k_panel_n). The same bits.
void rows_q6k_panel_n(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, int n,
                      float* Y, size_t ldy) {
  panel_n_frame<210>(W, rb, r0, r1, cols, n, Y, ldy, [&](const uint8_t* const* rp, size_t off, size_t b,
                                                         float (*accm)[16], int32_t (*isumm)[16]) {
    __m512i C[4];
    panel_t16(rp, off + 192, C);
    const __m512 dv = q6k_d(rp, off);
    static_for<2>([&](auto h) {
      __m512i HB[8];
      panel_t32(rp, off + 128 + 32 * h, HB);
      static_for<2>([&](auto half) {
        __m512i Q[8];
        panel_t32(rp, off + 64 * h + 32 * half, Q);
        static_for<2>([&](auto nib) {
          constexpr int c = decltype(half)::value + 2 * decltype(nib)::value;
          constexpr bool first = decltype(h)::value == 0 && c == 0;
          __m512i U[8], sl, sh;
          q6k_chunk<decltype(h)::value, c>(Q, HB, C, U, sl, sh);
          for (int t = 0; t < n; ++t) {
            const __m512i part = q6k_token_chunk(U, a[t].q + b * 256 + 128 * h + 32 * c, sl, sh);
            _mm512_store_si512(isumm[t], first ? part : _mm512_add_epi32(_mm512_load_si512(isumm[t]), part));
          }
        });
      });
    });
    __m512i P[8];
    q6k_pairs(C, P);
    for (int t = 0; t < n; ++t) {
      __m512i corr = _mm512_setzero_si512();
      MOE_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int16_t* bs = a[t].bsums + b * 16 + 4 * c;
        corr = _mm512_dpwssd_epi32(corr, P[2 * c], bcast32(bs));
        corr = _mm512_dpwssd_epi32(corr, P[2 * c + 1], bcast32(bs + 2));
      }
      const __m512i tot = _mm512_sub_epi32(_mm512_load_si512(isumm[t]), _mm512_slli_epi32(corr, 5));
      _mm512_store_ps(accm[t], _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_mul_ps(dv, _mm512_set1_ps(a[t].d[b])),
                                               _mm512_load_ps(accm[t])));
    }
  });
}

// Block `off` of a Q8_0 panel: Z = the 16 rows' codes transposed and flipped to w + 128 (unsigned); returns
// their f16 scales, gathered through memory: _mm_insert_epi16 needs a constant lane, which a loop index
// is only after unrolling (not at -O0/-O1, nor under clang's fuzz build).
inline __m512 q8_panel_block(const uint8_t* const* rp, size_t off, __m512i* Z) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  panel_t32(rp, off + 2, Z);
  MOE_UNROLL
  for (int k = 0; k < 8; ++k) Z[k] = _mm512_xor_si512(Z[k], flip);
  alignas(32) uint16_t dh[16];
  MOE_UNROLL
  for (int i = 0; i < 16; ++i) dh[i] = static_cast<uint16_t>(ld16(rp[i] + off));
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(dh)));
}

// One token's exact integer dots of block b with the panel's 16 rows (Z from q8_panel_block):
// sum of (w + 128) * q, less 128 * sum(q).
inline __m512i q8_token_block(const __m512i* Z, const ActView& a, size_t b) {
  const int8_t* xq = a.q + b * 32;
  __m512i s0 = _mm512_set1_epi32(-128 * a.qsum[b]), s1 = _mm512_setzero_si512();
  MOE_UNROLL
  for (int k = 0; k < 4; ++k) {
    s0 = _mm512_dpbusd_epi32(s0, Z[k], bcast32(xq + 4 * k));
    s1 = _mm512_dpbusd_epi32(s1, Z[k + 4], bcast32(xq + 16 + 4 * k));
  }
  return _mm512_add_epi32(s0, s1);
}

template <int NT>
void rows_q8_panel(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y,
                   size_t ldy) {
  const size_t nb = cols / 32;
  for (size_t r = r0; r < r1; r += 16) {
    const uint8_t* rp[16];
    const size_t nr = panel_rows(W, rb, r, r1, rp);
    // acc[t][k]: 16 rows' sum over blocks b = k (mod 8), as the lanes of rows_q32's accumulator.
    __m512 acc[NT][8];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      MOE_UNROLL
      for (int k = 0; k < 8; ++k) acc[t][k] = _mm512_setzero_ps();
    }
    for (size_t b0 = 0; b0 < nb; b0 += 8)
    MOE_UNROLL
    for (int kb = 0; kb < 8; ++kb) {
      const size_t b = b0 + size_t(kb);
      if (b >= nb) break;
      const size_t off = b * Q8_0::kBytes;
      panel_prefetch_next(rp, rb, b, nb);
      __m512i Z[8];
      const __m512 dw = q8_panel_block(rp, off, Z);
      MOE_UNROLL
      for (int t = 0; t < NT; ++t) {
        const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(a[t].d[b]));
        acc[t][kb] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q8_token_block(Z, a[t], b)), sc, acc[t][kb]);
      }
    }
    const __mmask16 m = static_cast<__mmask16>((1u << nr) - 1u);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      // hsum8's order: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
      const __m512* A = acc[t];
      const __m512 y = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(A[0], A[4]), _mm512_add_ps(A[2], A[6])),
                                     _mm512_add_ps(_mm512_add_ps(A[1], A[5]), _mm512_add_ps(A[3], A[7])));
      _mm512_mask_storeu_ps(Y + t * ldy + r, m, y);
    }
  }
}

// rows_q8_panel for any number of tokens n <= kPanelTok (see rows_q45k_panel_n): each block's transposed
// codes are shared by all n tokens, whose 8 partial-sum accumulators live in an L1 array. The same bits.
void rows_q8_panel_n(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, int n,
                     float* Y, size_t ldy) {
  const size_t nb = cols / 32;
  alignas(64) float accm[kPanelTok][8][16];
  for (size_t r = r0; r < r1; r += 16) {
    const uint8_t* rp[16];
    const size_t nr = panel_rows(W, rb, r, r1, rp);
    for (int t = 0; t < n; ++t)
      for (int k = 0; k < 8; ++k) _mm512_store_ps(accm[t][k], _mm512_setzero_ps());
    for (size_t b = 0; b < nb; ++b) {
      const size_t off = b * Q8_0::kBytes;
      panel_prefetch_next(rp, rb, b, nb);
      __m512i Z[8];
      const __m512 dw = q8_panel_block(rp, off, Z);
      const size_t kb = b % 8;
      for (int t = 0; t < n; ++t) {
        const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(a[t].d[b]));
        _mm512_store_ps(accm[t][kb], _mm512_fmadd_ps(_mm512_cvtepi32_ps(q8_token_block(Z, a[t], b)), sc,
                                                     _mm512_load_ps(accm[t][kb])));
      }
    }
    const __mmask16 m = static_cast<__mmask16>((1u << nr) - 1u);
    for (int t = 0; t < n; ++t) {
      __m512 A[8];
      for (int k = 0; k < 8; ++k) A[k] = _mm512_load_ps(accm[t][k]);
      const __m512 y = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(A[0], A[4]), _mm512_add_ps(A[2], A[6])),
                                     _mm512_add_ps(_mm512_add_ps(A[1], A[5]), _mm512_add_ps(A[3], A[7])));
      _mm512_mask_storeu_ps(Y + t * ldy + r, m, y);
    }
  }
}
#endif

template <class B, int NT>
void rows_q32(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y,
              size_t ldy) {
  const size_t nb = cols / 32;
  for (size_t r = r0; r < r1; ++r) {
    const uint8_t* w = W + r * rb;
    __m256 acc[NT], corr[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) acc[t] = corr[t] = _mm256_setzero_ps();
    size_t b = 0;
    for (; b + 8 <= nb; b += 8) group_q32<B, NT, true>(w + b * B::kBytes, b, 8, a, acc, corr);
    if (b < nb) group_q32<B, NT, false>(w + b * B::kBytes, b, int(nb - b), a, acc, corr);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) Y[t * ldy + r] = hsum8(acc[t]) - B::kOffset * hsum8(corr[t]);
  }
}

// ---------------- K-quants with Q8_256 activations ----------------

// Broadcast int16 element k of each 128-bit lane (byte pair 2k, 2k+1) across that lane.
inline __m256i bcast16(__m256i v, int k) { return _mm256_shuffle_epi8(v, _mm256_set1_epi16(short(((2 * k + 1) << 8) | (2 * k)))); }

// Unpacks Q4_K/Q5_K scales: 8 scales and 8 mins (6 bits each) from 12 bytes.
inline void kscales(const uint8_t* s, uint64_t& sc, uint64_t& mn) {
  const uint32_t u0 = ld32(s), u1 = ld32(s + 4), u2 = ld32(s + 8);
  const uint32_t sc_lo = u0 & 0x3f3f3f3fu, mn_lo = u1 & 0x3f3f3f3fu;
  const uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | (((u0 >> 6) & 0x03030303u) << 4);
  const uint32_t mn_hi = ((u2 >> 4) & 0x0f0f0f0fu) | (((u1 >> 6) & 0x03030303u) << 4);
  sc = uint64_t(sc_lo) | (uint64_t(sc_hi) << 32);
  mn = uint64_t(mn_lo) | (uint64_t(mn_hi) << 32);
}

// One Q4_K / Q5_K (kHigh) super-block against NT tokens' Q8_256 activations (block b): per token, int32
// lanes summing to sum_s sc_s * dot_s (isum) and to sum_s m_s * sum_x_s (msum).
// Bounds: |dot_s| <= 31*127*32, sc <= 63: the int32 sum over 8 sub-blocks stays below 2^26.
template <bool kHigh, int NT>
inline void q45k_block(const uint8_t* blk, const ActView* a, size_t b, __m256i* isum, __m256i* msum) {
  constexpr size_t kQs = kHigh ? 48 : 16;
  const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  uint64_t sc8, mn8;
  kscales(blk + 4, sc8, mn8);
  const __m256i scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(sc8))));
  const __m128i mn = _mm_cvtsi64_si128(static_cast<long long>(mn8));
  const __m256i mexp = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn, mn));  // m0,m0,m1,m1,...
  // Two integer accumulators per token (low / high nibble sub-blocks) halve the dependency chain.
  __m256i isum2[NT];
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) isum[t] = isum2[t] = _mm256_setzero_si256();
  const uint8_t* qs = blk + kQs;
  __m256i hb = kHigh ? ldu(blk + 16) : _mm256_setzero_si256();
  MOE_UNROLL
  for (int j = 0; j < 4; ++j) {
    const __m256i q = ldu(qs + 32 * j);
    __m256i lo = _mm256_and_si256(q, m4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    if (kHigh) {
      lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
      hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
      hb = _mm256_srli_epi16(hb, 2);
    }
    const __m256i slo = bcast16(scv, 2 * j), shi = bcast16(scv, 2 * j + 1);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const int8_t* x = a[t].q + b * 256 + 64 * j;
      isum[t] = dot_us_scaled(isum[t], lo, ldu(x), slo);
      isum2[t] = dot_us_scaled(isum2[t], hi, ldu(x + 32), shi);
    }
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) {
    isum[t] = _mm256_add_epi32(isum[t], isum2[t]);
    msum[t] = _mm256_madd_epi16(mexp, ldu(a[t].bsums + b * 16));
  }
}

// One Q6_K super-block against NT tokens (block b): per token, int32 lanes summing to the exact total
// sum_g sc_g * dot_g - 32 * sum_g sc_g * sum_x_g over 16 groups of 16.
// Bounds: |dot| <= 63*127 per pair (no int16 saturation); the int32 total stays below 2^29.
template <int NT>
inline void q6k_block(const uint8_t* blk, const ActView* a, size_t b, __m256i* tot) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
  const __m256i sc_all = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
  __m256i isum2[NT];  // even / odd chunks: two shorter dependency chains
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) tot[t] = isum2[t] = _mm256_setzero_si256();
  MOE_UNROLL
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = blk + 64 * h;
    const uint8_t* qh = blk + 128 + 32 * h;
    const __m128i sc8 = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 192 + 8 * h)));
    const __m256i scv = _mm256_broadcastsi128_si256(sc8);
    const __m256i qa = ldu(ql), qb = ldu(ql + 32), hb = ldu(qh);
    __m256i u[4];
    u[0] = _mm256_or_si256(_mm256_and_si256(qa, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
    u[1] = _mm256_or_si256(_mm256_and_si256(qb, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
    u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), m4), _mm256_and_si256(hb, m30));
    u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
    MOE_UNROLL
    for (int c = 0; c < 4; ++c) {
      // Low lane: scale 2c (elements 0..15 of the chunk), high lane: scale 2c+1.
      const __m256i ctl = _mm256_set_m128i(_mm_set1_epi16(short(((4 * c + 3) << 8) | (4 * c + 2))),
                                           _mm_set1_epi16(short(((4 * c + 1) << 8) | (4 * c))));
      const __m256i sc = _mm256_shuffle_epi8(scv, ctl);
      MOE_UNROLL
      for (int t = 0; t < NT; ++t) {
        __m256i& acc_i = (c & 1) ? isum2[t] : tot[t];
        acc_i = dot_us_scaled(acc_i, u[c], ldu(a[t].q + b * 256 + 128 * h + 32 * c), sc);
      }
    }
  }
  MOE_UNROLL
  for (int t = 0; t < NT; ++t) {
    const __m256i corr = _mm256_madd_epi16(sc_all, ldu(a[t].bsums + b * 16));
    tot[t] = _mm256_sub_epi32(_mm256_add_epi32(tot[t], isum2[t]), _mm256_slli_epi32(corr, 5));
  }
}

// Q4_K and Q5_K (kHigh): y += dx * (d * sum_s sc_s * dot_s - dmin * sum_s m_s * sum_x_s).
// (The AVX-512 build uses rows_t8 and rows_q45k_panel instead, in the panel's order.)
template <bool kHigh, int NT>
void rows_q45k(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y,
               size_t ldy) {
  constexpr size_t kBytes = kHigh ? 176 : 144;
  const size_t nb = cols / 256;
  for (size_t r = r0; r < r1; ++r) {
    const uint8_t* w = W + r * rb;
    __m256 acc[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * kBytes;
      stream_ahead<kBytes>(blk);
      const float d = f16f(blk), dmin = f16f(blk + 2);
      __m256i isum[NT], msum[NT];
      q45k_block<kHigh, NT>(blk, a, b, isum, msum);
      MOE_UNROLL
      for (int t = 0; t < NT; ++t) {
        const float dx = a[t].d[b];
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * dx), acc[t]);
        acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[t]), _mm256_set1_ps(dmin * dx), acc[t]);
      }
    }
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) Y[t * ldy + r] = hsum8(acc[t]);
  }
}

// Q6_K: y += dx * d * total, per super-block (see q6k_block).
// (The AVX-512 build uses rows_t8 and rows_q6k_panel instead, in the panel's order.)
template <int NT>
void rows_q6k(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y,
              size_t ldy) {
  const size_t nb = cols / 256;
  for (size_t r = r0; r < r1; ++r) {
    const uint8_t* w = W + r * rb;
    __m256 acc[NT];
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w + b * 210;
      stream_ahead<210>(blk);
      const float d = f16f(blk + 208);
      __m256i tot[NT];
      q6k_block<NT>(blk, a, b, tot);
      MOE_UNROLL
      for (int t = 0; t < NT; ++t)
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot[t]), _mm256_set1_ps(d * a[t].d[b]), acc[t]);
    }
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) Y[t * ldy + r] = hsum8(acc[t]);
  }
}

#ifdef MOE_DOT_AVX512
// Per-type parts of rows_t8. block(): one row's super-block as 8 int32 lanes; fold(): 8 rows' lanes of
// one super-block (hs[row]) summed exactly so that the rows sit in the lanes, then the panel's FMAs.
template <bool kHigh> struct T8Q45 {
  static constexpr size_t kBytes = kHigh ? 176 : 144;
  static constexpr bool kMin = true;  // a dmin per super-block
  static uint16_t d(const uint8_t* blk) { return static_cast<uint16_t>(ld16(blk)); }
  static uint16_t dmin(const uint8_t* blk) { return static_cast<uint16_t>(ld16(blk + 2)); }
  static __m256i block(const uint8_t* blk, const ActView* a, size_t b) {
    __m256i isum, msum;
    q45k_block<kHigh, 1>(blk, a, b, &isum, &msum);
    return _mm256_hadd_epi32(isum, msum);  // [isum, msum] halves, one pairwise add
  }
  static __m256 fold(const int32_t (*hs)[8], __m256 dv, __m256 dmv, __m256 dx, __m256 acc) {
    // Per row pair: [I_lo, M_lo, I'_lo, M'_lo | I_hi, M_hi, I'_hi, M'_hi], then the halves folded.
    __m128i x[4];
    MOE_UNROLL
    for (int p = 0; p < 4; ++p) {
      const __m256i h = _mm256_hadd_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(hs[2 * p])),
                                          _mm256_load_si256(reinterpret_cast<const __m256i*>(hs[2 * p + 1])));
      x[p] = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));  // [I, M, I', M']
    }
    auto pick = [](__m128i u, __m128i v, int odd) {
      const __m128 uf = _mm_castsi128_ps(u), vf = _mm_castsi128_ps(v);
      return _mm_castps_si128(odd ? _mm_shuffle_ps(uf, vf, _MM_SHUFFLE(3, 1, 3, 1))
                                  : _mm_shuffle_ps(uf, vf, _MM_SHUFFLE(2, 0, 2, 0)));
    };
    const __m256i I = _mm256_set_m128i(pick(x[2], x[3], 0), pick(x[0], x[1], 0));
    const __m256i M = _mm256_set_m128i(pick(x[2], x[3], 1), pick(x[0], x[1], 1));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I), _mm256_mul_ps(dv, dx), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(M), _mm256_mul_ps(dmv, dx), acc);
  }
};
struct T8Q6 {
  static constexpr size_t kBytes = 210;
  static constexpr bool kMin = false;
  static uint16_t d(const uint8_t* blk) { return static_cast<uint16_t>(ld16(blk + 208)); }
  static __m256i block(const uint8_t* blk, const ActView* a, size_t b) {
    __m256i tot;
    q6k_block<1>(blk, a, b, &tot);
    return tot;
  }
  static __m256 fold(const int32_t (*hs)[8], __m256 dv, __m256, __m256 dx, __m256 acc) {
    auto ld = [&](int k) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(hs[k])); };
    // hadd twice: [T0, T1, T2, T3 | T0', T1', T2', T3'] (each row's low and high 128-bit halves), then folded.
    const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(ld(0), ld(1)), _mm256_hadd_epi32(ld(2), ld(3)));
    const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(ld(4), ld(5)), _mm256_hadd_epi32(ld(6), ld(7)));
    const __m256i T = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(T), _mm256_mul_ps(dv, dx), acc);
  }
};

// One token of a K-quant in the panel's order (the same bits as rows_q45k_panel / rows_q6k_panel),
// without the panel's interleaved row streams: rows are read one at a time, and each row's per-super-block
// integer sums are kept as 8 lanes. Every 8 rows they are summed exactly so that the rows sit in the lanes,
// and the panel's FMAs per super-block run on the 8 rows at once: no per-row horizontal reduction or scalar
// FMA chain.
template <class P>
void rows_t8(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y) {
  constexpr size_t kSeg = 64;  // super-blocks per step (16384 columns: a whole row for common shapes)
  const size_t nb = cols / 256;
  alignas(32) int32_t hs[kSeg][8][8];             // [super-block][row]: P::block
  alignas(32) uint16_t dd[kSeg][8], dm[kSeg][8];  // [super-block][row]: d, dmin (f16; dmin if P::kMin)
  for (size_t r = r0; r < r1; r += 8) {
    const size_t nr = std::min<size_t>(8, r1 - r);
    __m256 acc = _mm256_setzero_ps();
    for (size_t s0 = 0; s0 < nb; s0 += kSeg) {
      const size_t ns = std::min(kSeg, nb - s0);
      for (size_t k = 0; k < 8; ++k) {
        if (k >= nr) {
          for (size_t j = 0; j < ns; ++j) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(hs[j][k]), _mm256_setzero_si256());
            dd[j][k] = dm[j][k] = 0;
          }
          continue;
        }
        const uint8_t* w = W + (r + k) * rb;
        for (size_t j = 0; j < ns; ++j) {
          const uint8_t* blk = w + (s0 + j) * P::kBytes;
          stream_ahead<P::kBytes>(blk);
          dd[j][k] = P::d(blk);
          if constexpr (P::kMin) dm[j][k] = P::dmin(blk);
          _mm256_store_si256(reinterpret_cast<__m256i*>(hs[j][k]), P::block(blk, a, s0 + j));
        }
      }
      for (size_t j = 0; j < ns; ++j) {
        const __m256 dv = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dd[j])));
        const __m256 dmv = P::kMin ? _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(dm[j])))
                                   : _mm256_setzero_ps();
        acc = P::fold(hs[j], dv, dmv, _mm256_set1_ps(a[0].d[s0 + j]), acc);
      }
    }
    _mm256_mask_storeu_ps(Y + r, static_cast<__mmask8>((1u << nr) - 1u), acc);
  }
}
#endif

// ---------------- F32 / F16 / BF16 weights with f32 activations ----------------
#ifdef MOE_DOT_AVX512
using VF = __m512;
constexpr size_t kW = 16;
inline VF vzero() { return _mm512_setzero_ps(); }
inline VF vload_x(const float* p) { return _mm512_loadu_ps(p); }
inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
inline VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
inline float vsum(VF v) { return hsum8(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1))); }
inline VF wload_f32(const uint8_t* p) { return _mm512_loadu_ps(p); }
inline VF wload_f16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline VF wload_bf16(const uint8_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
#else
using VF = __m256;
constexpr size_t kW = 8;
inline VF vzero() { return _mm256_setzero_ps(); }
inline VF vload_x(const float* p) { return _mm256_loadu_ps(p); }
inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
inline VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
inline float vsum(VF v) { return hsum8(v); }
inline VF wload_f32(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }
inline VF wload_f16(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline VF wload_bf16(const uint8_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
#endif

struct WF32 {
  static constexpr size_t kEl = 4;
  static VF load(const uint8_t* p) { return wload_f32(p); }
  static float one(const uint8_t* p) { float f; __builtin_memcpy(&f, p, 4); return f; }
};
struct WF16 {
  static constexpr size_t kEl = 2;
  static VF load(const uint8_t* p) { return wload_f16(p); }
  static float one(const uint8_t* p) { return f16f(p); }
};
struct WBF16 {
  static constexpr size_t kEl = 2;
  static VF load(const uint8_t* p) { return wload_bf16(p); }
  static float one(const uint8_t* p) { uint32_t u = uint32_t(ld16(p)) << 16; float f; __builtin_memcpy(&f, &u, 4); return f; }
};

// R rows x NT tokens per pass: the weight vectors are loaded once for NT tokens and the activation
// vectors once for R rows. Every (row, token) keeps its own two accumulators with the same update order
// whatever R and NT are, so results do not depend on the tiling.
template <class E, int NT, int R>
inline void rows_float_r(const uint8_t* w0p, size_t rb, size_t r, size_t cols, const ActView* a, float* Y,
                         size_t ldy) {
  VF acc0[R][NT], acc1[R][NT];
  MOE_UNROLL
  for (int k = 0; k < R; ++k) {
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) acc0[k][t] = acc1[k][t] = vzero();
  }
  size_t i = 0;
  for (; i + 2 * kW <= cols; i += 2 * kW) {
    VF w0[R], w1[R];
    MOE_UNROLL
    for (int k = 0; k < R; ++k) {
      w0[k] = E::load(w0p + k * rb + i * E::kEl);
      w1[k] = E::load(w0p + k * rb + (i + kW) * E::kEl);
    }
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const VF x0 = vload_x(a[t].x + i), x1 = vload_x(a[t].x + i + kW);
      MOE_UNROLL
      for (int k = 0; k < R; ++k) {
        acc0[k][t] = vfma(w0[k], x0, acc0[k][t]);
        acc1[k][t] = vfma(w1[k], x1, acc1[k][t]);
      }
    }
  }
  if (i + kW <= cols) {
    MOE_UNROLL
    for (int k = 0; k < R; ++k) {
      const VF w0 = E::load(w0p + k * rb + i * E::kEl);
      MOE_UNROLL
      for (int t = 0; t < NT; ++t) acc0[k][t] = vfma(w0, vload_x(a[t].x + i), acc0[k][t]);
    }
    i += kW;
  }
  MOE_UNROLL
  for (int k = 0; k < R; ++k) {
    const uint8_t* w = w0p + k * rb;
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      float sum = vsum(vadd(acc0[k][t], acc1[k][t]));
      for (size_t c = i; c < cols; ++c) sum += E::one(w + c * E::kEl) * a[t].x[c];
      Y[t * ldy + r + size_t(k)] = sum;
    }
  }
}

template <class E, int NT>
void rows_float(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y,
                size_t ldy) {
  size_t r = r0;
#ifdef MOE_DOT_AVX512
  // Two rows at a time (2 x 4 tokens x 2 accumulators = 16 of the 32 vector registers).
  if (NT > 1)
    for (; r + 2 <= r1; r += 2) rows_float_r<E, NT, 2>(W + r * rb, rb, r, cols, a, Y, ldy);
#endif
  for (; r < r1; ++r) rows_float_r<E, NT, 1>(W + r * rb, rb, r, cols, a, Y, ldy);
}

#ifdef MOE_DOT_AVX512
// BF16 weights against BF16-rounded activations (AVX512_BF16 CPUs only, see fill): vdpbf16ps does
// 32 products per instruction, twice the f32 FMA rate. One accumulator per (row, token) over the groups
// of 32 columns, a masked last group, then vsum: an order fixed by cols, so results do not depend on
// the tiling. Several tokens: 4 rows at a time (the weight vectors loaded once for all the tokens, the
// activation vectors once for the 4 rows). One token: a row at a time; on this Zen 4 two or more
// interleaved rows halved the streaming rate (14 against 27 GB/s on one thread).
template <int NT, int R>
inline void rows_bf16dp_r(const uint8_t* w0p, size_t rb, size_t r, size_t cols, const ActView* a, float* Y,
                          size_t ldy) {
  __m512 acc[R][NT];
  MOE_UNROLL
  for (int k = 0; k < R; ++k) {
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) acc[k][t] = _mm512_setzero_ps();
  }
  auto bh = [](__m512i v) { return reinterpret_cast<__m512bh&>(v); };
  size_t i = 0;
  for (; i + 32 <= cols; i += 32) {
    __m512i w[R];
    MOE_UNROLL
    for (int k = 0; k < R; ++k) w[k] = _mm512_loadu_si512(w0p + k * rb + i * 2);
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) {
      const __m512i x = _mm512_loadu_si512(a[t].h + i);
      MOE_UNROLL
      for (int k = 0; k < R; ++k) acc[k][t] = _mm512_dpbf16_ps(acc[k][t], bh(w[k]), bh(x));
    }
  }
  if (i < cols) {  // the last group, masked (zeros add nothing)
    const __mmask32 m = static_cast<__mmask32>((uint32_t(1) << (cols - i)) - 1u);
    MOE_UNROLL
    for (int k = 0; k < R; ++k) {
      const __m512i w = _mm512_maskz_loadu_epi16(m, w0p + k * rb + i * 2);
      MOE_UNROLL
      for (int t = 0; t < NT; ++t)
        acc[k][t] = _mm512_dpbf16_ps(acc[k][t], bh(w), bh(_mm512_maskz_loadu_epi16(m, a[t].h + i)));
    }
  }
  MOE_UNROLL
  for (int k = 0; k < R; ++k) {
    MOE_UNROLL
    for (int t = 0; t < NT; ++t) Y[t * ldy + r + size_t(k)] = vsum(acc[k][t]);
  }
}

template <int NT>
void rows_bf16dp(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, float* Y,
                 size_t ldy) {
  size_t r = r0;
  if (NT > 1)
    for (; r + 4 <= r1; r += 4) rows_bf16dp_r<NT, 4>(W + r * rb, rb, r, cols, a, Y, ldy);
  for (; r < r1; ++r) rows_bf16dp_r<NT, 1>(W + r * rb, rb, r, cols, a, Y, ldy);
}
#endif

// ---------------- activation quantizers (contract in matmul_internal.h) ----------------
inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
inline int hsum8i(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}
// Quantizes 32 floats with multiplier id; stores 32 int8, returns their int32 sums in 8 lanes (two
// groups of 16: lanes of v0+v1 are elements 0..15, v2+v3 elements 16..31).
inline void quant32(const float* x, __m256 id, int8_t* q, __m256i& sum_lo, __m256i& sum_hi) {
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  __m256i v[4];
  MOE_UNROLL
  for (int k = 0; k < 4; ++k) {
    // cvtps rounds to nearest even (the default MXCSR mode), as nearbyint.
    v[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), id));
    v[k] = _mm256_min_epi32(_mm256_max_epi32(v[k], lo), hi);
  }
  const __m256i p16a = _mm256_packs_epi32(v[0], v[1]), p16b = _mm256_packs_epi32(v[2], v[3]);
  const __m256i p8 = _mm256_packs_epi16(p16a, p16b);  // lane-interleaved: fix the dword order
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  sum_lo = _mm256_add_epi32(v[0], v[1]);
  sum_hi = _mm256_add_epi32(v[2], v[3]);
}
inline float amax_of(const float* x, size_t n) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps();
  for (size_t i = 0; i < n; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask));
  return hmax8(m);
}

void quant_q8_32(const float* x, size_t cols, int8_t* q, float* d, float* s, int32_t* qsum, bool paired) {
  const size_t nb = cols / 32;
  for (size_t b = 0; b < nb; ++b) {
    const float amax = amax_of(x + 32 * b, 32);
    const float db = amax / 127.0f;
    const float id = db > 0.0f ? 127.0f / amax : 0.0f;
    __m256i s0, s1;
    quant32(x + 32 * b, _mm256_set1_ps(id), q + 32 * b, s0, s1);
    d[b] = db;
    qsum[b] = hsum8i(_mm256_add_epi32(s0, s1));
    s[b] = db * static_cast<float>(qsum[b]);
    if (paired && (b & 1)) {  // both blocks of the pair are done: interleave their halves
      const __m256i q0 = ldu(q + 32 * (b - 1)), q1 = ldu(q + 32 * b);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * (b - 1)), _mm256_permute2x128_si256(q0, q1, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + 32 * b), _mm256_permute2x128_si256(q0, q1, 0x31));
    }
  }
}

void quant_q8_256(const float* x, size_t cols, int8_t* q, float* d, int16_t* bsums) {
  for (size_t b = 0; b < cols / 256; ++b) {
    const float amax = amax_of(x + 256 * b, 256);
    const float db = amax / 127.0f;
    const __m256 id = _mm256_set1_ps(db > 0.0f ? 127.0f / amax : 0.0f);
    MOE_UNROLL
    for (int k = 0; k < 8; ++k) {
      __m256i s0, s1;
      quant32(x + 256 * b + 32 * k, id, q + 256 * b + 32 * k, s0, s1);
      bsums[16 * b + 2 * k] = static_cast<int16_t>(hsum8i(s0));
      bsums[16 * b + 2 * k + 1] = static_cast<int16_t>(hsum8i(s1));
    }
    d[b] = db;
  }
}

// ---------------- tile entry points ----------------
template <template <int> class K>
void tile(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, int nt, float* Y,
          size_t ldy) {
  static_assert(kMaxTile == 8, "tile() instantiates 1..8 tokens");
  switch (nt) {
    case 1: K<1>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    case 2: K<2>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    case 3: K<3>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    case 4: K<4>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    case 5: K<5>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    case 6: K<6>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    case 7: K<7>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    default: K<8>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
  }
}

#ifdef MOE_DOT_AVX512
// Up to 3 tokens: rows_q32 streams rows one by one (the panel's transposes do not pay for so few);
// several: the panel. Both give the same bits (see rows_q8_panel).
template <int NT> struct KQ8P { static void run(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t c, const ActView* a, float* Y, size_t l) {
  if constexpr (NT < 4) rows_q32<Q8_0, NT>(W, rb, r0, r1, c, a, Y, l);
  else rows_q8_panel<NT>(W, rb, r0, r1, c, a, Y, l);
} };
// Tiles of up to kPanelTok tokens: more than 8 run through rows_q8_panel_n.
void tile_q8(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, int nt, float* Y,
             size_t ldy) {
  if (nt > kMaxTile) rows_q8_panel_n(W, rb, r0, r1, cols, a, nt, Y, ldy);
  else tile<KQ8P>(W, rb, r0, r1, cols, a, nt, Y, ldy);
}
#endif
// Kernels whose registers hold at most 4 tokens' accumulators: larger tiles run as 4 + the rest (the
// results do not depend on the tiling).
template <template <int> class K>
void tile4(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, int nt, float* Y,
           size_t ldy) {
  while (nt > 4) {
    K<4>::run(W, rb, r0, r1, cols, a, Y, ldy);
    a += 4;
    Y += 4 * ldy;
    nt -= 4;
  }
  switch (nt) {
    case 1: K<1>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    case 2: K<2>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    case 3: K<3>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
    default: K<4>::run(W, rb, r0, r1, cols, a, Y, ldy); break;
  }
}

template <class B> struct KQ32 { template <int NT> struct K { static void run(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t c, const ActView* a, float* Y, size_t l) { rows_q32<B, NT>(W, rb, r0, r1, c, a, Y, l); } }; };
template <class B> struct KNib { template <int NT> struct K { static void run(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t c, const ActView* a, float* Y, size_t l) { rows_nib<B, NT>(W, rb, r0, r1, c, a, Y, l); } }; };
#ifdef MOE_DOT_AVX512
// One token (decode): rows_t8, each row streamed alone (with two threads sharing the memory bus it
// beats the panel's 16 interleaved streams); more: the panel. Same bits either way.
template <bool H> struct KQ45P { template <int NT> struct K { static void run(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t c, const ActView* a, float* Y, size_t l) {
  if constexpr (NT == 1) rows_t8<T8Q45<H>>(W, rb, r0, r1, c, a, Y);
  else rows_q45k_panel<H, NT>(W, rb, r0, r1, c, a, Y, l);
} }; };
// Tiles of up to kPanelTok tokens: more than 8 run through rows_q45k_panel_n (one transpose for all).
template <bool H>
void tile_q45k(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, int nt, float* Y,
               size_t ldy) {
  if (nt > kMaxTile) rows_q45k_panel_n<H>(W, rb, r0, r1, cols, a, nt, Y, ldy);
  else tile<KQ45P<H>::template K>(W, rb, r0, r1, cols, a, nt, Y, ldy);
}
#endif
template <bool H> struct KQ45 { template <int NT> struct K { static void run(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t c, const ActView* a, float* Y, size_t l) { rows_q45k<H, NT>(W, rb, r0, r1, c, a, Y, l); } }; };
#ifdef MOE_DOT_AVX512
template <int NT> struct KQ6P { static void run(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t c, const ActView* a, float* Y, size_t l) {
  if constexpr (NT == 1) rows_t8<T8Q6>(W, rb, r0, r1, c, a, Y);
  else rows_q6k_panel<NT>(W, rb, r0, r1, c, a, Y, l);
} };
// Tiles of up to kPanelTok tokens: more than 8 run through rows_q6k_panel_n.
void tile_q6k(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t cols, const ActView* a, int nt, float* Y,
              size_t ldy) {
  if (nt > kMaxTile) rows_q6k_panel_n(W, rb, r0, r1, cols, a, nt, Y, ldy);
  else tile<KQ6P>(W, rb, r0, r1, cols, a, nt, Y, ldy);
}
#endif
template <int NT> struct KQ6 { static void run(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t c, const ActView* a, float* Y, size_t l) { rows_q6k<NT>(W, rb, r0, r1, c, a, Y, l); } };
#ifdef MOE_DOT_AVX512
template <int NT> struct KBF16DP { static void run(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t c, const ActView* a, float* Y, size_t l) { rows_bf16dp<NT>(W, rb, r0, r1, c, a, Y, l); } };
#endif
template <class E> struct KF { template <int NT> struct K { static void run(const uint8_t* W, size_t rb, size_t r0, size_t r1, size_t c, const ActView* a, float* Y, size_t l) { rows_float<E, NT>(W, rb, r0, r1, c, a, Y, l); } }; };

void fill(KernelTable& t) {
  for (int i = 0; i < kNumTypes; ++i) { t.fn[i] = nullptr; t.act[i] = ActKind::F32; t.tile[i] = kMaxTile; }
  auto set = [&](int type, TileFn f, ActKind k) { t.fn[type] = f; t.act[type] = k; };
  set(0, &tile4<KF<WF32>::K>, ActKind::F32);
  set(1, &tile4<KF<WF16>::K>, ActKind::F32);
#ifdef MOE_DOT_AVX512
  // BF16 weights: vdpbf16ps with BF16-rounded activations where the CPU has AVX512_BF16.
  if (cpu_features().avx512bf16) set(30, &tile4<KBF16DP>, ActKind::BF16);
  else set(30, &tile4<KF<WBF16>::K>, ActKind::F32);
#else
  set(30, &tile4<KF<WBF16>::K>, ActKind::F32);
#endif
  set(2, &tile4<KNib<NibQ4_0>::K>, ActKind::Q8_32P);
#ifdef MOE_DOT_AVX512
  set(8, &tile_q8, ActKind::Q8_32);
  t.tile[8] = kPanelTok;
#else
  set(8, &tile4<KQ32<Q8_0>::K>, ActKind::Q8_32);
#endif
  set(39, &tile4<KNib<NibMXFP4>::K>, ActKind::Q8_32P);
#ifdef MOE_DOT_AVX512
  set(12, &tile_q45k<false>, ActKind::Q8_256);
  set(13, &tile_q45k<true>, ActKind::Q8_256);
  t.tile[12] = t.tile[13] = kPanelTok;
#else
  set(12, &tile4<KQ45<false>::K>, ActKind::Q8_256);
  set(13, &tile4<KQ45<true>::K>, ActKind::Q8_256);
#endif
#ifdef MOE_DOT_AVX512
  set(14, &tile_q6k, ActKind::Q8_256);
  t.tile[14] = kPanelTok;
#else
  set(14, &tile4<KQ6>, ActKind::Q8_256);
#endif
  t.quant32 = &quant_q8_32;
  t.quant256 = &quant_q8_256;
}

}  // namespace
}  // namespace MOE_DOT_NS
}  // namespace moe::kernels::detail
