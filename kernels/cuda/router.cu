// kernels/cuda/router.cu — routing kernel (router.cuh). Thread-safety: stateless.
#include <string>

#include "common.cuh"
#include "router.cuh"

namespace moe::cuda {

namespace {

constexpr unsigned kBlock = 128;
constexpr int kMaxK = 64;

// (value, index) argmax across the block; ties (and NaN-free equal values) go to the lower index.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  return bi < 0 || v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(kBlock) route_kernel(RouterParams p, const float* logits, int n_expert, int k,
                                                       int32_t* ids, float* weights) {
  extern __shared__ float sh[];  // n_expert probabilities, then n_expert "taken" flags (as floats)
  float* probs = sh;
  float* taken = sh + n_expert;
  __shared__ float red[32];
  __shared__ float red_v[32];
  __shared__ int red_i[32];
  __shared__ int chosen[kMaxK];
  const float* lg = logits + static_cast<int64_t>(blockIdx.x) * n_expert;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize, nw = blockDim.x / kWarpSize;

  for (int e = threadIdx.x; e < n_expert; e += blockDim.x) {
    probs[e] = lg[e];
    taken[e] = 0.0f;
  }
  __syncthreads();
  if (!p.topk_before_norm) {
    if (p.sigmoid) {
      for (int e = threadIdx.x; e < n_expert; e += blockDim.x) probs[e] = 1.0f / (1.0f + expf(-probs[e]));
    } else {
      float mx = __int_as_float(0xff800000);
      for (int e = threadIdx.x; e < n_expert; e += blockDim.x) mx = fmaxf(mx, probs[e]);
      mx = block_max(mx, red);
      float sum = 0.0f;
      for (int e = threadIdx.x; e < n_expert; e += blockDim.x) {
        const float v = expf(probs[e] - mx);
        probs[e] = v;
        sum += v;
      }
      sum = block_sum(sum, red);
      const float inv = 1.0f / sum;
      for (int e = threadIdx.x; e < n_expert; e += blockDim.x) probs[e] *= inv;
    }
  }
  __syncthreads();
  // Top-k: k rounds of block argmax over the untaken experts.
  for (int j = 0; j < k; ++j) {
    float bv = 0.0f;
    int bi = -1;
    for (int e = threadIdx.x; e < n_expert; e += blockDim.x)
      if (taken[e] == 0.0f && better(probs[e], e, bv, bi)) {
        bv = probs[e];
        bi = e;
      }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (oi >= 0 && better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      red_v[warp] = bv;
      red_i[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float v = red_v[0];
      int i = red_i[0];
      for (int w = 1; w < nw; ++w)
        if (red_i[w] >= 0 && better(red_v[w], red_i[w], v, i)) {
          v = red_v[w];
          i = red_i[w];
        }
      if (i < 0) i = 0;  // only when every candidate is NaN: keep the launch well-defined
      chosen[j] = i;
      taken[i] = 1.0f;
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  // The k-sized tail, sequential as in apply_gating.
  float w[kMaxK];
  int id[kMaxK];
  for (int j = 0; j < k; ++j) {
    id[j] = chosen[j];
    w[j] = probs[chosen[j]];  // raw logits when topk_before_norm
  }
  if (p.topk_before_norm) {
    if (p.sigmoid) {
      for (int j = 0; j < k; ++j) w[j] = 1.0f / (1.0f + expf(-w[j]));
    } else {
      float mx = w[0];
      for (int j = 1; j < k; ++j) mx = fmaxf(mx, w[j]);
      double sum = 0;
      for (int j = 0; j < k; ++j) {
        w[j] = expf(w[j] - mx);
        sum += w[j];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int j = 0; j < k; ++j) w[j] *= inv;
    }
  }
  if (p.renormalize) {
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += w[j];
    if (sum > 0)
      for (int j = 0; j < k; ++j) w[j] = static_cast<float>(w[j] / sum);
  }
  for (int j = 0; j < k; ++j) w[j] *= p.scale;
  for (int a = 1; a < k; ++a)  // ascending expert id
    for (int b = a; b > 0 && id[b] < id[b - 1]; --b) {
      const int ti = id[b];
      id[b] = id[b - 1];
      id[b - 1] = ti;
      const float tw = w[b];
      w[b] = w[b - 1];
      w[b - 1] = tw;
    }
  int32_t* oi = ids + static_cast<int64_t>(blockIdx.x) * k;
  float* ow = weights + static_cast<int64_t>(blockIdx.x) * k;
  for (int j = 0; j < k; ++j) {
    oi[j] = id[j];
    ow[j] = w[j];
  }
}

}  // namespace

void route(const RouterParams& p, const float* logits, int64_t n_tokens, int n_expert, int k, int32_t* ids,
           float* weights, cudaStream_t stream) {
  if (k < 1 || k > n_expert || n_expert > 4096 || k > kMaxK || n_tokens < 0 || n_tokens > 0x7fffffff)
    fail_invalid_argument("cuda::route: k " + std::to_string(k) + ", n_expert " + std::to_string(n_expert) +
                          ", n_tokens " + std::to_string(n_tokens) + " (need 1 <= k <= n_expert <= 4096, k <= 64)");
  if (p.has_bias || p.n_group > 1)
    fail_invalid_argument("cuda::route: selection bias and group-limited top-k are not implemented");
  if (n_tokens == 0) return;
  const size_t shmem = 2 * static_cast<size_t>(n_expert) * sizeof(float);
  route_kernel<<<static_cast<unsigned>(n_tokens), kBlock, shmem, stream>>>(p, logits, n_expert, k, ids, weights);
  MOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace moe::cuda
