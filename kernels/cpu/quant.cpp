// kernels/cpu/quant.cpp — the scalar reference of moe/kernels/quant.h: dequantize_row for every type the
// type table marks dequantizable (decoding with the shared blocks.h decoders) and quantize_row with the
// simple per-block quantizers (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_K, MXFP4). The searched
// K-quant and IQ4_NL quantizers live in quant_k.cpp.
// Pure functions, no global state; thread-safe.
//
// The legacy quantizers reproduce ggml's reference quantizers (and gguf-py's) bit for bit: same scale
// choice, same rounding (truncation of x*id + 8.5 etc.). Source and destination may be unaligned:
// blocks are copied through locals with memcpy.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "moe/kernels/blocks.h"
#include "moe/kernels/half.h"
#include "moe/kernels/quant.h"
#include "quant_internal.h"

namespace moe::kernels {
namespace detail {
namespace {

// The element with the largest magnitude, sign kept (first one on ties, as ggml).
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (amax < std::fabs(x[i])) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  return max;
}

// trunc(v) clamped to [0, hi], NaN -> 0 (no undefined float->int conversion).
int trunc_clamp(float v, int hi) {
  v = std::fmax(v, 0.0f);
  v = std::fmin(v, static_cast<float>(hi));
  return static_cast<int>(v);
}

void pack_nibbles(const int* q, uint8_t* qs, int qk) {
  for (int j = 0; j < qk / 2; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + qk / 2] & 0xF) << 4));
}

}  // namespace

void quantize_block(const float* x, BlockQ4_0* b) noexcept {
  const float max = signed_absmax(x, QK4_0);
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int q[QK4_0];
  for (int j = 0; j < QK4_0; ++j) q[j] = trunc_clamp(x[j] * id + 8.5f, 15);
  b->d = f32_to_fp16(d);
  pack_nibbles(q, b->qs, QK4_0);
}

void quantize_block(const float* x, BlockQ4_1* b) noexcept {
  float min = x[0], max = x[0];
  for (int j = 1; j < QK4_1; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int q[QK4_1];
  for (int j = 0; j < QK4_1; ++j) q[j] = trunc_clamp((x[j] - min) * id + 0.5f, 15);
  b->d = f32_to_fp16(d);
  b->m = f32_to_fp16(min);
  pack_nibbles(q, b->qs, QK4_1);
}

void quantize_block(const float* x, BlockQ5_0* b) noexcept {
  const float max = signed_absmax(x, QK5_0);
  const float d = max / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int q[QK5_0];
  uint32_t qh = 0;
  for (int j = 0; j < QK5_0; ++j) {
    q[j] = trunc_clamp(x[j] * id + 16.5f, 31);
    qh |= static_cast<uint32_t>(q[j] >> 4) << j;
  }
  b->d = f32_to_fp16(d);
  for (int k = 0; k < 4; ++k) b->qh[k] = static_cast<uint8_t>(qh >> (8 * k));
  pack_nibbles(q, b->qs, QK5_0);
}

void quantize_block(const float* x, BlockQ5_1* b) noexcept {
  float min = x[0], max = x[0];
  for (int j = 1; j < QK5_1; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 31.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int q[QK5_1];
  uint32_t qh = 0;
  for (int j = 0; j < QK5_1; ++j) {
    q[j] = trunc_clamp((x[j] - min) * id + 0.5f, 31);
    qh |= static_cast<uint32_t>(q[j] >> 4) << j;
  }
  b->d = f32_to_fp16(d);
  b->m = f32_to_fp16(min);
  for (int k = 0; k < 4; ++k) b->qh[k] = static_cast<uint8_t>(qh >> (8 * k));
  pack_nibbles(q, b->qs, QK5_1);
}

void quantize_block(const float* x, BlockQ8_0* b) noexcept {
  float amax = 0.0f;
  for (int j = 0; j < QK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < QK8_0; ++j) {
    const float v = std::fmin(std::fmax(x[j] * id, -127.0f), 127.0f);  // |x*id| <= 127 up to rounding
    b->qs[j] = static_cast<int8_t>(std::round(v));                       // half away from zero, as ggml
  }
  b->d = f32_to_fp16(d);
}

void quantize_block(const float* x, BlockQ8_K* b) noexcept {
  const float max = signed_absmax(x, QK_K);
  if (max == 0.0f) {
    std::memset(b, 0, sizeof *b);
    return;
  }
  const float iscale = -127.0f / max;  // the largest magnitude maps to -127 (or +127)
  for (int j = 0; j < QK_K; ++j) {
    const float v = std::fmin(std::fmax(x[j] * iscale, -128.0f), 127.0f);
    b->qs[j] = static_cast<int8_t>(std::nearbyint(v));  // ties to even (default rounding mode), as ggml
  }
  for (int i = 0; i < QK_K / 16; ++i) {
    int s = 0;
    for (int j = 0; j < 16; ++j) s += b->qs[16 * i + j];
    b->bsums[i] = static_cast<int16_t>(s);
  }
  b->d = 1.0f / iscale;
}

void quantize_block(const float* x, BlockMXFP4* b) noexcept {
  float amax = 0.0f;
  for (int j = 0; j < QK_MXFP4; ++j) amax = std::max(amax, std::fabs(x[j]));
  // Shared exponent: the largest magnitude lands in [4, 8) times 2^(e-127) / 2, i.e. near the top code
  // (6 = "12" doubled); values up to 2x above it clip to the top code (OCP MX rule, as gguf-py).
  int e = 0;
  if (amax > 0.0f) e = static_cast<int>(std::floor(std::log2(amax))) - 2 + 127;
  e = std::clamp(e, 0, 254);
  b->e = static_cast<uint8_t>(e);
  const float d = e8m0_to_f32_half(b->e);
  int q[QK_MXFP4];
  for (int j = 0; j < QK_MXFP4; ++j) {
    int best = 0;
    float best_err = std::fabs(d * static_cast<float>(kvalue_mxfp4(0)) - x[j]);
    for (int k = 1; k < 16; ++k) {
      const float err = std::fabs(d * static_cast<float>(kvalue_mxfp4(k)) - x[j]);
      if (err < best_err) {
        best_err = err;
        best = k;
      }
    }
    q[j] = best;
  }
  pack_nibbles(q, b->qs, QK_MXFP4);
}

}  // namespace detail

namespace {

template <class B>
void dequant_blocks(const void* src, float* dst, int64_t nb, int qk) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < nb; ++i) {
    B b;
    std::memcpy(&b, p + i * static_cast<int64_t>(sizeof(B)), sizeof(B));
    dequant_block(b, dst + i * qk);
  }
}

template <class B>
size_t quant_blocks(const float* src, void* dst, int64_t nb, int qk) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < nb; ++i) {
    B b;
    std::memset(&b, 0, sizeof b);
    detail::quantize_block(src + i * qk, &b);
    std::memcpy(p + i * static_cast<int64_t>(sizeof(B)), &b, sizeof(B));
  }
  return static_cast<size_t>(nb) * sizeof(B);
}

}  // namespace

bool dequantize_row(TensorType t, const void* src, float* dst, int64_t n) noexcept {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(t));
  if (!tr || !tr->dequantizable || n < 0 || n % tr->block_elems != 0) return false;
  const int64_t nb = n / tr->block_elems;
  const int qk = static_cast<int>(tr->block_elems);
  switch (t) {
    case TensorType::F32:
      if (n) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return true;
    case TensorType::F16: {
      const auto* p = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = fp16_to_f32(h);
      }
      return true;
    }
    case TensorType::BF16: {
      const auto* p = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return true;
    }
    case TensorType::Q4_0: dequant_blocks<BlockQ4_0>(src, dst, nb, qk); return true;
    case TensorType::Q4_1: dequant_blocks<BlockQ4_1>(src, dst, nb, qk); return true;
    case TensorType::Q5_0: dequant_blocks<BlockQ5_0>(src, dst, nb, qk); return true;
    case TensorType::Q5_1: dequant_blocks<BlockQ5_1>(src, dst, nb, qk); return true;
    case TensorType::Q8_0: dequant_blocks<BlockQ8_0>(src, dst, nb, qk); return true;
    case TensorType::Q8_1: dequant_blocks<BlockQ8_1>(src, dst, nb, qk); return true;
    case TensorType::Q2_K: dequant_blocks<BlockQ2_K>(src, dst, nb, qk); return true;
    case TensorType::Q3_K: dequant_blocks<BlockQ3_K>(src, dst, nb, qk); return true;
    case TensorType::Q4_K: dequant_blocks<BlockQ4_K>(src, dst, nb, qk); return true;
    case TensorType::Q5_K: dequant_blocks<BlockQ5_K>(src, dst, nb, qk); return true;
    case TensorType::Q6_K: dequant_blocks<BlockQ6_K>(src, dst, nb, qk); return true;
    case TensorType::Q8_K: dequant_blocks<BlockQ8_K>(src, dst, nb, qk); return true;
    case TensorType::IQ4_NL: dequant_blocks<BlockIQ4_NL>(src, dst, nb, qk); return true;
    case TensorType::IQ4_XS: dequant_blocks<BlockIQ4_XS>(src, dst, nb, qk); return true;
    case TensorType::MXFP4: dequant_blocks<BlockMXFP4>(src, dst, nb, qk); return true;
    case TensorType::TQ2_0: dequant_blocks<BlockTQ2_0>(src, dst, nb, qk); return true;
    default: return false;  // the table says dequantizable but no decoder: keep the two in step
  }
}

size_t quantize_row(TensorType t, const float* src, void* dst, int64_t n) noexcept {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(t));
  if (!tr || !tr->quantizable || n < 0 || n % tr->block_elems != 0) return 0;
  const int64_t nb = n / tr->block_elems;
  const int qk = static_cast<int>(tr->block_elems);
  switch (t) {
    case TensorType::F32:
      if (n) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return static_cast<size_t>(n) * sizeof(float);
    case TensorType::F16:
    case TensorType::BF16: {
      auto* p = static_cast<uint8_t*>(dst);
      const bool f16 = t == TensorType::F16;
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f16 ? f32_to_fp16(src[i]) : f32_to_bf16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      return static_cast<size_t>(n) * 2;
    }
    case TensorType::Q4_0: return quant_blocks<BlockQ4_0>(src, dst, nb, qk);
    case TensorType::Q4_1: return quant_blocks<BlockQ4_1>(src, dst, nb, qk);
    case TensorType::Q5_0: return quant_blocks<BlockQ5_0>(src, dst, nb, qk);
    case TensorType::Q5_1: return quant_blocks<BlockQ5_1>(src, dst, nb, qk);
    case TensorType::Q8_0: return quant_blocks<BlockQ8_0>(src, dst, nb, qk);
    case TensorType::Q8_K: return quant_blocks<BlockQ8_K>(src, dst, nb, qk);
    case TensorType::Q4_K: return quant_blocks<BlockQ4_K>(src, dst, nb, qk);
    case TensorType::Q5_K: return quant_blocks<BlockQ5_K>(src, dst, nb, qk);
    case TensorType::Q6_K: return quant_blocks<BlockQ6_K>(src, dst, nb, qk);
    case TensorType::IQ4_NL: return quant_blocks<BlockIQ4_NL>(src, dst, nb, qk);
    case TensorType::MXFP4: return quant_blocks<BlockMXFP4>(src, dst, nb, qk);
    default: return 0;
  }
}

}  // namespace moe::kernels
