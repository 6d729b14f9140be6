// kernels/cuda/embed.cuh — token embedding on the GPU: rows of a (possibly quantized) embedding table
// gathered by token id and decoded to f32.
// Thread-safety: stateless launchers; concurrent calls on different streams are fine.
//
// Design notes.
// - Twin: moe::kernels::dequantize_row (moe/kernels/quant.h) of row ids[t]. Decoding uses the chunk
//   decoders of matvec_impl.cuh (blocks.h's formulas), so the output equals the CPU's bit for bit.
// - One thread per 32-element chunk; the type is a launch argument switched inside one kernel (embedding
//   is one row per token: not worth 19 template instances of build time).
// - Token ids are read on the device (graph-capturable). An id outside [0, n_vocab) writes a row of NaN
//   (the device cannot throw; the host validates ids from the tokenizer before upload).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "moe/kernels/types.h"

namespace moe::cuda {

// out[t*n_embd + i] = row ids[t] of the table, decoded, for t < n_tokens, i < n_embd.
// PRECONDITIONS (InvalidArgument otherwise): matvec_supported(t) (matvec.cuh); n_embd a multiple of 32 and
// of t's block size; row_stride >= row_bytes(t, n_embd) and table/row_stride aligned as for matvec;
// n_tokens, n_vocab >= 0. table, ids, out: device memory. Asynchronous on `stream`.
void embed(TensorType t, const void* table, size_t row_stride, int32_t n_vocab, const int32_t* ids,
           int64_t n_tokens, int64_t n_embd, float* out, cudaStream_t stream = nullptr);

}  // namespace moe::cuda
