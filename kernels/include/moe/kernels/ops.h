// moe/kernels/ops.h — the non-matmul CPU ops of one transformer step: RMSNorm, RoPE (normal and
// NeoX, frequency base and scale, YaRN), softmax, GLU activations (SiLU, GELU, gpt-oss's clamped
// SwiGLU), top-k, f16 conversion and grouped-query attention over an f16 KV cache (causal, optionally
// windowed and with attention sinks). These are the scalar reference (also what the CPU
// engine runs: none of them is bandwidth-bound the way expert matvecs are).
// Pure functions over caller-owned buffers; no allocation, no global state; thread-safe.
// Layouts are row-major; "n" counts float elements.
#pragma once
#include <cstddef>
#include <cstdint>

namespace moe::kernels::ops {

// ---- f16 (IEEE binary16, stored as its bit pattern) ----
float f16_to_f32(uint16_t h) noexcept;
uint16_t f32_to_f16(float f) noexcept;  // round to nearest even; overflow -> inf; NaN kept
void f32_to_f16_row(const float* src, uint16_t* dst, int64_t n) noexcept;
void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n) noexcept;

// ---- normalisation ----
// y[i] = x[i] / sqrt(mean(x^2) + eps) * (w ? w[i] : 1). x and y may alias.
void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) noexcept;
// LayerNorm: y[i] = (x[i] - mean(x)) / sqrt(var(x) + eps) * (w ? w[i] : 1) + (b ? b[i] : 0), with the
// population variance. x and y may alias.
void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps) noexcept;

// ---- RoPE ----
// How a head's rotated dimensions are paired: Normal pairs (2i, 2i+1) (Llama/Mixtral as GGUF stores
// them); NeoX pairs (i, i + n_rot/2) (Qwen2/3-MoE, OLMoE).
enum class RopeMode { Normal, NeoX };
struct RopeParams {
  RopeMode mode = RopeMode::Normal;
  int n_rot = 0;               // rotated dims per head (even, <= head_dim); the rest pass through
  float freq_base = 10000.0f;  // theta_i = pos * base^(-2i/n_rot)
  float freq_scale = 1.0f;     // linear position interpolation factor (1 = off)
  // YaRN (arXiv:2309.00071). ext_factor = 0 disables the ramp; attn_factor scales cos/sin.
  float ext_factor = 0.0f;
  float attn_factor = 1.0f;
  float beta_fast = 32.0f, beta_slow = 1.0f;
  float orig_ctx = 0.0f;  // original training context (YaRN correction dims); 0 = unused
  // LongRoPE (Phi-3): n_rot/2 divisors of the pair frequencies (theta_i / freq_factors[i], before any
  // interpolation), or nullptr. Host memory: the CPU twin only.
  const float* freq_factors = nullptr;
};
// Writes n_rot/2 (cos, sin) pairs for position pos into cs[0 .. n_rot) (interleaved cos, sin).
void rope_cos_sin(const RopeParams& p, int64_t pos, float* cs) noexcept;
// Rotates n_heads heads of head_dim floats each, stored contiguously in x, with the table from
// rope_cos_sin for the token's position.
void rope_apply(const RopeParams& p, const float* cs, float* x, int n_heads, int head_dim) noexcept;

// ---- elementwise ----
// In place: x = exp(x - max) / sum. n >= 1.
void softmax(float* x, int64_t n) noexcept;
inline float sigmoid(float x) noexcept;
// g[i] = silu(g[i]) * u[i]
void silu_mul(float* g, const float* u, int64_t n) noexcept;
// g[i] = gelu(g[i]) * u[i]  (tanh approximation)
void gelu_mul(float* g, const float* u, int64_t n) noexcept;
// gpt-oss's clamped SwiGLU ("swiglu-oai"): with x = min(g[i], limit) and y = clamp(u[i], -limit, limit),
// g[i] = x * sigmoid(alpha * x) * (y + 1). gpt-oss uses alpha = 1.702, limit = 7.
inline constexpr float kSwigluOaiAlpha = 1.702f, kSwigluOaiLimit = 7.0f;
void swiglu_oai_mul(float* g, const float* u, int64_t n, float alpha = kSwigluOaiAlpha,
                    float limit = kSwigluOaiLimit) noexcept;
// y[i] += a * x[i]
void axpy(float a, const float* x, float* y, int64_t n) noexcept;

// ---- selection ----
// The indices of the k largest values of x[0..n) in descending order of value; ties go to the lower
// index (so the result is deterministic). PRECONDITION: 1 <= k <= n.
void topk(const float* x, int n, int k, int* idx) noexcept;

// ---- attention ----
// Causal grouped-query attention of one query token over cached keys/values 0..n_kv-1.
// q:       (n_head, hd_k) f32
// k_cache: (n_kv, n_head_kv, hd_k) f16 for this layer; v_cache: (n_kv, n_head_kv, hd_v) f16
// out:     (n_head, hd_v) f32
// Query head h reads KV head h / (n_head / n_head_kv). scale multiplies q.k (usually 1/sqrt(hd_k)).
// scores: scratch of n_kv floats. Heads [h0, h1) only, so callers can split heads across threads.
// k_stride / v_stride: f16 elements from one cached position to the next; 0 = n_head_kv * hd_k / hd_v.
// (Multi-head latent attention caches one row [latent | rope key] per position and reads the values
// as the first hd_v elements of that row: k_cache == v_cache, both strides = the row size.)
struct AttnShape {
  int n_head = 0, n_head_kv = 0, hd_k = 0, hd_v = 0;
  float scale = 1.0f;
  int k_stride = 0, v_stride = 0;
  // Logit soft-capping (grok): a score s = scale * q.k becomes softcap * tanh(s / softcap) before the
  // softmax, computed as tanh(q.k * (scale / softcap)) * softcap. 0 = off.
  float softcap = 0.0f;
};
void attention(const AttnShape& s, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
               int n_kv, float* out, float* scores, int h0, int h1) noexcept;
// The same over the cached positions [kv0, n_kv) only (a sliding window: kv0 = max(0, n_kv - window)),
// with optional attention sinks (gpt-oss): sinks[h] is a logit of query head h that joins the
// softmax's denominator but has no value, so out = sum_t v_t exp(s_t - m) / (sum_t exp(s_t - m) +
// exp(sinks[h] - m)), m = max(max_t s_t, sinks[h]). sinks == nullptr: none. scores: n_kv floats
// (entries [kv0, n_kv) are used). PRECONDITION: 0 <= kv0 < n_kv. With kv0 = 0 and no sinks the
// result equals attention() bit for bit.
void attention_window(const AttnShape& s, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                      int kv0, int n_kv, const float* sinks, float* out, float* scores, int h0, int h1) noexcept;

inline float sigmoid(float x) noexcept {
  return 1.0f / (1.0f + __builtin_expf(-x));
}

}  // namespace moe::kernels::ops
