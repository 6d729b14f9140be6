// kernels/cuda/backend.cpp — host half of backend.h: cuBLAS failures become moe::Error; device probe.
// Compiled by the host C++ compiler (moe/error.h uses fmt). Thread-safety: stateless.
#include "backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "moe/error.h"

namespace moe::cuda {

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error so later probes start clean
    return 0;
  }
  return n;
}

void check_cublas(int status, const char* what, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const auto st = static_cast<cublasStatus_t>(status);
  ErrorCode code = ErrorCode::Internal;
  if (st == CUBLAS_STATUS_ALLOC_FAILED) code = ErrorCode::OutOfMemory;
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_ARCH_MISMATCH) code = ErrorCode::Unsupported;
  throw Error(code, std::string("cuBLAS: ") + what + " failed at " + file + ":" + std::to_string(line) + ": " +
                        cublasGetStatusName(st) + " (" + cublasGetStatusString(st) + ")");
}

}  // namespace moe::cuda
