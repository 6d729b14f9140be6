// kernels/cuda/rope.cuh — rotary position embedding on the GPU: Normal and NeoX pairing, frequency base
// and linear scale, YaRN ramp and attention factor; positions read from device memory.
// Thread-safety: stateless launchers; concurrent calls on different streams are fine.
//
// Design notes.
// - Twin: moe::kernels::ops::rope_cos_sin + rope_apply (moe/kernels/ops.h), same RopeParams. The YaRN
//   correction dims and the attention-temperature factor are computed on the host with ops.cpp's
//   formulas; each block computes its token's (cos, sin) table into shared memory in double, as the CPU
//   does, then rotates every head with single-rounding mul/sub/add (no FMA contraction), so a rotated
//   value equals the CPU's whenever the device's double cos/sin round to the same float (tests: 2e-6 abs
//   on unit-scale inputs at positions up to 1e5).
// - Positions are a device array (one per token), so a captured decode graph needs no re-capture as the
//   position advances: the host writes the new position with a memcpy node.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "moe/kernels/ops.h"

namespace moe::cuda {

// (The engine calls rope_table() below; this per-block-table form stays as a tested kernel for any RopeParams
// without a precomputed table.)
// Rotates, for each token t < n_tokens, n_heads heads of head_dim floats at x + t*token_stride
// (head h at + h*head_dim), with the table ops::rope_cos_sin(p, pos[t]) would give.
// PRECONDITIONS (InvalidArgument otherwise): p.n_rot even, 0 <= p.n_rot <= head_dim, p.n_rot <= 2048;
// n_tokens, n_heads >= 0; token_stride >= n_heads*head_dim. x, pos: device memory (pos: n_tokens int32).
// Asynchronous on `stream`; graph-capturable.
void rope(const kernels::ops::RopeParams& p, const int32_t* pos, float* x, int64_t n_tokens, int n_heads,
          int head_dim, int64_t token_stride, cudaStream_t stream = nullptr);

// The same rotation with the (cos, sin) pairs read from a table built on the host: table + pos * n_rot holds
// ops::rope_cos_sin(p, pos) for pos < n_ctx (rope_table_host), so every value is the CPU's bit for bit and the
// kernel does no trigonometry (the per-token table above costs ~7 us per call on an H100, in double). One
// launch rotates two tensors (q with n_heads_a heads, k with n_heads_b; b may be null) of the same tokens.
// Positions outside [0, n_ctx) are clamped into it. PRECONDITIONS as rope (for each tensor), n_ctx >= 1.
void rope_table(const float* table, int n_rot, bool neox, int n_ctx, const int32_t* pos, int64_t n_tokens,
                float* xa, int n_heads_a, int64_t stride_a, float* xb, int n_heads_b, int64_t stride_b, int head_dim,
                cudaStream_t stream = nullptr);
// n_ctx rows of p.n_rot floats: row pos = ops::rope_cos_sin(p, pos).
std::vector<float> rope_table_host(const kernels::ops::RopeParams& p, int n_ctx);

}  // namespace moe::cuda
