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

// ---- device helpers (additions for the op families; only under nvcc) ----
#if defined(__CUDACC__)
namespace moe::cuda {

constexpr int kWarpSize = 32;

// Butterfly sum over the 32 lanes of a warp: every lane ends with the same value, and the order of the
// additions is fixed (lane l adds lane l^16, then l^8, ...), so the result is deterministic.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Block-wide sum / max. PRECONDITIONS: blockDim.x is a multiple of 32 and <= 1024; every thread of the
// block calls it (it synchronises); red is __shared__ scratch of 32 floats. Every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize, nw = blockDim.x / kWarpSize;
  v = warp_sum(v);
  __syncthreads();  // red may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : 0.0f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* red) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize, nw = blockDim.x / kWarpSize;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = lane < nw ? red[lane] : __int_as_float(0xff800000);  // -inf
  return warp_max(v);
}

}  // namespace moe::cuda
#endif

#define MOE_CUDA_CHECK(expr) ::moe::cuda::check((expr), #expr, __FILE__, __LINE__)
