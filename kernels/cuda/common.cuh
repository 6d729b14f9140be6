// kernels/cuda/common.cuh — what every CUDA op family shares: the error check that turns a failed CUDA
// call into moe::Error (an environment error: no device, out of memory, launch failure), and small
// launch helpers. Thread-safety: stateless.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace moe::cuda {

// Defined in common.cpp (compiled by the host compiler: moe/error.h pulls in fmt, which nvcc rejects).
// Throws moe::Error naming `what` (the failed expression), file:line and CUDA's message when err is not
// cudaSuccess. Codes: no device / driver too old -> Unsupported, allocation -> OutOfMemory, else Internal.
void check(cudaError_t err, const char* what, const char* file, int line);
// Throws moe::Error (InvalidArgument) with `msg`: a caller broke a launcher's precondition.
[[noreturn]] void fail_invalid_argument(const std::string& msg);

// Blocks of `threads` needed to cover n work items.
inline unsigned grid_for(int64_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace moe::cuda

#define MOE_CUDA_CHECK(expr) ::moe::cuda::check((expr), #expr, __FILE__, __LINE__)
