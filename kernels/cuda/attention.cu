// kernels/cuda/attention.cu — decode and batched attention and KV store kernels (attention.cuh).
// Thread-safety: stateless.
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

constexpr int kTile = 64;   // positions per tile of the online softmax
constexpr int kMaxV = 4;    // value dimensions per thread: hd_v <= kBlock * kMaxV

// Block (h, t, split): query head h of token t over its split's positions, online softmax in tiles.
__global__ void __launch_bounds__(kBlock) attention_online_kernel(kernels::ops::AttnShape s, const float* q,
                                                                  const uint16_t* k_cache, const uint16_t* v_cache,
                                                                  int n_ctx, const int32_t* d_n_kv, int n_split,
                                                                  float* out, float* partials) {
  extern __shared__ float smem[];
  float* qs = smem;            // hd_k
  float* ps = smem + s.hd_k;   // kTile scores, then probabilities
  const int h = blockIdx.x, t = blockIdx.y, sp = blockIdx.z;
  const int kvh = h / (s.n_head / s.n_head_kv);
  int n_kv = d_n_kv[t];
  n_kv = n_kv < 1 ? 1 : (n_kv > n_ctx ? n_ctx : n_kv);
  const int per = (n_kv + n_split - 1) / n_split;
  const int p0 = sp * per, p1 = min(n_kv, p0 + per);
  const int64_t k_stride = static_cast<int64_t>(s.n_head_kv) * s.hd_k;
  const int64_t v_stride = static_cast<int64_t>(s.n_head_kv) * s.hd_v;
  const float* qh = q + (static_cast<int64_t>(t) * s.n_head + h) * s.hd_k;
  for (int i = threadIdx.x; i < s.hd_k; i += blockDim.x) qs[i] = qh[i];
  __syncthreads();
  const uint16_t* kb = k_cache + static_cast<int64_t>(kvh) * s.hd_k;
  const uint16_t* vb = v_cache + static_cast<int64_t>(kvh) * s.hd_v;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  float m = __int_as_float(0xff800000), l = 0.0f;
  float acc[kMaxV];
#pragma unroll
  for (int r = 0; r < kMaxV; ++r) acc[r] = 0.0f;
  for (int base = p0; base < p1; base += kTile) {
    const int nt = min(kTile, p1 - base);
    for (int j = warp; j < nt; j += kWarps) {
      const uint16_t* kt = kb + static_cast<int64_t>(base + j) * k_stride;
      float d = 0.0f;
      for (int i = lane; i < s.hd_k; i += kWarpSize) d = fmaf(qs[i], kernels::fp16_to_f32(kt[i]), d);
      d = warp_sum(d);
      if (lane == 0) ps[j] = d * s.scale;
    }
    __syncthreads();
    float mt = m;
    for (int j = 0; j < nt; ++j) mt = fmaxf(mt, ps[j]);
    const float corr = expf(m - mt);  // 0 on the first tile (m = -inf)
    __syncthreads();                  // every thread has read the scores
    for (int j = threadIdx.x; j < nt; j += blockDim.x) ps[j] = expf(ps[j] - mt);
    __syncthreads();
    float sum = 0.0f;
    for (int j = 0; j < nt; ++j) sum += ps[j];
    l = l * corr + sum;
#pragma unroll
    for (int r = 0; r < kMaxV; ++r) {
      const int d = threadIdx.x + r * kBlock;
      if (d < s.hd_v) {
        const uint16_t* vd = vb + static_cast<int64_t>(base) * v_stride + d;
        float a = acc[r] * corr;
#pragma unroll 8
        for (int j = 0; j < nt; ++j) a = fmaf(ps[j], kernels::fp16_to_f32(vd[j * v_stride]), a);
        acc[r] = a;
      }
    }
    m = mt;
    __syncthreads();  // ps is rewritten by the next tile
  }
  if (n_split == 1) {
    float* oh = out + (static_cast<int64_t>(t) * s.n_head + h) * s.hd_v;
    const float inv = 1.0f / l;
#pragma unroll
    for (int r = 0; r < kMaxV; ++r) {
      const int d = threadIdx.x + r * kBlock;
      if (d < s.hd_v) oh[d] = acc[r] * inv;
    }
    return;
  }
  float* pp = partials + ((static_cast<int64_t>(t) * s.n_head + h) * n_split + sp) * (s.hd_v + 2);
  if (threadIdx.x == 0) {
    pp[0] = m;  // -inf for an empty split (l = 0, values 0)
    pp[1] = l;
  }
#pragma unroll
  for (int r = 0; r < kMaxV; ++r) {
    const int d = threadIdx.x + r * kBlock;
    if (d < s.hd_v) pp[2 + d] = acc[r];
  }
}

// Block (h, t): merges the n_split partials of head h, token t.
__global__ void __launch_bounds__(kBlock) attention_merge_kernel(kernels::ops::AttnShape s, int n_split,
                                                                 const float* partials, float* out) {
  const int h = blockIdx.x, t = blockIdx.y;
  const float* pp = partials + (static_cast<int64_t>(t) * s.n_head + h) * n_split * (s.hd_v + 2);
  float mx = __int_as_float(0xff800000);
  for (int i = 0; i < n_split; ++i) mx = fmaxf(mx, pp[i * (s.hd_v + 2)]);
  float l = 0.0f;
  for (int i = 0; i < n_split; ++i) {
    const float* pi = pp + i * (s.hd_v + 2);
    if (pi[1] > 0.0f) l += pi[1] * expf(pi[0] - mx);
  }
  const float inv = 1.0f / l;
  float* oh = out + (static_cast<int64_t>(t) * s.n_head + h) * s.hd_v;
  for (int d = threadIdx.x; d < s.hd_v; d += blockDim.x) {
    float a = 0.0f;
    for (int i = 0; i < n_split; ++i) {
      const float* pi = pp + i * (s.hd_v + 2);
      if (pi[1] > 0.0f) a = fmaf(pi[2 + d], expf(pi[0] - mx), a);
    }
    oh[d] = a * inv;
  }
}

__global__ void kv_store_tokens_kernel(const float* k, const float* v, uint16_t* k_cache, uint16_t* v_cache,
                                       int64_t k_row, int64_t v_row, const int32_t* d_pos, int n_ctx) {
  const int t = blockIdx.y;
  const int pos = d_pos[t];
  if (pos < 0 || pos >= n_ctx) return;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < k_row) k_cache[pos * k_row + i] = kernels::f32_to_fp16(k[t * k_row + i]);
  if (i < v_row) v_cache[pos * v_row + i] = kernels::f32_to_fp16(v[t * v_row + i]);
}

}  // namespace

void attention(const kernels::ops::AttnShape& s, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
               int n_ctx, const int32_t* d_n_kv, int n_tokens, float* out, int n_split, float* partials,
               cudaStream_t stream) {
  if (s.n_head < 1 || s.n_head_kv < 1 || s.n_head % s.n_head_kv != 0 || s.hd_k < 1 || s.hd_v < 1 ||
      s.hd_v > kBlock * kMaxV || s.hd_k > 1024 || n_ctx < 1 || !d_n_kv || n_tokens < 1 || n_tokens > 65535 ||
      n_split < 1 || n_split > 64 || (n_split > 1 && !partials) || s.softcap != 0.0f)
    fail_invalid_argument("cuda::attention: n_head " + std::to_string(s.n_head) + ", n_head_kv " +
                          std::to_string(s.n_head_kv) + ", hd_k " + std::to_string(s.hd_k) + ", hd_v " +
                          std::to_string(s.hd_v) + ", n_ctx " + std::to_string(n_ctx) + ", n_tokens " +
                          std::to_string(n_tokens) + ", n_split " + std::to_string(n_split) +
                          " break the preconditions");
  const dim3 grid(static_cast<unsigned>(s.n_head), static_cast<unsigned>(n_tokens), static_cast<unsigned>(n_split));
  const size_t smem = (static_cast<size_t>(s.hd_k) + kTile) * sizeof(float);
  attention_online_kernel<<<grid, kBlock, smem, stream>>>(s, q, k_cache, v_cache, n_ctx, d_n_kv, n_split, out,
                                                          partials);
  MOE_CUDA_CHECK(cudaGetLastError());
  if (n_split > 1) {
    attention_merge_kernel<<<dim3(static_cast<unsigned>(s.n_head), static_cast<unsigned>(n_tokens)), kBlock, 0,
                             stream>>>(s, n_split, partials, out);
    MOE_CUDA_CHECK(cudaGetLastError());
  }
}

void kv_store_tokens(const float* k, const float* v, uint16_t* k_cache, uint16_t* v_cache, int64_t k_row,
                     int64_t v_row, const int32_t* d_pos, int n_tokens, int n_ctx, cudaStream_t stream) {
  if (k_row < 0 || v_row < 0 || n_ctx < 1 || n_tokens < 0 || n_tokens > 65535)
    fail_invalid_argument("cuda::kv_store_tokens: k_row " + std::to_string(k_row) + ", v_row " +
                          std::to_string(v_row) + ", n_tokens " + std::to_string(n_tokens) + ", n_ctx " +
                          std::to_string(n_ctx));
  const int64_t n = k_row > v_row ? k_row : v_row;
  if (n == 0 || n_tokens == 0) return;
  kv_store_tokens_kernel<<<dim3(grid_for(n, 256), static_cast<unsigned>(n_tokens)), 256, 0, stream>>>(
      k, v, k_cache, v_cache, k_row, v_row, d_pos, n_ctx);
  MOE_CUDA_CHECK(cudaGetLastError());
}

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
