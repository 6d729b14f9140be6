// runtime/src/engine/model_weights.cpp — Model::load: maps the GGUF file, reads the ModelSpec and the
// ExpertTable, and binds every dense weight (attention, norms, routers, shared experts, embeddings)
// as a view into the mapping, checking each tensor's shape and type against the spec. Expert bytes
// are not bound here: they are reached through ExpertSource only.
// Immutable after load; thread-safe to share.
#include <cmath>
#include <cstring>

#include "moe/engine.h"
#include "moe/error.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/ops.h"
#include "moe/kernels/quant.h"

namespace moe {

namespace {

bool arch_supported(Arch a) {
  return a == Arch::Llama || a == Arch::Qwen2Moe || a == Arch::Qwen3Moe || a == Arch::Olmoe || a == Arch::GraniteMoe ||
         a == Arch::Dbrx || a == Arch::Deepseek2 || a == Arch::GptOss || a == Arch::Arctic || a == Arch::Grok ||
         a == Arch::Llama4 || a == Arch::Glm4Moe || a == Arch::PhiMoe;
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path, bool to_ram) {
  return from_file(gguf::GgufFile::open(path, to_ram));
}

std::unique_ptr<Model> Model::from_file(std::unique_ptr<gguf::GgufFile> f) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = std::move(f);
  m->spec_ = load_model_spec(*m->file_);
  m->experts_ = ExpertTable::build(*m->file_, m->spec_);
  m->bind();
  return m;
}

void Model::bind() {
  const gguf::GgufFile& f = *file_;
  const ModelSpec& s = spec_;
  const std::string& path = f.path();
  if (!arch_supported(s.arch))
    fail(ErrorCode::Unsupported, "{}: architecture '{}' is not supported by the CPU engine (supported: llama/"
         "Mixtral, qwen2moe, qwen3moe, olmoe, granitemoe, dbrx, deepseek2, gpt-oss, llama4, glm4moe, arctic, grok, "
         "phimoe)",
         path, s.arch_name);
  if ((s.gating.has_bias || s.gating.n_group > 1) && s.gating.topk_before_norm)
    fail(ErrorCode::Unsupported, "{}: biased or group-limited selection on raw router logits is not supported", path);
  if (s.q_lora_rank && !s.kv_lora_rank)
    fail(ErrorCode::Unsupported, "{}: a compressed q (q_lora_rank) without latent attention is not supported", path);
  // Implemented beyond the plain layout: LayerNorm without a bias (dbrx), RMSNorm with a bias, an LM-head
  // bias and LongRoPE factors (phimoe),
  // fused qkv + clamp (dbrx), the granite multipliers, latent attention (deepseek2), attention biases
  // (q/k/v and output), attention sinks, sliding-window layers, router bias, per-expert biases and the
  // clamped SwiGLU (gpt-oss), chunked attention, NoPE layers with temperature tuning, q/k RMS norm without
  // weights and expert weights applied to the expert input (llama4).
  if ((s.layer_norm && s.arch != Arch::Dbrx) || (s.fused_qkv && (s.kv_lora_rank || s.attn_bias)) ||
      (s.gating.weight_before_ffn && !s.gating.topk_before_norm))
    fail(ErrorCode::Unsupported, "{}: the spec of '{}' uses a feature the CPU engine does not implement", path,
         s.arch_name);
  if (s.n_head == 0 || s.n_head_kv == 0 || s.n_head % s.n_head_kv != 0 || s.head_dim_k == 0 || s.head_dim_v == 0)
    fail(ErrorCode::Corrupt, "{}: bad attention shape (n_head {}, n_head_kv {}, head_dim {}/{})", path, s.n_head,
         s.n_head_kv, s.head_dim_k, s.head_dim_v);
  if (s.n_rot % 2 != 0 || s.n_rot > s.head_dim_k)
    fail(ErrorCode::Corrupt, "{}: rope dimension count {} is odd or exceeds the head size {}", path, s.n_rot,
         s.head_dim_k);
  if (s.layers.size() != s.n_layer)
    fail(ErrorCode::Corrupt, "{}: spec has {} layer entries for {} layers", path, s.layers.size(), s.n_layer);

  auto find = [&](const std::string& name) -> const gguf::TensorInfo* { return f.find_tensor(name); };
  // A matrix of `rows` x `cols` (ne[0] = cols).
  auto mat = [&](const std::string& name, uint64_t rows, uint64_t cols, bool required) -> WeightView {
    const gguf::TensorInfo* t = find(name);
    if (!t) {
      if (required) fail(ErrorCode::Corrupt, "{}: tensor '{}' is missing", path, name);
      return {};
    }
    if (t->ne[0] != cols || t->n_elements() != rows * cols)
      fail(ErrorCode::Corrupt, "{}: tensor '{}' has shape [{}, {}], expected [{}, {}]", path, name, t->ne[0],
           t->ne[1], cols, rows);
    if (!kernels::matmul_supported(t->type))
      fail(ErrorCode::Unsupported, "{}: tensor '{}' has type {} which the CPU kernels cannot multiply", path, name,
           type_name(t->type));
    WeightView v;
    v.data = f.data(*t).data();
    v.type = t->type;
    v.rows = static_cast<uint32_t>(rows);
    v.cols = static_cast<uint32_t>(cols);
    v.nbytes = t->nbytes;
    return v;
  };
  // A vector of n floats (norm weights, biases), converted to f32 once.
  auto vec = [&](const std::string& name, uint64_t n, bool required) -> std::vector<float> {
    const gguf::TensorInfo* t = find(name);
    if (!t) {
      if (required) fail(ErrorCode::Corrupt, "{}: tensor '{}' is missing", path, name);
      return {};
    }
    if (t->n_elements() != n)
      fail(ErrorCode::Corrupt, "{}: tensor '{}' has {} elements, expected {}", path, name, t->n_elements(), n);
    std::vector<float> out(n);
    if (!kernels::dequantize_row(t->type, f.data(*t).data(), out.data(), static_cast<int64_t>(n)))
      fail(ErrorCode::Unsupported, "{}: tensor '{}' has type {} which cannot be decoded", path, name,
           type_name(t->type));
    return out;
  };

  const uint64_t E = s.n_embd, HQ = uint64_t(s.n_head) * s.head_dim_k, HK = uint64_t(s.n_head_kv) * s.head_dim_k,
                 HV = uint64_t(s.n_head_kv) * s.head_dim_v, HO = uint64_t(s.n_head) * s.head_dim_v;
  // Multi-head latent attention weights of layer il (see LayerWeights); returns their bytes.
  auto bind_mla = [&](uint32_t il, LayerWeights& L) -> uint64_t {
    const std::string p = "blk." + std::to_string(il) + ".";
    const uint64_t H = s.n_head, dk = s.mla_head_dim_k, dv = s.mla_head_dim_v, r = s.kv_lora_rank, nr = s.n_rot,
                   nope = dk - nr;
    uint64_t bytes = 0;
    if (s.q_lora_rank > 0) {
      L.wq_a = mat(p + "attn_q_a.weight", s.q_lora_rank, E, true);
      L.q_a_norm = vec(p + "attn_q_a_norm.weight", s.q_lora_rank, true);
      L.wq_b = mat(p + "attn_q_b.weight", H * dk, s.q_lora_rank, true);
      bytes += L.wq_a.nbytes + L.wq_b.nbytes;
    } else {
      L.wq = mat(p + "attn_q.weight", H * dk, E, true);
      bytes += L.wq.nbytes;
    }
    L.wkv_a = mat(p + "attn_kv_a_mqa.weight", r + nr, E, true);
    L.kv_a_norm = vec(p + "attn_kv_a_norm.weight", r, true);
    L.wo = mat(p + "attn_output.weight", E, H * dv, true);
    bytes += L.wkv_a.nbytes + L.wo.nbytes;
    L.wk_b.resize(H);
    L.wv_b.resize(H);
    auto head_view = [](const WeightView& w, uint64_t row0, uint64_t rows) {
      WeightView v = w;
      const uint64_t rb = *row_bytes(w.type, w.cols);
      v.data = static_cast<const uint8_t*>(w.data) + row0 * rb;
      v.rows = static_cast<uint32_t>(rows);
      v.nbytes = rows * rb;
      return v;
    };
    auto check_3d = [&](const std::string& name, uint64_t ne1) {
      const gguf::TensorInfo* t = find(name);
      if (t && t->ne[1] != ne1)
        fail(ErrorCode::Corrupt, "{}: tensor '{}' has shape [{}, {}, {}], expected [{}, {}, {}]", path, name, t->ne[0],
             t->ne[1], t->ne[2], t->ne[0], ne1, H);
    };
    if (s.mla_split_kv_b) {
      // attn_k_b [nope, r, H]: head h is r rows of nope; attn_v_b [r, dv, H]: head h is dv rows of r.
      check_3d(p + "attn_k_b.weight", r);
      check_3d(p + "attn_v_b.weight", dv);
      const WeightView kb = mat(p + "attn_k_b.weight", H * r, nope, true);
      const WeightView vb = mat(p + "attn_v_b.weight", H * dv, r, true);
      for (uint64_t h = 0; h < H; ++h) {
        L.wk_b[h] = head_view(kb, h * r, r);
        L.wv_b[h] = head_view(vb, h * dv, dv);
      }
      bytes += kb.nbytes + vb.nbytes;
    } else {
      // attn_kv_b [r, H * (nope + dv)]: head h is nope K rows then dv V rows, each of r. The V rows are
      // used in place; the K rows are needed transposed (q_nope -> latent), so they are decoded once.
      const WeightView kvb = mat(p + "attn_kv_b.weight", H * (nope + dv), r, true);
      L.wk_b_t.resize(H * r * nope);
      std::vector<float> row(r);
      for (uint64_t h = 0; h < H; ++h) {
        L.wv_b[h] = head_view(kvb, h * (nope + dv) + nope, dv);
        float* dst = L.wk_b_t.data() + h * r * nope;
        for (uint64_t d = 0; d < nope; ++d) {
          const WeightView rv = head_view(kvb, h * (nope + dv) + d, 1);
          if (!kernels::dequantize_row(rv.type, rv.data, row.data(), static_cast<int64_t>(r)))
            fail(ErrorCode::Unsupported, "{}: tensor '{}' has type {} which cannot be decoded", path,
                 p + "attn_kv_b.weight", type_name(rv.type));
          for (uint64_t c = 0; c < r; ++c) dst[c * nope + d] = row[c];
        }
      }
      for (uint64_t h = 0; h < H; ++h) {
        WeightView v;
        v.data = L.wk_b_t.data() + h * r * nope;
        v.type = TensorType::F32;
        v.rows = static_cast<uint32_t>(r);
        v.cols = static_cast<uint32_t>(nope);
        v.nbytes = r * nope * 4;
        L.wk_b[h] = v;
      }
      bytes += kvb.nbytes;
    }
    return bytes;
  };

  tok_embd_ = mat("token_embd.weight", s.n_vocab, E, true);
  if (!traits(tok_embd_.type).dequantizable)
    fail(ErrorCode::Unsupported, "{}: token_embd.weight type {} cannot be decoded", path, type_name(tok_embd_.type));
  output_norm_ = vec("output_norm.weight", E, true);
  output_norm_b_ = vec("output_norm.bias", E, s.norm_bias);
  output_ = mat("output.weight", s.n_vocab, E, false);
  output_b_ = vec("output.bias", s.n_vocab, s.output_bias);
  if (s.rope_freqs) {  // llama3-style: n_rot / 2 divisors
    rope_freqs_ = vec("rope_freqs.weight", s.n_rot / 2, true);
    for (float x : rope_freqs_)
      if (!(x > 0.0f) || !std::isfinite(x))
        fail(ErrorCode::Corrupt, "{}: RoPE factor {} in 'rope_freqs.weight' is not positive", path, x);
  }
  if (s.rope_factors) {
    // One divisor per rotated pair; the file holds head size / 2 of them (llama.cpp's shape).
    rope_long_ = vec("rope_factors_long.weight", s.head_dim_k / 2, true);
    rope_short_ = vec("rope_factors_short.weight", s.head_dim_k / 2, true);
    for (const auto* v : {&rope_long_, &rope_short_})
      for (float x : *v)
        if (!(x > 0.0f) || !std::isfinite(x))
          fail(ErrorCode::Corrupt, "{}: RoPE factor {} in '{}' is not positive", path, x,
               v == &rope_long_ ? "rope_factors_long.weight" : "rope_factors_short.weight");
    rope_long_.resize(s.n_rot / 2);
    rope_short_.resize(s.n_rot / 2);
  }
  if (!output_) output_ = tok_embd_;  // tied embeddings
  dense_bytes_ = output_.nbytes + *row_bytes(tok_embd_.type, E);

  layers_.resize(s.n_layer);
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    LayerWeights& L = layers_[il];
    const LayerSpec& ls = s.layers[il];
    const std::string p = "blk." + std::to_string(il) + ".";
    L.attn_norm = vec(p + "attn_norm.weight", E, true);
    L.attn_norm_b = vec(p + "attn_norm.bias", E, s.norm_bias);
    uint64_t bytes = 0;
    if (s.kv_lora_rank > 0) {
      bytes += bind_mla(il, L);
    } else if (s.fused_qkv) {
      L.wqkv = mat(p + "attn_qkv.weight", HQ + HK + HV, E, true);
      L.wo = mat(p + "attn_output.weight", E, HO, true);
      bytes += L.wqkv.nbytes + L.wo.nbytes;
    } else {
      L.wq = mat(p + "attn_q.weight", HQ, E, true);
      L.wk = mat(p + "attn_k.weight", HK, E, true);
      L.wv = mat(p + "attn_v.weight", HV, E, true);
      L.wo = mat(p + "attn_output.weight", E, HO, true);
      bytes += L.wq.nbytes + L.wk.nbytes + L.wv.nbytes + L.wo.nbytes;
    }
    L.bq = vec(p + "attn_q.bias", HQ, s.attn_bias);
    L.bk = vec(p + "attn_k.bias", HK, s.attn_bias);
    L.bv = vec(p + "attn_v.bias", HV, s.attn_bias);
    L.bo = vec(p + "attn_output.bias", E, s.attn_out_bias);
    L.sinks = vec(p + "attn_sinks.weight", s.n_head, s.attn_sinks);
    if (s.qk_norm == QkNorm::PerHead) {
      L.q_norm = vec(p + "attn_q_norm.weight", s.head_dim_k, true);
      L.k_norm = vec(p + "attn_k_norm.weight", s.head_dim_k, true);
    } else if (s.qk_norm == QkNorm::Full) {
      L.q_norm = vec(p + "attn_q_norm.weight", HQ, true);
      L.k_norm = vec(p + "attn_k_norm.weight", HK, true);
    }
    // dbrx names its second norm attn_output_norm (norm_2 of the release); gpt-oss post_attention_norm.
    L.ffn_norm = vec(p + (s.arch == Arch::Dbrx             ? "attn_output_norm.weight"
                          : s.ffn_norm_post_attention ? "post_attention_norm.weight"
                                                      : "ffn_norm.weight"),
                     E, true);
    L.ffn_norm_b = vec(p + "ffn_norm.bias", E, s.norm_bias);
    if (s.attn_post_norm) L.attn_post_norm = vec(p + "attn_output_norm.weight", E, true);
    if (s.ffn_post_norm)
      L.ffn_post_norm = vec(p + (find(p + "layer_output_norm.weight") ? "layer_output_norm.weight" : "post_ffw_norm.weight"),
                            E, true);
    if (ls.is_moe) {
      if (ls.n_expert_used == 0 || ls.n_expert_used > ls.n_expert)
        fail(ErrorCode::Corrupt, "{}: layer {} uses {} of {} experts", path, il, ls.n_expert_used, ls.n_expert);
      L.router = mat(p + "ffn_gate_inp.weight", ls.n_expert, E, true);
      if (s.gating.router_bias) L.router_b = vec(p + "ffn_gate_inp.bias", ls.n_expert, true);
      bytes += L.router.nbytes;
      L.exp_probs_b = vec(p + "exp_probs_b.bias", ls.n_expert, s.gating.has_bias);
      if (s.moe_parallel_dense) {  // arctic: the residual MLP takes the shared-FFN slots
        if (ls.n_ff_shared > 0)
          fail(ErrorCode::Unsupported, "{}: layer {} has both shared experts and a residual MLP", path, il);
        L.ffn_norm_exps = vec(p + "ffn_norm_exps.weight", E, true);
        L.n_ff_sh = ls.n_ff_dense;
        L.gate_sh = mat(p + "ffn_gate.weight", ls.n_ff_dense, E, true);
        L.up_sh = mat(p + "ffn_up.weight", ls.n_ff_dense, E, true);
        L.down_sh = mat(p + "ffn_down.weight", E, ls.n_ff_dense, true);
        bytes += L.gate_sh.nbytes + L.up_sh.nbytes + L.down_sh.nbytes;
      }
      if (ls.n_ff_shared > 0) {
        L.n_ff_sh = ls.n_ff_shared;
        L.gate_sh = mat(p + "ffn_gate_shexp.weight", ls.n_ff_shared, E, true);
        L.up_sh = mat(p + "ffn_up_shexp.weight", ls.n_ff_shared, E, true);
        L.down_sh = mat(p + "ffn_down_shexp.weight", E, ls.n_ff_shared, true);
        if (s.gating.shared_gate) L.shared_gate = mat(p + "ffn_gate_inp_shexp.weight", 1, E, true);
        bytes += L.gate_sh.nbytes + L.up_sh.nbytes + L.down_sh.nbytes + L.shared_gate.nbytes;
      }
      for (uint32_t e = 0; e < ls.n_expert; ++e) {
        const ExpertSlices* es = experts_.at(il, e);
        if (!es) fail(ErrorCode::Corrupt, "{}: layer {} expert {} has no slices", path, il, e);
        for (const Slice* sl : {&es->gate, &es->up, &es->down}) {
          if (!kernels::matmul_supported(sl->type))
            fail(ErrorCode::Unsupported, "{}: layer {} experts have type {} which the CPU kernels cannot multiply",
                 path, il, type_name(sl->type));
          if (sl->offset + sl->nbytes > f.file_size())
            fail(ErrorCode::Corrupt, "{}: layer {} expert {} lies outside the file", path, il, e);
        }
        // Per-expert biases: all three or none, F32 rows (the session adds them as floats).
        const bool any_b = es->gate_bias.nbytes || es->up_bias.nbytes || es->down_bias.nbytes;
        if (any_b) {
          const Slice* bs[3] = {&es->gate_bias, &es->up_bias, &es->down_bias};
          const uint64_t want[3] = {uint64_t(ls.n_ff_expert) * 4, uint64_t(ls.n_ff_expert) * 4, E * 4};
          for (int i = 0; i < 3; ++i) {
            if (bs[i]->nbytes == 0)
              fail(ErrorCode::Unsupported, "{}: layer {} has some but not all of the per-expert biases "
                   "(ffn_gate_exps.bias, ffn_up_exps.bias, ffn_down_exps.bias)", path, il);
            if (bs[i]->type != TensorType::F32 || bs[i]->nbytes != want[i])
              fail(ErrorCode::Unsupported, "{}: layer {} per-expert biases must be F32 rows of {} floats (got type {})",
                   path, il, want[i] / 4, type_name(bs[i]->type));
            if (bs[i]->offset + bs[i]->nbytes > f.file_size())
              fail(ErrorCode::Corrupt, "{}: layer {} expert {} lies outside the file", path, il, e);
          }
        }
      }
    } else {
      if (ls.n_ff_dense == 0) fail(ErrorCode::Corrupt, "{}: dense layer {} has no FFN size", path, il);
      L.n_ff_sh = ls.n_ff_dense;
      L.gate_sh = mat(p + "ffn_gate.weight", ls.n_ff_dense, E, true);
      L.up_sh = mat(p + "ffn_up.weight", ls.n_ff_dense, E, true);
      L.down_sh = mat(p + "ffn_down.weight", E, ls.n_ff_dense, true);
      bytes += L.gate_sh.nbytes + L.up_sh.nbytes + L.down_sh.nbytes;
    }
    dense_bytes_ += bytes;
  }
}

void Model::norm(const float* x, const std::vector<float>& w, const std::vector<float>& b, float* y) const noexcept {
  const float* bp = b.empty() ? nullptr : b.data();
  if (spec_.layer_norm) {
    kernels::ops::layernorm(x, w.data(), bp, y, spec_.n_embd, spec_.rms_eps);
  } else {
    kernels::ops::rmsnorm(x, w.data(), y, spec_.n_embd, spec_.rms_eps);
    if (bp)
      for (uint32_t i = 0; i < spec_.n_embd; ++i) y[i] += bp[i];
  }
}

ExpertWeights MmapExpertSource::acquire(uint32_t layer, uint32_t expert) {
  const ExpertSlices* sl = m_.experts().at(layer, expert);
  MOE_ASSERT(sl != nullptr, "acquire of an expert in a dense layer");
  const LayerSpec& ls = m_.spec().layers[layer];
  const uint8_t* base = m_.file().bytes().data();
  auto view = [&](const Slice& s, uint32_t rows, uint32_t cols) {
    WeightView v;
    v.data = base + s.offset;
    v.type = s.type;
    v.rows = rows;
    v.cols = cols;
    v.nbytes = s.nbytes;
    return v;
  };
  const uint32_t E = m_.spec().n_embd, F = ls.n_ff_expert;
  ExpertWeights w{view(sl->gate, F, E), view(sl->up, F, E), view(sl->down, E, F), {}, {}, {}};
  if (sl->gate_bias.nbytes) {
    w.gate_bias = view(sl->gate_bias, 1, F);
    w.up_bias = view(sl->up_bias, 1, F);
    w.down_bias = view(sl->down_bias, 1, E);
  }
  return w;
}

}  // namespace moe
