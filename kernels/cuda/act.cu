// kernels/cuda/act.cu — GLU, residual add and expert combine kernels (act.cuh). Thread-safety: stateless.
#include <string>

#include "act.cuh"
#include "common.cuh"

namespace moe::cuda {

namespace {

constexpr unsigned kBlock = 256;

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kBlock - 1) / kBlock;
  return static_cast<unsigned>(b < 65535 * 16 ? b : 65535 * 16);  // grid-stride beyond that
}

template <Glu K>
__global__ void glu_kernel(float* g, const float* u, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = g[i];
    if constexpr (K == Glu::Silu) {
      g[i] = __fmul_rn(__fdiv_rn(x, __fadd_rn(1.0f, expf(-x))), u[i]);
    } else {
      constexpr float k = 0.7978845608028654f;  // sqrt(2/pi)
      const float inner = __fmul_rn(k, __fadd_rn(x, __fmul_rn(__fmul_rn(__fmul_rn(0.044715f, x), x), x)));
      g[i] = __fmul_rn(__fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, tanhf(inner))), u[i]);
    }
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __fadd_rn(y[i], x[i]);
}

__global__ void sigmoid_kernel(const float* x, float* y, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x[i])));
}

__global__ void add_rows_kernel(float* y, const float* b, int64_t n_cols) {
  float* yr = y + static_cast<int64_t>(blockIdx.y) * n_cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    yr[i] = __fadd_rn(yr[i], b[i]);
}

template <bool Gather>
__global__ void permute_rows_kernel(const float* x, int64_t cols, const int32_t* idx, float* y) {
  const int64_t r = blockIdx.y;
  const float* xr = x + (Gather ? static_cast<int64_t>(idx[r]) : r) * cols;
  float* yr = y + (Gather ? r : static_cast<int64_t>(idx[r])) * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < cols;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    yr[i] = xr[i];
}

__global__ void combine_kernel(float* out, const float* e, int64_t e_stride, const float* w, int k, int64_t n_embd,
                               bool accumulate) {
  const int64_t t = blockIdx.y;
  const float* wt = w + t * k;
  float* ot = out + t * n_embd;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_embd;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = accumulate ? ot[i] : 0.0f;
    for (int j = 0; j < k; ++j) acc = __fadd_rn(acc, __fmul_rn(wt[j], e[(t * k + j) * e_stride + i]));
    ot[i] = acc;
  }
}

}  // namespace

void glu(Glu kind, float* g, const float* u, int64_t n, cudaStream_t stream) {
  if (n < 0) fail_invalid_argument("cuda::glu: n " + std::to_string(n) + " < 0");
  if (n == 0) return;
  if (kind == Glu::Silu)
    glu_kernel<Glu::Silu><<<blocks_for(n), kBlock, 0, stream>>>(g, u, n);
  else
    glu_kernel<Glu::Gelu><<<blocks_for(n), kBlock, 0, stream>>>(g, u, n);
  MOE_CUDA_CHECK(cudaGetLastError());
}

void add(float* y, const float* x, int64_t n, cudaStream_t stream) {
  if (n < 0) fail_invalid_argument("cuda::add: n " + std::to_string(n) + " < 0");
  if (n == 0) return;
  add_kernel<<<blocks_for(n), kBlock, 0, stream>>>(y, x, n);
  MOE_CUDA_CHECK(cudaGetLastError());
}

void sigmoid(const float* x, float* y, int64_t n, cudaStream_t stream) {
  if (n < 0) fail_invalid_argument("cuda::sigmoid: n " + std::to_string(n) + " < 0");
  if (n == 0) return;
  sigmoid_kernel<<<blocks_for(n), kBlock, 0, stream>>>(x, y, n);
  MOE_CUDA_CHECK(cudaGetLastError());
}

void add_rows(float* y, const float* b, int64_t n_rows, int64_t n_cols, cudaStream_t stream) {
  if (n_rows < 0 || n_cols < 0 || n_rows > 65535)
    fail_invalid_argument("cuda::add_rows: n_rows " + std::to_string(n_rows) + ", n_cols " + std::to_string(n_cols));
  if (n_rows == 0 || n_cols == 0) return;
  const unsigned gx = grid_for(n_cols, kBlock) < 1024 ? grid_for(n_cols, kBlock) : 1024;
  add_rows_kernel<<<dim3(gx, static_cast<unsigned>(n_rows)), kBlock, 0, stream>>>(y, b, n_cols);
  MOE_CUDA_CHECK(cudaGetLastError());
}

namespace {
template <bool Gather>
void permute_rows(const char* name, const float* x, int64_t cols, const int32_t* idx, int64_t n, float* y,
                  cudaStream_t stream) {
  if (n < 0 || cols < 0 || n > 65535)
    fail_invalid_argument(std::string("cuda::") + name + ": n " + std::to_string(n) + ", cols " + std::to_string(cols));
  if (n == 0 || cols == 0) return;
  const unsigned gx = grid_for(cols, kBlock) < 1024 ? grid_for(cols, kBlock) : 1024;
  permute_rows_kernel<Gather><<<dim3(gx, static_cast<unsigned>(n)), kBlock, 0, stream>>>(x, cols, idx, y);
  MOE_CUDA_CHECK(cudaGetLastError());
}
}  // namespace

void gather_rows(const float* x, int64_t cols, const int32_t* idx, int64_t n, float* y, cudaStream_t stream) {
  permute_rows<true>("gather_rows", x, cols, idx, n, y, stream);
}

void scatter_rows(const float* x, int64_t cols, const int32_t* idx, int64_t n, float* y, cudaStream_t stream) {
  permute_rows<false>("scatter_rows", x, cols, idx, n, y, stream);
}

void combine(float* out, const float* e, int64_t e_stride, const float* w, int k, int64_t n_tokens, int64_t n_embd,
             bool accumulate, cudaStream_t stream) {
  if (k < 0 || n_tokens < 0 || n_embd < 0 || n_tokens > 65535 || (k > 0 && e_stride < n_embd))
    fail_invalid_argument("cuda::combine: k " + std::to_string(k) + ", n_tokens " + std::to_string(n_tokens) +
                          ", n_embd " + std::to_string(n_embd) + ", e_stride " + std::to_string(e_stride) +
                          " (need k, n_embd >= 0, 0 <= n_tokens <= 65535, e_stride >= n_embd)");
  if (n_tokens == 0 || n_embd == 0) return;
  const dim3 grid(grid_for(n_embd, kBlock) < 4096 ? grid_for(n_embd, kBlock) : 4096, static_cast<unsigned>(n_tokens));
  combine_kernel<<<grid, kBlock, 0, stream>>>(out, e, e_stride, w, k, n_embd, accumulate);
  MOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace moe::cuda
