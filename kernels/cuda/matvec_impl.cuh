// kernels/cuda/matvec_impl.cuh — the arithmetic of the CUDA dequantizing matvec, written once as
// MOE_HD code so the host compiler runs exactly what the GPU runs. Included by the matvec_*.cu and
// embed.cu kernels and by tests (tests/kernels/test_matvec_host_cuda.cpp runs it on the CPU in every CI
// build, GPU or not). Needs no CUDA header: under a host compiler MOE_HD is empty.
// Owns: 32-element chunk decoders for every dequantizable type (Dec<T>), the per-lane dot (lane_dot),
// and the host emulation of one warp (emulate_matvec). Pure inline functions; thread-safe.
//
// Design.
// - Unit of work: a "chunk" of 32 consecutive elements of a row. A type with 32-element blocks has one
//   chunk per block (decoded by blocks.h's dequant_block, the CPU reference's own decoder); a 256-element
//   super-block (K-quants, IQ4_XS, TQ2_0) has 8, and Dec<T>::decode(block, c, y) produces elements
//   32c..32c+31 with exactly the roundings of dequant_block (same mul_rn/sub_rn sequence; checked bit for
//   bit against dequant_block on the CPU). Why chunks: a whole 256-float super-block per thread would
//   spill to local memory; a chunk is 32 registers.
// - F32/F16/BF16 are read as pseudo-blocks of 32 elements: cols must be a multiple of 32 for them.
// - One warp per output row: lane l takes chunks l, l+32, l+64, ... in increasing order; within a chunk
//   the 32 products are accumulated in order with single-rounding FMAs (fma_rn), one accumulator per
//   token (n <= kMaxBatch tokens share each decoded chunk: the weights are read once for all of them).
//   The 32 lane sums are combined by the butterfly of warp_sum (lane l + lane l^16, then ^8, ^4, ^2, ^1).
//   Every step is a correctly rounded IEEE operation in a fixed order, so emulate_matvec on the host gives
//   the GPU's bits; against the CPU reference (dequantize_row + f32 dot in another order) the difference is
//   summation order only: |gpu - ref| <= ~2 * cols * 2^-24 * sum|w x| in the worst case.
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

// a*b + c with one rounding, identical on host (std::fma) and device (__fmaf_rn).
MOE_HD inline float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

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
template <> struct Dec<TensorType::Q4_0> : DecWhole<kernels::BlockQ4_0> {};
template <> struct Dec<TensorType::Q4_1> : DecWhole<kernels::BlockQ4_1> {};
template <> struct Dec<TensorType::Q5_0> : DecWhole<kernels::BlockQ5_0> {};
template <> struct Dec<TensorType::Q5_1> : DecWhole<kernels::BlockQ5_1> {};
template <> struct Dec<TensorType::Q8_0> : DecWhole<kernels::BlockQ8_0> {};
template <> struct Dec<TensorType::Q8_1> : DecWhole<kernels::BlockQ8_1> {};
template <> struct Dec<TensorType::IQ4_NL> : DecWhole<kernels::BlockIQ4_NL> {};
template <> struct Dec<TensorType::MXFP4> : DecWhole<kernels::BlockMXFP4> {};

template <> struct Dec<TensorType::F32> {
  using Block = PlainF32;
  static constexpr int kChunks = 1;
  MOE_HD static void decode(const uint8_t* p, int, float* y) {
    const float* s = reinterpret_cast<const float*>(p);
    for (int l = 0; l < kChunk; ++l) y[l] = s[l];
  }
};
template <> struct Dec<TensorType::F16> {
  using Block = PlainF16;
  static constexpr int kChunks = 1;
  MOE_HD static void decode(const uint8_t* p, int, float* y) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(p);
    for (int l = 0; l < kChunk; ++l) y[l] = kernels::fp16_to_f32(s[l]);
  }
};
template <> struct Dec<TensorType::BF16> {
  using Block = PlainBF16;
  static constexpr int kChunks = 1;
  MOE_HD static void decode(const uint8_t* p, int, float* y) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(p);
    for (int l = 0; l < kChunk; ++l) y[l] = kernels::bf16_to_f32(s[l]);
  }
};

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
};

template <> struct Dec<TensorType::Q8_K> {
  using Block = kernels::BlockQ8_K;
  static constexpr int kChunks = 8;
  MOE_HD static void decode(const uint8_t* p, int c, float* y) {
    using namespace kernels;
    const Block& b = *reinterpret_cast<const Block*>(p);
    for (int l = 0; l < 32; ++l) y[l] = mul_rn(b.d, static_cast<float>(b.qs[32 * c + l]));
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
};

// Decodes chunk `c` (0-based over the row) of a row of type T into y[32].
template <TensorType T>
MOE_HD inline void decode_chunk(const uint8_t* row, int64_t c, float* y) {
  using D = Dec<T>;
  const int64_t blk = c / D::kChunks;
  D::decode(row + blk * static_cast<int64_t>(sizeof(typename D::Block)), static_cast<int>(c % D::kChunks), y);
}

// Lane `lane` of `lanes`: acc[t] = sum over its chunks (lane, lane+lanes, ...) of w . x_t, for t < n.
// x_t = x + t*x_tok_stride (floats). acc has kMaxBatch entries; those >= n are set to 0.
template <TensorType T>
MOE_HD inline void lane_dot(const uint8_t* row, int64_t n_chunks, const float* x, int64_t x_tok_stride, int n,
                            int lane, int lanes, float* acc) {
MOE_UNROLL
  for (int t = 0; t < kMaxBatch; ++t) acc[t] = 0.0f;
  for (int64_t c = lane; c < n_chunks; c += lanes) {
    float w[kChunk];
    decode_chunk<T>(row, c, w);
    const float* xc = x + c * kChunk;
MOE_UNROLL
    for (int t = 0; t < kMaxBatch; ++t) {
      if (t < n) {
        const float* xt = xc + t * x_tok_stride;
        float a = acc[t];
MOE_UNROLL
        for (int l = 0; l < kChunk; ++l) a = fma_rn(w[l], xt[l], a);
        acc[t] = a;
      }
    }
  }
}

// ---- host emulation (tests): the same lanes and butterfly, sequentially ----

// y_t[r] (at y + t*rows + r) for r < rows, t < n: what the GPU kernel writes, bit for bit.
// row r of W at W + r*row_stride; x_t at x + t*cols.
template <TensorType T>
inline void emulate_matvec_t(const uint8_t* W, size_t row_stride, int64_t rows, int64_t cols, const float* x, int n,
                             float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    float acc[kLanes][kMaxBatch];
    for (int lane = 0; lane < kLanes; ++lane)
      lane_dot<T>(W + r * static_cast<int64_t>(row_stride), cols / kChunk, x, cols, n, lane, kLanes, acc[lane]);
    for (int t = 0; t < n; ++t) {
      float v[kLanes], nv[kLanes];
      for (int l = 0; l < kLanes; ++l) v[l] = acc[l][t];
      for (int o = kLanes / 2; o > 0; o >>= 1) {
        for (int l = 0; l < kLanes; ++l) nv[l] = v[l] + v[l ^ o];
        for (int l = 0; l < kLanes; ++l) v[l] = nv[l];
      }
      y[t * rows + r] = v[0];
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
inline bool emulate_matvec(TensorType t, const void* W, size_t row_stride, int64_t rows, int64_t cols,
                           const float* x, int n, float* y) {
  return dispatch_type(t, [&]<TensorType T>() {
    emulate_matvec_t<T>(static_cast<const uint8_t*>(W), row_stride, rows, cols, x, n, y);
  });
}

// Runtime-typed decode_chunk (tests).
inline bool decode_chunk_rt(TensorType t, const void* row, int64_t c, float* y) {
  return dispatch_type(t, [&]<TensorType T>() { decode_chunk<T>(static_cast<const uint8_t*>(row), c, y); });
}

}  // namespace moe::cuda::mv
