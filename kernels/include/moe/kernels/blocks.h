// moe/kernels/blocks.h — the packed block layouts of the GGUF/ggml quantized tensor types, and one
// decoder per type that turns one block into f32 values. Shared verbatim by the CPU reference
// (kernels/cpu/quant.cpp) and the CUDA twin (kernels/cuda/dequant.cu): every function is MOE_HD.
// Owns: block structs (sizes checked against the type table), the IQ4_NL / MXFP4 code books, the
// E8M0 scale decoding, and dequant_block_*. Pure inline functions; thread-safe.
//
// Conventions. All multi-byte fields are little-endian (as on every supported host and GPU). fp16 fields
// are stored as their bit pattern (uint16_t). A block is QK elements; element i of the block is y[i].
// The decoders round exactly as the gguf Python package's reference dequantizer does (one rounding per
// product or sum, in the same order, never fused), so they reproduce its output bit for bit.
// Source pointers must be aligned to alignof(block) (2 for most, 4 for Q8_K, 1 for MXFP4); the CPU
// entry points copy blocks out of possibly unaligned memory first.
#pragma once
#include <cstddef>
#include <cstdint>

#include "moe/kernels/half.h"

namespace moe::kernels {

inline constexpr int QK4_0 = 32, QK4_1 = 32, QK5_0 = 32, QK5_1 = 32, QK8_0 = 32, QK8_1 = 32;
inline constexpr int QK_K = 256;      // super-block of the K-quants, IQ4_XS and TQ2_0
inline constexpr int QK4_NL = 32;
inline constexpr int QK_MXFP4 = 32;
inline constexpr int K_SCALE_SIZE = 12;  // packed 6-bit scales + mins of Q4_K / Q5_K

// ---- byte layouts ----

// x = d * (q - 8), q in 0..15. qs[j] holds element j (low nibble) and j+16 (high nibble).
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[QK4_0 / 2];
};
// x = d * q + m, q in 0..15, nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[QK4_1 / 2];
};
// x = d * (q - 16), q in 0..31: low 4 bits as Q4_0, bit 4 of element j is bit j of qh (u32 LE).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[QK5_0 / 2];
};
// x = d * q + m, q in 0..31, bits as Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[QK5_1 / 2];
};
// x = d * q, q in -128..127 (the quantizers use -127..127).
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[QK8_0];
};
// Q8_0 plus s = d * sum(qs) (an activation format of ggml; decoded like Q8_0).
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;
  int8_t qs[QK8_1];
};
// 16 sub-blocks of 16: x = d*(sc&15) * q - dmin*(sc>>4), q in 0..3. Element 128*h + 32*s + l
// (h in 0..1, s in 0..3, l in 0..31) is bits 2s..2s+1 of qs[32*h + l]; its sub-block is (128h+32s+l)/16.
struct BlockQ2_K {
  uint8_t scales[QK_K / 16];
  uint8_t qs[QK_K / 4];
  uint16_t d;
  uint16_t dmin;
};
// 16 sub-blocks of 16: x = d*(sc-32) * (q - (hbit ? 0 : 4)), q in 0..3 packed as Q2_K; hbit of element
// 32*g + l is bit g of hmask[l]. The 6-bit scale sc of sub-block i: low 4 bits are scales[i] & 15
// (i < 8) or scales[i-8] >> 4, high 2 bits are (scales[8 + i%4] >> 2*(i/4)) & 3.
struct BlockQ3_K {
  uint8_t hmask[QK_K / 8];
  uint8_t qs[QK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
// 8 sub-blocks of 32: x = d*sc * q - dmin*m, q in 0..15, 6-bit sc/m packed (see k_scale_min).
// Element 64*p + l is the low nibble of qs[32p + l], element 64*p + 32 + l its high nibble.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qs[QK_K / 2];
};
// As Q4_K with a fifth bit: bit 4 of element 32*s + l is bit s of qh[l].
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[K_SCALE_SIZE];
  uint8_t qh[QK_K / 8];
  uint8_t qs[QK_K / 2];
};
// 16 sub-blocks of 16: x = d*scales[i] * (q - 32), q in 0..63. For half h (128 elements) and l in 0..31:
// element 128h + l     = low nibble  of ql[64h + l]      | bits 0-1 of qh[32h + l] << 4
// element 128h + 32 + l = low nibble  of ql[64h + 32 + l] | bits 2-3 of qh[32h + l] << 4
// element 128h + 64 + l = high nibble of ql[64h + l]      | bits 4-5 of qh[32h + l] << 4
// element 128h + 96 + l = high nibble of ql[64h + 32 + l] | bits 6-7 of qh[32h + l] << 4
struct BlockQ6_K {
  uint8_t ql[QK_K / 2];
  uint8_t qh[QK_K / 4];
  int8_t scales[QK_K / 16];
  uint16_t d;
};
// Activation format of the K-quant dot products: x = d * q; bsums[i] = sum of qs[16i .. 16i+15].
struct BlockQ8_K {
  float d;
  int8_t qs[QK_K];
  int16_t bsums[QK_K / 16];
};
// x = d * kvalues_iq4nl[q], q in 0..15, nibbles as Q4_0.
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[QK4_NL / 2];
};
// 8 sub-blocks of 32 with 6-bit scales ls (low 4 bits in scales_l nibbles, high 2 bits in scales_h):
// x = d*(ls-32) * kvalues_iq4nl[q]; nibbles of each sub-block as IQ4_NL (16 bytes per sub-block).
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[QK_K / 64];
  uint8_t qs[QK_K / 2];
};
// OCP microscaling FP4: e is an E8M0 exponent (scale 2^(e-127)), q an E2M1 code. x = e8m0_half(e) *
// kvalues_mxfp4[q] (the code book holds doubled E2M1 values, hence the halved scale). Nibbles as Q4_0.
struct BlockMXFP4 {
  uint8_t e;
  uint8_t qs[QK_MXFP4 / 2];
};
// Ternary: x = d * (q - 1), q in 0..2. Element 128*h + 32*s + l is bits 2s..2s+1 of qs[32h + l].
struct BlockTQ2_0 {
  uint8_t qs[QK_K / 4];
  uint16_t d;
};

// Sizes must equal block_bytes in kernels/common/types.cpp (the on-disk format).
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136 && sizeof(BlockMXFP4) == 17);
static_assert(sizeof(BlockTQ2_0) == 66);

// ---- code books and small decoders ----

// The IQ4_NL / IQ4_XS non-linear 4-bit code book.
MOE_HD inline int kvalue_iq4nl(int q) {
  constexpr int8_t k[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  return k[q & 15];
}
// E2M1 values times two: codes 0-7 are 0, 0.5, 1, 1.5, 2, 3, 4, 6 (doubled), 8-15 their negatives.
MOE_HD inline int kvalue_mxfp4(int q) {
  constexpr int8_t k[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  return k[q & 15];
}
// Half of the E8M0 scale 2^(e-127), i.e. 2^(e-128), as an exact f32 (e = 0, 1 give f32 subnormals).
// e = 255 (NaN in the OCP spec) decodes to 2^127 like ggml and gguf-py.
MOE_HD inline float e8m0_to_f32_half(uint8_t e) {
  const uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<uint32_t>(e - 1) << 23);
  return bits_to_f32(bits);
}

// Scale and min (6 bits each) of sub-block j (0..7) of a Q4_K / Q5_K block.
// Bytes 0-3: scale j (low 6 bits) for j < 4, and in bits 6-7 the top of scale j+4;
// bytes 4-7: min j (low 6 bits) for j < 4, and in bits 6-7 the top of min j+4;
// bytes 8-11: scale j+4 low nibble | min j+4 high nibble.
MOE_HD inline void k_scale_min(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// 6-bit scale (0..63) of sub-block i (0..15) of a Q3_K block.
MOE_HD inline int q3k_scale(const uint8_t* s, int i) {
  const int lo = i < 8 ? (s[i] & 0xF) : (s[i - 8] >> 4);
  const int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
  return lo | (hi << 4);
}

// ---- per-block decoders: one block -> QK floats at y ----

MOE_HD inline void dequant_block(const BlockQ4_0& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int j = 0; j < QK4_0 / 2; ++j) {
    y[j] = mul_rn(d, static_cast<float>((b.qs[j] & 0xF) - 8));
    y[j + QK4_0 / 2] = mul_rn(d, static_cast<float>((b.qs[j] >> 4) - 8));
  }
}

MOE_HD inline void dequant_block(const BlockQ4_1& b, float* y) {
  const float d = fp16_to_f32(b.d), m = fp16_to_f32(b.m);
  for (int j = 0; j < QK4_1 / 2; ++j) {
    y[j] = add_rn(mul_rn(d, static_cast<float>(b.qs[j] & 0xF)), m);
    y[j + QK4_1 / 2] = add_rn(mul_rn(d, static_cast<float>(b.qs[j] >> 4)), m);
  }
}

MOE_HD inline uint32_t load_u32_le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

MOE_HD inline void dequant_block(const BlockQ5_0& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const uint32_t qh = load_u32_le(b.qh);
  for (int j = 0; j < QK5_0 / 2; ++j) {
    const int x0 = static_cast<int>((b.qs[j] & 0xF) | (((qh >> j) & 1u) << 4)) - 16;
    const int x1 = static_cast<int>((b.qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4)) - 16;
    y[j] = mul_rn(d, static_cast<float>(x0));
    y[j + QK5_0 / 2] = mul_rn(d, static_cast<float>(x1));
  }
}

MOE_HD inline void dequant_block(const BlockQ5_1& b, float* y) {
  const float d = fp16_to_f32(b.d), m = fp16_to_f32(b.m);
  const uint32_t qh = load_u32_le(b.qh);
  for (int j = 0; j < QK5_1 / 2; ++j) {
    const unsigned x0 = (b.qs[j] & 0xF) | (((qh >> j) & 1u) << 4);
    const unsigned x1 = (b.qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4);
    y[j] = add_rn(mul_rn(d, static_cast<float>(x0)), m);
    y[j + QK5_1 / 2] = add_rn(mul_rn(d, static_cast<float>(x1)), m);
  }
}

MOE_HD inline void dequant_block(const BlockQ8_0& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int j = 0; j < QK8_0; ++j) y[j] = mul_rn(static_cast<float>(b.qs[j]), d);
}

MOE_HD inline void dequant_block(const BlockQ8_1& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int j = 0; j < QK8_1; ++j) y[j] = mul_rn(static_cast<float>(b.qs[j]), d);
}

MOE_HD inline void dequant_block(const BlockQ2_K& b, float* y) {
  const float d = fp16_to_f32(b.d), dmin = fp16_to_f32(b.dmin);
  for (int i = 0; i < QK_K; ++i) {
    const int h = i >> 7, s = (i >> 5) & 3, l = i & 31;
    const int sub = i >> 4;
    const float dl = mul_rn(d, static_cast<float>(b.scales[sub] & 0xF));
    const float ml = mul_rn(dmin, static_cast<float>(b.scales[sub] >> 4));
    const int q = (b.qs[32 * h + l] >> (2 * s)) & 3;
    y[i] = sub_rn(mul_rn(dl, static_cast<float>(q)), ml);
  }
}

MOE_HD inline void dequant_block(const BlockQ3_K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int i = 0; i < QK_K; ++i) {
    const int h = i >> 7, s = (i >> 5) & 3, l = i & 31, g = i >> 5;
    const float dl = mul_rn(d, static_cast<float>(q3k_scale(b.scales, i >> 4) - 32));
    const int q = ((b.qs[32 * h + l] >> (2 * s)) & 3) - (((b.hmask[l] >> g) & 1) ? 0 : 4);
    y[i] = mul_rn(dl, static_cast<float>(q));
  }
}

MOE_HD inline void dequant_block(const BlockQ4_K& b, float* y) {
  const float d = fp16_to_f32(b.d), dmin = fp16_to_f32(b.dmin);
  for (int s = 0; s < QK_K / 32; ++s) {
    int sc, m;
    k_scale_min(s, b.scales, &sc, &m);
    const float dl = mul_rn(d, static_cast<float>(sc)), ml = mul_rn(dmin, static_cast<float>(m));
    const uint8_t* q = b.qs + 32 * (s >> 1);
    const int shift = 4 * (s & 1);
    for (int l = 0; l < 32; ++l)
      y[32 * s + l] = sub_rn(mul_rn(dl, static_cast<float>((q[l] >> shift) & 0xF)), ml);
  }
}

MOE_HD inline void dequant_block(const BlockQ5_K& b, float* y) {
  const float d = fp16_to_f32(b.d), dmin = fp16_to_f32(b.dmin);
  for (int s = 0; s < QK_K / 32; ++s) {
    int sc, m;
    k_scale_min(s, b.scales, &sc, &m);
    const float dl = mul_rn(d, static_cast<float>(sc)), ml = mul_rn(dmin, static_cast<float>(m));
    const uint8_t* q = b.qs + 32 * (s >> 1);
    const int shift = 4 * (s & 1);
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 0xF) | (((b.qh[l] >> s) & 1) << 4);
      y[32 * s + l] = sub_rn(mul_rn(dl, static_cast<float>(v)), ml);
    }
  }
}

MOE_HD inline void dequant_block(const BlockQ6_K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int i = 0; i < QK_K; ++i) {
    const int h = i >> 7, r = i & 127, part = r >> 5, l = r & 31;
    const uint8_t lo = b.ql[64 * h + 32 * (part & 1) + l];
    const int nib = (part & 2) ? (lo >> 4) : (lo & 0xF);
    const int hi = (b.qh[32 * h + l] >> (2 * part)) & 3;
    const int q = (nib | (hi << 4)) - 32;
    const float dl = mul_rn(d, static_cast<float>(b.scales[i >> 4]));
    y[i] = mul_rn(dl, static_cast<float>(q));
  }
}

MOE_HD inline void dequant_block(const BlockQ8_K& b, float* y) {
  for (int j = 0; j < QK_K; ++j) y[j] = mul_rn(b.d, static_cast<float>(b.qs[j]));
}

MOE_HD inline void dequant_block(const BlockIQ4_NL& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int j = 0; j < QK4_NL / 2; ++j) {
    y[j] = mul_rn(d, static_cast<float>(kvalue_iq4nl(b.qs[j] & 0xF)));
    y[j + QK4_NL / 2] = mul_rn(d, static_cast<float>(kvalue_iq4nl(b.qs[j] >> 4)));
  }
}

MOE_HD inline void dequant_block(const BlockIQ4_XS& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int s = 0; s < QK_K / 32; ++s) {
    const int ls = ((b.scales_l[s / 2] >> (4 * (s % 2))) & 0xF) | (((b.scales_h >> (2 * s)) & 3) << 4);
    const float dl = mul_rn(d, static_cast<float>(ls - 32));
    const uint8_t* q = b.qs + 16 * s;
    for (int j = 0; j < 16; ++j) {
      y[32 * s + j] = mul_rn(dl, static_cast<float>(kvalue_iq4nl(q[j] & 0xF)));
      y[32 * s + j + 16] = mul_rn(dl, static_cast<float>(kvalue_iq4nl(q[j] >> 4)));
    }
  }
}

MOE_HD inline void dequant_block(const BlockMXFP4& b, float* y) {
  const float d = e8m0_to_f32_half(b.e);
  for (int j = 0; j < QK_MXFP4 / 2; ++j) {
    y[j] = mul_rn(d, static_cast<float>(kvalue_mxfp4(b.qs[j] & 0xF)));
    y[j + QK_MXFP4 / 2] = mul_rn(d, static_cast<float>(kvalue_mxfp4(b.qs[j] >> 4)));
  }
}

MOE_HD inline void dequant_block(const BlockTQ2_0& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int i = 0; i < QK_K; ++i) {
    const int h = i >> 7, s = (i >> 5) & 3, l = i & 31;
    const int q = ((b.qs[32 * h + l] >> (2 * s)) & 3) - 1;
    y[i] = mul_rn(d, static_cast<float>(q));
  }
}

}  // namespace moe::kernels
