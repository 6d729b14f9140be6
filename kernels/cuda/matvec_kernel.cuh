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
  int32_t jobs_lo = 0;   // jobs >= jobs_lo repeat job j - jobs_lo with offset_hi (ExpertMatvec)
  size_t offset_hi = 0;
};

inline constexpr int kWarpsPerBlock = 4;  // 128 threads: 4 rows per block, or 1 row of 4 warps

// matvec.cu defines MOE_MATVEC_DECLARE_ONLY: it calls the instances made in matvec_{q,k,float}.cu and
// must not instantiate the kernels again.
#if defined(__CUDACC__) && !defined(MOE_MATVEC_DECLARE_ONLY)
// NB = 1: one token (p.n == 1); NB = kMaxBatch: 1 <= p.n <= kMaxBatch (see lane_dot). P = warps per row
// (dense: warps_per_row(p.rows); experts: 1): a block holds kWarpsPerBlock / P rows.
template <TensorType T, int NB, int P>
__global__ void __launch_bounds__(kWarpsPerBlock * kLanes) matvec_kernel(Params p) {
  static_assert(kWarpsPerBlock % P == 0);
  const int warp = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  const int part = warp % P;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (kWarpsPerBlock / P) + warp / P;
  const int j = blockIdx.y;
  // Whole warps leave together (the shuffles below see full warps), and the P warps of a row together
  // (a row's warps share a block and the conditions below; the barrier is only reached by all of them).
  if (r >= p.rows) return;
  const uint8_t* W = p.w;
  int jx = j;  // the job whose id and input this one uses
  if (p.slots) {
    size_t off = p.offset;
    if (p.jobs_lo > 0 && j >= p.jobs_lo) {
      jx = j - p.jobs_lo;
      off = p.offset_hi;
    }
    const int e = p.ids ? p.ids[jx] : jx;
    if (e < 0 || e >= p.n_slots) return;
    const void* base = p.slots[e];
    if (!base) return;
    W = static_cast<const uint8_t*>(base) + off;
  }
  const float* x = p.x + jx * p.x_job_stride;
  // 16-byte x loads when x_j is 16-byte aligned (the token stride, cols floats, is a multiple of 128 bytes).
  const bool x_vec = (reinterpret_cast<uintptr_t>(x) & 15u) == 0;
  float acc[NB];
  lane_dot<T, NB>(W + r * static_cast<int64_t>(p.row_stride), p.cols / kChunk, x, p.cols, p.n, x_vec, lane, part, P,
                  acc);
  float* y = p.y + j * p.y_job_stride + r;
  if constexpr (P == 1) {
MOE_UNROLL
    for (int t = 0; t < NB; ++t) {
      if (t < p.n) {
        const float v = warp_sum(acc[t]);  // butterfly, the order emulate_matvec_t reproduces
        if (lane == 0) y[t * p.rows] = v;
      }
    }
  } else {
    __shared__ float part_sum[kWarpsPerBlock][NB];
MOE_UNROLL
    for (int t = 0; t < NB; ++t) {
      if (t < p.n) {
        const float v = warp_sum(acc[t]);
        if (lane == 0) part_sum[warp][t] = v;
      }
    }
    __syncthreads();
    if (part == 0 && lane == 0) {
      for (int t = 0; t < p.n; ++t) {
        float v = part_sum[warp][t];
MOE_UNROLL
        for (int q = 1; q < P; ++q) v = __fadd_rn(v, part_sum[warp + q][t]);  // warps in order
        y[t * p.rows] = v;
      }
    }
  }
}

template <TensorType T, int NB>
void launch_nb(const Params& p, int n_jobs, cudaStream_t s) {
  const int P = p.slots ? 1 : warps_per_row(p.rows);  // experts: one warp per row (matvec_impl.cuh)
  const dim3 grid(grid_for(p.rows, static_cast<unsigned>(kWarpsPerBlock / P)), static_cast<unsigned>(n_jobs));
  if (P == kSplit)
    matvec_kernel<T, NB, kSplit><<<grid, kWarpsPerBlock * kLanes, 0, s>>>(p);
  else
    matvec_kernel<T, NB, 1><<<grid, kWarpsPerBlock * kLanes, 0, s>>>(p);
}

template <TensorType T>
void launch(const Params& p, int n_jobs, cudaStream_t s) {
  if (p.n == 1)
    launch_nb<T, 1>(p, n_jobs, s);
  else
    launch_nb<T, kMaxBatch>(p, n_jobs, s);
  MOE_CUDA_CHECK(cudaGetLastError());
}
#else
template <TensorType T>
void launch(const Params& p, int n_jobs, cudaStream_t s);
#endif

#define MOE_MATVEC_INSTANTIATE(T) template void launch<T>(const Params&, int, cudaStream_t);

}  // namespace moe::cuda::mv
