// Model specs: reads general.architecture and the `{arch}.*` hyperparameter keys of a GGUF file into
// a ModelSpec, with the per-architecture rules (gating, RoPE style, norms, dense vs. MoE layers)
// written down as data, and cross-checks the metadata against the tensor shapes.
// Pure functions over an immutable GgufFile; thread-safe.
//
// Per-architecture facts encoded here (as llama.cpp runs these GGUF files):
//   arch        rope   gating                                   layers
//   llama       normal softmax over top-k logits (Mixtral)       all MoE when expert_count > 0
//   qwen2moe    neox   softmax, no renorm, sigmoid-gated shexp   all MoE
//   qwen3moe    neox   softmax, renorm (expert_weights_norm)     all MoE, q/k norm per head
//   olmoe       neox   softmax, no renorm                        all MoE, q/k norm over the projection
//   deepseek2   normal softmax (V2) / sigmoid + exp_probs_b (V3), leading_dense_block_count dense
//                      group-limited top-k, expert_weights_scale
//   gpt-oss     neox   softmax over top-k logits, router bias    all MoE, swiglu-oai, sinks, SWA
//   llama4      normal sigmoid on top-k logits, weight before    (il+1) % interleave step == 0, shared
//                      the FFN                                  expert, chunked attention, NoPE layers
//   phimoe      neox   softmax over top-k logits (= softmax,     all MoE, RMSNorm + bias, biased LM head,
//                      top-2, renormalised)                     q/k/v/o biases, LongRoPE factors
//   granitemoe  normal softmax over top-k logits                 all MoE, scale multipliers
//   dbrx        neox   softmax over top-k logits                 all MoE, LayerNorm, fused qkv
//   glm4moe     neox   sigmoid (default) + exp_probs_b,          leading_dense_block_count dense;
//               (partial: rope.dimension_count)  renorm, scale    trailing nextn_predict_layers not run
//   arctic      normal softmax over top-k logits                 all MoE + a dense residual MLP beside it
//   grok        neox   softmax over top-k logits                 all MoE, GELU experts, soft-capped attention,
//                                                                post-attention / post-MoE norms
//
// phimoe vs. Microsoft's release (Phi-3.5-MoE, HF modeling_phimoe): the table follows llama.cpp, which
// is what every GGUF user of phimoe runs today; the release differs in two places, so these files do
// not reproduce the HF model exactly (a later HF-exact variant would change exactly these):
//   - norms: HF uses nn.LayerNorm (mean subtracted, weight and bias, eps = rms_norm_eps); llama.cpp
//     runs RMSNorm(x) * w + b on the same tensors (attn_norm, ffn_norm, output_norm with .bias), with
//     the epsilon from attention.layer_norm_rms_epsilon (the key llama.cpp's converter writes).
//   - routing: HF routes with "sparsemixer" at inference (top-1 = argmax; softmax over the logits
//     within a 2 * jitter_eps relative band of it gives its weight; the same again with the top-1
//     masked for the second expert; weights not renormalised); llama.cpp uses softmax over all
//     logits, top-2, renormalised over the two (= softmax over the two chosen logits).
#include <fmt/format.h>

#include <cstring>
#include <string>
#include <vector>

#include "moe/error.h"
#include "moe/model.h"

namespace moe {
namespace {

struct ArchName {
  Arch arch;
  const char* name;
};
constexpr ArchName kArchNames[] = {
    {Arch::Llama, "llama"},         {Arch::Qwen2Moe, "qwen2moe"}, {Arch::Qwen3Moe, "qwen3moe"},
    {Arch::Olmoe, "olmoe"},         {Arch::Deepseek2, "deepseek2"}, {Arch::GptOss, "gpt-oss"},
    {Arch::Llama4, "llama4"},       {Arch::PhiMoe, "phimoe"},     {Arch::GraniteMoe, "granitemoe"},
    {Arch::Dbrx, "dbrx"},           {Arch::Glm4Moe, "glm4moe"},   {Arch::Arctic, "arctic"},
    {Arch::Grok, "grok"},
};

std::string shape_str(const gguf::TensorInfo& t) {
  std::string s = "[";
  for (uint32_t d = 0; d < t.n_dims; ++d) s += fmt::format("{}{}", d ? ", " : "", t.ne[d]);
  return s + "]";
}

// Typed access to `{arch}.*` keys with messages naming the key and the file.
class Meta {
 public:
  Meta(const gguf::GgufFile& f, std::string arch) : f_(f), arch_(std::move(arch)) {}
  std::string key(std::string_view suffix) const { return fmt::format("{}.{}", arch_, suffix); }

  std::optional<uint32_t> opt_u32(std::string_view suffix, uint32_t layer = 0) const {
    std::string k = key(suffix);
    const gguf::Value* v = f_.find(k);
    if (!v) return std::nullopt;
    uint64_t x = 0;
    if (v->type == gguf::ValueType::ARRAY) {  // per-layer arrays (e.g. head_count in some models)
      if (v->arr.empty()) fail(ErrorCode::Corrupt, "{}: metadata key '{}' is an empty array", f_.path(), k);
      auto u = v->arr.as_uint(layer < v->arr.size() ? layer : 0);
      if (!u) fail(ErrorCode::Corrupt, "{}: metadata key '{}' must hold non-negative integers", f_.path(), k);
      x = *u;
    } else {
      x = *f_.get_uint(k);  // throws Corrupt naming the key when the type is wrong
    }
    if (x > UINT32_MAX) fail(ErrorCode::Corrupt, "{}: metadata key '{}' = {} is out of range", f_.path(), k, x);
    return static_cast<uint32_t>(x);
  }
  uint32_t req_u32(std::string_view suffix, uint32_t layer = 0) const {
    auto v = opt_u32(suffix, layer);
    if (!v) fail(ErrorCode::Corrupt, "{}: missing required metadata key '{}'", f_.path(), key(suffix));
    return *v;
  }
  uint32_t req_pos_u32(std::string_view suffix, uint32_t layer = 0) const {
    uint32_t v = req_u32(suffix, layer);
    if (v == 0) fail(ErrorCode::Corrupt, "{}: metadata key '{}' must be positive", f_.path(), key(suffix));
    return v;
  }
  std::optional<float> opt_f32(std::string_view suffix) const {
    auto v = f_.get_float(key(suffix));
    if (!v) return std::nullopt;
    return static_cast<float>(*v);
  }
  float req_f32(std::string_view suffix) const {
    auto v = opt_f32(suffix);
    if (!v) fail(ErrorCode::Corrupt, "{}: missing required metadata key '{}'", f_.path(), key(suffix));
    return *v;
  }
  std::optional<bool> opt_bool(std::string_view suffix) const { return f_.get_bool(key(suffix)); }
  std::optional<std::string> opt_str(std::string_view suffix) const { return f_.get_string(key(suffix)); }

 private:
  const gguf::GgufFile& f_;
  std::string arch_;
};

class Tensors {
 public:
  explicit Tensors(const gguf::GgufFile& f) : f_(f) {}
  const gguf::TensorInfo* find(const std::string& name) const { return f_.find_tensor(name); }
  const gguf::TensorInfo& need(const std::string& name) const {
    const gguf::TensorInfo* t = f_.find_tensor(name);
    if (!t) fail(ErrorCode::Corrupt, "{}: missing tensor '{}'", f_.path(), name);
    return *t;
  }
  // Checks the leading dimensions (trailing ones must be 1).
  void check(const gguf::TensorInfo& t, std::initializer_list<uint64_t> ne, const char* why) const {
    size_t d = 0;
    bool ok = true;
    for (uint64_t want : ne) ok = ok && t.ne[d++] == want;
    for (; d < gguf::kMaxDims; ++d) ok = ok && t.ne[d] == 1;
    if (!ok) {
      std::string exp = "[";
      size_t i = 0;
      for (uint64_t w : ne) exp += fmt::format("{}{}", i++ ? ", " : "", w);
      fail(ErrorCode::Corrupt, "{}: tensor '{}' has shape {} but {} implies [{}", f_.path(), t.name, shape_str(t),
           why, exp.substr(1) + "]");
    }
  }

 private:
  const gguf::GgufFile& f_;
};

std::string blk(uint32_t il, const char* what) { return fmt::format("blk.{}.{}", il, what); }

}  // namespace

const char* arch_gguf_name(Arch a) noexcept {
  for (const auto& n : kArchNames)
    if (n.arch == a) return n.name;
  return "unknown";
}

ModelSpec load_model_spec(const gguf::GgufFile& f) {
  const std::string& path = f.path();
  auto arch_name = f.get_string("general.architecture");
  if (!arch_name) fail(ErrorCode::Corrupt, "{}: missing required metadata key 'general.architecture'", path);
  ModelSpec s;
  bool known = false;
  for (const auto& n : kArchNames)
    if (*arch_name == n.name) {
      s.arch = n.arch;
      known = true;
    }
  if (!known) {
    std::string list;
    for (const auto& n : kArchNames) list += fmt::format("{}{}", list.empty() ? "" : ", ", n.name);
    fail(ErrorCode::Unsupported, "{}: unsupported architecture '{}' (supported: {})", path, *arch_name, list);
  }
  s.arch_name = *arch_name;
  s.name = f.get_string("general.name").value_or("");
  const Meta m(f, s.arch_name);
  const Tensors T(f);
  const Arch A = s.arch;

  // --- dimensions -------------------------------------------------------------------------------
  const uint32_t n_block = m.req_pos_u32("block_count");
  // Every layer has tensors: a block count above the tensor count is corrupt (and would drive the
  // per-layer loops and allocations below with a number from the file).
  if (n_block > f.tensors().size())
    fail(ErrorCode::Corrupt, "{}: '{}' = {} but the file has only {} tensors", path, m.key("block_count"), n_block,
         f.tensors().size());
  // glm4moe: the last nextn_predict_layers blocks are NextN (multi-token prediction) layers, which
  // llama.cpp loads and never runs; block_count includes them.
  s.n_layer_nextn = A == Arch::Glm4Moe ? m.opt_u32("nextn_predict_layers").value_or(0) : 0;
  if (s.n_layer_nextn >= n_block)
    fail(ErrorCode::Corrupt, "{}: '{}' = {} leaves no layer of '{}' = {}", path, m.key("nextn_predict_layers"),
         s.n_layer_nextn, m.key("block_count"), n_block);
  s.n_layer = n_block - s.n_layer_nextn;
  s.n_embd = m.req_pos_u32("embedding_length");
  s.n_ctx_train = m.req_pos_u32("context_length");
  s.n_head = m.req_pos_u32("attention.head_count");
  s.n_head_kv = m.opt_u32("attention.head_count_kv").value_or(s.n_head);
  for (uint32_t il = 1; il < s.n_layer; ++il)
    if (m.req_u32("attention.head_count", il) != s.n_head || m.opt_u32("attention.head_count_kv", il).value_or(s.n_head_kv) != s.n_head_kv)
      fail(ErrorCode::Unsupported, "{}: per-layer attention head counts ('{}') are not supported", path,
           m.key("attention.head_count"));
  if (s.n_head_kv == 0 || s.n_head % s.n_head_kv != 0)
    fail(ErrorCode::Corrupt, "{}: '{}' = {} does not divide '{}' = {}", path, m.key("attention.head_count_kv"),
         s.n_head_kv, m.key("attention.head_count"), s.n_head);
  if (s.n_embd % s.n_head != 0 && !m.opt_u32("attention.key_length"))
    fail(ErrorCode::Corrupt, "{}: '{}' is missing and n_embd {} is not a multiple of n_head {}", path,
         m.key("attention.key_length"), s.n_embd, s.n_head);
  s.head_dim_k = m.opt_u32("attention.key_length").value_or(s.n_embd / s.n_head);
  s.head_dim_v = m.opt_u32("attention.value_length").value_or(s.head_dim_k);
  if (s.head_dim_k == 0 || s.head_dim_v == 0)
    fail(ErrorCode::Corrupt, "{}: '{}' / '{}' must be positive", path, m.key("attention.key_length"),
         m.key("attention.value_length"));
  s.n_ff_dense = m.opt_u32("feed_forward_length").value_or(0);

  // --- norms ------------------------------------------------------------------------------------
  s.layer_norm = A == Arch::Dbrx;  // phimoe: RMSNorm + bias as llama.cpp runs it (see the file comment)
  s.rms_eps = s.layer_norm ? m.req_f32("attention.layer_norm_epsilon") : m.req_f32("attention.layer_norm_rms_epsilon");
  if (!(s.rms_eps > 0.0f && s.rms_eps < 1.0f))
    fail(ErrorCode::Corrupt, "{}: norm epsilon {} is out of range", path, s.rms_eps);

  // --- RoPE -------------------------------------------------------------------------------------
  switch (A) {
    case Arch::Qwen2Moe: case Arch::Qwen3Moe: case Arch::Olmoe: case Arch::GptOss: case Arch::PhiMoe:
    case Arch::Dbrx: case Arch::Grok: case Arch::Glm4Moe:
      s.rope_style = RopeStyle::NeoX;
      break;
    default:
      s.rope_style = RopeStyle::Normal;
  }
  s.n_rot = m.opt_u32("rope.dimension_count").value_or(s.head_dim_k);
  if (s.n_rot > s.head_dim_k || s.n_rot % 2)
    fail(ErrorCode::Corrupt, "{}: '{}' = {} is odd or exceeds the head size {}", path, m.key("rope.dimension_count"),
         s.n_rot, s.head_dim_k);
  s.rope_freq_base = m.opt_f32("rope.freq_base").value_or(10000.0f);
  float factor = m.opt_f32("rope.scaling.factor").value_or(0.0f);
  if (factor == 0.0f) factor = m.opt_f32("rope.scale_linear").value_or(0.0f);
  std::string scaling = m.opt_str("rope.scaling.type").value_or(factor > 0.0f ? "linear" : "none");
  if (scaling == "none") s.rope_scaling = RopeScaling::None;
  else if (scaling == "linear") s.rope_scaling = RopeScaling::Linear;
  else if (scaling == "yarn") s.rope_scaling = RopeScaling::Yarn;
  else
    fail(ErrorCode::Unsupported, "{}: RoPE scaling type '{}' ('{}') is not supported", path, scaling,
         m.key("rope.scaling.type"));
  if (factor < 0.0f) fail(ErrorCode::Corrupt, "{}: negative '{}'", path, m.key("rope.scaling.factor"));
  s.rope_freq_scale = (s.rope_scaling == RopeScaling::None || factor == 0.0f) ? 1.0f : 1.0f / factor;
  s.yarn_orig_ctx = static_cast<float>(m.opt_u32("rope.scaling.original_context_length").value_or(s.n_ctx_train));
  s.yarn_ext_factor = m.opt_f32("rope.scaling.yarn_ext_factor").value_or(-1.0f);
  s.yarn_attn_factor =
      m.opt_f32("rope.scaling.yarn_attn_factor").value_or(m.opt_f32("rope.scaling.attn_factor").value_or(1.0f));
  s.yarn_beta_fast = m.opt_f32("rope.scaling.yarn_beta_fast").value_or(32.0f);
  s.yarn_beta_slow = m.opt_f32("rope.scaling.yarn_beta_slow").value_or(1.0f);
  if (A == Arch::Glm4Moe) {
    // rope.dimension_sections (M-RoPE, multimodal GLM files): llama.cpp then uses multi-section RoPE.
    if (const gguf::Value* sec = f.find(m.key("rope.dimension_sections"))) {
      auto at = [&](size_t i) -> uint64_t {
        if (sec->type != gguf::ValueType::ARRAY || i >= sec->arr.size()) return 0;
        return sec->arr.as_uint(i).value_or(0);
      };
      if (at(0) > 0 && at(1) > 0)
        fail(ErrorCode::Unsupported, "{}: '{}' asks for multi-section RoPE (M-RoPE), which is not supported", path,
             m.key("rope.dimension_sections"));
    }
    if (s.head_dim_k != s.head_dim_v)
      fail(ErrorCode::Corrupt, "{}: '{}' = {} differs from '{}' = {} (glm4moe has one head size)", path,
           m.key("attention.key_length"), s.head_dim_k, m.key("attention.value_length"), s.head_dim_v);
  }
  // llama.cpp multiplies every rotation's cos/sin by rope.scaling.attn_factor (YaRN folds it into
  // yarn_attn_factor above).
  if (s.rope_scaling != RopeScaling::Yarn) {
    s.rope_attn_factor = m.opt_f32("rope.scaling.attn_factor").value_or(1.0f);
    if (!(s.rope_attn_factor > 0.0f && s.rope_attn_factor < 100.0f))
      fail(ErrorCode::Corrupt, "{}: '{}' = {} is out of range", path, m.key("rope.scaling.attn_factor"),
           s.rope_attn_factor);
  }
  if (A == Arch::PhiMoe) {
    // Phi-3 LongRoPE: both factor tensors or neither (llama.cpp loads either as optional; a file with
    // one would run without factors on one side of the context threshold). One factor per pair of
    // the head (llama.cpp's phimoe loader: n_embd_head / 2; the rotation reads the first n_rot / 2).
    const auto* fl = T.find("rope_factors_long.weight");
    const auto* fs = T.find("rope_factors_short.weight");
    if ((fl == nullptr) != (fs == nullptr))
      fail(ErrorCode::Corrupt, "{}: tensor '{}' without '{}'", path, fl ? fl->name : fs->name,
           fl ? "rope_factors_short.weight" : "rope_factors_long.weight");
    if (fl) {
      T.check(*fl, {s.head_dim_k / 2}, "the head size / 2");
      T.check(*fs, {s.head_dim_k / 2}, "the head size / 2");
      s.rope_factors = true;
    }
  }
  // DeepSeek's mscale rule (0.1 * mscale_all_dim); llama.cpp reads it for deepseek2 only among these archs.
  if (A == Arch::Deepseek2) s.yarn_log_mul = m.opt_f32("rope.scaling.yarn_log_multiplier").value_or(0.0f);

  // --- embeddings / vocabulary --------------------------------------------------------------------
  const auto& embd = T.need("token_embd.weight");
  if (embd.n_dims != 2 || embd.ne[0] != s.n_embd)
    fail(ErrorCode::Corrupt, "{}: tensor 'token_embd.weight' has shape {} but '{}' = {}", path, shape_str(embd),
         m.key("embedding_length"), s.n_embd);
  if (embd.ne[1] > UINT32_MAX) fail(ErrorCode::Corrupt, "{}: vocabulary of {} tokens is too large", path, embd.ne[1]);
  s.n_vocab = static_cast<uint32_t>(embd.ne[1]);
  if (const gguf::Value* toks = f.find("tokenizer.ggml.tokens");
      toks && toks->type == gguf::ValueType::ARRAY && toks->arr.size() != s.n_vocab)
    fail(ErrorCode::Corrupt, "{}: 'tokenizer.ggml.tokens' has {} entries but token_embd has {} rows", path,
         toks->arr.size(), s.n_vocab);
  if (auto v = m.opt_u32("vocab_size"); v && *v != s.n_vocab)
    fail(ErrorCode::Corrupt, "{}: '{}' = {} but token_embd has {} rows", path, m.key("vocab_size"), *v, s.n_vocab);
  s.tied_embeddings = T.find("output.weight") == nullptr;
  if (!s.tied_embeddings) T.check(T.need("output.weight"), {s.n_embd, s.n_vocab}, "the embedding and vocabulary size");
  auto tok_id = [&](const char* key) -> std::optional<uint32_t> {
    auto v = f.get_uint(key);
    if (!v) return std::nullopt;
    if (*v >= s.n_vocab) fail(ErrorCode::Corrupt, "{}: '{}' = {} is outside the vocabulary of {}", path, key, *v, s.n_vocab);
    return static_cast<uint32_t>(*v);
  };
  s.bos_id = tok_id("tokenizer.ggml.bos_token_id");
  s.eos_id = tok_id("tokenizer.ggml.eos_token_id");

  // --- attention details --------------------------------------------------------------------------
  if (A == Arch::Deepseek2) {
    // Multi-head latent attention. Two layouts exist: newer files split attn_kv_b into attn_k_b /
    // attn_v_b and describe the absorbed (MQA) view: key_length = kv_lora_rank + rope dims,
    // value_length = kv_lora_rank, key_length_mla / value_length_mla = the per-head sizes; older files
    // have attn_kv_b and key_length / value_length = the per-head sizes.
    s.q_lora_rank = m.opt_u32("attention.q_lora_rank").value_or(0);
    s.kv_lora_rank = m.req_pos_u32("attention.kv_lora_rank");
    if (!m.opt_u32("rope.dimension_count"))
      fail(ErrorCode::Corrupt, "{}: missing required metadata key '{}'", path, m.key("rope.dimension_count"));
    const auto k_mla = m.opt_u32("attention.key_length_mla"), v_mla = m.opt_u32("attention.value_length_mla");
    if (k_mla.has_value() != v_mla.has_value())
      fail(ErrorCode::Corrupt, "{}: '{}' and '{}' must be given together", path, m.key("attention.key_length_mla"),
           m.key("attention.value_length_mla"));
    s.mla_split_kv_b = T.find(blk(0, "attn_k_b.weight")) != nullptr;
    if (s.mla_split_kv_b != k_mla.has_value())
      fail(ErrorCode::Corrupt, "{}: tensor '{}' {} but '{}' is {}", path, blk(0, "attn_k_b.weight"),
           s.mla_split_kv_b ? "exists" : "is missing", m.key("attention.key_length_mla"),
           k_mla ? "present" : "absent");
    if (k_mla) {
      if (s.head_dim_k != s.kv_lora_rank + s.n_rot || s.head_dim_v != s.kv_lora_rank)
        fail(ErrorCode::Corrupt, "{}: '{}' = {} / '{}' = {} must be kv_lora_rank + rope dims = {} / kv_lora_rank = {}",
             path, m.key("attention.key_length"), s.head_dim_k, m.key("attention.value_length"), s.head_dim_v,
             s.kv_lora_rank + s.n_rot, s.kv_lora_rank);
      s.mla_head_dim_k = *k_mla;
      s.mla_head_dim_v = *v_mla;
    } else {
      s.mla_head_dim_k = s.head_dim_k;
      s.mla_head_dim_v = s.head_dim_v;
    }
    if (s.mla_head_dim_k <= s.n_rot || s.mla_head_dim_v == 0)
      fail(ErrorCode::Corrupt, "{}: MLA head sizes k {} / v {} leave no room beside {} rope dims", path,
           s.mla_head_dim_k, s.mla_head_dim_v, s.n_rot);
    T.check(T.need(blk(0, "attn_kv_a_mqa.weight")), {s.n_embd, uint64_t(s.kv_lora_rank) + s.n_rot},
            "kv_lora_rank + rope.dimension_count");
    if (s.q_lora_rank == 0 && !T.find(blk(0, "attn_q.weight")))
      fail(ErrorCode::Corrupt, "{}: missing tensor '{}' (q_lora_rank is 0)", path, blk(0, "attn_q.weight"));
    if (s.q_lora_rank > 0 && !T.find(blk(0, "attn_q_a.weight")))
      fail(ErrorCode::Corrupt, "{}: missing tensor '{}' (q_lora_rank is {})", path, blk(0, "attn_q_a.weight"),
           s.q_lora_rank);
    // What the engine caches per token: the latent and the rotated key part, one "kv head".
    s.n_head_kv = 1;
    s.head_dim_k = s.kv_lora_rank + s.n_rot;
    s.head_dim_v = s.kv_lora_rank;
  }
  s.fused_qkv = T.find(blk(0, "attn_qkv.weight")) != nullptr && T.find(blk(0, "attn_q.weight")) == nullptr;
  s.attn_bias = T.find(blk(0, "attn_q.bias")) != nullptr || T.find(blk(0, "attn_qkv.bias")) != nullptr;
  s.attn_out_bias = T.find(blk(0, "attn_output.bias")) != nullptr;
  s.attn_sinks = T.find(blk(0, "attn_sinks.weight")) != nullptr;
  uint32_t swa_pattern = 0;
  if (A == Arch::GptOss) {
    // As llama.cpp runs gpt-oss: sliding_window is required; layer il uses it when
    // il % pattern < pattern - 1 (pattern: sliding_window_pattern, default 2 = the even layers).
    s.n_swa = m.req_u32("attention.sliding_window");
    const gguf::Value* pat = f.find(m.key("attention.sliding_window_pattern"));
    if (pat && pat->type == gguf::ValueType::ARRAY)
      fail(ErrorCode::Unsupported, "{}: a per-layer '{}' array is not supported", path,
           m.key("attention.sliding_window_pattern"));
    swa_pattern = m.opt_u32("attention.sliding_window_pattern").value_or(2);
    if (auto b = m.opt_f32("rope.freq_base_swa"); b && *b != s.rope_freq_base)
      fail(ErrorCode::Unsupported,
           "{}: '{}' = {} differs from '{}' = {} (a separate RoPE base for the sliding-window layers is not supported)",
           path, m.key("rope.freq_base_swa"), *b, m.key("rope.freq_base"), s.rope_freq_base);
    if (!s.attn_sinks) fail(ErrorCode::Corrupt, "{}: missing tensor '{}'", path, blk(0, "attn_sinks.weight"));
    s.ffn_norm_post_attention = true;
  }
  if (A == Arch::Dbrx) s.clamp_kqv = m.opt_f32("attention.clamp_kqv").value_or(0.0f);
  if (A == Arch::PhiMoe) {
    // llama.cpp's phimoe loader requires every norm bias, the LM head and its bias, and q/k/v of
    // n_embd rows each (head size = n_embd / n_head).
    for (const char* t : {"output_norm.bias", "output.weight", "output.bias"}) T.need(t);
    T.need(blk(0, "attn_norm.bias"));
    T.need(blk(0, "ffn_norm.bias"));
    T.need(blk(0, "attn_output.bias"));
    s.norm_bias = true;
    s.output_bias = true;
    T.check(T.need("output.bias"), {s.n_vocab}, "the vocabulary size");
    if (uint64_t(s.n_head) * s.head_dim_k != s.n_embd || s.head_dim_v != s.head_dim_k)
      fail(ErrorCode::Corrupt, "{}: phimoe needs n_head * head size = n_embd ({} * {} / {} != {})", path, s.n_head,
           s.head_dim_k, s.head_dim_v, s.n_embd);
  }
  s.moe_parallel_dense = A == Arch::Arctic;
  if (A == Arch::Grok) {
    // The defaults are llama.cpp's for grok-1 files written before these keys existed.
    s.embedding_scale = m.opt_f32("embedding_scale").value_or(78.38367176906169f);
    s.attention_scale = m.opt_f32("attention.output_scale").value_or(0.08838834764831845f);
    s.attn_softcap = m.opt_f32("attn_logit_softcapping").value_or(30.0f);
    s.logit_mul = m.opt_f32("logit_scale").value_or(0.5773502691896257f);
    s.final_softcap = m.opt_f32("final_logit_softcapping").value_or(0.0f);
    s.attn_post_norm = true;
    s.ffn_post_norm = true;
    T.need(blk(0, "attn_output_norm.weight"));
    if (!T.find(blk(0, "layer_output_norm.weight")) && !T.find(blk(0, "post_ffw_norm.weight")))
      fail(ErrorCode::Corrupt, "{}: missing tensor '{}' (or '{}')", path, blk(0, "layer_output_norm.weight"),
           blk(0, "post_ffw_norm.weight"));
    if (T.find(blk(0, "ffn_up.weight")))
      fail(ErrorCode::Unsupported, "{}: grok layers with a dense FFN beside the experts (Grok-2) are not supported",
           path);
    s.ffn_act = FfnAct::GeluGlu;
  }
  if (A == Arch::Glm4Moe) s.ffn_norm_post_attention = true;  // the pre-FFN norm is post_attention_norm
  if (A == Arch::GraniteMoe) {
    s.embedding_scale = m.opt_f32("embedding_scale").value_or(0.0f);
    s.residual_scale = m.opt_f32("residual_scale").value_or(0.0f);
    s.attention_scale = m.opt_f32("attention.scale").value_or(0.0f);
    s.logit_scale = m.opt_f32("logit_scale").value_or(0.0f);
  }
  if (const auto* qn = T.find(blk(0, "attn_q_norm.weight"))) {
    if (qn->ne[0] == s.head_dim_k) s.qk_norm = QkNorm::PerHead;
    else if (qn->ne[0] == uint64_t(s.n_head) * s.head_dim_k) s.qk_norm = QkNorm::Full;
    else
      fail(ErrorCode::Corrupt, "{}: tensor '{}' has shape {}: neither the head size {} nor n_head * head size {}",
           path, qn->name, shape_str(*qn), s.head_dim_k, uint64_t(s.n_head) * s.head_dim_k);
  }
  if (A == Arch::Qwen3Moe && s.qk_norm != QkNorm::PerHead)
    fail(ErrorCode::Corrupt, "{}: missing tensor '{}' (per-head q norm)", path, blk(0, "attn_q_norm.weight"));
  if (A == Arch::Glm4Moe && s.qk_norm == QkNorm::Full)
    fail(ErrorCode::Corrupt, "{}: tensor '{}' must have the head size {} (glm4moe normalises q/k per head)", path,
         blk(0, "attn_q_norm.weight"), s.head_dim_k);
  if (A == Arch::Olmoe && s.qk_norm != QkNorm::Full)
    fail(ErrorCode::Corrupt, "{}: missing tensor '{}' (q norm over the projection)", path, blk(0, "attn_q_norm.weight"));
  uint32_t chunk_pattern = 0;
  if (A == Arch::Llama4) {
    // As llama.cpp runs llama4 (src/models/llama4.cpp): attention.sliding_window = 0 marks the variant
    // without chunked attention (MobileLLM), which llama.cpp runs with a NoPE last layer and no
    // temperature floor; not supported here. Otherwise the chunk (8192), the temperature tuning
    // (scale 0.1, floor 8192, offset 1) are fixed in llama.cpp: it reads no key for them, whatever
    // sliding_window says. moe reads two optional keys of its own so tests can make them small:
    // llama4.attention.chunk_size and llama4.attention.temperature_length (files that carry them run
    // differently in llama.cpp unless they equal 8192). Layer il is chunked when
    // il % sliding_window_pattern < pattern - 1 (default 4: 3 chunked, 1 full) and uses no RoPE when
    // (il + 1) % 4 == 0; the chunked layers' RoPE base is rope.freq_base_swa (default rope.freq_base).
    if (auto w = m.opt_u32("attention.sliding_window"); w && *w == 0)
      fail(ErrorCode::Unsupported, "{}: '{}' = 0 (llama4 without chunked attention) is not supported", path,
           m.key("attention.sliding_window"));
    const gguf::Value* pat = f.find(m.key("attention.sliding_window_pattern"));
    if (pat && pat->type == gguf::ValueType::ARRAY)
      fail(ErrorCode::Unsupported, "{}: a per-layer '{}' array is not supported", path,
           m.key("attention.sliding_window_pattern"));
    chunk_pattern = m.opt_u32("attention.sliding_window_pattern").value_or(4);
    s.n_chunk = m.opt_u32("attention.chunk_size").value_or(8192);
    s.attn_temp_length = m.opt_u32("attention.temperature_length").value_or(8192);
    if (s.n_chunk == 0 || s.attn_temp_length == 0)
      fail(ErrorCode::Corrupt, "{}: '{}' and '{}' must be positive", path, m.key("attention.chunk_size"),
           m.key("attention.temperature_length"));
    s.attn_temp_scale = 0.1f;
    s.attn_temp_offset = 1.0f;
    s.no_rope_layer_step = 4;
    if (auto b = m.opt_f32("rope.freq_base_swa"); b && *b != s.rope_freq_base)
      fail(ErrorCode::Unsupported,
           "{}: '{}' = {} differs from '{}' = {} (a separate RoPE base for the chunked layers is not supported)",
           path, m.key("rope.freq_base_swa"), *b, m.key("rope.freq_base"), s.rope_freq_base);
    if (s.n_rot != s.head_dim_k || s.head_dim_v != s.head_dim_k)
      fail(ErrorCode::Corrupt, "{}: llama4 needs rope.dimension_count = key_length = value_length ({} / {} / {})",
           path, s.n_rot, s.head_dim_k, s.head_dim_v);
  }
  if (!s.fused_qkv && s.kv_lora_rank == 0) {
    T.check(T.need(blk(0, "attn_q.weight")), {s.n_embd, uint64_t(s.n_head) * s.head_dim_k}, "n_head * key_length");
    T.check(T.need(blk(0, "attn_k.weight")), {s.n_embd, uint64_t(s.n_head_kv) * s.head_dim_k},
            "n_head_kv * key_length");
  }

  s.rope_freqs = T.find("rope_freqs.weight") != nullptr;
  if (s.rope_freqs && s.kv_lora_rank)
    fail(ErrorCode::Unsupported, "{}: RoPE frequency factors ('rope_freqs.weight') with latent attention are not supported",
         path);
  if (s.rope_freqs && s.rope_factors)
    fail(ErrorCode::Corrupt, "{}: both 'rope_freqs.weight' and LongRoPE factors", path);

  // --- experts ------------------------------------------------------------------------------------
  const uint32_t n_expert = m.opt_u32("expert_count").value_or(0);
  const uint32_t n_used = m.opt_u32("expert_used_count").value_or(0);
  if (A != Arch::Llama && n_expert == 0)
    fail(ErrorCode::Corrupt, "{}: missing required metadata key '{}' (a {} model has experts)", path,
         m.key("expert_count"), s.arch_name);
  if (n_expert > 0) {
    if (!m.opt_u32("expert_used_count"))
      fail(ErrorCode::Corrupt, "{}: missing required metadata key '{}'", path, m.key("expert_used_count"));
    if (n_used == 0 || n_used > n_expert)
      fail(ErrorCode::Corrupt, "{}: '{}' = {} must be in 1..'{}' = {}", path, m.key("expert_used_count"), n_used,
           m.key("expert_count"), n_expert);
  }
  const uint32_t n_dense_lead = A == Arch::Deepseek2 || A == Arch::Glm4Moe
                                    ? m.opt_u32("leading_dense_block_count").value_or(0) : 0;
  const uint32_t moe_step = A == Arch::Llama4 ? m.req_u32("interleave_moe_layer_step") : 1;
  if (moe_step == 0) fail(ErrorCode::Corrupt, "{}: '{}' must be positive", path, m.key("interleave_moe_layer_step"));
  const auto ff_exp_key = m.opt_u32("expert_feed_forward_length");
  const auto ff_shexp_key = m.opt_u32("expert_shared_feed_forward_length");
  const auto n_shared_key = m.opt_u32("expert_shared_count");

  s.layers.resize(s.n_layer);
  for (uint32_t il = 0; il < s.n_layer; ++il) {
    LayerSpec& L = s.layers[il];
    L.swa = s.n_swa > 0 && (swa_pattern == 0 || il % swa_pattern < swa_pattern - 1);
    L.chunked = s.n_chunk > 0 && (chunk_pattern == 0 || il % chunk_pattern < chunk_pattern - 1);
    L.rope = !(s.no_rope_layer_step > 0 && (il + 1) % s.no_rope_layer_step == 0);
    L.is_moe = n_expert > 0 && il >= n_dense_lead && (il + 1) % moe_step == 0;
    if (!L.is_moe) {
      // Dense FFN: its size comes from feed_forward_length (possibly per layer) and the tensor.
      const auto* up = T.find(blk(il, "ffn_up.weight"));
      auto ff = m.opt_u32("feed_forward_length", il);
      if (!ff && !up) fail(ErrorCode::Corrupt, "{}: missing required metadata key '{}'", path, m.key("feed_forward_length"));
      L.n_ff_dense = ff ? *ff : static_cast<uint32_t>(up->ne[1]);
      T.check(T.need(blk(il, "ffn_up.weight")), {s.n_embd, L.n_ff_dense}, "feed_forward_length");
      T.check(T.need(blk(il, "ffn_down.weight")), {L.n_ff_dense, s.n_embd}, "feed_forward_length");
      continue;
    }
    L.n_expert = n_expert;
    L.n_expert_used = n_used;
    T.check(T.need(blk(il, "ffn_gate_inp.weight")), {s.n_embd, n_expert}, "expert_count");
    if (A == Arch::Arctic) {  // the dense residual MLP beside the experts
      const auto& up = T.need(blk(il, "ffn_up.weight"));
      L.n_ff_dense = static_cast<uint32_t>(up.ne[1]);
      T.check(up, {s.n_embd, L.n_ff_dense}, "embedding_length");
      T.check(T.need(blk(il, "ffn_down.weight")), {L.n_ff_dense, s.n_embd}, "the residual MLP size");
      T.check(T.need(blk(il, "ffn_norm_exps.weight")), {s.n_embd}, "embedding_length");
    }
    // Routed expert hidden size: the metadata key if present, else the tensor.
    uint64_t ff_t = 0;
    if (const auto* d = T.find(blk(il, "ffn_down_exps.weight"))) {
      ff_t = d->ne[0];
      T.check(*d, {ff_t, s.n_embd, n_expert}, "embedding_length and expert_count");
    } else if (const auto* d0 = T.find(fmt::format("blk.{}.ffn_down.0.weight", il))) {
      ff_t = d0->ne[0];
    } else {
      fail(ErrorCode::Corrupt, "{}: missing tensor '{}' (nor per-expert '{}')", path, blk(il, "ffn_down_exps.weight"),
           fmt::format("blk.{}.ffn_down.0.weight", il));
    }
    uint32_t ff = ff_exp_key.value_or(0);
    if (ff == 0 && (A == Arch::Llama || A == Arch::PhiMoe || A == Arch::Dbrx || A == Arch::GraniteMoe ||
                    A == Arch::Arctic || A == Arch::Grok))
      ff = s.n_ff_dense;
    if (ff == 0) ff = static_cast<uint32_t>(ff_t);
    if (ff != ff_t)
      fail(ErrorCode::Corrupt, "{}: expert hidden size {} from '{}' does not match tensor '{}' ({} rows)", path, ff,
           m.key(ff_exp_key ? "expert_feed_forward_length" : "feed_forward_length"), blk(il, "ffn_down_exps.weight"),
           ff_t);
    L.n_ff_expert = ff;
    // Shared experts: dense tensors *_shexp.
    if (const auto* su = T.find(blk(il, "ffn_up_shexp.weight"))) {
      L.n_ff_shared = static_cast<uint32_t>(su->ne[1]);
      T.check(*su, {s.n_embd, L.n_ff_shared}, "embedding_length");
      T.check(T.need(blk(il, "ffn_down_shexp.weight")), {L.n_ff_shared, s.n_embd}, "the shared expert size");
      L.n_expert_shared = n_shared_key.value_or(1);
      if (L.n_expert_shared == 0)
        fail(ErrorCode::Corrupt, "{}: '{}' is 0 but tensor '{}' exists", path, m.key("expert_shared_count"), su->name);
      if ((A == Arch::Deepseek2 || A == Arch::Glm4Moe) && uint64_t(L.n_expert_shared) * L.n_ff_expert != L.n_ff_shared)
        fail(ErrorCode::Corrupt, "{}: tensor '{}' has {} rows but '{}' x expert size = {}", path, su->name,
             L.n_ff_shared, m.key("expert_shared_count"), uint64_t(L.n_expert_shared) * L.n_ff_expert);
      if (ff_shexp_key && *ff_shexp_key != L.n_ff_shared)
        fail(ErrorCode::Corrupt, "{}: '{}' = {} but tensor '{}' has {} rows", path,
             m.key("expert_shared_feed_forward_length"), *ff_shexp_key, su->name, L.n_ff_shared);
    } else if (n_shared_key.value_or(0) > 0) {
      fail(ErrorCode::Corrupt, "{}: '{}' = {} but tensor '{}' is missing", path, m.key("expert_shared_count"),
           *n_shared_key, blk(il, "ffn_up_shexp.weight"));
    }
  }
  for (const auto& L : s.layers)
    if (L.is_moe) {
      if (s.n_moe_layer == 0) {
        s.n_expert = L.n_expert;
        s.n_expert_used = L.n_expert_used;
        s.n_expert_shared = L.n_expert_shared;
        s.n_ff_expert = L.n_ff_expert;
      }
      ++s.n_moe_layer;
    }
  if (s.n_moe_layer == 0 && n_expert > 0)
    fail(ErrorCode::Corrupt, "{}: '{}' = {} but no layer has routed experts", path, m.key("expert_count"), n_expert);
  uint32_t first_moe = 0;
  while (first_moe < s.n_layer && !s.layers[first_moe].is_moe) ++first_moe;

  // --- gating rules -------------------------------------------------------------------------------
  Gating& g = s.gating;
  switch (A) {
    case Arch::Llama: case Arch::PhiMoe: case Arch::GraniteMoe: case Arch::Dbrx: case Arch::Arctic: case Arch::Grok:
      g.func = GatingFunc::Softmax;
      g.topk_before_norm = true;  // == softmax over all, top-k, renormalize
      break;
    case Arch::Qwen2Moe:
      g.func = GatingFunc::Softmax;
      g.renormalize = m.opt_bool("expert_weights_norm").value_or(false);
      break;
    case Arch::Qwen3Moe:
      g.func = GatingFunc::Softmax;
      g.renormalize = m.opt_bool("expert_weights_norm").value_or(true);
      break;
    case Arch::Olmoe:
      g.func = GatingFunc::Softmax;
      g.renormalize = m.opt_bool("expert_weights_norm").value_or(false);
      break;
    case Arch::Deepseek2: case Arch::Glm4Moe: {
      // deepseek2: absent in V2 files = softmax; glm4moe (GLM-4.5/4.6): absent or 0 = sigmoid.
      const uint32_t dflt = A == Arch::Glm4Moe ? 2 : 1;
      uint32_t func = m.opt_u32("expert_gating_func").value_or(dflt);
      if (func == 0) func = dflt;
      if (func == 1) g.func = GatingFunc::Softmax;
      else if (func == 2) g.func = GatingFunc::Sigmoid;
      else
        fail(ErrorCode::Unsupported, "{}: '{}' = {} is not supported (1 = softmax, 2 = sigmoid)", path,
             m.key("expert_gating_func"), func);
      g.renormalize = m.opt_bool("expert_weights_norm").value_or(false);
      g.scale = m.opt_f32("expert_weights_scale").value_or(1.0f);
      if (g.scale == 0.0f) g.scale = 1.0f;  // llama.cpp: 0 means "not scaled"
      g.n_group = m.opt_u32("expert_group_count").value_or(0);
      g.topk_group = m.opt_u32("expert_group_used_count").value_or(0);
      if (g.n_group > 1) {
        // The chosen groups must hold at least the k experts picked from them.
        if (s.n_expert % g.n_group != 0 || g.topk_group == 0 || g.topk_group > g.n_group ||
            uint64_t(g.topk_group) * (s.n_expert / g.n_group) < s.n_expert_used)
          fail(ErrorCode::Corrupt, "{}: expert groups {} (used {}) do not fit {} experts (top-{})", path, g.n_group,
               g.topk_group, s.n_expert, s.n_expert_used);
      }
      if (first_moe < s.n_layer) {
        if (const auto* b = T.find(blk(first_moe, "exp_probs_b.bias"))) {
          g.has_bias = true;
          T.check(*b, {s.n_expert}, "expert_count");
        } else if (A == Arch::Glm4Moe) {
          fail(ErrorCode::Corrupt, "{}: missing tensor '{}' (glm4moe's expert selection bias)", path,
               blk(first_moe, "exp_probs_b.bias"));
        }
      }
      break;
    }
    case Arch::GptOss:
      g.func = GatingFunc::Softmax;
      g.topk_before_norm = true;
      s.ffn_act = FfnAct::SwigluOai;
      break;
    case Arch::Llama4:
      // Top-k on the raw router logits, weights = sigmoid of the chosen logits (not renormalised), and
      // each chosen expert's INPUT is multiplied by its weight (llama.cpp build_moe_ffn for llama4).
      g.func = GatingFunc::Sigmoid;
      g.topk_before_norm = true;
      g.weight_before_ffn = true;
      // llama.cpp: use_kq_norm unless the model type is 17B_128E, i.e. expert_count == 128 (Maverick).
      s.qk_l2_norm = s.n_expert != 128;
      break;
  }
  if (first_moe < s.n_layer) {
    g.shared_gate = T.find(blk(first_moe, "ffn_gate_inp_shexp.weight")) != nullptr;
    if (g.shared_gate) T.check(*T.find(blk(first_moe, "ffn_gate_inp_shexp.weight")), {s.n_embd}, "embedding_length");
    if (const auto* rb = T.find(blk(first_moe, "ffn_gate_inp.bias"))) {
      g.router_bias = true;
      T.check(*rb, {s.n_expert}, "expert_count");
    }
  }
  return s;
}

}  // namespace moe
