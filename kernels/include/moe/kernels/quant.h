// moe/kernels/quant.h — scalar reference conversion between f32 and every tensor type in
// moe/kernels/types.h. These are the tested reference that SIMD and CUDA kernels are checked against.
// Pure functions; thread-safe. n is a count of elements and must be a multiple of the type's block size.
#pragma once
#include <cstddef>
#include <cstdint>

#include "moe/kernels/types.h"

namespace moe::kernels {

// Decodes n elements of type t at src into dst. Returns false (dst untouched) when this build has no
// dequantizer for t (traits(t).dequantizable is false) or n is not a multiple of the block size.
bool dequantize_row(TensorType t, const void* src, float* dst, int64_t n) noexcept;

// Encodes n floats into type t at dst (row_bytes(t, n) bytes). Returns the bytes written, or 0 when
// this build cannot quantize into t or n is not a multiple of the block size.
size_t quantize_row(TensorType t, const float* src, void* dst, int64_t n) noexcept;

}  // namespace moe::kernels
