// kernels/cuda/matvec_impl.cuh — the arithmetic of the CUDA dequantizing matvec, written once as
// MOE_HD code so the host compiler runs exactly what the GPU runs. Included by the matvec_*.cu and
// embed.cu kernels and by tests (tests/kernels/test_matvec_host_cuda.cpp runs it on the CPU in every CI
// build, GPU or not). Needs no CUDA header: under a host compiler MOE_HD is empty.
// Owns: 32-element chunk decoders and 4-element slice decoders for every dequantizable type (Dec<T>),
// the per-lane dot (lane_dot), and the host emulation of one warp (emulate_matvec). Pure inline
// functions; thread-safe.
//
// Design.
// - Unit of work: a "chunk" of 32 consecutive elements of a row. A type with 32-element blocks has one
//   chunk per block; a 256-element super-block (K-quants, IQ4_XS, TQ2_0) has 8. Two decoders per type:
//   Dec<T>::decode(block, c, y[32]) produces a whole chunk (embed.cu), and Dec<T>::slice(block, c, s,
//   w[4]) produces the "slice" s (0..7) of chunk c, elements 4s..4s+3. Both give exactly blocks.h's
//   dequant_block values (same mul_rn/add_rn/sub_rn sequence; integer codes become floats exactly, by
//   the 2^23 bias trick of u2f, which gives static_cast<float>'s value; fp16 scales use the hardware
//   conversion on the GPU, exact like fp16_to_f32 except for NaN payloads); tests check every chunk and
//   slice bit for bit against dequant_block on the CPU.
// - F32/F16/BF16 are read as pseudo-blocks of 32 elements: cols must be a multiple of 32 for them.
// - P warps per output row (matvec: warps_per_row(rows), 4 for rows <= 4096, else 1; matvec_experts: 1),
//   lanes laid out so that a
//   warp reads memory coalesced: lane l of warp p is group g = 4p + l / 8 and slice s = l % 8; per step
//   the row's warps cover 4P consecutive chunks, lane l taking elements 4s..4s+3 of chunk g (+4P per
//   step). The 8 lanes of a group read the block
//   bytes of one chunk together (2- or 4-byte loads), and x is read as one float4 per lane (16 bytes,
//   512 consecutive bytes per warp) when it is 16-byte aligned, else as 4 floats. kUnrollFor<> steps
//   are decoded (for one token: and their x loaded) before their products are accumulated, so a lane
//   has several independent loads in flight; the kernel has an instance for n == 1 and one for n <= 8.
// - Accumulation: per lane and per token, one f32 accumulator, single-rounding FMAs (fma_rn) in a fixed
//   order (chunks increasing, then elements 4s..4s+3); n <= kMaxBatch tokens share each decoded slice
//   (the weights are read once for all of them). The 32 lane sums are combined by the butterfly of
//   warp_sum (lane l + lane l^16, then ^8, ^4, ^2, ^1); with P > 1 the P warp sums are then added in
//   order p = 0, 1, ..., P-1 (through shared memory). Every step is a correctly rounded IEEE operation
//   in a fixed order, so emulate_matvec on the host gives the GPU's bits; against the CPU reference
//   (dequantize_row + f32 dot in another order) the difference is summation order only:
//   |gpu - ref| <= ~2 * cols * 2^-24 * sum|w x| in the worst case.
// - Cost (Q8_0, n = 1): per warp step 136 bytes of weights in 3 load instructions (fp16 scale + two
//   16-bit halves of each lane's 4 codes; the blocks are only 2-byte aligned) and 512 bytes of x in one
//   16-byte load per lane; per element one byte extract, one exact int->float (bias trick), one mul_rn
//   and one FMA. The old layout (a lane per whole chunk) issued 32 scattered cache lines per x load and
//   byte loads of the codes. H100, 50304 x 2048 Q8_0 (109 MB, from DRAM): 556 us before, 60 us now.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "moe/kernels/blocks.h"
#include "moe/kernels/half.h"
#include "moe/kernels/types.h"

#if defined(__CUDACC__)
#define MOE_UNROLL _Pragma("unroll")
#else
#define MOE_UNROLL
#endif

namespace moe::cuda::mv {

inline constexpr int kChunk = 32;     // elements per chunk
inline constexpr int kLanes = 32;     // lanes per row (one warp)
inline constexpr int kMaxBatch = 8;   // tokens per launch sharing each decoded chunk
inline constexpr int kSlice = 4;      // elements per lane per chunk
inline constexpr int kSlices = kChunk / kSlice;  // lanes per chunk (8)
inline constexpr int kGroups = kLanes / kSlices; // chunks per warp step (4)
// Dense matvecs (cuda::matvec) of at most kSplitRows rows get kSplit warps per row (each a 1/kSplit share
// of the chunks), so that a small matrix still puts enough warps (loads in flight) on the GPU; larger
// ones, and every expert matvec (matvec_experts: its jobs fill the GPU, and an expert's bits must not
// depend on how many jobs share the launch), one warp per row. H100, n = 1, Q8_0 2048 x 2048: 14 us with
// one warp per row, 7 us with 4; 8 experts x 1024 x 2048 through matvec_experts: 17 us either way.
inline constexpr int64_t kSplitRows = 4096;
inline constexpr int kSplit = 4;
MOE_HD inline int warps_per_row(int64_t rows) { return rows <= kSplitRows ? kSplit : 1; }

// a*b + c with one rounding, identical on host (std::fma) and device (__fmaf_rn).
MOE_HD inline float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// ---- loads and exact conversions shared by the slice decoders ----
// Weights are read through the read-only cache on the GPU. p must be aligned to the load's size.
MOE_HD inline uint32_t ld8(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(p);
#else
  return *p;
#endif
}
MOE_HD inline uint32_t ld16(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const unsigned short*>(p));
#else
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8);
#endif
}
// 4 bytes (little-endian) from a 2-byte aligned address: two 16-bit loads.
MOE_HD inline uint32_t ld32_a2(const uint8_t* p) { return ld16(p) | (ld16(p + 2) << 16); }
// 4 bytes from a 4-byte aligned address.
MOE_HD inline uint32_t ld32_a4(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const unsigned int*>(p));
#else
  return ld32_a2(p);
#endif
}
MOE_HD inline float ldf(const float* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(p);
#else
  return *p;
#endif
}
// fp16 scale -> f32, exact (the GPU uses the hardware conversion; NaN payloads may differ, NaN stays NaN).
MOE_HD inline float f16(uint32_t h) {
#if defined(__CUDA_ARCH__)
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(static_cast<unsigned short>(h)));
  return f;
#else
  return kernels::fp16_to_f32(static_cast<uint16_t>(h));
#endif
}
// float(u - bias) for u < 2^22, bias in {0, 1, 4, 8, 16, 32, 128}: (2^23 + u) - (2^23 + bias), both exact
// floats and their difference exact, so this equals static_cast<float>(int(u) - bias) bit for bit (+0
// for u == bias). Two integer/float-add instructions instead of a quarter-rate int-to-float convert.
MOE_HD inline float u2f(uint32_t u, float bias = 0.0f) {
  return kernels::sub_rn(kernels::bits_to_f32(0x4B000000u | u), 8388608.0f + bias);
}
// Byte q (0..15) of the 16-byte table {lo, hi} (code books stored biased by +128).
MOE_HD inline uint32_t lut16(uint64_t lo, uint64_t hi, uint32_t q) {
  const uint64_t w = (q & 8u) ? hi : lo;
  return static_cast<uint32_t>(w >> (8u * (q & 7u))) & 0xFFu;
}
// kvalue_iq4nl(q) + 128 and kvalue_mxfp4(q) + 128 (blocks.h's code books), bytes 0..7 / 8..15.
inline constexpr uint64_t kIQ4NLLo = 0x766a5d4f3f2d1801ull, kIQ4NLHi = 0xf1d9c5b5a6998d81ull;
inline constexpr uint64_t kMXFP4Lo = 0x8c88868483828180ull, kMXFP4Hi = 0x74787a7c7d7e7f80ull;
// Nibble (elements 4s..4s+3 of a 32-element "Q4_0 layout" chunk: element j < 16 is the low nibble of byte
// j, element j + 16 the high nibble): byte offset and shift of slice s.
MOE_HD inline int nib_byte(int s) { return 4 * (s & 3); }
MOE_HD inline int nib_shift(int s) { return 4 * (s >> 2); }

// Pseudo-blocks for the plain types: 32 elements.
struct PlainF32 { float v[kChunk]; };
struct PlainF16 { uint16_t v[kChunk]; };
struct PlainBF16 { uint16_t v[kChunk]; };

// Dec<T>: Block (the struct read from memory), kChunks (chunks per block), decode(blk, c, y[32]).
template <TensorType T> struct Dec;

// Types whose block is one chunk: blocks.h's decoder as is.
template <class B>
struct DecWhole {
  using Block = B;
  static constexpr int kChunks = 1;
  MOE_HD static void decode(const uint8_t* p, int /*c*/, float* y) {
    kernels::dequant_block(*reinterpret_cast<const B*>(p), y);
  }
};
// slice(b, c, s, w): elements 4s..4s+3 of chunk c of the block at b (the field offsets are those of the
// blocks.h structs, read with loads that their alignment allows).
template <> struct Dec<TensorType::Q4_0> : DecWhole<kernels::BlockQ4_0> {
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const float d = f16(ld16(b));
    const uint32_t q = ld32_a2(b + 2 + nib_byte(s)) >> nib_shift(s);
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k) w[k] = kernels::mul_rn(d, u2f((q >> (8 * k)) & 0xF, 8.0f));
  }
};
template <> struct Dec<TensorType::Q4_1> : DecWhole<kernels::BlockQ4_1> {
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const float d = f16(ld16(b)), m = f16(ld16(b + 2));
    const uint32_t q = ld32_a2(b + 4 + nib_byte(s)) >> nib_shift(s);
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k)
      w[k] = kernels::add_rn(kernels::mul_rn(d, u2f((q >> (8 * k)) & 0xF)), m);
  }
};
template <> struct Dec<TensorType::Q5_0> : DecWhole<kernels::BlockQ5_0> {
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const float d = f16(ld16(b));
    const uint32_t qh = ld32_a2(b + 2) >> (4 * s);  // bit 4 of element 4s+k is bit 4s+k of qh
    const uint32_t q = ld32_a2(b + 6 + nib_byte(s)) >> nib_shift(s);
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k)
      w[k] = kernels::mul_rn(d, u2f(((q >> (8 * k)) & 0xF) | (((qh >> k) & 1u) << 4), 16.0f));
  }
};
template <> struct Dec<TensorType::Q5_1> : DecWhole<kernels::BlockQ5_1> {
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const float d = f16(ld16(b)), m = f16(ld16(b + 2));
    const uint32_t qh = ld32_a2(b + 4) >> (4 * s);
    const uint32_t q = ld32_a2(b + 8 + nib_byte(s)) >> nib_shift(s);
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k)
      w[k] = kernels::add_rn(kernels::mul_rn(d, u2f(((q >> (8 * k)) & 0xF) | (((qh >> k) & 1u) << 4))), m);
  }
};
// int8 codes: (byte ^ 0x80) = q + 128.
template <> struct Dec<TensorType::Q8_0> : DecWhole<kernels::BlockQ8_0> {
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const float d = f16(ld16(b));
    const uint32_t q = ld32_a2(b + 2 + 4 * s) ^ 0x80808080u;
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k) w[k] = kernels::mul_rn(u2f((q >> (8 * k)) & 0xFF, 128.0f), d);
  }
};
template <> struct Dec<TensorType::Q8_1> : DecWhole<kernels::BlockQ8_1> {
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const float d = f16(ld16(b));
    const uint32_t q = ld32_a2(b + 4 + 4 * s) ^ 0x80808080u;
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k) w[k] = kernels::mul_rn(u2f((q >> (8 * k)) & 0xFF, 128.0f), d);
  }
};
template <> struct Dec<TensorType::IQ4_NL> : DecWhole<kernels::BlockIQ4_NL> {
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const float d = f16(ld16(b));
    const uint32_t q = ld32_a2(b + 2 + nib_byte(s)) >> nib_shift(s);
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k)
      w[k] = kernels::mul_rn(d, u2f(lut16(kIQ4NLLo, kIQ4NLHi, (q >> (8 * k)) & 0xF), 128.0f));
  }
};
// 17-byte blocks: only byte loads are aligned.
template <> struct Dec<TensorType::MXFP4> : DecWhole<kernels::BlockMXFP4> {
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const float d = kernels::e8m0_to_f32_half(static_cast<uint8_t>(ld8(b)));
    const uint8_t* qs = b + 1 + nib_byte(s);
    const int sh = nib_shift(s);
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k)
      w[k] = kernels::mul_rn(d, u2f(lut16(kMXFP4Lo, kMXFP4Hi, (ld8(qs + k) >> sh) & 0xF), 128.0f));
  }
};

template <> struct Dec<TensorType::F32> {
  using Block = PlainF32;
  static constexpr int kChunks = 1;
  MOE_HD static void decode(const uint8_t* p, int, float* y) {
    const float* s = reinterpret_cast<const float*>(p);
    for (int l = 0; l < kChunk; ++l) y[l] = s[l];
  }
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const float* p = reinterpret_cast<const float*>(b) + kSlice * s;  // 4-byte aligned only
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k) w[k] = ldf(p + k);
  }
};
template <> struct Dec<TensorType::F16> {
  using Block = PlainF16;
  static constexpr int kChunks = 1;
  MOE_HD static void decode(const uint8_t* p, int, float* y) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(p);
    for (int l = 0; l < kChunk; ++l) y[l] = kernels::fp16_to_f32(s[l]);
  }
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const uint32_t lo = ld32_a2(b + 8 * s), hi = ld32_a2(b + 8 * s + 4);
    w[0] = f16(lo & 0xFFFF);
    w[1] = f16(lo >> 16);
    w[2] = f16(hi & 0xFFFF);
    w[3] = f16(hi >> 16);
  }
};
template <> struct Dec<TensorType::BF16> {
  using Block = PlainBF16;
  static constexpr int kChunks = 1;
  MOE_HD static void decode(const uint8_t* p, int, float* y) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(p);
    for (int l = 0; l < kChunk; ++l) y[l] = kernels::bf16_to_f32(s[l]);
  }
  MOE_HD static void slice(const uint8_t* b, int, int s, float* w) {
    const uint32_t lo = ld32_a2(b + 8 * s), hi = ld32_a2(b + 8 * s + 4);
    w[0] = kernels::bits_to_f32(lo << 16);
    w[1] = kernels::bits_to_f32(lo & 0xFFFF0000u);
    w[2] = kernels::bits_to_f32(hi << 16);
    w[3] = kernels::bits_to_f32(hi & 0xFFFF0000u);
  }
};

// Q4_K / Q5_K sub-block j (0..7): dl = d * sc, ml = dmin * m with blocks.h's k_scale_min, reading only
// the three scale bytes it needs (A = p[j%4], B = p[j%4 + 4], C = p[j%4 + 8]).
MOE_HD inline void k_scale_min_f(const uint8_t* p, int j, float d, float dmin, float* dl, float* ml) {
  const int i = j & 3;
  const uint32_t A = ld8(p + i), B = ld8(p + i + 4), C = ld8(p + i + 8);
  const uint32_t sc = j < 4 ? (A & 63) : ((C & 0xF) | ((A >> 6) << 4));
  const uint32_t m = j < 4 ? (B & 63) : ((C >> 4) | ((B >> 6) << 4));
  *dl = kernels::mul_rn(d, u2f(sc));
  *ml = kernels::mul_rn(dmin, u2f(m));
}
// Q3_K: the 6-bit scale of sub-block i (0..15), blocks.h's q3k_scale reading two bytes of p.
MOE_HD inline uint32_t q3k_scale_ld(const uint8_t* p, int i) {
  const uint32_t lo = (ld8(p + (i & 7)) >> (4 * (i >> 3))) & 0xF;
  const uint32_t hi = (ld8(p + 8 + (i & 3)) >> (2 * (i >> 2))) & 3;
  return lo | (hi << 4);
}

// ---- 256-element super-blocks: chunk c = elements 32c .. 32c+31 (index formulas of blocks.h) ----

template <> struct Dec<TensorType::Q2_K> {
  using Block = kernels::BlockQ2_K;
  static constexpr int kChunks = 8;
  MOE_HD static void decode(const uint8_t* p, int c, float* y) {
    using namespace kernels;
    const Block& b = *reinterpret_cast<const Block*>(p);
    const float d = fp16_to_f32(b.d), dmin = fp16_to_f32(b.dmin);
    const int h = c >> 2, s = c & 3;
    for (int half = 0; half < 2; ++half) {  // sub-blocks 2c and 2c+1 (16 elements each)
      const int sub = 2 * c + half;
      const float dl = mul_rn(d, static_cast<float>(b.scales[sub] & 0xF));
      const float ml = mul_rn(dmin, static_cast<float>(b.scales[sub] >> 4));
      for (int k = 0; k < 16; ++k) {
        const int l = 16 * half + k;
        const int q = (b.qs[32 * h + l] >> (2 * s)) & 3;
        y[l] = sub_rn(mul_rn(dl, static_cast<float>(q)), ml);
      }
    }
  }
  // offsets: scales 0, qs 16, d 80, dmin 82; the slice lies in sub-block 2c + s/4.
  MOE_HD static void slice(const uint8_t* b, int c, int s, float* w) {
    using namespace kernels;
    const float d = f16(ld16(b + 80)), dmin = f16(ld16(b + 82));
    const uint32_t sc = ld8(b + 2 * c + (s >> 2));
    const float dl = mul_rn(d, u2f(sc & 0xF)), ml = mul_rn(dmin, u2f(sc >> 4));
    const uint32_t q = ld32_a2(b + 16 + 32 * (c >> 2) + 4 * s) >> (2 * (c & 3));
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k) w[k] = sub_rn(mul_rn(dl, u2f((q >> (8 * k)) & 3)), ml);
  }
};

template <> struct Dec<TensorType::Q3_K> {
  using Block = kernels::BlockQ3_K;
  static constexpr int kChunks = 8;
  MOE_HD static void decode(const uint8_t* p, int c, float* y) {
    using namespace kernels;
    const Block& b = *reinterpret_cast<const Block*>(p);
    const float d = fp16_to_f32(b.d);
    const int h = c >> 2, s = c & 3;
    for (int half = 0; half < 2; ++half) {
      const float dl = mul_rn(d, static_cast<float>(q3k_scale(b.scales, 2 * c + half) - 32));
      for (int k = 0; k < 16; ++k) {
        const int l = 16 * half + k;
        const int q = ((b.qs[32 * h + l] >> (2 * s)) & 3) - (((b.hmask[l] >> c) & 1) ? 0 : 4);
        y[l] = mul_rn(dl, static_cast<float>(q));
      }
    }
  }
  // offsets: hmask 0, qs 32, scales 96, d 108.
  MOE_HD static void slice(const uint8_t* b, int c, int s, float* w) {
    using namespace kernels;
    const float d = f16(ld16(b + 108));
    const float dl = mul_rn(d, u2f(q3k_scale_ld(b + 96, 2 * c + (s >> 2)), 32.0f));
    const uint32_t q = ld32_a2(b + 32 + 32 * (c >> 2) + 4 * s) >> (2 * (c & 3));
    const uint32_t hm = ld32_a2(b + 4 * s) >> c;
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k)  // q - (hbit ? 0 : 4) = (q | hbit << 2) - 4
      w[k] = mul_rn(dl, u2f(((q >> (8 * k)) & 3) | (((hm >> (8 * k)) & 1u) << 2), 4.0f));
  }
};

template <> struct Dec<TensorType::Q4_K> {
  using Block = kernels::BlockQ4_K;
  static constexpr int kChunks = 8;
  MOE_HD static void decode(const uint8_t* p, int c, float* y) {
    using namespace kernels;
    const Block& b = *reinterpret_cast<const Block*>(p);
    const float d = fp16_to_f32(b.d), dmin = fp16_to_f32(b.dmin);
    int sc, m;
    k_scale_min(c, b.scales, &sc, &m);
    const float dl = mul_rn(d, static_cast<float>(sc)), ml = mul_rn(dmin, static_cast<float>(m));
    const uint8_t* q = b.qs + 32 * (c >> 1);
    const int shift = 4 * (c & 1);
    for (int l = 0; l < 32; ++l) y[l] = sub_rn(mul_rn(dl, static_cast<float>((q[l] >> shift) & 0xF)), ml);
  }
  // offsets: d 0, dmin 2, scales 4, qs 16.
  MOE_HD static void slice(const uint8_t* b, int c, int s, float* w) {
    using namespace kernels;
    const float d = f16(ld16(b)), dmin = f16(ld16(b + 2));
    float dl, ml;
    k_scale_min_f(b + 4, c, d, dmin, &dl, &ml);
    const uint32_t q = ld32_a2(b + 16 + 32 * (c >> 1) + 4 * s) >> (4 * (c & 1));
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k) w[k] = sub_rn(mul_rn(dl, u2f((q >> (8 * k)) & 0xF)), ml);
  }
};

template <> struct Dec<TensorType::Q5_K> {
  using Block = kernels::BlockQ5_K;
  static constexpr int kChunks = 8;
  MOE_HD static void decode(const uint8_t* p, int c, float* y) {
    using namespace kernels;
    const Block& b = *reinterpret_cast<const Block*>(p);
    const float d = fp16_to_f32(b.d), dmin = fp16_to_f32(b.dmin);
    int sc, m;
    k_scale_min(c, b.scales, &sc, &m);
    const float dl = mul_rn(d, static_cast<float>(sc)), ml = mul_rn(dmin, static_cast<float>(m));
    const uint8_t* q = b.qs + 32 * (c >> 1);
    const int shift = 4 * (c & 1);
    for (int l = 0; l < 32; ++l) {
      const int v = ((q[l] >> shift) & 0xF) | (((b.qh[l] >> c) & 1) << 4);
      y[l] = sub_rn(mul_rn(dl, static_cast<float>(v)), ml);
    }
  }
  // offsets: d 0, dmin 2, scales 4, qh 16, qs 48.
  MOE_HD static void slice(const uint8_t* b, int c, int s, float* w) {
    using namespace kernels;
    const float d = f16(ld16(b)), dmin = f16(ld16(b + 2));
    float dl, ml;
    k_scale_min_f(b + 4, c, d, dmin, &dl, &ml);
    const uint32_t q = ld32_a2(b + 48 + 32 * (c >> 1) + 4 * s) >> (4 * (c & 1));
    const uint32_t qh = ld32_a2(b + 16 + 4 * s) >> c;
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k)
      w[k] = sub_rn(mul_rn(dl, u2f(((q >> (8 * k)) & 0xF) | (((qh >> (8 * k)) & 1u) << 4))), ml);
  }
};

template <> struct Dec<TensorType::Q6_K> {
  using Block = kernels::BlockQ6_K;
  static constexpr int kChunks = 8;
  MOE_HD static void decode(const uint8_t* p, int c, float* y) {
    using namespace kernels;
    const Block& b = *reinterpret_cast<const Block*>(p);
    const float d = fp16_to_f32(b.d);
    const int h = c >> 2, part = c & 3;
    for (int half = 0; half < 2; ++half) {
      const float dl = mul_rn(d, static_cast<float>(b.scales[2 * c + half]));
      for (int k = 0; k < 16; ++k) {
        const int l = 16 * half + k;
        const uint8_t lo = b.ql[64 * h + 32 * (part & 1) + l];
        const int nib = (part & 2) ? (lo >> 4) : (lo & 0xF);
        const int hi = (b.qh[32 * h + l] >> (2 * part)) & 3;
        y[l] = mul_rn(dl, static_cast<float>((nib | (hi << 4)) - 32));
      }
    }
  }
  // offsets: ql 0, qh 128, scales 192 (int8), d 208; the slice lies in sub-block 2c + s/4.
  MOE_HD static void slice(const uint8_t* b, int c, int s, float* w) {
    using namespace kernels;
    const int h = c >> 2, part = c & 3;
    const float d = f16(ld16(b + 208));
    const float dl = mul_rn(d, u2f(ld8(b + 192 + 2 * c + (s >> 2)) ^ 0x80u, 128.0f));
    const uint32_t ql = ld32_a2(b + 64 * h + 32 * (part & 1) + 4 * s) >> ((part & 2) ? 4 : 0);
    const uint32_t qh = ld32_a2(b + 128 + 32 * h + 4 * s) >> (2 * part);
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k)
      w[k] = mul_rn(dl, u2f(((ql >> (8 * k)) & 0xF) | (((qh >> (8 * k)) & 3u) << 4), 32.0f));
  }
};

template <> struct Dec<TensorType::Q8_K> {
  using Block = kernels::BlockQ8_K;
  static constexpr int kChunks = 8;
  MOE_HD static void decode(const uint8_t* p, int c, float* y) {
    using namespace kernels;
    const Block& b = *reinterpret_cast<const Block*>(p);
    for (int l = 0; l < 32; ++l) y[l] = mul_rn(b.d, static_cast<float>(b.qs[32 * c + l]));
  }
  // offsets: d 0 (f32), qs 4; the block and its qs are 4-byte aligned (Q8_K's load alignment).
  MOE_HD static void slice(const uint8_t* b, int c, int s, float* w) {
    using namespace kernels;
    const float d = ldf(reinterpret_cast<const float*>(b));
    const uint32_t q = ld32_a4(b + 4 + 32 * c + 4 * s) ^ 0x80808080u;
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k) w[k] = mul_rn(d, u2f((q >> (8 * k)) & 0xFF, 128.0f));
  }
};

template <> struct Dec<TensorType::IQ4_XS> {
  using Block = kernels::BlockIQ4_XS;
  static constexpr int kChunks = 8;
  MOE_HD static void decode(const uint8_t* p, int c, float* y) {
    using namespace kernels;
    const Block& b = *reinterpret_cast<const Block*>(p);
    const float d = fp16_to_f32(b.d);
    const int ls = ((b.scales_l[c / 2] >> (4 * (c % 2))) & 0xF) | (((b.scales_h >> (2 * c)) & 3) << 4);
    const float dl = mul_rn(d, static_cast<float>(ls - 32));
    const uint8_t* q = b.qs + 16 * c;
    for (int j = 0; j < 16; ++j) {
      y[j] = mul_rn(dl, static_cast<float>(kvalue_iq4nl(q[j] & 0xF)));
      y[j + 16] = mul_rn(dl, static_cast<float>(kvalue_iq4nl(q[j] >> 4)));
    }
  }
  // offsets: d 0, scales_h 2, scales_l 4, qs 8; chunk c's 16 bytes in the Q4_0 nibble layout.
  MOE_HD static void slice(const uint8_t* b, int c, int s, float* w) {
    using namespace kernels;
    const float d = f16(ld16(b));
    const uint32_t ls = ((ld8(b + 4 + c / 2) >> (4 * (c % 2))) & 0xF) | (((ld16(b + 2) >> (2 * c)) & 3) << 4);
    const float dl = mul_rn(d, u2f(ls, 32.0f));
    const uint32_t q = ld32_a2(b + 8 + 16 * c + nib_byte(s)) >> nib_shift(s);
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k)
      w[k] = mul_rn(dl, u2f(lut16(kIQ4NLLo, kIQ4NLHi, (q >> (8 * k)) & 0xF), 128.0f));
  }
};

template <> struct Dec<TensorType::TQ2_0> {
  using Block = kernels::BlockTQ2_0;
  static constexpr int kChunks = 8;
  MOE_HD static void decode(const uint8_t* p, int c, float* y) {
    using namespace kernels;
    const Block& b = *reinterpret_cast<const Block*>(p);
    const float d = fp16_to_f32(b.d);
    const int h = c >> 2, s = c & 3;
    for (int l = 0; l < 32; ++l) y[l] = mul_rn(d, static_cast<float>(((b.qs[32 * h + l] >> (2 * s)) & 3) - 1));
  }
  // offsets: qs 0, d 64.
  MOE_HD static void slice(const uint8_t* b, int c, int s, float* w) {
    using namespace kernels;
    const float d = f16(ld16(b + 64));
    const uint32_t q = ld32_a2(b + 32 * (c >> 2) + 4 * s) >> (2 * (c & 3));
MOE_UNROLL
    for (int k = 0; k < kSlice; ++k) w[k] = mul_rn(d, u2f((q >> (8 * k)) & 3, 1.0f));
  }
};

// Decodes chunk `c` (0-based over the row) of a row of type T into y[32].
template <TensorType T>
MOE_HD inline void decode_chunk(const uint8_t* row, int64_t c, float* y) {
  using D = Dec<T>;
  const int64_t blk = c / D::kChunks;
  D::decode(row + blk * static_cast<int64_t>(sizeof(typename D::Block)), static_cast<int>(c % D::kChunks), y);
}

// Slice s of chunk c (0-based over the row) of a row of type T into w[4].
template <TensorType T>
MOE_HD inline void decode_slice(const uint8_t* row, int64_t c, int s, float* w) {
  using D = Dec<T>;
  const int64_t blk = c / D::kChunks;
  D::slice(row + blk * static_cast<int64_t>(sizeof(typename D::Block)), static_cast<int>(c % D::kChunks), s, w);
}

// x[0..3] into v (one 16-byte load on the GPU when vec, i.e. x is 16-byte aligned).
MOE_HD inline void load_x4(const float* x, bool vec, float* v) {
#if defined(__CUDA_ARCH__)
  if (vec) {
    const float4 f = __ldg(reinterpret_cast<const float4*>(x));
    v[0] = f.x;
    v[1] = f.y;
    v[2] = f.z;
    v[3] = f.w;
    return;
  }
#else
  (void)vec;
#endif
MOE_UNROLL
  for (int k = 0; k < kSlice; ++k) v[k] = ldf(x + k);
}

// Warp steps decoded before accumulating, per type (kChunks: chunks per block) and batch bound NB.
// Measured on an H100 (50304 x 2048, n = 1, weights streamed from DRAM): the kernel is latency-bound and
// more resident warps hide more of it than deeper unrolling per warp (nvcc unrolls the 1-step loop by 2
// itself, loads first, at <= 32 registers). 1 / 2 / 4 steps: Q8_0 1.87 / 1.80 / 1.34 TB/s, Q4_0 1.06 /
// 0.98 / 0.74, MXFP4 0.66 / 0.60 / 0.57, F16 2.63 / 2.64 / 2.27; the super-block types (more scale work
// per chunk) prefer 2: Q4_K 0.56 / 0.65 / 0.54, Q5_K 0.59 / 0.68 / 0.56, Q6_K 0.84 / 0.99 / 0.98.
template <int kChunks, int NB> inline constexpr int kUnrollFor = (NB == 1 && kChunks == 1) ? 1 : 2;

// Lane `lane` (0..31) of warp `part` (0..parts-1) of the warps computing one row: acc[t] = sum over
// chunks c = 4*part + lane/8 + 4*parts*i (i = 0, 1, ...) and elements e = 4*(lane%8) + k (k = 0..3) of
// w[32c + e] * x_t[32c + e], accumulated in that order with fma_rn, for t < n; x_t = x + t*x_tok_stride (floats). NB (1 or kMaxBatch) bounds n: the
// kernel has an instance for n == 1 (the decode path: fewer registers, x loaded with the weights) and one
// for 1 <= n <= kMaxBatch; both give the same bits for the same n. acc has NB entries; those >= n are 0.
// x_vec: x and x_tok_stride allow 16-byte loads (GPU only; the host reads floats, same values).
template <TensorType T, int NB = kMaxBatch>
MOE_HD inline void lane_dot(const uint8_t* row, int64_t n_chunks, const float* x, int64_t x_tok_stride, int n,
                            bool x_vec, int lane, int part, int parts, float* acc) {
  using D = Dec<T>;
  constexpr int kBlockBytes = static_cast<int>(sizeof(typename D::Block));
  constexpr int U = kUnrollFor<D::kChunks, NB>;
MOE_UNROLL
  for (int t = 0; t < NB; ++t) acc[t] = 0.0f;
  const int s = lane % kSlices;
  // 32-bit chunk counters (a row has far fewer than 2^31 chunks); byte offsets in 64 bits.
  const int nc = static_cast<int>(n_chunks);
  const float* xs = x + kSlice * s;
  const int step = kGroups * parts;  // chunks per step of the row's `parts` warps
  for (int c0 = part * kGroups + lane / kSlices; c0 < nc; c0 += step * U) {
    // Decode U slices first (and, for one token, load x too): these loads are independent of the
    // accumulators and go out together.
    float w[U][kSlice];
    float x1[NB == 1 ? U : 1][kSlice];
MOE_UNROLL
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * step;
      if (c < nc) {
        D::slice(row + static_cast<int64_t>(c / D::kChunks) * kBlockBytes, c % D::kChunks, s, w[u]);
        if constexpr (NB == 1) load_x4(xs + static_cast<int64_t>(c) * kChunk, x_vec, x1[u]);
      }
    }
MOE_UNROLL
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * step;
      if (c < nc) {
        if constexpr (NB == 1) {
          float a = acc[0];
MOE_UNROLL
          for (int k = 0; k < kSlice; ++k) a = fma_rn(w[u][k], x1[u][k], a);
          acc[0] = a;
        } else {
          const float* xc = xs + static_cast<int64_t>(c) * kChunk;
MOE_UNROLL
          for (int t = 0; t < NB; ++t) {
            if (t < n) {
              float xv[kSlice];
              load_x4(xc + t * x_tok_stride, x_vec, xv);
              float a = acc[t];
MOE_UNROLL
              for (int k = 0; k < kSlice; ++k) a = fma_rn(w[u][k], xv[k], a);
              acc[t] = a;
            }
          }
        }
      }
    }
  }
}

// ---- host emulation (tests): the same lanes and butterfly, sequentially ----

// y_t[r] (at y + t*rows + r) for r < rows, t < n: what the GPU kernel writes, bit for bit.
// row r of W at W + r*row_stride; x_t at x + t*cols.
// parts: warps per row, 0 for cuda::matvec's choice (warps_per_row(rows)); matvec_experts uses 1.
template <TensorType T>
inline void emulate_matvec_t(const uint8_t* W, size_t row_stride, int64_t rows, int64_t cols, const float* x, int n,
                             float* y, int parts = 0) {
  if (parts <= 0) parts = warps_per_row(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = W + r * static_cast<int64_t>(row_stride);
    float sum[kSplit][kMaxBatch];
    for (int part = 0; part < parts; ++part) {
      float acc[kLanes][kMaxBatch];
      for (int lane = 0; lane < kLanes; ++lane) {
        if (n == 1)  // the kernel's instance for one token
          lane_dot<T, 1>(row, cols / kChunk, x, cols, n, false, lane, part, parts, acc[lane]);
        else
          lane_dot<T, kMaxBatch>(row, cols / kChunk, x, cols, n, false, lane, part, parts, acc[lane]);
      }
      for (int t = 0; t < n; ++t) {  // warp_sum's butterfly
        float v[kLanes], nv[kLanes];
        for (int l = 0; l < kLanes; ++l) v[l] = acc[l][t];
        for (int o = kLanes / 2; o > 0; o >>= 1) {
          for (int l = 0; l < kLanes; ++l) nv[l] = kernels::add_rn(v[l], v[l ^ o]);
          for (int l = 0; l < kLanes; ++l) v[l] = nv[l];
        }
        sum[part][t] = v[0];
      }
    }
    for (int t = 0; t < n; ++t) {  // the warps' sums in order 0, 1, ..., parts-1
      float v = sum[0][t];
      for (int part = 1; part < parts; ++part) v = kernels::add_rn(v, sum[part][t]);
      y[t * rows + r] = v;
    }
  }
}

// Calls f.template operator()<T>() for a runtime type; returns false when T has no Dec.
template <class F>
inline bool dispatch_type(TensorType t, F&& f) {
  switch (t) {
    case TensorType::F32: f.template operator()<TensorType::F32>(); return true;
    case TensorType::F16: f.template operator()<TensorType::F16>(); return true;
    case TensorType::BF16: f.template operator()<TensorType::BF16>(); return true;
    case TensorType::Q4_0: f.template operator()<TensorType::Q4_0>(); return true;
    case TensorType::Q4_1: f.template operator()<TensorType::Q4_1>(); return true;
    case TensorType::Q5_0: f.template operator()<TensorType::Q5_0>(); return true;
    case TensorType::Q5_1: f.template operator()<TensorType::Q5_1>(); return true;
    case TensorType::Q8_0: f.template operator()<TensorType::Q8_0>(); return true;
    case TensorType::Q8_1: f.template operator()<TensorType::Q8_1>(); return true;
    case TensorType::Q2_K: f.template operator()<TensorType::Q2_K>(); return true;
    case TensorType::Q3_K: f.template operator()<TensorType::Q3_K>(); return true;
    case TensorType::Q4_K: f.template operator()<TensorType::Q4_K>(); return true;
    case TensorType::Q5_K: f.template operator()<TensorType::Q5_K>(); return true;
    case TensorType::Q6_K: f.template operator()<TensorType::Q6_K>(); return true;
    case TensorType::Q8_K: f.template operator()<TensorType::Q8_K>(); return true;
    case TensorType::IQ4_NL: f.template operator()<TensorType::IQ4_NL>(); return true;
    case TensorType::IQ4_XS: f.template operator()<TensorType::IQ4_XS>(); return true;
    case TensorType::MXFP4: f.template operator()<TensorType::MXFP4>(); return true;
    case TensorType::TQ2_0: f.template operator()<TensorType::TQ2_0>(); return true;
    default: return false;
  }
}

// Runtime-typed emulate_matvec_t. Returns false for a type without a chunk decoder.
// parts as emulate_matvec_t: 0 reproduces cuda::matvec, 1 cuda::matvec_experts.
inline bool emulate_matvec(TensorType t, const void* W, size_t row_stride, int64_t rows, int64_t cols,
                           const float* x, int n, float* y, int parts = 0) {
  return dispatch_type(t, [&]<TensorType T>() {
    emulate_matvec_t<T>(static_cast<const uint8_t*>(W), row_stride, rows, cols, x, n, y, parts);
  });
}

// Runtime-typed decode_chunk / decode_slice (tests).
inline bool decode_chunk_rt(TensorType t, const void* row, int64_t c, float* y) {
  return dispatch_type(t, [&]<TensorType T>() { decode_chunk<T>(static_cast<const uint8_t*>(row), c, y); });
}
inline bool decode_slice_rt(TensorType t, const void* row, int64_t c, int s, float* w) {
  return dispatch_type(t, [&]<TensorType T>() { decode_slice<T>(static_cast<const uint8_t*>(row), c, s, w); });
}

}  // namespace moe::cuda::mv
