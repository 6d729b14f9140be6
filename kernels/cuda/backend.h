// kernels/cuda/backend.h — host-side helpers of the CUDA kernels that need moe::Error (and so fmt, which
// nvcc cannot compile): cuBLAS status checks and a non-throwing device probe. Implemented in backend.cpp
// (host compiler). Thread-safety: stateless.
#pragma once

namespace moe::cuda {

// Number of usable CUDA devices; 0 when the driver or runtime reports none or fails (no throw). The
// backend uses it to fall back to the CPU with a one-line notice.
int device_count() noexcept;

// Throws moe::Error (OutOfMemory for CUBLAS_STATUS_ALLOC_FAILED, Unsupported for NOT_SUPPORTED /
// ARCH_MISMATCH, else Internal) naming `what`, file:line and cuBLAS's status name, when status != 0.
void check_cublas(int status, const char* what, const char* file, int line);

}  // namespace moe::cuda

#define MOE_CUBLAS_CHECK(expr) ::moe::cuda::check_cublas(static_cast<int>(expr), #expr, __FILE__, __LINE__)
