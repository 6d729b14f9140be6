// kernels/cpu/quant_internal.h — private to kernels/cpu/quant*.cpp: the per-block quantizers that
// quant.cpp's quantize_row dispatches to. Each reads one block of f32 values (QK elements, finite) and
// fills one block; pure functions, thread-safe.
#pragma once
#include "moe/kernels/blocks.h"

namespace moe::kernels::detail {

// ggml-compatible rounding of the legacy and simple formats (quant.cpp).
void quantize_block(const float* x, BlockQ4_0* b) noexcept;
void quantize_block(const float* x, BlockQ4_1* b) noexcept;
void quantize_block(const float* x, BlockQ5_0* b) noexcept;
void quantize_block(const float* x, BlockQ5_1* b) noexcept;
void quantize_block(const float* x, BlockQ8_0* b) noexcept;
void quantize_block(const float* x, BlockQ8_K* b) noexcept;
void quantize_block(const float* x, BlockMXFP4* b) noexcept;

// Searched scales (quant_k.cpp): least-squares fits over a grid of candidate scales, then the
// super-block scales are quantized and the values re-fitted to the stored scales.
void quantize_block(const float* x, BlockQ4_K* b) noexcept;
void quantize_block(const float* x, BlockQ5_K* b) noexcept;
void quantize_block(const float* x, BlockQ6_K* b) noexcept;
void quantize_block(const float* x, BlockIQ4_NL* b) noexcept;

}  // namespace moe::kernels::detail
