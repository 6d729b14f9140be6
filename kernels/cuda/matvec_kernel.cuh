// kernels/cuda/matvec_kernel.cuh — internal to the matvec family: the kernel template and the launch
// function each matvec_{q,k,float}.cu instantiates for its types (see matvec.cuh for the design, and
// matvec_impl.cuh for the arithmetic). Included by .cu files only. Thread-safety: stateless.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common.cuh"
#include "matvec_impl.cuh"
#include "moe/kernels/types.h"

namespace moe::cuda::mv {

// One launch: n_jobs matrices (1 for a dense matvec), each rows x cols, n tokens each.
struct Params {
  const uint8_t* w = nullptr;          // dense weights (slots == nullptr)
  const void* const* slots = nullptr;  // expert table (device)
  int32_t n_slots = 0;
  const int32_t* ids = nullptr;
  size_t offset = 0, row_stride = 0;
  int64_t rows = 0, cols = 0;
  const float* x = nullptr;
  int64_t x_job_stride = 0;
  int n = 1;
  float* y = nullptr;
  int64_t y_job_stride = 0;
};

inline constexpr int kWarpsPerBlock = 4;  // 128 threads: 4 rows per block

// matvec.cu defines MOE_MATVEC_DECLARE_ONLY: it calls the instances made in matvec_{q,k,float}.cu and
// must not instantiate the kernels again.
#if defined(__CUDACC__) && !defined(MOE_MATVEC_DECLARE_ONLY)
template <TensorType T>
__global__ void __launch_bounds__(kWarpsPerBlock * kLanes) matvec_kernel(Params p) {
  const int warp = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  const int j = blockIdx.y;
  if (r >= p.rows) return;  // whole warps leave together: the shuffles below see full warps
  const uint8_t* W = p.w;
  if (p.slots) {
    const int e = p.ids ? p.ids[j] : j;
    if (e < 0 || e >= p.n_slots) return;
    const void* base = p.slots[e];
    if (!base) return;
    W = static_cast<const uint8_t*>(base) + p.offset;
  }
  float acc[kMaxBatch];
  lane_dot<T>(W + r * static_cast<int64_t>(p.row_stride), p.cols / kChunk, p.x + j * p.x_job_stride, p.cols, p.n,
              lane, kLanes, acc);
  float* y = p.y + j * p.y_job_stride + r;
MOE_UNROLL
  for (int t = 0; t < kMaxBatch; ++t) {
    if (t < p.n) {
      const float v = warp_sum(acc[t]);  // butterfly, the order emulate_matvec_t reproduces
      if (lane == 0) y[t * p.rows] = v;
    }
  }
}

template <TensorType T>
void launch(const Params& p, int n_jobs, cudaStream_t s) {
  const dim3 grid(grid_for(p.rows, kWarpsPerBlock), static_cast<unsigned>(n_jobs));
  matvec_kernel<T><<<grid, kWarpsPerBlock * kLanes, 0, s>>>(p);
  MOE_CUDA_CHECK(cudaGetLastError());
}
#else
template <TensorType T>
void launch(const Params& p, int n_jobs, cudaStream_t s);
#endif

#define MOE_MATVEC_INSTANTIATE(T) template void launch<T>(const Params&, int, cudaStream_t);

}  // namespace moe::cuda::mv
