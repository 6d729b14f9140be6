// runtime/src/engine/rope_params.h — the RoPE and attention parameters of a model spec, shared by the
// CPU forward pass (session.cpp) and the CUDA backend (gpu_forward.cpp) so both compute the same
// thing. Pure.
#pragma once
#include <cmath>

#include "moe/kernels/ops.h"
#include "moe/model.h"

namespace moe::detail {

inline kernels::ops::RopeParams rope_params_for(const ModelSpec& s) {
  kernels::ops::RopeParams p;
  p.mode = s.rope_style == RopeStyle::NeoX ? kernels::ops::RopeMode::NeoX : kernels::ops::RopeMode::Normal;
  p.n_rot = static_cast<int>(s.n_rot ? s.n_rot : s.head_dim_k);
  p.freq_base = s.rope_freq_base;
  p.freq_scale = s.rope_freq_scale;
  if (s.rope_scaling == RopeScaling::Yarn) {
    p.ext_factor = s.yarn_ext_factor < 0 ? 1.0f : s.yarn_ext_factor;
    p.attn_factor = s.yarn_attn_factor;
    p.beta_fast = s.yarn_beta_fast;
    p.beta_slow = s.yarn_beta_slow;
    p.orig_ctx = s.yarn_orig_ctx > 0 ? s.yarn_orig_ctx : static_cast<float>(s.n_ctx_train);
    if (s.yarn_log_mul != 0.0f && s.rope_freq_scale < 1.0f) {
      // DeepSeek's YaRN (rope.scaling.yarn_log_multiplier = 0.1 * mscale_all_dim): the rotated
      // dimensions are not scaled (cos/sin times yarn_get_mscale(s, mscale) / yarn_get_mscale(s,
      // mscale_all_dim) = 1 as the checkpoints set mscale = mscale_all_dim); the attention temperature
      // goes into the softmax scale instead (mla_softmax_scale). rope_cos_sin multiplies by
      // attn_factor * (1 + 0.1 ln(1/freq_scale)), which this cancels.
      p.attn_factor = s.yarn_attn_factor / (1.0f + 0.1f * std::log(1.0f / s.rope_freq_scale));
    }
  } else {
    p.attn_factor = s.rope_attn_factor;  // rope.scaling.attn_factor (Phi-3 LongRoPE's), 1 when absent
  }
  return p;
}

// The softmax scale of multi-head latent attention: mscale^2 / sqrt(qk_nope + qk_rope) with DeepSeek's
// mscale = a * (1 + 0.1 * mscale_all_dim * ln(1/freq_scale)), where a = the factor the rotated part is
// multiplied by (YaRN only; 1 without scaling). As llama.cpp computes it for deepseek2.
inline float mla_softmax_scale(const ModelSpec& s) {
  const float fs = s.rope_freq_scale > 0.0f ? s.rope_freq_scale : 1.0f;
  const float l = std::log(1.0f / fs);
  float a = s.yarn_attn_factor;
  if (s.rope_scaling == RopeScaling::Yarn && s.yarn_log_mul == 0.0f) a *= 1.0f + 0.1f * l;
  const float mscale = a * (1.0f + 0.1f * (s.yarn_log_mul / 0.1f) * l);
  return mscale * mscale / std::sqrt(static_cast<float>(s.mla_head_dim_k));
}

inline kernels::ops::AttnShape attn_shape_for(const ModelSpec& s) {
  kernels::ops::AttnShape as;
  as.n_head = static_cast<int>(s.n_head);
  as.n_head_kv = static_cast<int>(s.n_head_kv);
  as.hd_k = static_cast<int>(s.head_dim_k);
  as.hd_v = static_cast<int>(s.head_dim_v);
  // granitemoe states its own softmax scale (attention.scale); everyone else uses 1/sqrt(head size).
  as.scale = s.attention_scale != 0.0f ? s.attention_scale : 1.0f / std::sqrt(static_cast<float>(s.head_dim_k));
  as.softcap = s.attn_softcap;  // grok
  if (s.kv_lora_rank > 0) {  // one cached row [latent | rope key] per position; values = the latent
    as.scale = mla_softmax_scale(s);
    as.k_stride = as.v_stride = static_cast<int>(s.head_dim_k);
  }
  return as;
}

}  // namespace moe::detail
