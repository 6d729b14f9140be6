// runtime/src/engine/session.cpp — the forward pass: embed -> per layer (RMSNorm, attention with
// RoPE over the f16 KV cache (or multi-head latent attention over a latent cache), residual, RMSNorm
// or LayerNorm, MoE or dense FFN, residual) -> final norm -> LM head.
// Optional pieces, read from the spec and the bound weights (never from the architecture's name):
// q/k/v and output biases, attention sinks and sliding-window layers (the KV cache keeps every
// position; the window is a mask), router bias, per-expert biases and the clamped SwiGLU (gpt-oss),
// fused qkv with a clamp (dbrx), the granite multipliers, chunked attention, NoPE layers with attention
// temperature tuning, weightless q/k RMS norm and expert weights applied to the expert input (llama4),
// norm and LM-head biases and LongRoPE factors (phimoe).
// Prefill runs a batch of up to n_batch tokens through each weight once (matmul); the MoE block groups
// the batch's tokens by expert so each chosen expert is acquired and read once per batch. Decode is
// the same code with a batch of one. Every buffer is allocated in the constructor.
// A Session is single-threaded; it drives its own ThreadPool.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "moe/engine.h"
#include "moe/error.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/ops.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/thread_pool.h"
#include "gpu_forward.h"
#include "rope_params.h"

namespace moe {

namespace ops = kernels::ops;

void apply_gating(const Gating& g, const float* logits, uint32_t n_expert, uint32_t k, int32_t* out_ids,
                  float* out_w, float* probs, int32_t* idx, const float* bias, float* sel) {
  static_assert(sizeof(int32_t) == sizeof(int));
  int* ix = reinterpret_cast<int*>(idx);
  const bool grouped = g.n_group > 1;
  if (bias || grouped) {
    MOE_ASSERT(!g.topk_before_norm, "biased or grouped selection is applied to normalised scores");
    MOE_ASSERT(sel != nullptr, "apply_gating: biased or grouped selection needs the sel scratch");
  }
  if (!g.topk_before_norm && (bias || grouped)) {
    // DeepSeek-V3 (and V2 with groups): scores = func(logits); the choice is made on scores + bias,
    // limited to the best groups; the weights are the unbiased scores of the chosen experts.
    std::memcpy(probs, logits, n_expert * sizeof(float));
    if (g.func == GatingFunc::Softmax) {
      ops::softmax(probs, n_expert);
    } else {
      for (uint32_t e = 0; e < n_expert; ++e) probs[e] = ops::sigmoid(probs[e]);
    }
    for (uint32_t e = 0; e < n_expert; ++e) sel[e] = bias ? probs[e] + bias[e] : probs[e];
    if (grouped) {
      // A group's score is the sum of its two best selection scores (as DeepSeek-V3 and llama.cpp);
      // experts outside the topk_group best groups cannot be chosen.
      const uint32_t per = n_expert / g.n_group;
      float* gs = sel + n_expert;
      for (uint32_t gi = 0; gi < g.n_group; ++gi) {
        const float* x = sel + size_t(gi) * per;
        float b1 = -INFINITY, b2 = -INFINITY;
        for (uint32_t j = 0; j < per; ++j) {
          if (x[j] > b1) {
            b2 = b1;
            b1 = x[j];
          } else if (x[j] > b2) {
            b2 = x[j];
          }
        }
        gs[gi] = per >= 2 ? b1 + b2 : b1;
      }
      ops::topk(gs, static_cast<int>(g.n_group), static_cast<int>(g.topk_group), ix);
      for (uint32_t gi = 0; gi < g.n_group; ++gi) {
        bool keep = false;
        for (uint32_t j = 0; j < g.topk_group; ++j) keep = keep || ix[j] == static_cast<int>(gi);
        if (!keep)
          for (uint32_t j = 0; j < per; ++j) sel[size_t(gi) * per + j] = -INFINITY;
      }
    }
    ops::topk(sel, static_cast<int>(n_expert), static_cast<int>(k), ix);
    for (uint32_t j = 0; j < k; ++j) out_w[j] = probs[ix[j]];
  } else if (g.topk_before_norm) {
    // Choose on raw logits, then normalise over the k chosen.
    ops::topk(logits, static_cast<int>(n_expert), static_cast<int>(k), ix);
    for (uint32_t j = 0; j < k; ++j) out_w[j] = logits[ix[j]];
    if (g.func == GatingFunc::Softmax) {
      ops::softmax(out_w, k);
    } else {
      for (uint32_t j = 0; j < k; ++j) out_w[j] = ops::sigmoid(out_w[j]);
    }
  } else {
    std::memcpy(probs, logits, n_expert * sizeof(float));
    if (g.func == GatingFunc::Softmax) {
      ops::softmax(probs, n_expert);
    } else {
      for (uint32_t e = 0; e < n_expert; ++e) probs[e] = ops::sigmoid(probs[e]);
    }
    ops::topk(probs, static_cast<int>(n_expert), static_cast<int>(k), ix);
    for (uint32_t j = 0; j < k; ++j) out_w[j] = probs[ix[j]];
  }
  if (g.renormalize) {
    double sum = 0;
    for (uint32_t j = 0; j < k; ++j) sum += out_w[j];
    if (sum > 0)
      for (uint32_t j = 0; j < k; ++j) out_w[j] = static_cast<float>(out_w[j] / sum);
  }
  for (uint32_t j = 0; j < k; ++j) out_w[j] *= g.scale;
  // Ascending expert id: the order experts are combined in, identical for prefill and decode.
  for (uint32_t j = 0; j < k; ++j) out_ids[j] = ix[j];
  for (uint32_t a = 1; a < k; ++a)
    for (uint32_t b = a; b > 0 && out_ids[b] < out_ids[b - 1]; --b) {
      std::swap(out_ids[b], out_ids[b - 1]);
      std::swap(out_w[b], out_w[b - 1]);
    }
}

namespace {

void mm(const WeightView& w, const float* X, size_t n, float* Y, kernels::ThreadPool* pool) {
  kernels::matmul(w.type, w.data, w.rows, w.cols, X, n, Y, pool);
}

// fn(t) for each token of a batch, on the pool when there are several (per-token rows, independent).
template <class F>
void per_token(kernels::ThreadPool* pool, uint32_t n, F&& fn) {
  if (pool && n > 1)
    pool->parallel_for(n, [&](size_t b, size_t e, int) { for (size_t t = b; t < e; ++t) fn(uint32_t(t)); }, 4);
  else
    for (uint32_t t = 0; t < n; ++t) fn(t);
}

// Batches of at most this many tokens compute resident experts first (while the others load) into
// per-slot outputs combined afterwards in ascending expert id, so the sums are the same as in-order.
// Why only small batches: decode is where IO stalls matter; a prefill batch touches most experts.
constexpr uint32_t kOooTokens = 4;

// Experts run together (acquired at once, one parallel dispatch for their gate and up products and one
// for their down products) are at most this many; only over the memory map (see Session::ffn_block). A
// prefill batch touches most experts: fewer, larger dispatches leave the threads less to wait for.
constexpr uint32_t kMaxExpertGroup = 64;

}  // namespace

Session::Session(const Model& m, ExpertSource& src, SessionOptions o) : m_(m), src_(src), o_(o) {
  const ModelSpec& s = m.spec();
  if (o_.n_batch == 0) fail(ErrorCode::InvalidArgument, "session: n_batch must be at least 1");
  n_ctx_ = o_.n_ctx ? o_.n_ctx : std::min<uint32_t>(s.n_ctx_train ? s.n_ctx_train : 4096, 4096);
  // LongRoPE: llama.cpp picks the long factors when its context, rounded up to a multiple of 256,
  // exceeds the original training context; the same rule here so both run the same factors (the
  // rounding changes no decision when the original context is such a multiple, as Phi-3.5's 4096 is).
  if (s.rope_factors) {
    const uint64_t padded = (uint64_t(n_ctx_) + 255) / 256 * 256;
    rope_ff_ = m.rope_factors(double(padded) > double(s.yarn_orig_ctx)).data();
  }
  if (s.rope_freqs) rope_ff_ = m.rope_freqs().data();  // llama3-style divisors (one set for every context)
  pool_ = std::make_unique<kernels::ThreadPool>(std::max(1, o_.n_threads));
  const size_t B = o_.n_batch, E = s.n_embd;
  const size_t HQ = size_t(s.n_head) * s.head_dim_k, HK = size_t(s.n_head_kv) * s.head_dim_k,
               HV = size_t(s.n_head_kv) * s.head_dim_v, HO = size_t(s.n_head) * s.head_dim_v;
  k_cache_.resize(s.n_layer);
  v_cache_.resize(s.n_layer);
  const bool mla = s.kv_lora_rank > 0;  // one cached row [latent | rope key]: values read from it
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    k_cache_[il].resize(size_t(n_ctx_) * HK);
    if (!mla) v_cache_[il].resize(size_t(n_ctx_) * HV);
  }
  if (mla) {
    const size_t H = s.n_head, dk = s.mla_head_dim_k, dv = s.mla_head_dim_v, r = s.kv_lora_rank,
                 nope = dk - s.n_rot;
    mla_q_.resize(B * H * dk);
    mla_qa_.resize(B * s.q_lora_rank);
    mla_hin_.resize(H * B * std::max(nope, r));
    mla_hout_.resize(H * B * std::max(r, dv));
    mla_o_.resize(B * H * dv);
  }
  uint32_t max_ff = 0, max_e = 1, max_k = 1;
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    const LayerSpec& ls = s.layers[il];
    max_ff = std::max({max_ff, ls.n_ff_expert, m.layer(il).n_ff_sh});
    if (ls.is_moe) {
      max_e = std::max(max_e, ls.n_expert);
      max_k = std::max(max_k, ls.n_expert_used);
    }
  }
  x_.resize(B * E);
  xn_.resize(B * E);
  q_.resize(B * HQ);
  k_.resize(B * HK);
  v_.resize(B * HV);
  if (m.layer(0).wqkv) qkv_.resize(B * (HQ + HK + HV));
  if (s.moe_parallel_dense) x0_.resize(B * E);
  att_.resize(B * HO);
  scores_.resize(size_t(pool_->size()) * n_ctx_);
  rope_cs_.resize(std::max<size_t>(2, s.head_dim_k) * size_t(pool_->size()));  // a row per pool thread
  tmp_.resize(B * E);
  moe_out_.resize(B * E);
  router_.resize(B * max_e);
  gw_.resize(B * max_k);
  gi_.resize(B * max_k);
  topk_idx_.resize(max_e);
  probs_.resize(max_e);
  sel_.resize(2 * size_t(max_e));
  e_count_.resize(max_e + 1);
  e_start_.resize(max_e + 1);
  e_tok_.resize(B * max_k);
  e_w_.resize(B * max_k);
  // Indexed by (token, expert) slot for the expert groups: n_batch * max_k rows.
  xg_.resize(B * max_k * E);
  g_.resize(B * max_k * max_ff);
  u_.resize(B * max_k * max_ff);
  sg_.resize(B);
  logits_.resize(s.n_vocab);
  last_e_.assign(size_t(s.n_layer) * max_k, -1);
  last_w_.assign(size_t(s.n_layer) * max_k, 0.0f);
  ys_.resize(B * max_k * E);  // per-slot expert outputs
  e_done_.resize(max_e);
  src_may_block_ = dynamic_cast<MmapExpertSource*>(&src) == nullptr;
  if (o_.vram_bytes > 0) gpu_ = detail::make_gpu_forward(m, src, o_, n_ctx_, pool_.get());
}

std::string Session::backend_info() const { return gpu_ ? gpu_->describe() : std::string("cpu"); }

Session::~Session() = default;

std::span<const int32_t> Session::last_experts(uint32_t layer) const noexcept {
  const LayerSpec& ls = m_.spec().layers[layer];
  const size_t k = gi_.size() / o_.n_batch;
  return {last_e_.data() + layer * k, ls.is_moe ? ls.n_expert_used : 0};
}
std::span<const float> Session::last_expert_weights(uint32_t layer) const noexcept {
  const LayerSpec& ls = m_.spec().layers[layer];
  const size_t k = gi_.size() / o_.n_batch;
  return {last_w_.data() + layer * k, ls.is_moe ? ls.n_expert_used : 0};
}

std::span<const float> Session::eval(std::span<const int32_t> tokens, float* all_logits) {
  const ModelSpec& s = m_.spec();
  if (tokens.empty()) fail(ErrorCode::InvalidArgument, "session: no tokens to evaluate");
  if (size_t(pos_) + tokens.size() > n_ctx_)
    fail(ErrorCode::InvalidArgument, "session: context full ({} + {} tokens > n_ctx {})", pos_, tokens.size(),
         n_ctx_);
  for (int32_t t : tokens)
    if (t < 0 || uint32_t(t) >= s.n_vocab)
      fail(ErrorCode::InvalidArgument, "session: token id {} is outside the vocabulary (0..{})", t, s.n_vocab - 1);
  for (size_t off = 0; off < tokens.size(); off += o_.n_batch) {
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(o_.n_batch, tokens.size() - off));
    float* al = all_logits ? all_logits + off * s.n_vocab : nullptr;
    if (gpu_) {
      const size_t kk = gi_.size() / o_.n_batch;
      gpu_->forward(tokens.data() + off, n, pos_, logits_.data(), al, stats_, last_e_.data(), last_w_.data(), kk);
      pos_ += n;
      stats_.tokens += n;
      stats_.batches += 1;
      stats_.dense_bytes += m_.dense_bytes_per_token();
    } else {
      forward(tokens.data() + off, n, al);
    }
  }
  return logits_;
}

void Session::forward(const int32_t* tokens, uint32_t n, float* all_logits) {
  const ModelSpec& s = m_.spec();
  const size_t E = s.n_embd;
  // Embedding rows.
  const WeightView& te = m_.tok_embd();
  const uint64_t rb = *row_bytes(te.type, E);
  for (uint32_t t = 0; t < n; ++t)
    kernels::dequantize_row(te.type, static_cast<const uint8_t*>(te.data) + uint64_t(tokens[t]) * rb,
                            x_.data() + t * E, static_cast<int64_t>(E));
  // granitemoe multipliers (0 = absent): embeddings times embedding_scale, each block's output times
  // residual_scale before it joins the residual stream, logits times 1 / logit_scale.
  if (s.embedding_scale != 0.0f)
    for (size_t i = 0; i < n * E; ++i) x_[i] *= s.embedding_scale;
  const float rs = s.residual_scale;

  for (uint32_t il = 0; il < s.n_layer; ++il) {
    const LayerWeights& L = m_.layer(il);
    const bool parallel = s.moe_parallel_dense && s.layers[il].is_moe;
    if (parallel) std::copy_n(x_.data(), size_t(n) * E, x0_.data());
    per_token(pool_.get(), n, [&](uint32_t t) {
      m_.norm(x_.data() + t * E, L.attn_norm, L.attn_norm_b, xn_.data() + t * E);
    });
    attention_block(il, n);
    if (!L.attn_post_norm.empty())  // grok: the attention output is normalized before the residual add
      per_token(pool_.get(), n, [&](uint32_t t) {
        m_.norm(tmp_.data() + t * E, L.attn_post_norm, tmp_.data() + t * E);
      });
    if (rs != 0.0f)
      for (size_t i = 0; i < n * E; ++i) x_[i] += tmp_[i] * rs;
    else
      for (size_t i = 0; i < n * E; ++i) x_[i] += tmp_[i];
    if (observer_) observer_->after_attention(il, x_.data(), n);
    if (parallel) {
      // arctic: the residual MLP on ffn_norm(x), then the experts on ffn_norm_exps(layer input).
      per_token(pool_.get(), n, [&](uint32_t t) {
        m_.norm(x_.data() + t * E, L.ffn_norm, L.ffn_norm_b, xn_.data() + t * E);
      });
      ffn_block(il, n, FfnPart::Dense);
      for (size_t i = 0; i < n * E; ++i) x_[i] += moe_out_[i];
      per_token(pool_.get(), n, [&](uint32_t t) {
        m_.norm(x0_.data() + t * E, L.ffn_norm_exps, xn_.data() + t * E);
      });
      ffn_block(il, n, FfnPart::Routed);
    } else {
      per_token(pool_.get(), n, [&](uint32_t t) {
        m_.norm(x_.data() + t * E, L.ffn_norm, L.ffn_norm_b, xn_.data() + t * E);
      });
      ffn_block(il, n);
    }
    if (!L.ffn_post_norm.empty())  // grok: so is the MoE output
      per_token(pool_.get(), n, [&](uint32_t t) {
        m_.norm(moe_out_.data() + t * E, L.ffn_post_norm, moe_out_.data() + t * E);
      });
    if (rs != 0.0f)
      for (size_t i = 0; i < n * E; ++i) x_[i] += moe_out_[i] * rs;
    else
      for (size_t i = 0; i < n * E; ++i) x_[i] += moe_out_[i];
    if (observer_) observer_->after_layer(il, x_.data(), n);
  }

  for (uint32_t t = 0; t < n; ++t)
    m_.norm(x_.data() + t * E, m_.output_norm(), m_.output_norm_b(), xn_.data() + t * E);
  const std::vector<float>& ob = m_.output_b();  // LM head bias (phimoe), added before any scaling
  if (all_logits) {
    mm(m_.output(), xn_.data(), n, all_logits, pool_.get());
    if (!ob.empty())
      for (uint32_t t = 0; t < n; ++t)
        for (uint32_t i = 0; i < s.n_vocab; ++i) all_logits[size_t(t) * s.n_vocab + i] += ob[i];
    scale_logits(all_logits, size_t(n) * s.n_vocab);
    std::memcpy(logits_.data(), all_logits + size_t(n - 1) * s.n_vocab, s.n_vocab * sizeof(float));
  } else {
    mm(m_.output(), xn_.data() + size_t(n - 1) * E, 1, logits_.data(), pool_.get());
    if (!ob.empty())
      for (uint32_t i = 0; i < s.n_vocab; ++i) logits_[i] += ob[i];
    scale_logits(logits_.data(), s.n_vocab);
  }
  pos_ += n;
  stats_.tokens += n;
  stats_.batches += 1;
  stats_.dense_bytes += m_.dense_bytes_per_token();
}

// Multi-head latent attention (DeepSeek-V2/V3), in the absorbed form: per token the cache holds
// c = RMSNorm(latent) (kv_lora_rank) and the rotated shared key part k_pe (n_rot), in f16. Head h's
// query is q_h = [q_nope | q_pe]; its score against position j is
//   q_nope . (W_UK,h c_j) + q_pe . k_pe_j = (W_UK,h^T q_nope) . c_j + q_pe . k_pe_j,
// so the query is mapped once into the latent space (wk_b) and attends over the cached rows directly;
// the attended latent is mapped to the head's values afterwards (wv_b). Same math as decompressing the
// cache to per-head keys and values (MHA), in kv_lora_rank + n_rot cached floats per token.
void Session::attention_mla(uint32_t il, uint32_t n) {
  const ModelSpec& s = m_.spec();
  const LayerWeights& L = m_.layer(il);
  kernels::ThreadPool* pool = pool_.get();
  const size_t H = s.n_head, dk = s.mla_head_dim_k, dv = s.mla_head_dim_v, r = s.kv_lora_rank, nr = s.n_rot,
               nope = dk - nr, row = r + nr, B = o_.n_batch;
  const size_t hin_stride = B * std::max(nope, r), hout_stride = B * std::max(r, dv);
  if (L.wq_a) {
    mm(L.wq_a, xn_.data(), n, mla_qa_.data(), pool);
    for (uint32_t t = 0; t < n; ++t) {
      float* qa = mla_qa_.data() + t * size_t(s.q_lora_rank);
      ops::rmsnorm(qa, L.q_a_norm.data(), qa, s.q_lora_rank, s.rms_eps);
    }
    mm(L.wq_b, mla_qa_.data(), n, mla_q_.data(), pool);
  } else {
    mm(L.wq, xn_.data(), n, mla_q_.data(), pool);
  }
  mm(L.wkv_a, xn_.data(), n, k_.data(), pool);  // (n, r + nr): latent, then the shared rope key
  const ops::RopeParams rp = detail::rope_params_for(s);
  for (uint32_t t = 0; t < n; ++t) {
    float* kv = k_.data() + t * row;
    float* q = mla_q_.data() + t * H * dk;
    ops::rmsnorm(kv, L.kv_a_norm.data(), kv, static_cast<int64_t>(r), s.rms_eps);
    ops::rope_cos_sin(rp, pos_ + t, rope_cs_.data());
    ops::rope_apply(rp, rope_cs_.data(), kv + r, 1, static_cast<int>(nr));
    ops::rope_apply(rp, rope_cs_.data(), q + nope, static_cast<int>(H), static_cast<int>(dk));
    ops::f32_to_f16_row(kv, k_cache_[il].data() + size_t(pos_ + t) * row, static_cast<int64_t>(row));
    for (size_t h = 0; h < H; ++h)
      std::memcpy(mla_hin_.data() + h * hin_stride + t * nope, q + h * dk, nope * sizeof(float));
  }
  // One matmul per head, mla_hin_ (head h's rows) -> mla_hout_, in one fork; each product has matmul's bits.
  auto per_head = [&](const std::vector<WeightView>& ws) {
    pool->parallel_for(H, [&](size_t b, size_t e, int) {
      for (size_t h = b; h < e; ++h)
        kernels::matmul(ws[h].type, ws[h].data, ws[h].rows, ws[h].cols, mla_hin_.data() + h * hin_stride, n,
                        mla_hout_.data() + h * hout_stride, nullptr);
    });
  };
  per_head(L.wk_b);  // absorb: q_lat,h = wk_b[h] q_nope,h
  for (uint32_t t = 0; t < n; ++t)
    for (size_t h = 0; h < H; ++h) {
      float* qh = q_.data() + (t * H + h) * row;
      std::memcpy(qh, mla_hout_.data() + h * hout_stride + t * r, r * sizeof(float));
      std::memcpy(qh + r, mla_q_.data() + t * H * dk + h * dk + nope, nr * sizeof(float));
    }
  const ops::AttnShape as = detail::attn_shape_for(s);
  const uint16_t* kc = k_cache_[il].data();
  const uint32_t p0 = pos_;
  float* scores = scores_.data();
  const size_t n_ctx = n_ctx_;
  pool->parallel_for(size_t(n) * H, [&](size_t b, size_t e, int thread) {
    for (size_t i = b; i < e; ++i) {
      const uint32_t t = static_cast<uint32_t>(i / H);
      const int h = static_cast<int>(i % H);
      ops::attention(as, q_.data() + t * H * row, kc, kc, static_cast<int>(p0 + t + 1), att_.data() + t * H * r,
                     scores + size_t(thread) * n_ctx, h, h + 1);
    }
  });
  for (uint32_t t = 0; t < n; ++t) stats_.kv_bytes += uint64_t(p0 + t + 1) * row * 2;
  // Decompress: o_h = wv_b[h] (attended latent of head h).
  for (uint32_t t = 0; t < n; ++t)
    for (size_t h = 0; h < H; ++h)
      std::memcpy(mla_hin_.data() + h * hin_stride + t * r, att_.data() + (t * H + h) * r, r * sizeof(float));
  per_head(L.wv_b);
  for (uint32_t t = 0; t < n; ++t)
    for (size_t h = 0; h < H; ++h)
      std::memcpy(mla_o_.data() + t * H * dv + h * dv, mla_hout_.data() + h * hout_stride + t * dv,
                  dv * sizeof(float));
  mm(L.wo, mla_o_.data(), n, tmp_.data(), pool);
}

void Session::scale_logits(float* l, size_t cnt) const noexcept {
  const ModelSpec& s = m_.spec();
  // granite divides by logit_scale; grok multiplies by logit_mul, then soft-caps (as llama.cpp: scale
  // by 1/cap, tanh, scale by cap).
  if (s.logit_scale != 0.0f) {
    const float inv = 1.0f / s.logit_scale;
    for (size_t i = 0; i < cnt; ++i) l[i] *= inv;
  }
  if (s.logit_mul != 0.0f)
    for (size_t i = 0; i < cnt; ++i) l[i] *= s.logit_mul;
  if (s.final_softcap > 0.0f) {
    const float inv = 1.0f / s.final_softcap;
    for (size_t i = 0; i < cnt; ++i) l[i] = std::tanh(l[i] * inv) * s.final_softcap;
  }
}

void Session::attention_block(uint32_t il, uint32_t n) {
  const ModelSpec& s = m_.spec();
  if (s.kv_lora_rank > 0) return attention_mla(il, n);
  const LayerWeights& L = m_.layer(il);
  const LayerSpec& ls = s.layers[il];
  kernels::ThreadPool* pool = pool_.get();
  const int hk = static_cast<int>(s.head_dim_k), hv = static_cast<int>(s.head_dim_v);
  const size_t HQ = size_t(s.n_head) * hk, HK = size_t(s.n_head_kv) * hk, HV = size_t(s.n_head_kv) * hv,
               HO = size_t(s.n_head) * hv;
  if (L.wqkv) {
    // Fused projection (dbrx): rows [q | k | v] per token, split into the q_/k_/v_ layouts.
    const size_t W = HQ + HK + HV;
    mm(L.wqkv, xn_.data(), n, qkv_.data(), pool);
    for (uint32_t t = 0; t < n; ++t) {
      const float* r = qkv_.data() + t * W;
      std::memcpy(q_.data() + t * HQ, r, HQ * sizeof(float));
      std::memcpy(k_.data() + t * HK, r + HQ, HK * sizeof(float));
      std::memcpy(v_.data() + t * HV, r + HQ + HK, HV * sizeof(float));
    }
  } else {
    // One dispatch for the three products, the input quantized once (matmul_many: matmul's bits).
    const kernels::MatmulJob jobs[3] = {
        {L.wq.type, L.wq.data, L.wq.rows, L.wq.cols, xn_.data(), n, q_.data()},
        {L.wk.type, L.wk.data, L.wk.rows, L.wk.cols, xn_.data(), n, k_.data()},
        {L.wv.type, L.wv.data, L.wv.rows, L.wv.cols, xn_.data(), n, v_.data()}};
    kernels::matmul_many(jobs, 3, pool);
  }
  if (s.clamp_kqv > 0.0f) {  // dbrx: q, k and v clamped to [-c, c] before RoPE
    const float c = s.clamp_kqv;
    for (float* a : {q_.data(), k_.data(), v_.data()}) {
      const size_t cnt = size_t(n) * (a == q_.data() ? HQ : a == k_.data() ? HK : HV);
      for (size_t i = 0; i < cnt; ++i) a[i] = std::clamp(a[i], -c, c);
    }
  }
  ops::RopeParams rp = detail::rope_params_for(s);
  rp.freq_factors = rope_ff_;  // LongRoPE (phimoe) or rope_freqs (llama3-style); nullptr otherwise
  // Per token (its own rows of q, k, v and the cache; a cos/sin row per thread), on the pool in a batch.
  const size_t cs_row = std::max<size_t>(2, s.head_dim_k);
  auto one_token = [&](uint32_t t, int thread) {
    float* cs = rope_cs_.data() + size_t(thread) * cs_row;
    float* q = q_.data() + t * HQ;
    float* k = k_.data() + t * HK;
    float* v = v_.data() + t * HV;
    if (!L.bq.empty()) {
      for (size_t i = 0; i < HQ; ++i) q[i] += L.bq[i];
      for (size_t i = 0; i < HK; ++i) k[i] += L.bk[i];
      for (size_t i = 0; i < HV; ++i) v[i] += L.bv[i];
    }
    if (s.qk_norm == QkNorm::PerHead) {
      for (uint32_t h = 0; h < s.n_head; ++h) ops::rmsnorm(q + h * hk, L.q_norm.data(), q + h * hk, hk, s.rms_eps);
      for (uint32_t h = 0; h < s.n_head_kv; ++h)
        ops::rmsnorm(k + h * hk, L.k_norm.data(), k + h * hk, hk, s.rms_eps);
    } else if (s.qk_norm == QkNorm::Full) {
      ops::rmsnorm(q, L.q_norm.data(), q, HQ, s.rms_eps);
      ops::rmsnorm(k, L.k_norm.data(), k, HK, s.rms_eps);
    }
    if (ls.rope) {
      ops::rope_cos_sin(rp, pos_ + t, cs);
      ops::rope_apply(rp, cs, q, static_cast<int>(s.n_head), hk);
      ops::rope_apply(rp, cs, k, static_cast<int>(s.n_head_kv), hk);
      if (s.qk_l2_norm) {  // llama4: every rotated head RMS-normalised, no weight
        for (uint32_t h = 0; h < s.n_head; ++h) ops::rmsnorm(q + h * hk, nullptr, q + h * hk, hk, s.rms_eps);
        for (uint32_t h = 0; h < s.n_head_kv; ++h) ops::rmsnorm(k + h * hk, nullptr, k + h * hk, hk, s.rms_eps);
      }
    } else if (s.attn_temp_scale != 0.0f) {
      // llama4 NoPE layer: attention temperature tuning, q scaled by a step function of the position.
      const double steps = std::floor((double(pos_ + t) + s.attn_temp_offset) / s.attn_temp_length);
      const float ts = static_cast<float>(std::log(steps + 1.0) * s.attn_temp_scale + 1.0);
      for (size_t i = 0; i < HQ; ++i) q[i] *= ts;
    }
    ops::f32_to_f16_row(k, k_cache_[il].data() + size_t(pos_ + t) * HK, HK);
    ops::f32_to_f16_row(v, v_cache_[il].data() + size_t(pos_ + t) * HV, HV);
  };
  if (n > 1)
    pool->parallel_for(n, [&](size_t b, size_t e, int thread) {
      for (size_t t = b; t < e; ++t) one_token(uint32_t(t), thread);
    }, 4);
  else
    one_token(0, 0);
  const ops::AttnShape as = detail::attn_shape_for(s);
  const uint16_t* kc = k_cache_[il].data();
  const uint16_t* vc = v_cache_[il].data();
  const uint32_t p0 = pos_, n_head = s.n_head;
  float* scores = scores_.data();
  const size_t n_ctx = n_ctx_;
  // Sliding-window layer: the query at position p sees keys p' with p - p' < n_swa.
  // Chunked layer (llama4): it sees keys p' >= (p / n_chunk) * n_chunk, the start of its own chunk.
  const uint32_t window = ls.swa ? s.n_swa : 0;
  const uint32_t chunk = ls.chunked ? s.n_chunk : 0;
  const float* sinks = L.sinks.empty() ? nullptr : L.sinks.data();
  auto first_kv = [&](uint32_t t) -> uint32_t {
    const uint32_t end = p0 + t + 1;
    if (chunk) return (p0 + t) / chunk * chunk;
    return window && end > window ? end - window : 0;
  };
  pool->parallel_for(size_t(n) * n_head, [&](size_t b, size_t e, int thread) {
    for (size_t i = b; i < e; ++i) {
      const uint32_t t = static_cast<uint32_t>(i / n_head);
      const int h = static_cast<int>(i % n_head);
      ops::attention_window(as, q_.data() + t * HQ, kc, vc, static_cast<int>(first_kv(t)),
                            static_cast<int>(p0 + t + 1), sinks, att_.data() + t * HO,
                            scores + size_t(thread) * n_ctx, h, h + 1);
    }
  });
  for (uint32_t t = 0; t < n; ++t) stats_.kv_bytes += uint64_t(p0 + t + 1 - first_kv(t)) * (HK + HV) * 2;
  mm(L.wo, att_.data(), n, tmp_.data(), pool);
  if (!L.bo.empty())
    for (uint32_t t = 0; t < n; ++t)
      for (size_t i = 0; i < s.n_embd; ++i) tmp_[t * s.n_embd + i] += L.bo[i];
}

void Session::route(uint32_t il, uint32_t n) {
  const ModelSpec& s = m_.spec();
  const LayerSpec& ls = s.layers[il];
  const uint32_t ne = ls.n_expert, k = ls.n_expert_used;
  const LayerWeights& L = m_.layer(il);
  mm(L.router, xn_.data(), n, router_.data(), pool_.get());
  if (!L.router_b.empty())
    for (uint32_t t = 0; t < n; ++t)
      for (uint32_t e = 0; e < ne; ++e) router_[size_t(t) * ne + e] += L.router_b[e];
  for (uint32_t t = 0; t < n; ++t)
    apply_gating(s.gating, router_.data() + size_t(t) * ne, ne, k, gi_.data() + size_t(t) * k,
                 gw_.data() + size_t(t) * k, probs_.data(), topk_idx_.data(),
                 m_.layer(il).exp_probs_b.empty() ? nullptr : m_.layer(il).exp_probs_b.data(), sel_.data());
  // Group the batch's (token, expert) slots by expert, tokens ascending within each expert.
  std::fill(e_count_.begin(), e_count_.begin() + ne + 1, 0u);
  for (size_t i = 0; i < size_t(n) * k; ++i) ++e_count_[gi_[i]];
  e_start_[0] = 0;
  for (uint32_t e = 0; e < ne; ++e) e_start_[e + 1] = e_start_[e] + e_count_[e];
  std::fill(e_count_.begin(), e_count_.begin() + ne, 0u);
  for (uint32_t t = 0; t < n; ++t)
    for (uint32_t j = 0; j < k; ++j) {
      const int32_t e = gi_[size_t(t) * k + j];
      const uint32_t slot = e_start_[e] + e_count_[e]++;
      e_tok_[slot] = t;
      e_w_[slot] = gw_[size_t(t) * k + j];
    }
  const size_t kk = gi_.size() / o_.n_batch;
  std::copy_n(gi_.data() + size_t(n - 1) * k, k, last_e_.data() + il * kk);
  std::copy_n(gw_.data() + size_t(n - 1) * k, k, last_w_.data() + il * kk);
}

void Session::ffn_block(uint32_t il, uint32_t n, FfnPart part) {
  const ModelSpec& s = m_.spec();
  const LayerSpec& ls = s.layers[il];
  const LayerWeights& L = m_.layer(il);
  kernels::ThreadPool* pool = pool_.get();
  const size_t E = s.n_embd;
  auto act = [&](float* g, const float* u, size_t cnt) {
    if (s.ffn_act == FfnAct::GeluGlu)
      ops::gelu_mul(g, u, static_cast<int64_t>(cnt));
    else if (s.ffn_act == FfnAct::SwigluOai)
      ops::swiglu_oai_mul(g, u, static_cast<int64_t>(cnt));
    else
      ops::silu_mul(g, u, static_cast<int64_t>(cnt));
  };
  // Adds a bias row (n floats, F32 as bound) to each of `rows` rows of y.
  auto add_rows = [](const WeightView& b, float* y, size_t rows, size_t cols) {
    if (!b) return;
    const float* bv = static_cast<const float*>(b.data);
    for (size_t r = 0; r < rows; ++r)
      for (size_t i = 0; i < cols; ++i) y[r * cols + i] += bv[i];
  };
  std::fill(moe_out_.begin(), moe_out_.begin() + size_t(n) * E, 0.0f);

  if (ls.is_moe && part != FfnPart::Dense) {
    route(il, n);
    if (observer_) observer_->after_routing(il, gi_.data(), n, ls.n_expert_used);
    const size_t F = ls.n_ff_expert;
    const bool before = s.gating.weight_before_ffn;
    // Runs the experts es[0..m) (acquired, weights ew[]) on their slots (slot j: xg_ row j in, g_/u_
    // row j, ys_ row j out): one parallel dispatch for all their gate and up products, one for all
    // their down products. Each product gives matmul's bits whatever the grouping.
    // In a batch the per-expert elementwise steps (gathering the inputs, bias and activation) run on the
    // pool, one expert per chunk: serial they leave the other threads idle between the products.
    // Elementwise, so the bits do not depend on the split.
    auto per_expert = [&](uint32_t m, auto&& fn) {
      if (pool && n > 1 && m > 1)
        pool->parallel_for(m, [&](size_t i0, size_t i1, int) {
          for (size_t i = i0; i < i1; ++i) fn(uint32_t(i));
        }, 1);
      else
        for (uint32_t i = 0; i < m; ++i) fn(i);
    };
    auto run_experts = [&](const uint32_t* es, const ExpertWeights* ew, uint32_t m) {
      kernels::MatmulJob jobs[2 * kMaxExpertGroup] = {};
      uint32_t nj = 0;
      per_expert(m, [&](uint32_t i) {
        const uint32_t b = e_start_[es[i]], c = e_start_[es[i] + 1] - b;
        for (uint32_t j = 0; j < c; ++j) {
          float* xr = xg_.data() + size_t(b + j) * E;
          std::memcpy(xr, xn_.data() + e_tok_[b + j] * E, E * 4);
          if (before) {  // llama4: the routing weight scales the expert's input instead of its output
            const float w = e_w_[b + j];
            for (size_t k = 0; k < E; ++k) xr[k] *= w;
          }
        }
      });
      for (uint32_t i = 0; i < m; ++i) {
        const uint32_t b = e_start_[es[i]], c = e_start_[es[i] + 1] - b;
        const WeightView& g = ew[i].gate;
        const WeightView& u = ew[i].up;
        jobs[nj++] = {g.type, g.data, g.rows, g.cols, xg_.data() + size_t(b) * E, c, g_.data() + size_t(b) * F};
        jobs[nj++] = {u.type, u.data, u.rows, u.cols, xg_.data() + size_t(b) * E, c, u_.data() + size_t(b) * F};
      }
      kernels::matmul_many(jobs, nj, pool);
      per_expert(m, [&](uint32_t i) {
        const uint32_t b = e_start_[es[i]], c = e_start_[es[i] + 1] - b;
        add_rows(ew[i].gate_bias, g_.data() + size_t(b) * F, c, F);
        add_rows(ew[i].up_bias, u_.data() + size_t(b) * F, c, F);
        act(g_.data() + size_t(b) * F, u_.data() + size_t(b) * F, size_t(c) * F);
      });
      nj = 0;
      for (uint32_t i = 0; i < m; ++i) {
        const uint32_t b = e_start_[es[i]], c = e_start_[es[i] + 1] - b;
        const WeightView& d = ew[i].down;
        jobs[nj++] = {d.type, d.data, d.rows, d.cols, g_.data() + size_t(b) * F, c, ys_.data() + size_t(b) * E};
      }
      kernels::matmul_many(jobs, nj, pool);
      for (uint32_t i = 0; i < m; ++i) {
        const uint32_t b = e_start_[es[i]], c = e_start_[es[i] + 1] - b;
        add_rows(ew[i].down_bias, ys_.data() + size_t(b) * E, c, E);  // before the routing weight, as gpt-oss
        stats_.expert_acquires += 1;
        stats_.expert_bytes += ew[i].bytes();
      }
    };
    // Groups only over the memory map: a cached source may need a free slot for each expert of a group
    // while the others stay pinned, and its pool (a layer's quota under --cache-scope layer) can be
    // smaller than k, so there each expert is acquired, computed and released alone.
    const uint32_t group = src_may_block_ ? 1u : kMaxExpertGroup;
    uint32_t es[kMaxExpertGroup];
    ExpertWeights ew[kMaxExpertGroup];
    uint32_t m = 0;
    // Releases whatever run_experts' group still holds if a product or an acquire throws.
    struct Holder {
      ExpertSource& src;
      uint32_t il;
      const uint32_t* es;
      uint32_t& m;
      ~Holder() {
        for (uint32_t i = 0; i < m; ++i) src.release(il, es[i]);
      }
    } holder{src_, il, es, m};
    auto flush = [&] {
      run_experts(es, ew, m);
      const uint32_t held = m;
      m = 0;
      for (uint32_t i = 0; i < held; ++i) src_.release(il, es[i]);
    };
    if (n <= kOooTokens) {
      // Resident experts first, in groups; then the others one at a time as they arrive. Slot outputs
      // are combined below in ascending expert id whatever the compute order (bit-identical).
      std::fill(e_done_.begin(), e_done_.begin() + ls.n_expert, uint8_t(0));
      // The misses' reads start now, so they load while the resident experts compute.
      if (src_may_block_)
        for (uint32_t e = 0; e < ls.n_expert; ++e)
          if (e_start_[e + 1] != e_start_[e] && !src_.resident(il, e)) src_.will_acquire(il, e);
      // (A source that never blocks, the memory map, has every expert "resident": all in groups.)
      for (uint32_t e = 0; e < ls.n_expert; ++e) {
        if (e_start_[e + 1] == e_start_[e] || (src_may_block_ && !src_.resident(il, e))) continue;
        e_done_[e] = 1;
        ew[m] = src_.acquire(il, e);
        es[m++] = e;
        if (m == group) flush();
      }
      if (m > 0) flush();
      // Then the rest one by one: whichever has arrived meanwhile first, else the lowest id (waits).
      for (;;) {
        uint32_t pick = UINT32_MAX;
        for (uint32_t e = 0; e < ls.n_expert; ++e) {
          if (e_start_[e + 1] == e_start_[e] || e_done_[e]) continue;
          if (pick == UINT32_MAX) pick = e;
          if (src_.resident(il, e)) {
            pick = e;
            break;
          }
        }
        if (pick == UINT32_MAX) break;
        e_done_[pick] = 1;
        ew[m] = src_.acquire(il, pick);
        es[m++] = pick;
        flush();
      }
    } else {
      // Groups of consecutive active experts in ascending id.
      for (uint32_t e = 0; e < ls.n_expert; ++e) {
        if (e_start_[e + 1] == e_start_[e]) continue;
        ew[m] = src_.acquire(il, e);
        es[m++] = e;
        if (m == group) flush();
      }
      if (m > 0) flush();
    }
    // Per token, experts are added in ascending id: the sum order is the same for any batch split and
    // grouping. Tokens' slots are disjoint rows of moe_out_, so the order across tokens does not matter.
    // In a batch the columns are split over the pool (elementwise: the same bits).
    auto combine = [&](size_t c0, size_t c1, int) {
      for (uint32_t e = 0; e < ls.n_expert; ++e)
        for (uint32_t j = e_start_[e]; j < e_start_[e + 1]; ++j)
          ops::axpy(before ? 1.0f : e_w_[j], ys_.data() + size_t(j) * E + c0,
                    moe_out_.data() + e_tok_[j] * E + c0, static_cast<int64_t>(c1 - c0));
    };
    if (pool && n > 1) pool->parallel_for(E, combine, 256);
    else combine(0, E, 0);
  }
  if (L.n_ff_sh > 0 && part != FfnPart::Routed) {
    // Shared expert (MoE layers), the dense FFN (dense layers) or the residual MLP (arctic).
    const size_t F = L.n_ff_sh;
    mm(L.gate_sh, xn_.data(), n, g_.data(), pool);
    mm(L.up_sh, xn_.data(), n, u_.data(), pool);
    act(g_.data(), u_.data(), size_t(n) * F);
    mm(L.down_sh, g_.data(), n, tmp_.data(), pool);
    if (L.shared_gate) mm(L.shared_gate, xn_.data(), n, sg_.data(), pool);
    for (uint32_t t = 0; t < n; ++t) {
      const float gsh = L.shared_gate ? ops::sigmoid(sg_[t]) : 1.0f;
      ops::axpy(gsh, tmp_.data() + t * E, moe_out_.data() + t * E, static_cast<int64_t>(E));
    }
  }
}

}  // namespace moe
