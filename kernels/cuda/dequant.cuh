// kernels/cuda/dequant.cuh — GPU twin of moe::kernels::dequantize_row: decodes rows of any type the
// CPU reference decodes, with the same blocks.h decoders, so results are bit-identical to the CPU.
// Thread-safety: the functions keep no state; concurrent calls on different streams are fine.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "moe/kernels/types.h"

namespace moe::cuda {

// True when dequantize_rows handles type t (the same set as traits(t).dequantizable).
bool dequantize_supported(TensorType t) noexcept;

// Decodes `rows` rows of `cols` elements of type t.
// PRECONDITIONS (violations throw moe::Error InvalidArgument): dequantize_supported(t); cols >= 0 and a
// multiple of t's block size; rows >= 0; src_row_stride >= row_bytes(t, cols) and a multiple of the block
// struct's alignment (2, or 4 for Q8_K, 1 for MXFP4; F32: 4); src aligned likewise.
// src: device memory, row r at src + r*src_row_stride bytes. dst: device memory, rows*cols floats, row r
// at dst + r*cols. The launch is asynchronous on `stream`; launch errors throw moe::Error (Internal).
void dequantize_rows(TensorType t, const void* src, size_t src_row_stride, float* dst, int64_t rows, int64_t cols,
                     cudaStream_t stream = nullptr);

}  // namespace moe::cuda
