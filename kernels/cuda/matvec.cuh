// kernels/cuda/matvec.cuh — dequantizing matrix-vector products on the GPU (decode path): dense weights
// (matvec) and routed experts read through a device-side slot table (matvec_experts).
// Thread-safety: stateless launchers; concurrent calls on different streams are fine.
//
// Design notes.
// - Twin: moe::kernels::matvec / matmul (the CPU reference, moe/kernels/matmul.h). The GPU arithmetic is in
//   matvec_impl.cuh as MOE_HD code (chunk decoders that reproduce blocks.h's dequant_block bit for bit,
//   single-rounding FMAs in a fixed order, a fixed butterfly): mv::emulate_matvec runs it on the host and
//   gives the GPU's bits exactly; versus the CPU reference only the summation order differs.
// - 128-thread blocks of 4 warps; one warp per output row, or 4 warps per row for a dense matvec of at
//   most 4096 rows (enough warps in flight for a small matrix; the 4 warp sums are added in a fixed order).
//   matvec_experts always uses one warp per row. Coalesced lanes: lane l decodes elements 4(l%8)..4(l%8)+3
//   of chunk l/8 (+4 per step) of the row with the blocks.h formulas, so a warp reads 4 consecutive
//   chunks' block bytes and 512 consecutive bytes of x (one float4 per lane) per step, and accumulates
//   f32 FMAs. Up to 8 tokens share each decoded slice (weights are read from memory once for all of
//   them); n == 1 has its own lighter instance. Decode is bandwidth/latency-bound: the bytes read and the
//   loads in flight are the cost (see matvec_impl.cuh for measured numbers).
// - Template instances (four kernels per type: n == 1 or n <= 8, times 1 or 4 warps per row; 19 types)
//   are split across matvec_q.cu (32-element blocks), matvec_k.cu (256-element super-blocks) and
//   matvec_float.cu (F32/F16/BF16) so they compile in parallel; matvec.cu holds the argument checks and
//   the type switch.
// - matvec_experts reads each expert's base address from a device-side slot table at run time, so a
//   captured CUDA graph stays valid when the residency manager moves experts: only the table changes. The
//   router's device-side ids (router.cuh) feed it directly, with no host round trip.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "moe/kernels/types.h"

namespace moe::cuda {

inline constexpr int kMatvecMaxBatch = 8;  // tokens per launch

// True when matvec/matvec_experts handle weights of type t (every type traits(t).dequantizable lists).
bool matvec_supported(TensorType t) noexcept;

// y[t*rows + r] = sum_c W[r][c] * x[t*cols + c] for r < rows, t < n.
// PRECONDITIONS (violations throw moe::Error InvalidArgument): matvec_supported(wt); rows, cols >= 0;
// cols a multiple of 32 and of wt's block size; 1 <= n <= kMatvecMaxBatch; row_stride >= row_bytes(wt,
// cols) and W, row_stride aligned to the block struct (4 for F32 and Q8_K, 1 for MXFP4, else 2).
// W, x, y: device memory; y must not alias W or x. Asynchronous on `stream`; launch errors throw
// moe::Error (Internal). Results: see matvec_impl.cuh (f32 FMA accumulation, deterministic).
void matvec(TensorType wt, const void* W, size_t row_stride, int64_t rows, int64_t cols, const float* x, int n,
            float* y, cudaStream_t stream = nullptr);

// Expert-indexed matvec: for each job j < n_jobs, with e = ids ? ids[j] : j (ids read on the device):
//   W_e = (const uint8_t*)slots[e] + offset   (e.g. offset selects the gate, up or down part of a slot)
//   y + j*y_job_stride + t*rows + r  =  sum_c W_e[r][c] * (x + j*x_job_stride)[t*cols + c]
// A job whose e is outside [0, n_slots) or whose slots[e] is null is skipped (its y rows are left
// untouched): that expert is computed elsewhere this step (CPU from the DRAM copy, as the scheduler chose).
// x_job_stride = 0 shares one input among all jobs (gate/up projections); y_job_stride >= n*rows.
struct ExpertMatvec {
  TensorType type = TensorType::F32;
  const void* const* slots = nullptr;  // device: n_slots expert base pointers (device memory) or null
  int32_t n_slots = 0;
  const int32_t* ids = nullptr;        // device: n_jobs expert ids, or null for ids 0..n_jobs-1
  int32_t n_jobs = 0;
  size_t offset = 0;                   // bytes from a slot's base to this matrix's first row
  size_t row_stride = 0;               // bytes between rows
  int64_t rows = 0, cols = 0;
  const float* x = nullptr;            // device
  int64_t x_job_stride = 0;            // floats between jobs' inputs (0 = shared input)
  int n = 1;                           // tokens per job
  float* y = nullptr;                  // device
  int64_t y_job_stride = 0;            // floats between jobs' outputs
  // Two matrices of each expert in one launch (gate and up of a decode step): when jobs_lo > 0, a job
  // j >= jobs_lo is job j - jobs_lo again (same id, same x) with offset_hi instead of offset; its output is
  // still at y + j*y_job_stride. Every job's bits are those of a launch of its own.
  int32_t jobs_lo = 0;
  size_t offset_hi = 0;
};
// PRECONDITIONS as matvec, plus: n_jobs >= 0 (0 is a no-op), n_slots >= 0, offset (and offset_hi) and
// row_stride aligned like W; 0 <= jobs_lo <= n_jobs; every non-null slot (+offset) holds rows rows of
// row_stride bytes. Graph-capturable: the launch reads slots and ids when it runs.
void matvec_experts(const ExpertMatvec& a, cudaStream_t stream = nullptr);

}  // namespace moe::cuda
