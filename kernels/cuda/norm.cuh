// kernels/cuda/norm.cuh — RMSNorm on the GPU: per-token normalisation of the hidden state and the per-head
// q/k norms (Qwen3-MoE, OLMoE), both as "rows of n floats sharing one weight vector".
// Thread-safety: stateless launchers; concurrent calls on different streams are fine.
//
// Design notes.
// - Twin: moe::kernels::ops::rmsnorm (moe/kernels/ops.h). The CPU sums squares in double, sequentially; the
//   GPU sums f32 squares per thread and reduces with a fixed tree (block_sum), then 1/sqrt in f32 from
//   the mean: relative difference ~1e-6, tests allow 1e-5 relative to max|y|.
// - One 256-thread block per row for long rows (hidden state, n in the thousands; up to 4096 the row is held
//   in registers so every load goes out at once); one warp per row when
//   n <= 256 (head_dim rows of the q/k norm: 32+ heads at once, no idle threads).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace moe::cuda {

// y[r*n + i] = x[r*n + i] / sqrt(mean_i(x[r*n+i]^2) + eps) * (w ? w[i] : 1) for r < rows, i < n.
// Per-token RMSNorm: rows = tokens, n = n_embd. Per-head q/k norm: rows = tokens * heads, n = head_dim
// (w = the head_dim weights every head shares). Full q/k norm (QkNorm::Full): rows = tokens, n = the
// whole projection.
// PRECONDITIONS (InvalidArgument otherwise): rows >= 0, n >= 1, eps >= 0. x, y (may alias), w: device
// memory. Asynchronous on `stream`.
void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t n, float eps,
             cudaStream_t stream = nullptr);

}  // namespace moe::cuda
