// kernels/cuda/gemm.cu — tile-dequantize + cuBLAS SGEMM (gemm.cuh). Thread-safety: see gemm.cuh.
#include <cublas_v2.h>

#include <string>

#include "backend.h"
#include "common.cuh"
#include "dequant.cuh"
#include "gemm.cuh"

namespace moe::cuda {

Blas::Blas() {
  cublasHandle_t h = nullptr;
  MOE_CUBLAS_CHECK(cublasCreate(&h));
  h_ = h;
}

void Blas::allow_tf32(bool on) {
  MOE_CUBLAS_CHECK(cublasSetMathMode(static_cast<cublasHandle_t>(h_), on ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                         : CUBLAS_DEFAULT_MATH));
}

Blas::~Blas() {
  if (h_) cublasDestroy(static_cast<cublasHandle_t>(h_));
}

void gemm(Blas& blas, TensorType wt, const void* W, size_t row_stride, int64_t rows, int64_t cols, const float* X,
          int64_t n, float* Y, float* workspace, size_t workspace_floats, cudaStream_t stream) {
  constexpr int64_t kMax = 0x7fffffff;
  if (!dequantize_supported(wt) || cols < 1 || rows < 0 || n < 0 || rows > kMax || cols > kMax || n > kMax ||
      workspace_floats < gemm_min_workspace(cols) || !workspace)
    fail_invalid_argument("cuda::gemm: type " + std::string(type_name(wt)) + ", rows " + std::to_string(rows) +
                          ", cols " + std::to_string(cols) + ", n " + std::to_string(n) + ", workspace " +
                          std::to_string(workspace_floats) + " floats break the preconditions");
  if (rows == 0 || n == 0) return;
  const auto h = static_cast<cublasHandle_t>(blas.handle());
  MOE_CUBLAS_CHECK(cublasSetStream(h, stream));
  const int64_t tile = static_cast<int64_t>(workspace_floats / static_cast<size_t>(cols));
  const float one = 1.0f, zero = 0.0f;
  for (int64_t r0 = 0; r0 < rows; r0 += tile) {
    const int64_t tr = rows - r0 < tile ? rows - r0 : tile;
    // Decode rows [r0, r0+tr) to f32, row-major tr x cols (dequantize_rows checks type, cols, alignment).
    dequantize_rows(wt, static_cast<const uint8_t*>(W) + r0 * static_cast<int64_t>(row_stride), row_stride, workspace,
                    tr, cols, stream);
    // Column-major view: the tile is A (cols x tr, lda cols), X is B (cols x n, ldb cols); C = A^T B is
    // tr x n with ldc rows, i.e. Y's columns r0 .. r0+tr of every token row.
    MOE_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(tr), static_cast<int>(n),
                                 static_cast<int>(cols), &one, workspace, static_cast<int>(cols), X,
                                 static_cast<int>(cols), &zero, Y + r0, static_cast<int>(rows)));
  }
}

}  // namespace moe::cuda
