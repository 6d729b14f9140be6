// kernels/cuda/norm.cu — RMSNorm kernels (norm.cuh). Thread-safety: stateless.
#include <string>

#include "common.cuh"
#include "norm.cuh"

namespace moe::cuda {

namespace {

constexpr unsigned kBlock = 256;

// One block per row.
__global__ void __launch_bounds__(kBlock) rmsnorm_block_kernel(const float* x, const float* w, float* y, int64_t n,
                                                               float eps) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum(ss, red);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = w ? xr[i] * inv * w[i] : xr[i] * inv;
}

// One block per row with the row held in registers (n <= kBlock * kPer): every load is issued before the
// first use, so the two passes cost one memory latency instead of one per element a thread owns (the loop
// version above: 9.4 us for n = 2048 on an H100). Same per-thread order and block tree: the same bits.
constexpr int kPer = 16;
__global__ void __launch_bounds__(kBlock) rmsnorm_reg_kernel(const float* x, const float* w, float* y, int64_t n,
                                                             float eps) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  float v[kPer];
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kBlock;
    v[j] = i < n ? xr[i] : 0.0f;
  }
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < kPer; ++j)
    if (threadIdx.x + static_cast<int64_t>(j) * kBlock < n) ss = fmaf(v[j], v[j], ss);
  ss = block_sum(ss, red);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kBlock;
    if (i < n) yr[i] = w ? v[j] * inv * w[i] : v[j] * inv;
  }
}

// One warp per row (short rows): 8 rows per 256-thread block.
__global__ void __launch_bounds__(kBlock) rmsnorm_warp_kernel(const float* x, const float* w, float* y, int64_t rows,
                                                              int64_t n, float eps) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (kBlock / kWarpSize) + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (r >= rows) return;
  const float* xr = x + r * n;
  float* yr = y + r * n;
  float ss = 0.0f;
  for (int64_t i = lane; i < n; i += kWarpSize) ss = fmaf(xr[i], xr[i], ss);
  ss = warp_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(n) + eps);
  for (int64_t i = lane; i < n; i += kWarpSize) yr[i] = w ? xr[i] * inv * w[i] : xr[i] * inv;
}

}  // namespace

void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps, cudaStream_t stream) {
  if (rows < 0 || n < 1 || !(eps >= 0.0f))
    fail_invalid_argument("cuda::rmsnorm: rows " + std::to_string(rows) + ", n " + std::to_string(n) + ", eps " +
                          std::to_string(eps) + " (need rows >= 0, n >= 1, eps >= 0)");
  if (rows == 0) return;
  if (n <= 256) {
    rmsnorm_warp_kernel<<<grid_for(rows, kBlock / kWarpSize), kBlock, 0, stream>>>(x, w, y, rows, n, eps);
  } else {
    if (rows > 0x7fffffff) fail_invalid_argument("cuda::rmsnorm: too many rows");
    if (n <= int64_t(kBlock) * kPer)
      rmsnorm_reg_kernel<<<static_cast<unsigned>(rows), kBlock, 0, stream>>>(x, w, y, n, eps);
    else
      rmsnorm_block_kernel<<<static_cast<unsigned>(rows), kBlock, 0, stream>>>(x, w, y, n, eps);
  }
  MOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace moe::cuda
