// moe/kernels/half.h — IEEE binary16 (fp16) and bfloat16 <-> binary32 conversions on bit patterns,
// usable from host code and CUDA device code alike (MOE_HD), plus the rounding-exact float helpers the
// block decoders share so that CPU and GPU produce the same bits.
// Owns: MOE_HD, bit casts, fp16/bf16 conversions, mul_rn/add_rn/sub_rn.
// Pure inline functions; thread-safe.
//
// Rounding: f32 -> f16 and f32 -> bf16 round to nearest, ties to even. Overflow goes to +-inf, inf stays
// inf, NaN stays NaN (forced quiet; the sign and the top payload bits are kept). f16 subnormals are
// produced and decoded exactly. Widening (f16/bf16 -> f32) is exact.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MOE_HD __host__ __device__
#else
#define MOE_HD
#endif

namespace moe::kernels {

MOE_HD inline float bits_to_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

MOE_HD inline uint32_t f32_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

// Single-rounding arithmetic that the compiler may not fuse into an FMA. The reference dequantizer
// (gguf-py, numpy) rounds every product and sum separately; nvcc contracts a*b+c by default, which
// would change the last bit. On the host these are plain operators: GCC contracts them too when FMA is
// enabled (-mfma, -march=native, aarch64), so the reference sources are built with -ffp-contract=off
// (kernels/CMakeLists.txt); other users of blocks.h compiled with FMA may differ by an ulp.
MOE_HD inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
MOE_HD inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
MOE_HD inline float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

// fp16 bit pattern -> f32 (exact).
MOE_HD inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {  // inf / NaN: keep the payload, widened
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {  // normal: rebias 15 -> 127
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: value = mant * 2^-24; normalise
    uint32_t e = 127 - 15 + 1;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
  }
  return bits_to_f32(bits);
}

// f32 -> fp16 bit pattern, round to nearest even.
MOE_HD inline uint16_t f32_to_fp16(float f) {
  const uint32_t x = f32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf or NaN
    if (ax == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // quiet NaN, payload top bits
  }
  if (ax >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65536: inf
  if (ax < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    if (ax < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to zero
    const uint32_t e = ax >> 23;                               // 102..112
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;           // 24-bit significand
    const uint32_t shift = 126 - e;                            // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;  // may carry into the smallest normal: fine
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t h = ((ax >> 13) - ((127u - 15u) << 10));
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry out of the top normal gives inf
  return static_cast<uint16_t>(sign | h);
}

// bf16 bit pattern -> f32 (exact).
MOE_HD inline float bf16_to_f32(uint16_t b) { return bits_to_f32(static_cast<uint32_t>(b) << 16); }

// f32 -> bf16 bit pattern, round to nearest even; NaN forced quiet (as ggml and gguf-py do).
MOE_HD inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);  // carry into the exponent is the right rounding
  return static_cast<uint16_t>(rounded >> 16);
}

}  // namespace moe::kernels
