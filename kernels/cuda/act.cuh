// kernels/cuda/act.cuh — the elementwise ops of the FFN and residual stream on the GPU: GLU activations
// (SwiGLU, GeGLU), the sigmoid gate, residual add, and the weighted combine of the routed experts' outputs.
// Thread-safety: stateless launchers; concurrent calls on different streams are fine.
//
// Design notes.
// - Twins: ops::silu_mul / ops::gelu_mul / ops::axpy (moe/kernels/ops.h) and the engine's per-expert axpy
//   loop. add and combine round each product and sum separately in the CPU's order (experts in ascending
//   id, as router.cuh orders them), so they are bit-identical to the CPU; the activations use expf/tanhf
//   (a few ulp from glibc's): tests allow 1e-6 relative.
// - One thread per element, grid-stride: these ops are bandwidth-bound and tiny next to the matvecs.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace moe::cuda {

enum class Glu { Silu, Gelu };  // Silu: g = g*sigmoid(g) * u (SwiGLU); Gelu: tanh-approximated GELU

// g[i] = act(g[i]) * u[i] for i < n. g, u: device memory (g may not alias u). Asynchronous on `stream`.
void glu(Glu kind, float* g, const float* u, int64_t n, cudaStream_t stream = nullptr);

// y[i] += x[i] for i < n (residual add). Device memory; x may equal y.
void add(float* y, const float* x, int64_t n, cudaStream_t stream = nullptr);

// y[i] = 1 / (1 + exp(-x[i])) for i < n (the shared expert's gate; twin ops::sigmoid, a few ulp apart as the
// activations). x may equal y. Device memory.
void sigmoid(const float* x, float* y, int64_t n, cudaStream_t stream = nullptr);

// y[r*n_cols + c] += b[c] for r < n_rows, c < n_cols (a bias on every token's row). Device memory.
// PRECONDITIONS (InvalidArgument otherwise): n_rows, n_cols >= 0, n_rows <= 65535.
void add_rows(float* y, const float* b, int64_t n_rows, int64_t n_cols, cudaStream_t stream = nullptr);

// Row permutations for grouping tokens by expert (prefill): gather y[i] = x[idx[i]], scatter y[idx[i]] = x[i],
// rows of `cols` floats, i < n. idx: device int32, in range (not checked on the device). y must not alias x.
// PRECONDITIONS (InvalidArgument otherwise): n, cols >= 0, n <= 65535.
void gather_rows(const float* x, int64_t cols, const int32_t* idx, int64_t n, float* y, cudaStream_t stream = nullptr);
void scatter_rows(const float* x, int64_t cols, const int32_t* idx, int64_t n, float* y,
                  cudaStream_t stream = nullptr);

// Weighted combine of k expert outputs per token, for t < n_tokens, i < n_embd:
//   out[t*n_embd + i] = (accumulate ? out[..] : 0) + sum_{j<k} w[t*k + j] * e[(t*k + j)*e_stride + i]
// summed in increasing j with separate roundings (the CPU engine's axpy sequence). Jobs whose weight is
// exactly 0 still read e (write zeros there for experts that were skipped). e_stride >= n_embd.
// PRECONDITIONS (InvalidArgument otherwise): k >= 0, n_tokens >= 0, n_embd >= 0. Device memory.
void combine(float* out, const float* e, int64_t e_stride, const float* w, int k, int64_t n_tokens, int64_t n_embd,
             bool accumulate, cudaStream_t stream = nullptr);

}  // namespace moe::cuda
