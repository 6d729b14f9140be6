// kernels/cuda/rope.cu — RoPE kernel (rope.cuh). Thread-safety: stateless.
#include <algorithm>
#include <cmath>
#include <string>

#include "common.cuh"
#include "moe/kernels/half.h"
#include "rope.cuh"

namespace moe::cuda {

namespace {

using kernels::ops::RopeMode;
using kernels::ops::RopeParams;

// Everything the kernel needs, with the YaRN constants resolved on the host.
struct RopeArgs {
  int mode_neox;
  int n_rot;
  float freq_base, freq_scale, ext_factor;
  float low, high;  // YaRN correction dims (used when ext_factor != 0)
  float mscale;     // attn_factor times the YaRN temperature
};

// ops.cpp's yarn_corr_dim, same float arithmetic.
float yarn_corr_dim(int n_rot, float orig_ctx, float n_rotations, float base) {
  return static_cast<float>(n_rot) * std::log(orig_ctx / (n_rotations * 2.0f * static_cast<float>(M_PI))) /
         (2.0f * std::log(base));
}

constexpr unsigned kBlock = 256;

// One block per token: the (cos, sin) table in shared memory, then every (head, pair) of the token.
__global__ void __launch_bounds__(kBlock) rope_kernel(RopeArgs a, const int32_t* pos, float* x, int n_heads,
                                                      int head_dim, int64_t token_stride) {
  extern __shared__ float cs[];  // n_rot floats: (cos, sin) pairs
  const int half = a.n_rot / 2;
  const double p = static_cast<double>(pos[blockIdx.x]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const double inv_freq = pow(static_cast<double>(a.freq_base), -2.0 * i / a.n_rot);
    const double theta_extrap = p * inv_freq;
    const double theta_interp = a.freq_scale * theta_extrap;
    double theta = theta_interp;
    if (a.ext_factor != 0.0f) {
      const float y = (static_cast<float>(i) - a.low) / fmaxf(0.001f, a.high - a.low);
      const float ramp = 1.0f - fminf(1.0f, fmaxf(0.0f, y));
      const double mix = static_cast<double>(ramp) * a.ext_factor;
      theta = __dadd_rn(__dmul_rn(theta_interp, 1.0 - mix), __dmul_rn(theta_extrap, mix));
    }
    cs[2 * i] = __fmul_rn(static_cast<float>(cos(theta)), a.mscale);
    cs[2 * i + 1] = __fmul_rn(static_cast<float>(sin(theta)), a.mscale);
  }
  __syncthreads();
  float* xt = x + blockIdx.x * token_stride;
  for (int k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
    const int h = k / half, i = k % half;
    float* v = xt + static_cast<int64_t>(h) * head_dim;
    const float c = cs[2 * i], s = cs[2 * i + 1];
    const int ia = a.mode_neox ? i : 2 * i;
    const int ib = a.mode_neox ? i + half : 2 * i + 1;
    const float x0 = v[ia], x1 = v[ib];
    // Separate roundings, as the CPU twin (compiled without FMA contraction) computes them.
    v[ia] = kernels::sub_rn(kernels::mul_rn(x0, c), kernels::mul_rn(x1, s));
    v[ib] = kernels::add_rn(kernels::mul_rn(x0, s), kernels::mul_rn(x1, c));
  }
}

__global__ void __launch_bounds__(kBlock) rope_table_kernel(const float* table, int n_rot, int neox, int n_ctx,
                                                            const int32_t* pos, float* xa, int na, int64_t sa,
                                                            float* xb, int nb, int64_t sb, int head_dim) {
  const int half = n_rot / 2;
  int p = pos[blockIdx.x];
  p = p < 0 ? 0 : (p >= n_ctx ? n_ctx - 1 : p);
  const float* cs = table + static_cast<int64_t>(p) * n_rot;
  for (int k = threadIdx.x; k < (na + nb) * half; k += blockDim.x) {
    const int h = k / half, i = k % half;
    float* v = h < na ? xa + blockIdx.x * sa + static_cast<int64_t>(h) * head_dim
                      : xb + blockIdx.x * sb + static_cast<int64_t>(h - na) * head_dim;
    const float c = cs[2 * i], s = cs[2 * i + 1];
    const int ia = neox ? i : 2 * i;
    const int ib = neox ? i + half : 2 * i + 1;
    const float x0 = v[ia], x1 = v[ib];
    v[ia] = kernels::sub_rn(kernels::mul_rn(x0, c), kernels::mul_rn(x1, s));
    v[ib] = kernels::add_rn(kernels::mul_rn(x0, s), kernels::mul_rn(x1, c));
  }
}

}  // namespace

void rope_table(const float* table, int n_rot, bool neox, int n_ctx, const int32_t* pos, int64_t n_tokens,
                float* xa, int n_heads_a, int64_t stride_a, float* xb, int n_heads_b, int64_t stride_b, int head_dim,
                cudaStream_t stream) {
  if (!xb) n_heads_b = 0;
  if (n_rot < 0 || n_rot % 2 != 0 || n_rot > head_dim || n_tokens < 0 || n_tokens > 0x7fffffff || n_heads_a < 0 ||
      n_heads_b < 0 || n_ctx < 1 || stride_a < static_cast<int64_t>(n_heads_a) * head_dim ||
      (xb && stride_b < static_cast<int64_t>(n_heads_b) * head_dim))
    fail_invalid_argument("cuda::rope_table: n_rot " + std::to_string(n_rot) + ", head_dim " +
                          std::to_string(head_dim) + ", heads " + std::to_string(n_heads_a) + "+" +
                          std::to_string(n_heads_b) + ", n_tokens " + std::to_string(n_tokens) + ", n_ctx " +
                          std::to_string(n_ctx) + " break the preconditions");
  if (n_tokens == 0 || n_heads_a + n_heads_b == 0 || n_rot == 0) return;
  rope_table_kernel<<<static_cast<unsigned>(n_tokens), kBlock, 0, stream>>>(
      table, n_rot, neox ? 1 : 0, n_ctx, pos, xa, n_heads_a, stride_a, xb, n_heads_b, stride_b, head_dim);
  MOE_CUDA_CHECK(cudaGetLastError());
}

std::vector<float> rope_table_host(const RopeParams& p, int n_ctx) {
  std::vector<float> t(static_cast<size_t>(n_ctx) * static_cast<size_t>(p.n_rot));
  for (int pos = 0; pos < n_ctx; ++pos)
    kernels::ops::rope_cos_sin(p, pos, t.data() + static_cast<size_t>(pos) * p.n_rot);
  return t;
}

void rope(const RopeParams& p, const int32_t* pos, float* x, int64_t n_tokens, int n_heads, int head_dim,
          int64_t token_stride, cudaStream_t stream) {
  if (p.n_rot < 0 || p.n_rot % 2 != 0 || p.n_rot > head_dim || p.n_rot > 2048 || n_tokens < 0 || n_heads < 0 ||
      token_stride < static_cast<int64_t>(n_heads) * head_dim || n_tokens > 0x7fffffff)
    fail_invalid_argument("cuda::rope: n_rot " + std::to_string(p.n_rot) + ", head_dim " + std::to_string(head_dim) +
                          ", n_heads " + std::to_string(n_heads) + ", n_tokens " + std::to_string(n_tokens) +
                          ", token_stride " + std::to_string(token_stride) + " break the preconditions");
  if (p.freq_factors)  // LongRoPE factors live in host memory and the kernel has no such term
    fail_invalid_argument("cuda::rope: LongRoPE frequency factors are not supported on the GPU");
  if (n_tokens == 0 || n_heads == 0 || p.n_rot == 0) return;
  RopeArgs a{};
  a.mode_neox = p.mode == RopeMode::NeoX ? 1 : 0;
  a.n_rot = p.n_rot;
  a.freq_base = p.freq_base;
  a.freq_scale = p.freq_scale;
  a.ext_factor = p.ext_factor;
  a.mscale = p.attn_factor;
  if (p.ext_factor != 0.0f) {  // as ops::rope_cos_sin
    const float ctx = p.orig_ctx > 0 ? p.orig_ctx : 4096.0f;
    a.low = std::max(0.0f, std::floor(yarn_corr_dim(p.n_rot, ctx, p.beta_fast, p.freq_base)));
    a.high = std::min(static_cast<float>(p.n_rot - 1), std::ceil(yarn_corr_dim(p.n_rot, ctx, p.beta_slow, p.freq_base)));
    a.mscale *= 1.0f + 0.1f * std::log(1.0f / p.freq_scale);
  }
  rope_kernel<<<static_cast<unsigned>(n_tokens), kBlock, p.n_rot * sizeof(float), stream>>>(a, pos, x, n_heads, head_dim,
                                                                                           token_stride);
  MOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace moe::cuda
