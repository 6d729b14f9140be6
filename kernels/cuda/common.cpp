// kernels/cuda/common.cpp — host-only half of common.cuh: CUDA failures and broken launcher
// preconditions become moe::Error. Compiled by the host C++ compiler (moe/error.h uses fmt, which does
// not compile under nvcc). Thread-safety: stateless.
#include <cuda_runtime.h>

#include <string>

#include "common.cuh"
#include "moe/error.h"

namespace moe::cuda {

void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return;
  ErrorCode code = ErrorCode::Internal;
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) code = ErrorCode::Unsupported;
  if (err == cudaErrorMemoryAllocation) code = ErrorCode::OutOfMemory;
  throw Error(code, std::string("CUDA: ") + what + " failed at " + file + ":" + std::to_string(line) + ": " +
                        cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

void fail_invalid_argument(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }

}  // namespace moe::cuda
