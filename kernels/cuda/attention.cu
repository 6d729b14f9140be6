// kernels/cuda/attention.cu — decode attention and KV store kernels (attention.cuh). Thread-safety: stateless.
#include <string>

#include "attention.cuh"
#include "common.cuh"
#include "moe/kernels/half.h"

namespace moe::cuda {

namespace {

constexpr unsigned kBlock = 128;
constexpr int kWarps = kBlock / kWarpSize;

__global__ void __launch_bounds__(kBlock) attention_kernel(kernels::ops::AttnShape s, const float* q,
                                                           const uint16_t* k_cache, const uint16_t* v_cache,
                                                           int n_ctx, int n_kv_host, const int32_t* d_n_kv,
                                                           float* out, float* scores) {
  __shared__ float red[32];
  const int h = blockIdx.x;
  const int kvh = h / (s.n_head / s.n_head_kv);
  int n_kv = d_n_kv ? *d_n_kv : n_kv_host;
  n_kv = n_kv < 1 ? 1 : (n_kv > n_ctx ? n_ctx : n_kv);
  const int64_t k_stride = static_cast<int64_t>(s.n_head_kv) * s.hd_k;
  const int64_t v_stride = static_cast<int64_t>(s.n_head_kv) * s.hd_v;
  const float* qh = q + static_cast<int64_t>(h) * s.hd_k;
  float* sc = scores + static_cast<int64_t>(h) * n_ctx;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;

  // Pass 1: scores, one warp per position.
  for (int t = warp; t < n_kv; t += kWarps) {
    const uint16_t* kt = k_cache + t * k_stride + static_cast<int64_t>(kvh) * s.hd_k;
    float acc = 0.0f;
    for (int d = lane; d < s.hd_k; d += kWarpSize) acc = fmaf(qh[d], kernels::fp16_to_f32(kt[d]), acc);
    acc = warp_sum(acc);
    if (lane == 0) sc[t] = acc * s.scale;
  }
  __syncthreads();
  // Pass 2: max-subtracted exponentials and their sum.
  float mx = __int_as_float(0xff800000);
  for (int t = threadIdx.x; t < n_kv; t += blockDim.x) mx = fmaxf(mx, sc[t]);
  mx = block_max(mx, red);
  float sum = 0.0f;
  for (int t = threadIdx.x; t < n_kv; t += blockDim.x) {
    const float e = expf(sc[t] - mx);
    sc[t] = e;
    sum += e;
  }
  sum = block_sum(sum, red);  // synchronises: every sc[t] is written before pass 3 reads it
  const float inv = 1.0f / sum;
  // Pass 3: weighted values, thread d owns output dimension d.
  float* oh = out + static_cast<int64_t>(h) * s.hd_v;
  for (int d = threadIdx.x; d < s.hd_v; d += blockDim.x) {
    const uint16_t* vd = v_cache + static_cast<int64_t>(kvh) * s.hd_v + d;
    float acc = 0.0f;
    for (int t = 0; t < n_kv; ++t) acc = fmaf(sc[t], kernels::fp16_to_f32(vd[t * v_stride]), acc);
    oh[d] = acc * inv;
  }
}

__global__ void kv_store_kernel(const float* k, const float* v, uint16_t* k_cache, uint16_t* v_cache, int64_t k_row,
                                int64_t v_row, const int32_t* d_pos, int n_ctx) {
  const int pos = *d_pos;
  if (pos < 0 || pos >= n_ctx) return;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < k_row) k_cache[pos * k_row + i] = kernels::f32_to_fp16(k[i]);
  if (i < v_row) v_cache[pos * v_row + i] = kernels::f32_to_fp16(v[i]);
}

}  // namespace

void attention_decode(const kernels::ops::AttnShape& s, const float* q, const uint16_t* k_cache,
                      const uint16_t* v_cache, int n_ctx, int n_kv, const int32_t* d_n_kv, float* out, float* scores,
                      cudaStream_t stream) {
  if (s.n_head < 1 || s.n_head_kv < 1 || s.n_head % s.n_head_kv != 0 || s.hd_k < 1 || s.hd_v < 1 || n_ctx < 1 ||
      (!d_n_kv && (n_kv < 1 || n_kv > n_ctx)))
    fail_invalid_argument("cuda::attention_decode: n_head " + std::to_string(s.n_head) + ", n_head_kv " +
                          std::to_string(s.n_head_kv) + ", hd_k " + std::to_string(s.hd_k) + ", hd_v " +
                          std::to_string(s.hd_v) + ", n_ctx " + std::to_string(n_ctx) + ", n_kv " +
                          std::to_string(n_kv) + " break the preconditions");
  attention_kernel<<<static_cast<unsigned>(s.n_head), kBlock, 0, stream>>>(s, q, k_cache, v_cache, n_ctx, n_kv, d_n_kv,
                                                                           out, scores);
  MOE_CUDA_CHECK(cudaGetLastError());
}

void kv_store(const float* k, const float* v, uint16_t* k_cache, uint16_t* v_cache, int64_t k_row, int64_t v_row,
              const int32_t* d_pos, int n_ctx, cudaStream_t stream) {
  if (k_row < 0 || v_row < 0 || n_ctx < 1)
    fail_invalid_argument("cuda::kv_store: k_row " + std::to_string(k_row) + ", v_row " + std::to_string(v_row) +
                          ", n_ctx " + std::to_string(n_ctx));
  const int64_t n = k_row > v_row ? k_row : v_row;
  if (n == 0) return;
  kv_store_kernel<<<grid_for(n, 256), 256, 0, stream>>>(k, v, k_cache, v_cache, k_row, v_row, d_pos, n_ctx);
  MOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace moe::cuda
