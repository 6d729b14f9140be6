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
  }
  return p;
}

inline kernels::ops::AttnShape attn_shape_for(const ModelSpec& s) {
  kernels::ops::AttnShape as;
  as.n_head = static_cast<int>(s.n_head);
  as.n_head_kv = static_cast<int>(s.n_head_kv);
  as.hd_k = static_cast<int>(s.head_dim_k);
  as.hd_v = static_cast<int>(s.head_dim_v);
  // granitemoe states its own softmax scale (attention.scale); everyone else uses 1/sqrt(head size).
  as.scale = s.attention_scale != 0.0f ? s.attention_scale : 1.0f / std::sqrt(static_cast<float>(s.head_dim_k));
  return as;
}

}  // namespace moe::detail
