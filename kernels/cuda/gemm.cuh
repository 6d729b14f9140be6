// kernels/cuda/gemm.cuh — prefill matrix products on the GPU: Y = X W^T for a batch of tokens with
// quantized weights, by dequantizing row tiles of W to f32 (dequant.cuh) and calling cuBLAS SGEMM.
// Thread-safety: a Blas handle is used by one thread at a time (cuBLAS handles are not thread-safe);
// different Blas objects may be used concurrently.
//
// Design notes.
// - Twin: moe::kernels::matmul (moe/kernels/matmul.h) at the scalar level (dequantize_row + f32 dot). The
//   tile decode is dequantize_rows, bit-identical to the CPU decoder; the GEMM is cuBLAS f32 (default math
//   mode: no TF32 unless the caller or NVIDIA_TF32_OVERRIDE asks), so only the summation order differs:
//   tests allow 1e-4 * sum|w x| per output.
// - The caller owns the workspace (allocated once with the session's scratch: nothing allocates per call);
//   a larger workspace means fewer, larger GEMMs. Each tile is decoded and multiplied on `stream`, so the
//   workspace is reused safely in stream order.
// - When is this used: for a batch large enough that reading W once and doing n*rows*cols FLOPs on tensor
//   cores beats n matvecs; matvec.cuh (up to 8 tokens per pass) serves decode and small batches.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "moe/kernels/types.h"

namespace moe::cuda {

// RAII cuBLAS handle. Construction throws moe::Error when cuBLAS cannot initialise (no device: Internal or
// Unsupported, with cuBLAS's status name).
class Blas {
 public:
  Blas();
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  void* handle() const noexcept { return h_; }  // a cublasHandle_t
  // Lets cuBLAS round the f32 inputs to TF32 (10-bit mantissa) for tensor-core products, f32 accumulation
  // (CUBLAS_TF32_TENSOR_OP_MATH); false (the default) keeps full f32 products.
  void allow_tf32(bool on);

 private:
  void* h_ = nullptr;
};

// Floats of workspace a gemm needs to decode at least one row per tile (cols); pass more for larger tiles.
inline size_t gemm_min_workspace(int64_t cols) { return static_cast<size_t>(cols < 0 ? 0 : cols); }

// Y[t*rows + r] = sum_c X[t*cols + c] * W[r][c] for t < n, r < rows (row-major X: n x cols, Y: n x rows).
// PRECONDITIONS (InvalidArgument otherwise): dequantize_supported(wt) (dequant.cuh); cols >= 1, a multiple of
// wt's block size; rows, n >= 0; row_stride and W as dequantize_rows requires; workspace_floats >=
// gemm_min_workspace(cols); rows, cols, n < 2^31. W, X, Y, workspace: device memory; Y must not alias the
// others. Asynchronous on `stream` (the handle is bound to it for the call).
void gemm(Blas& blas, TensorType wt, const void* W, size_t row_stride, int64_t rows, int64_t cols, const float* X,
          int64_t n, float* Y, float* workspace, size_t workspace_floats, cudaStream_t stream = nullptr);

}  // namespace moe::cuda
