// Synthetic model generator (moe/gen.h): random weights written in the GGUF layout llama.cpp
// expects for llama (Mixtral), qwen2moe, qwen3moe, olmoe, granitemoe, dbrx, deepseek2 (DeepSeek-V2/V3),
// gpt-oss, llama4, glm4moe (GLM-4.5/4.6), arctic and grok, streamed through GgufWriter in chunks
// so even a 50 GB preset is written in a few MiB of memory. Reentrant; each call spawns at most
// opts.threads - 1 short-lived worker threads per chunk.
//
// Determinism: element j of row r of tensor T is drawn from a generator seeded by
// (seed, name of T, r) only, so the bytes do not depend on chunking or the thread count.
// Scales: a weight with fan-in n is uniform with standard deviation 1/sqrt(n) (output projections
// additionally 1/sqrt(2 * n_layer) so the residual stream stays O(1)); norms are 1 +- 0.05; biases
// small; token embeddings unit variance; the LM head 3/sqrt(n_embd) so logits are peaked.
// Router skew S: in layer L the router row of the expert ranked k (ranks are a seeded permutation
// per layer) is scaled by (1 + k)^-S (then rescaled to unit RMS). A row with a larger norm gives a
// logit with a larger spread, so it wins top-k more often: popularity falls with rank, Zipf-like.
// gpt-oss (llama.cpp's loader, src/models/openai-moe.cpp): q/k/v/o biases, attn_sinks [n_head] (uniform
// in [-1, 1): the sink then takes a visible share of each softmax), post_attention_norm instead of
// ffn_norm, router bias, per-expert biases [n_ff|n_embd, n_expert], biases uniform in [-0.1, 0.1];
// expert gate/up weights 3x the usual scale so the clamped SwiGLU's limit of 7 is reached by a few
// percent of the activations; YaRN RoPE as the release (factor 32 over an original context of 4096,
// base 150000); sliding_window n_swa (llama.cpp: the even layers).
// glm4moe (llama.cpp's loader, src/models/glm4-moe.cpp): q/k/v biases, optional per-head q/k norms,
// post_attention_norm, dense ffn_gate/up/down in the leading_dense_block_count first layers, then
// router + exp_probs_b (std 0.1, so it changes choices), stacked experts and the shared expert
// (expert_shared_count x the expert size); rope.dimension_count = half the head size; NextN layers
// after the run ones: a full MoE block plus nextn.eh_proj [2 n_embd, n_embd], nextn.enorm, nextn.hnorm
// and nextn.shared_head_norm (the optional vocabulary-sized nextn tensors are not written).
// phimoe (llama.cpp's loader, src/models/phimoe.cpp): biases on attn_norm, ffn_norm, output_norm, q/k/v,
// attn_output and the LM head (output.bias); q/k/v of n_embd rows; expert size from feed_forward_length;
// Phi-3 LongRoPE as the converter writes it: rope_factors_long / rope_factors_short (head size / 2
// each; short 1 +- 0.05, long 1 +- 0.9 so they visibly change positions),
// rope.scaling.original_context_length 256 (llama.cpp then uses the long factors from a context of
// 257, the short ones below), rope.scaling.attn_factor sqrt(1 + ln(ctx / orig) / ln(orig)),
// attention.sliding_window = the context (llama.cpp ignores it for phimoe); vocabulary phi-3.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "moe/error.h"
#include "moe/gen.h"
#include "moe/gguf.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/types.h"

#ifndef MOE_DEFAULT_DATA_DIR
#define MOE_DEFAULT_DATA_DIR ""
#endif

namespace moe {
namespace {

struct Preset {
  const char* name;
  const char* arch;
  uint32_t n_layer, n_embd, n_ff, n_ff_shared, n_expert, n_used, n_head, n_head_kv, head_dim, n_ctx, n_vocab;
  float rope_base, eps;
  uint32_t n_swa;  // gpt-oss sliding window
};
// Shapes of the public releases (the names say which); tiny is for tests.
constexpr Preset kPresets[] = {
    {"tiny", "", 4, 128, 128, 0, 8, 2, 4, 2, 32, 2048, 0, 10000.0f, 1e-5f, 4},
    {"olmoe-1b-7b", "olmoe", 16, 2048, 1024, 0, 64, 8, 16, 16, 128, 4096, 50304, 10000.0f, 1e-5f, 0},
    {"qwen3-30b-a3b", "qwen3moe", 48, 2048, 768, 0, 128, 8, 32, 4, 128, 40960, 0, 1000000.0f, 1e-6f, 0},
    {"mixtral-8x7b", "llama", 32, 4096, 14336, 0, 8, 2, 32, 8, 128, 32768, 0, 1000000.0f, 1e-5f, 0},
    {"gpt-oss-20b", "gpt-oss", 24, 2880, 2880, 0, 32, 4, 64, 8, 64, 131072, 0, 150000.0f, 1e-5f, 128},
    {"tiny-v3", "deepseek2", 4, 128, 64, 0, 16, 4, 4, 1, 0, 2048, 0, 10000.0f, 1e-6f, 0},
    {"deepseek-v2-lite", "deepseek2", 27, 2048, 1408, 0, 64, 6, 16, 1, 0, 163840, 102400, 10000.0f, 1e-6f, 0},
    {"glm-4.5-air", "glm4moe", 46, 4096, 1408, 0, 128, 8, 96, 8, 128, 131072, 151552, 1000000.0f, 1e-5f, 0},
};
constexpr const char* kArchs[] = {"llama",     "qwen2moe", "qwen3moe", "olmoe",   "granitemoe", "dbrx",
                                  "deepseek2", "gpt-oss",  "llama4",   "glm4moe", "arctic",     "grok",
                                  "phimoe"};
// phimoe's LongRoPE original context (Phi-3.5-MoE: 4096 of 131072); small so tests reach both sides.
constexpr uint32_t kPhiMoeOrigCtx = 256;
// grok: grok-1's embedding multiplier and logit scale; the attention and final soft-caps are written
// smaller than the release's (30, none) so that random unit-scale scores reach them, and the softmax
// scale is 1/sqrt(head size) (grok-1's 0.0884 is that for its 128-wide heads).
constexpr float kGrokEmbeddingScale = 78.38367176906169f, kGrokLogitScale = 0.5773502691896257f,
                kGrokAttnSoftcap = 2.0f, kGrokFinalSoftcap = 10.0f;
// llama4 (Llama 4 Scout/Maverick layout, llama.cpp src/models/llama4.cpp): MoE layers every second layer
// (interleave_moe_layer_step 2, as Maverick; Scout uses 1) so dense and MoE layers both occur, a shared
// expert of the routed size in each MoE layer, top-1 sigmoid routing, dense layers of twice the expert
// size, RoPE base 500000 as the release.
constexpr uint32_t kLlama4MoeStep = 2;
constexpr float kLlama4RopeBase = 500000.0f;
bool llama4_moe_layer(uint32_t il) { return (il + 1) % kLlama4MoeStep == 0; }
// gpt-oss's YaRN as released: factor 32 over an original context of 4096 tokens, base 150000.
constexpr float kGptOssRopeBase = 150000.0f, kGptOssYarnFactor = 32.0f;
constexpr uint32_t kGptOssYarnOrigCtx = 4096;
// dbrx clamps q, k and v to [-c, c]. The release uses 8; random weights give unit-scale
// projections, so a smaller bound is written to make the clamp bite (about 5% of the values).
constexpr float kDbrxClampKqv = 2.0f;
// granitemoe multipliers: the values of IBM granite-3.0-1b-a400m (embedding_multiplier,
// residual_multiplier, attention_multiplier, logits_scaling).
constexpr float kGraniteEmbeddingScale = 12.0f, kGraniteResidualScale = 0.22f, kGraniteAttentionScale = 0.015625f,
                kGraniteLogitScale = 6.0f;

// deepseek2 (DeepSeek-V2/V3) shapes beyond Preset: multi-head latent attention sizes, dense lead
// layers, shared experts and the routing rule. Keyed by preset name ("tiny" = the V2 flavour).
struct DsShape {
  const char* preset;
  uint32_t q_lora, kv_lora, rope, nope, v;  // q_lora 0: plain attn_q (V2-Lite)
  uint32_t n_shared, n_dense_lead, n_ff_dense;
  uint32_t n_group, topk_group;             // 0: no group-limited selection
  bool sigmoid, norm, bias;                 // V3: sigmoid scores, renormalised, exp_probs_b
  float scale;                              // routed scaling factor
  float yarn_factor;                        // 0: no RoPE scaling
  uint32_t yarn_orig_ctx;
  float mscale_all_dim;
};
constexpr DsShape kDsShapes[] = {
    {"tiny", 0, 64, 16, 32, 32, 1, 1, 256, 0, 0, false, false, false, 1.5f, 4.0f, 512, 0.707f},
    {"tiny-v3", 64, 64, 16, 32, 32, 1, 1, 256, 4, 2, true, true, true, 2.5f, 4.0f, 512, 1.0f},
    {"deepseek-v2-lite", 0, 512, 64, 128, 128, 2, 1, 10944, 0, 0, false, false, false, 1.0f, 40.0f, 4096, 0.707f},
};
const DsShape& find_ds_shape(const std::string& preset) {
  for (const auto& d : kDsShapes)
    if (preset == d.preset) return d;
  fail(ErrorCode::InvalidArgument, "preset '{}' has no deepseek2 shape (use tiny, tiny-v3 or deepseek-v2-lite)", preset);
}

// glm4moe shapes beyond Preset, keyed by preset name. n_layer in Preset counts the run layers; the
// NextN layers come after them.
struct GlmShape {
  const char* preset;
  uint32_t head_dim;      // tiny: != n_embd / n_head, as in the releases
  uint32_t n_shared, n_dense_lead, n_ff_dense, n_nextn;
  float scale;            // routed scaling factor
};
constexpr GlmShape kGlmShapes[] = {
    {"tiny", 64, 1, 1, 256, 1, 2.5f},
    {"glm-4.5-air", 128, 1, 1, 10944, 1, 1.0f},
};
const GlmShape& find_glm_shape(const std::string& preset) {
  for (const auto& d : kGlmShapes)
    if (preset == d.preset) return d;
  fail(ErrorCode::InvalidArgument, "preset '{}' has no glm4moe shape (use tiny or glm-4.5-air)", preset);
}

const Preset& find_preset(const std::string& name) {
  const std::string n = name.empty() ? "tiny" : name;
  for (const auto& p : kPresets)
    if (n == p.name) return p;
  std::string list;
  for (const auto& p : kPresets) list += fmt::format("{}{}", list.empty() ? "" : ", ", p.name);
  fail(ErrorCode::InvalidArgument, "unknown preset '{}' (known: {})", name, list);
}

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}
uint64_t row_seed(uint64_t seed, uint64_t name_hash, uint64_t row) {
  uint64_t s = seed ^ (name_hash * 0x9E3779B97F4A7C15ull);
  splitmix(s);
  s ^= row * 0xD1B54A32D192ED03ull;
  splitmix(s);
  return s;
}
// Uniform in [-1, 1) from the top 24 bits.
inline float unit(uint64_t& s) { return static_cast<float>(splitmix(s) >> 40) * (2.0f / 16777216.0f) - 1.0f; }

enum class Init { Weight, Norm, Bias, Embed, Router };

struct TPlan {
  std::string name;
  TensorType type = TensorType::F32;
  std::vector<uint64_t> ne;
  Init init = Init::Weight;
  float std = 0.0f;
  uint32_t layer = 0;
  std::vector<float> values;  // when not empty: the tensor's exact contents (one row)
};

struct Plan {
  GenOptions o;
  const Preset* preset = nullptr;
  const DsShape* ds = nullptr;  // deepseek2 only
  const GlmShape* glm = nullptr;  // glm4moe only
  TensorType req = TensorType::F32;
  TensorType req_exp = TensorType::F32;  // routed experts' weights
  std::vector<TPlan> tensors;
  std::vector<std::vector<float>> router_scale;  // [layer][expert]
};

// Tensor type for a weight of row length ne0 under the requested type: norms, biases, routers
// stay f32 (llama.cpp's quantizer keeps ffn_gate_inp in f32 too); q4_K gets a Q4_K_M-like mix
// (LM head in q6_K); rows that do not fit the block size fall back to q8_0, then f16.
TensorType pick_type(const std::string& name, size_t n_dims, uint64_t ne0, TensorType req) {
  if (n_dims < 2 || name.find("ffn_gate_inp") != std::string::npos) return TensorType::F32;
  TensorType t = req;
  if (req == TensorType::Q4_K && name == "output.weight") t = TensorType::Q6_K;
  for (TensorType c : {t, TensorType::Q8_0, TensorType::F16})
    if (ne0 % traits(c).block_elems == 0) return c;
  return TensorType::F32;
}

std::string resolve_data_dir(const GenOptions& o) {
  if (!o.data_dir.empty()) return o.data_dir;
  if (const char* e = std::getenv("MOE_SHARED_DATA"); e && *e) return e;
  return MOE_DEFAULT_DATA_DIR;
}

// Tokenizer metadata (all tokenizer.* keys) from a vocabulary GGUF, padded to n_vocab if asked.
struct Vocab {
  std::vector<std::pair<std::string, gguf::Value>> kv;
  uint32_t n = 0;
};

Vocab load_vocab(const GenOptions& o) {
  Vocab v;
  if (o.vocab == "none") {
    v.n = o.n_vocab ? o.n_vocab : 256;
    v.kv.emplace_back("tokenizer.ggml.model", gguf::Value::make_string("none"));
    return v;
  }
  std::string name = o.vocab.empty() ? (o.arch == "llama" || o.arch == "arctic" || o.arch == "grok" ? "llama-spm"
                                       : o.arch == "phimoe"                                       ? "phi-3"
                                       : o.arch == "deepseek2"                                    ? "deepseek-llm"
                                                                                                  : "gpt-2")
                                     : o.vocab;
  std::string path = name;
  if (name.find('/') == std::string::npos && name.find(".gguf") == std::string::npos) {
    std::string dir = resolve_data_dir(o);
    if (dir.empty())
      fail(ErrorCode::InvalidArgument, "vocabulary '{}': no data folder (set MOE_SHARED_DATA or pass a path)", name);
    path = fmt::format("{}/tokenizers/ggml-vocab-{}.gguf", dir, name);
  }
  auto f = gguf::GgufFile::open(path);
  for (const auto& [k, val] : f->metadata())
    if (k.rfind("tokenizer.", 0) == 0) v.kv.emplace_back(k, val);
  const gguf::Value* toks = f->find("tokenizer.ggml.tokens");
  if (!toks || toks->type != gguf::ValueType::ARRAY || toks->elem_type != gguf::ValueType::STRING || toks->arr.empty())
    fail(ErrorCode::Corrupt, "{}: no 'tokenizer.ggml.tokens' string array: not a vocabulary file", path);
  const size_t have = toks->arr.size();
  v.n = static_cast<uint32_t>(have);
  if (o.n_vocab && o.n_vocab < have)
    fail(ErrorCode::InvalidArgument, "vocabulary size {} is smaller than the {} tokens of {}", o.n_vocab, have, path);
  if (o.n_vocab > have) {
    // Pad with unused tokens (llama.cpp token type 5 = UNUSED), as converters do for padded embeddings.
    for (auto& [k, val] : v.kv) {
      if (val.type != gguf::ValueType::ARRAY || val.arr.size() != have) continue;
      for (size_t i = have; i < o.n_vocab; ++i) {
        if (k == "tokenizer.ggml.tokens") val.arr.push_back(gguf::Value::make_string(fmt::format("<|moe_pad_{}|>", i)));
        else if (k == "tokenizer.ggml.token_type" && val.elem_type == gguf::ValueType::INT32)
          val.arr.push_back(gguf::Value::make_i32(5));
        else if (k == "tokenizer.ggml.scores" && val.elem_type == gguf::ValueType::FLOAT32)
          val.arr.push_back(gguf::Value::make_f32(0.0f));
        else
          fail(ErrorCode::Corrupt, "{}: cannot pad per-token array '{}' of {}", path, k,
               gguf::value_type_name(val.elem_type));
      }
    }
    v.n = o.n_vocab;
  }
  return v;
}

void add_weight(Plan& p, std::string name, std::vector<uint64_t> ne, float std_scale = 1.0f, uint32_t layer = 0) {
  TPlan t;
  const bool expert = name.find("_exps.weight") != std::string::npos;
  t.type = pick_type(name, ne.size(), ne[0], expert ? p.req_exp : p.req);
  t.name = std::move(name);
  t.std = std_scale / std::sqrt(static_cast<float>(ne[0]));
  t.ne = std::move(ne);
  t.layer = layer;
  p.tensors.push_back(std::move(t));
}
// A 1-D (or, for per-expert biases, [n, rows]) f32 tensor; amp = 0: the init's default amplitude.
void add_vec(Plan& p, std::string name, uint64_t n, Init init, float amp = 0.0f, uint64_t rows = 1) {
  TPlan t;
  t.name = std::move(name);
  t.ne = {n};
  if (rows > 1) t.ne.push_back(rows);
  t.init = init;
  t.std = amp > 0 ? amp : init == Init::Bias ? 0.02f : 0.05f;
  p.tensors.push_back(std::move(t));
}

void add_router(Plan& p, std::string name, uint64_t E, uint64_t X, uint32_t il) {
  TPlan t;
  t.name = std::move(name);
  t.ne = {E, X};
  t.type = TensorType::F32;
  t.init = Init::Router;
  t.std = 1.0f / std::sqrt(static_cast<float>(E));
  t.layer = il;
  p.tensors.push_back(std::move(t));
}

// A dense SwiGLU FFN of hidden size F: blk.L.ffn_{gate,up,down}.weight (layer prefix `pre`).
void add_dense_ffn(Plan& p, const std::string& pre, uint64_t E, uint64_t F, float out_scale) {
  add_weight(p, pre + "ffn_gate.weight", {E, F});
  add_weight(p, pre + "ffn_up.weight", {E, F});
  add_weight(p, pre + "ffn_down.weight", {F, E}, out_scale);
}
// X stacked routed experts of hidden size F, then (FS > 0) the shared expert block of hidden size FS.
void add_expert_ffn(Plan& p, const std::string& pre, uint64_t E, uint64_t F, uint64_t X, uint64_t FS, float out_scale) {
  add_weight(p, pre + "ffn_gate_exps.weight", {E, F, X});
  add_weight(p, pre + "ffn_up_exps.weight", {E, F, X});
  add_weight(p, pre + "ffn_down_exps.weight", {F, E, X}, out_scale);
  if (FS == 0) return;
  add_weight(p, pre + "ffn_gate_shexp.weight", {E, FS});
  add_weight(p, pre + "ffn_up_shexp.weight", {E, FS});
  add_weight(p, pre + "ffn_down_shexp.weight", {FS, E}, out_scale);
}

// deepseek2 layers, as llama.cpp's deepseek2 loader names and shapes them (ne[0] first).
void build_deepseek2_layers(Plan& p) {
  const GenOptions& o = p.o;
  const DsShape& d = *p.ds;
  const uint64_t E = o.n_embd, F = o.n_ff, X = o.n_expert, H = o.n_head, dk = d.nope + d.rope, r = d.kv_lora;
  const float out_scale = 1.0f / std::sqrt(2.0f * static_cast<float>(o.n_layer));
  for (uint32_t il = 0; il < o.n_layer; ++il) {
    auto n = [il](const char* what) { return fmt::format("blk.{}.{}", il, what); };
    add_vec(p, n("attn_norm.weight"), E, Init::Norm);
    if (d.q_lora > 0) {
      add_weight(p, n("attn_q_a.weight"), {E, d.q_lora});
      add_vec(p, n("attn_q_a_norm.weight"), d.q_lora, Init::Norm);
      add_weight(p, n("attn_q_b.weight"), {d.q_lora, H * dk});
    } else {
      add_weight(p, n("attn_q.weight"), {E, H * dk});
    }
    add_weight(p, n("attn_kv_a_mqa.weight"), {E, r + d.rope});
    add_vec(p, n("attn_kv_a_norm.weight"), r, Init::Norm);
    if (o.mla_kv_b) {
      add_weight(p, n("attn_kv_b.weight"), {r, H * (d.nope + d.v)});
    } else {
      // attn_k_b [nope, r, H]: per head the transposed K rows; attn_v_b [r, v, H].
      add_weight(p, n("attn_k_b.weight"), {d.nope, r, H});
      p.tensors.back().std = 1.0f / std::sqrt(static_cast<float>(r));  // fan-in of the K rows is r
      add_weight(p, n("attn_v_b.weight"), {r, d.v, H});
    }
    add_weight(p, n("attn_output.weight"), {H * d.v, E}, out_scale);
    add_vec(p, n("ffn_norm.weight"), E, Init::Norm);
    if (il < d.n_dense_lead) {
      add_dense_ffn(p, n(""), E, d.n_ff_dense, out_scale);
      continue;
    }
    add_router(p, n("ffn_gate_inp.weight"), E, X, il);
    if (d.bias) {
      add_vec(p, n("exp_probs_b.bias"), X, Init::Bias);
      p.tensors.back().std = 0.1f;  // comparable to the spread of sigmoid scores: it changes choices
    }
    add_expert_ffn(p, n(""), E, F, X, uint64_t(d.n_shared) * F, out_scale);
  }
}

// glm4moe layers (run ones, then the NextN ones), as llama.cpp's glm4moe loader names and shapes them.
void build_glm4moe_layers(Plan& p) {
  const GenOptions& o = p.o;
  const GlmShape& d = *p.glm;
  const uint64_t E = o.n_embd, F = o.n_ff, X = o.n_expert, HD = o.head_dim;
  const uint64_t q_dim = uint64_t(o.n_head) * HD, kv_dim = uint64_t(o.n_head_kv) * HD;
  const float out_scale = 1.0f / std::sqrt(2.0f * static_cast<float>(o.n_layer));
  const uint32_t n_block = o.n_layer + static_cast<uint32_t>(o.n_nextn);
  for (uint32_t il = 0; il < n_block; ++il) {
    auto n = [il](const char* what) { return fmt::format("blk.{}.{}", il, what); };
    add_vec(p, n("attn_norm.weight"), E, Init::Norm);
    add_weight(p, n("attn_q.weight"), {E, q_dim});
    add_weight(p, n("attn_k.weight"), {E, kv_dim});
    add_weight(p, n("attn_v.weight"), {E, kv_dim});
    add_vec(p, n("attn_q.bias"), q_dim, Init::Bias, 0.1f);
    add_vec(p, n("attn_k.bias"), kv_dim, Init::Bias, 0.1f);
    add_vec(p, n("attn_v.bias"), kv_dim, Init::Bias, 0.1f);
    if (o.qk_norm) {
      add_vec(p, n("attn_q_norm.weight"), HD, Init::Norm);
      add_vec(p, n("attn_k_norm.weight"), HD, Init::Norm);
    }
    add_weight(p, n("attn_output.weight"), {q_dim, E}, out_scale);
    add_vec(p, n("post_attention_norm.weight"), E, Init::Norm);
    if (il < d.n_dense_lead) {
      add_dense_ffn(p, n(""), E, d.n_ff_dense, out_scale);
      continue;
    }
    add_router(p, n("ffn_gate_inp.weight"), E, X, il);
    add_vec(p, n("exp_probs_b.bias"), X, Init::Bias, 0.1f);  // comparable to the spread of sigmoid scores
    add_expert_ffn(p, n(""), E, F, X, uint64_t(d.n_shared) * F, out_scale);
    if (il >= o.n_layer) {  // NextN layer extras
      add_weight(p, n("nextn.eh_proj.weight"), {2 * E, E});
      add_vec(p, n("nextn.enorm.weight"), E, Init::Norm);
      add_vec(p, n("nextn.hnorm.weight"), E, Init::Norm);
      add_vec(p, n("nextn.shared_head_norm.weight"), E, Init::Norm);
    }
  }
}

void build_tensors(Plan& p, uint32_t n_vocab) {
  const GenOptions& o = p.o;
  const uint64_t E = o.n_embd, F = o.n_ff, X = o.n_expert, HD = o.head_dim;
  const uint64_t q_dim = uint64_t(o.n_head) * HD, kv_dim = uint64_t(o.n_head_kv) * HD;
  // Output projections: small enough that the residual stream stays O(1); granite multiplies every
  // block's output by residual_scale, so its projections are that much larger (as trained ones are).
  const float out_scale = 1.0f / std::sqrt(2.0f * static_cast<float>(o.n_layer)) /
                          (o.arch == "granitemoe" ? kGraniteResidualScale : 1.0f);
  {
    TPlan t;
    t.name = "token_embd.weight";
    t.ne = {E, n_vocab};
    t.type = pick_type(t.name, 2, E, p.req);
    t.init = Init::Embed;
    // granite multiplies the embeddings by embedding_scale: store them that much smaller so the
    // residual stream starts at unit scale like the other architectures' (as the real weights do).
    t.std = o.arch == "granitemoe" ? 1.0f / kGraniteEmbeddingScale : o.arch == "grok" ? 1.0f / kGrokEmbeddingScale : 1.0f;
    p.tensors.push_back(std::move(t));
  }
  add_vec(p, "output_norm.weight", E, Init::Norm);
  if (o.rope_freqs) {
    // Llama 3.1's rule (the converter's): wavelength 2 pi / inv_freq below orig / high -> 1, above
    // orig / low -> factor, in between a smooth mix.
    constexpr double kFactor = 8.0, kLow = 1.0, kHigh = 4.0, kOrig = 32.0;
    TPlan t;
    t.name = "rope_freqs.weight";
    t.ne = {HD / 2};
    for (uint64_t i = 0; i < HD / 2; ++i) {
      const double inv = std::pow(double(kLlama4RopeBase), -2.0 * double(i) / double(HD));
      const double wavelen = 2.0 * M_PI / inv;
      double f = 1.0;
      if (wavelen > kOrig / kLow) {
        f = kFactor;
      } else if (wavelen >= kOrig / kHigh) {
        const double smooth = (kOrig / wavelen - kLow) / (kHigh - kLow);
        f = 1.0 / ((1.0 - smooth) / kFactor + smooth);
      }
      t.values.push_back(static_cast<float>(f));
    }
    p.tensors.push_back(std::move(t));
  }
  // An own LM head for every arch (granite releases tie it to the embeddings, which llama.cpp and the
  // engine also read; a tied head on random weights mostly repeats the last token).
  add_weight(p, "output.weight", {E, n_vocab}, 3.0f);
  const bool phi = o.arch == "phimoe";
  if (phi) {
    add_vec(p, "output_norm.bias", E, Init::Bias, 0.1f);
    add_vec(p, "output.bias", n_vocab, Init::Bias, 0.5f);
    add_vec(p, "rope_factors_long.weight", HD / 2, Init::Norm, 0.9f);
    add_vec(p, "rope_factors_short.weight", HD / 2, Init::Norm, 0.05f);
  }
  if (p.ds) return build_deepseek2_layers(p);
  if (p.glm) return build_glm4moe_layers(p);
  for (uint32_t il = 0; il < o.n_layer; ++il) {
    auto n = [il](const char* what) { return fmt::format("blk.{}.{}", il, what); };
    add_vec(p, n("attn_norm.weight"), E, Init::Norm);
    if (phi) add_vec(p, n("attn_norm.bias"), E, Init::Bias, 0.1f);
    if (o.arch == "dbrx") {
      add_weight(p, n("attn_qkv.weight"), {E, q_dim + 2 * kv_dim});  // rows [q | k | v]
    } else {
      add_weight(p, n("attn_q.weight"), {E, q_dim});
      add_weight(p, n("attn_k.weight"), {E, kv_dim});
      add_weight(p, n("attn_v.weight"), {E, kv_dim});
    }
    const bool oss = o.arch == "gpt-oss";
    if (oss || phi) {
      add_vec(p, n("attn_q.bias"), q_dim, Init::Bias, 0.1f);
      add_vec(p, n("attn_k.bias"), kv_dim, Init::Bias, 0.1f);
      add_vec(p, n("attn_v.bias"), kv_dim, Init::Bias, 0.1f);
    }
    if (o.arch == "qwen2moe") {
      add_vec(p, n("attn_q.bias"), q_dim, Init::Bias);
      add_vec(p, n("attn_k.bias"), kv_dim, Init::Bias);
      add_vec(p, n("attn_v.bias"), kv_dim, Init::Bias);
    }
    if (o.arch == "qwen3moe") {
      add_vec(p, n("attn_q_norm.weight"), HD, Init::Norm);
      add_vec(p, n("attn_k_norm.weight"), HD, Init::Norm);
    }
    if (o.arch == "olmoe") {
      add_vec(p, n("attn_q_norm.weight"), q_dim, Init::Norm);
      add_vec(p, n("attn_k_norm.weight"), kv_dim, Init::Norm);
    }
    add_weight(p, n("attn_output.weight"), {q_dim, E}, out_scale);
    if (oss || phi) add_vec(p, n("attn_output.bias"), E, Init::Bias, 0.1f);
    if (oss) add_vec(p, n("attn_sinks.weight"), o.n_head, Init::Bias, 1.0f);
    add_vec(p, n(oss ? "post_attention_norm.weight" : o.arch == "dbrx" ? "attn_output_norm.weight" : "ffn_norm.weight"), E,
            Init::Norm);
    if (phi) add_vec(p, n("ffn_norm.bias"), E, Init::Bias, 0.1f);
    if (o.arch == "grok") {  // norms of the attention output (the MoE input's norm is ffn_norm above)
      add_vec(p, n("attn_output_norm.weight"), E, Init::Norm);
    }
    if (o.arch == "arctic") {  // the dense residual MLP (n_embd wide, as llama.cpp loads it) and the MoE's norm
      add_dense_ffn(p, n(""), E, E, out_scale);
      add_vec(p, n("ffn_norm_exps.weight"), E, Init::Norm);
    }
    if (o.arch == "llama4" && !llama4_moe_layer(il)) {  // dense layer: ffn_gate/up/down of feed_forward_length
      add_dense_ffn(p, n(""), E, 2 * F, out_scale);
      continue;
    }
    add_router(p, n("ffn_gate_inp.weight"), E, X, il);
    if (oss) add_vec(p, n("ffn_gate_inp.bias"), X, Init::Bias, 0.1f);
    add_weight(p, n("ffn_gate_exps.weight"), {E, F, X}, oss ? 3.0f : 1.0f);
    add_weight(p, n("ffn_up_exps.weight"), {E, F, X}, oss ? 3.0f : 1.0f);
    add_weight(p, n("ffn_down_exps.weight"), {F, E, X}, out_scale);
    if (o.arch == "grok") add_vec(p, n("layer_output_norm.weight"), E, Init::Norm);  // norm of the MoE output
    if (oss) {
      add_vec(p, n("ffn_gate_exps.bias"), F, Init::Bias, 0.1f, X);
      add_vec(p, n("ffn_up_exps.bias"), F, Init::Bias, 0.1f, X);
      add_vec(p, n("ffn_down_exps.bias"), E, Init::Bias, 0.1f, X);
    }
    if (o.arch == "qwen2moe") {
      const uint64_t FS = o.n_ff_shared;
      add_weight(p, n("ffn_gate_inp_shexp.weight"), {E});
      p.tensors.back().type = TensorType::F32;
      add_weight(p, n("ffn_gate_shexp.weight"), {E, FS});
      add_weight(p, n("ffn_up_shexp.weight"), {E, FS});
      add_weight(p, n("ffn_down_shexp.weight"), {FS, E}, out_scale);
    }
    if (o.arch == "llama4") {  // shared expert of the routed expert's size, no gate
      add_weight(p, n("ffn_gate_shexp.weight"), {E, F});
      add_weight(p, n("ffn_up_shexp.weight"), {E, F});
      add_weight(p, n("ffn_down_shexp.weight"), {F, E}, out_scale);
    }
  }
}

void fill_row(const Plan& p, const TPlan& t, uint64_t name_hash, uint64_t row, float* dst) {
  uint64_t s = row_seed(p.o.seed, name_hash, row);
  const uint64_t n = t.ne[0];
  if (!t.values.empty()) {
    std::copy_n(t.values.data(), n, dst);
    return;
  }
  constexpr float kSqrt3 = 1.7320508f;  // uniform on [-a, a] has standard deviation a / sqrt(3)
  switch (t.init) {
    case Init::Norm:
      for (uint64_t j = 0; j < n; ++j) dst[j] = 1.0f + t.std * unit(s);
      break;
    case Init::Bias:
      for (uint64_t j = 0; j < n; ++j) dst[j] = t.std * unit(s);
      break;
    case Init::Router: {
      const float a = t.std * kSqrt3 * p.router_scale[t.layer][row % p.o.n_expert];
      for (uint64_t j = 0; j < n; ++j) dst[j] = a * unit(s);
      break;
    }
    default: {
      const float a = t.std * kSqrt3;
      for (uint64_t j = 0; j < n; ++j) dst[j] = a * unit(s);
    }
  }
}

void check_quantizable(TensorType t) {
  if (t == TensorType::F32) return;
  const auto& tr = traits(t);
  std::vector<float> src(tr.block_elems, 0.5f);
  std::vector<uint8_t> dst(tr.block_bytes);
  if (!tr.quantizable || kernels::quantize_row(t, src.data(), dst.data(), tr.block_elems) != tr.block_bytes)
    fail(ErrorCode::Unsupported, "tensor type {} cannot be written by this build (no quantizer)", tr.name);
}

}  // namespace

GenOptions resolve_gen_options(const GenOptions& in) {
  GenOptions o = in;
  const Preset& p = find_preset(in.preset);
  if (p.arch[0]) {
    if (!o.arch.empty() && o.arch != p.arch)
      fail(ErrorCode::InvalidArgument, "preset '{}' is a {} model, not {}", p.name, p.arch, o.arch);
    o.arch = p.arch;
  }
  if (o.arch.empty()) o.arch = "qwen3moe";
  if (std::find_if(std::begin(kArchs), std::end(kArchs), [&](const char* a) { return o.arch == a; }) == std::end(kArchs))
    fail(ErrorCode::InvalidArgument,
         "moe gen cannot write architecture '{}' (supported: llama, qwen2moe, qwen3moe, olmoe, granitemoe, dbrx, "
         "deepseek2, gpt-oss, llama4, glm4moe, arctic, grok, phimoe)", o.arch);
  if (o.mla_kv_b && o.arch != "deepseek2")
    fail(ErrorCode::InvalidArgument, "the attn_kv_b layout is a deepseek2 option, not {}", o.arch);
  if (o.arch != "glm4moe" && (o.qk_norm || o.n_nextn > 0))
    fail(ErrorCode::InvalidArgument, "--qk-norm and --nextn are glm4moe options, not {}", o.arch);
  o.preset = p.name;
  auto dflt = [](uint32_t& v, uint32_t d) {
    if (v == 0) v = d;
  };
  dflt(o.n_layer, p.n_layer);
  dflt(o.n_embd, p.n_embd);
  dflt(o.n_ff, p.n_ff);
  dflt(o.n_expert, p.n_expert);
  dflt(o.n_expert_used, o.arch == "llama4" ? 1u : p.n_used);  // Llama 4 routes each token to one expert
  dflt(o.n_head, p.n_head);
  dflt(o.n_ctx, p.n_ctx);
  const DsShape* ds = o.arch == "deepseek2" ? &find_ds_shape(p.name) : nullptr;
  const GlmShape* glm = o.arch == "glm4moe" ? &find_glm_shape(p.name) : nullptr;
  if (o.arch == "qwen2moe") dflt(o.n_ff_shared, p.n_ff_shared ? p.n_ff_shared : 2 * o.n_ff);
  else if (ds || glm) {
    const uint32_t n_shared = ds ? ds->n_shared : glm->n_shared;
    if (o.n_ff_shared && o.n_ff_shared != n_shared * o.n_ff)
      fail(ErrorCode::InvalidArgument, "{}: the shared experts' size is {} x the expert size ({})", o.arch, n_shared,
           n_shared * o.n_ff);
    o.n_ff_shared = n_shared * o.n_ff;
  } else o.n_ff_shared = 0;
  if (glm) {
    if (o.n_nextn < 0) o.n_nextn = static_cast<int32_t>(glm->n_nextn);
    if (o.n_nextn > 8) fail(ErrorCode::InvalidArgument, "glm4moe: {} NextN layers (0..8)", o.n_nextn);
    if (o.n_layer <= glm->n_dense_lead)
      fail(ErrorCode::InvalidArgument, "glm4moe preset '{}' needs more than {} layers (the leading dense ones)", p.name,
           glm->n_dense_lead);
    if (o.head_dim == 0 && !in.n_embd && !in.n_head) o.head_dim = glm->head_dim;
  } else {
    o.n_nextn = 0;
  }
  if (o.vocab != "none") dflt(o.n_vocab, p.n_vocab);  // 0 stays "from the file"
  else dflt(o.n_vocab, 256);
  // llama.cpp: q (and the output projection) are [n_embd, n_embd]
  const bool full_width = o.arch == "olmoe" || o.arch == "qwen2moe" || o.arch == "dbrx" || o.arch == "arctic" ||
                          o.arch == "grok" || o.arch == "phimoe";
  if (ds) {
    // The head sizes are the preset's MLA shape: q/k heads of nope + rope, one latent "kv head".
    if (o.head_dim && o.head_dim != ds->nope + ds->rope)
      fail(ErrorCode::InvalidArgument, "deepseek2: the head size is the preset's qk_nope + qk_rope = {}",
           ds->nope + ds->rope);
    if (o.n_head_kv && o.n_head_kv != 1 && o.n_head_kv != o.n_head)
      fail(ErrorCode::InvalidArgument, "deepseek2 has no grouped kv heads (--heads-kv {})", o.n_head_kv);
    o.head_dim = ds->nope + ds->rope;
    o.n_head_kv = o.mla_kv_b ? o.n_head : 1;
    if (o.n_layer <= ds->n_dense_lead)
      fail(ErrorCode::InvalidArgument, "deepseek2 preset '{}' needs more than {} layers (the leading dense ones)", p.name,
           ds->n_dense_lead);
    if (ds->n_group > 1 && (o.n_expert % ds->n_group != 0 ||
                            uint64_t(ds->topk_group) * (o.n_expert / ds->n_group) < o.n_expert_used))
      fail(ErrorCode::InvalidArgument, "deepseek2 preset '{}': {} experts (top-{}) do not fit {} groups ({} used)", p.name,
           o.n_expert, o.n_expert_used, ds->n_group, ds->topk_group);
  } else if (full_width) {
    if (o.n_head_kv && o.arch == "olmoe" && o.n_head_kv != o.n_head)
      fail(ErrorCode::InvalidArgument, "olmoe needs as many kv heads as heads ({} != {})", o.n_head_kv, o.n_head);
    if (o.n_embd % o.n_head) fail(ErrorCode::InvalidArgument, "{}: n_embd {} is not a multiple of {} heads", o.arch, o.n_embd, o.n_head);
    if (o.head_dim && o.head_dim != o.n_embd / o.n_head)
      fail(ErrorCode::InvalidArgument, "{} needs head_dim = n_embd / n_head = {}", o.arch, o.n_embd / o.n_head);
    o.head_dim = o.n_embd / o.n_head;
    if (o.arch == "olmoe") o.n_head_kv = o.n_head;
  }
  if (o.head_dim == 0) o.head_dim = (in.n_embd || in.n_head || !p.head_dim) ? o.n_embd / o.n_head : p.head_dim;
  if (o.n_head_kv == 0) o.n_head_kv = std::min(o.n_head, p.n_head_kv ? p.n_head_kv : o.n_head);
  if (o.head_dim == 0 || o.head_dim % 2) fail(ErrorCode::InvalidArgument, "head size {} must be even and positive", o.head_dim);
  if (glm && o.head_dim % 4)
    fail(ErrorCode::InvalidArgument, "glm4moe rotates half of each head: the head size {} must be a multiple of 4",
         o.head_dim);
  if (o.n_head % o.n_head_kv) fail(ErrorCode::InvalidArgument, "{} kv heads do not divide {} heads", o.n_head_kv, o.n_head);
  if (o.n_expert_used == 0 || o.n_expert_used > o.n_expert)
    fail(ErrorCode::InvalidArgument, "top-k {} must be in 1..{} experts", o.n_expert_used, o.n_expert);
  if (o.router_skew < 0) fail(ErrorCode::InvalidArgument, "router skew {} must be >= 0", o.router_skew);
  if (!type_from_name(o.type)) fail(ErrorCode::InvalidArgument, "unknown tensor type '{}'", o.type);
  if (o.expert_type.empty()) o.expert_type = o.arch == "gpt-oss" ? "mxfp4" : o.type;
  if (!type_from_name(o.expert_type))
    fail(ErrorCode::InvalidArgument, "unknown expert tensor type '{}'", o.expert_type);
  if (o.arch == "gpt-oss") {
    dflt(o.n_swa, p.n_swa ? p.n_swa : 128);
  } else if (o.n_swa) {
    fail(ErrorCode::InvalidArgument, "a sliding window (--swa) is a gpt-oss option, not {}", o.arch);
  }
  if (o.arch == "llama4") {
    if (o.n_layer < kLlama4MoeStep)
      fail(ErrorCode::InvalidArgument, "llama4 needs at least {} layers (MoE every {}nd layer)", kLlama4MoeStep,
           kLlama4MoeStep);
  } else if (o.n_chunk || o.rope_freqs) {
    fail(ErrorCode::InvalidArgument, "{} is a llama4 option, not {}", o.n_chunk ? "an attention chunk (--chunk)" : "--rope-freqs",
         o.arch);
  }
  if (o.threads == 0) o.threads = 1;
  if (o.out.empty()) fail(ErrorCode::InvalidArgument, "no output path");
  return o;
}

GenResult generate_model(const GenOptions& opts) {
  Plan p;
  p.o = resolve_gen_options(opts);
  p.preset = &find_preset(p.o.preset);
  if (p.o.arch == "deepseek2") p.ds = &find_ds_shape(p.o.preset);
  if (p.o.arch == "glm4moe") p.glm = &find_glm_shape(p.o.preset);
  p.req = *type_from_name(p.o.type);
  p.req_exp = *type_from_name(p.o.expert_type);
  const GenOptions& o = p.o;
  const Vocab vocab = load_vocab(o);

  // Router row scales per layer (see the file comment).
  const uint32_t n_block = o.n_layer + (p.glm ? static_cast<uint32_t>(o.n_nextn) : 0u);  // + NextN layers
  p.router_scale.resize(n_block);
  for (uint32_t il = 0; il < n_block; ++il) {
    std::vector<uint32_t> rank(o.n_expert);
    for (uint32_t e = 0; e < o.n_expert; ++e) rank[e] = e;
    uint64_t s = row_seed(o.seed, fnv1a("router_rank"), il);
    for (uint32_t e = o.n_expert; e > 1; --e) std::swap(rank[e - 1], rank[splitmix(s) % e]);
    auto& sc = p.router_scale[il];
    sc.resize(o.n_expert);
    double ms = 0;
    for (uint32_t e = 0; e < o.n_expert; ++e) {
      sc[e] = std::pow(1.0f + static_cast<float>(rank[e]), -o.router_skew);
      ms += double(sc[e]) * sc[e];
    }
    const float norm = static_cast<float>(1.0 / std::sqrt(ms / o.n_expert));
    for (auto& x : sc) x *= norm;
  }

  build_tensors(p, vocab.n);
  for (const auto& t : p.tensors) check_quantizable(t.type);

  // --- metadata -----------------------------------------------------------------------------------
  gguf::GgufWriter w;
  const std::string& A = o.arch;
  auto key = [&](const char* k) { return fmt::format("{}.{}", A, k); };
  w.set_string("general.architecture", o.arch);
  w.set_string("general.name", fmt::format("moe-gen {} {} seed {}", o.preset, o.arch, o.seed));
  w.set_string("general.type", "model");
  w.set_u32(key("block_count"), o.n_layer + static_cast<uint32_t>(std::max(0, o.n_nextn)));
  w.set_u32(key("context_length"), o.n_ctx);
  w.set_u32(key("embedding_length"), o.n_embd);
  w.set_u32(key("feed_forward_length"),
            p.ds ? p.ds->n_ff_dense : p.glm ? p.glm->n_ff_dense : o.arch == "llama4" ? 2 * o.n_ff : o.n_ff);
  w.set_u32(key("attention.head_count"), o.n_head);
  w.set_u32(key("attention.head_count_kv"), o.n_head_kv);
  if (const DsShape* d = p.ds) {
    // deepseek2 as llama.cpp's converter writes it. Split attn_k_b/attn_v_b files describe the
    // absorbed (MQA) view: key_length = kv_lora_rank + rope dims, value_length = kv_lora_rank, and
    // the per-head sizes in key_length_mla / value_length_mla; attn_kv_b files the per-head sizes.
    if (o.mla_kv_b) {
      w.set_u32(key("attention.key_length"), d->nope + d->rope);
      w.set_u32(key("attention.value_length"), d->v);
    } else {
      w.set_u32(key("attention.key_length"), d->kv_lora + d->rope);
      w.set_u32(key("attention.value_length"), d->kv_lora);
      w.set_u32(key("attention.key_length_mla"), d->nope + d->rope);
      w.set_u32(key("attention.value_length_mla"), d->v);
    }
    w.set_u32(key("attention.q_lora_rank"), d->q_lora);  // 0 written too: llama.cpp requires the key
    w.set_u32(key("attention.kv_lora_rank"), d->kv_lora);
    w.set_u32(key("rope.dimension_count"), d->rope);
    if (d->yarn_factor > 0) {
      w.set_string(key("rope.scaling.type"), "yarn");
      w.set_f32(key("rope.scaling.factor"), d->yarn_factor);
      w.set_u32(key("rope.scaling.original_context_length"), d->yarn_orig_ctx);
      w.set_f32(key("rope.scaling.yarn_log_multiplier"), 0.1f * d->mscale_all_dim);
    }
    w.set_u32(key("leading_dense_block_count"), d->n_dense_lead);
    w.set_u32(key("expert_shared_count"), d->n_shared);
    w.set_f32(key("expert_weights_scale"), d->scale);
    if (d->norm) w.set_bool(key("expert_weights_norm"), true);
    if (d->sigmoid) w.set_u32(key("expert_gating_func"), 2);  // absent in V2 files: softmax
    if (d->n_group > 1) {
      w.set_u32(key("expert_group_count"), d->n_group);
      w.set_u32(key("expert_group_used_count"), d->topk_group);
    }
  } else if (const GlmShape* d = p.glm) {
    // GLM-4.5/4.6 as llama.cpp's converter writes them: partial_rotary_factor 0.5 (RoPE on half of
    // each head), sigmoid routing with exp_probs_b, normalised top-k weights times the routed scale.
    w.set_u32(key("attention.key_length"), o.head_dim);
    w.set_u32(key("attention.value_length"), o.head_dim);
    w.set_u32(key("rope.dimension_count"), o.head_dim / 2);
    w.set_u32(key("leading_dense_block_count"), d->n_dense_lead);
    w.set_u32(key("expert_shared_count"), d->n_shared);
    w.set_f32(key("expert_weights_scale"), d->scale);
    w.set_bool(key("expert_weights_norm"), true);
    w.set_u32(key("expert_gating_func"), 2);  // sigmoid
    w.set_u32(key("nextn_predict_layers"), static_cast<uint32_t>(o.n_nextn));
  } else {
    w.set_u32(key("attention.key_length"), o.head_dim);
    w.set_u32(key("attention.value_length"), o.head_dim);
    w.set_u32(key("rope.dimension_count"), o.head_dim);
  }
  const bool oss = o.arch == "gpt-oss";
  if (oss) {
    w.set_string(key("rope.scaling.type"), "yarn");
    w.set_f32(key("rope.scaling.factor"), kGptOssYarnFactor);
    w.set_u32(key("rope.scaling.original_context_length"), kGptOssYarnOrigCtx);
    w.set_u32(key("attention.sliding_window"), o.n_swa);
  }
  if (o.arch == "phimoe") {  // Phi-3 LongRoPE keys as llama.cpp's converter writes them
    w.set_u32(key("rope.scaling.original_context_length"), kPhiMoeOrigCtx);
    const double sc = double(o.n_ctx) / kPhiMoeOrigCtx;
    w.set_f32(key("rope.scaling.attn_factor"),
              sc > 1.0 ? static_cast<float>(std::sqrt(1.0 + std::log(sc) / std::log(double(kPhiMoeOrigCtx)))) : 1.0f);
    w.set_u32(key("attention.sliding_window"), o.n_ctx);
  }
  if (o.arch == "dbrx") {  // LayerNorm
    w.set_f32(key("attention.layer_norm_epsilon"), p.preset->eps);
    w.set_f32(key("attention.clamp_kqv"), kDbrxClampKqv);
  } else {
    w.set_f32(key("attention.layer_norm_rms_epsilon"), p.preset->eps);
  }
  w.set_f32(key("rope.freq_base"), oss ? kGptOssRopeBase : o.arch == "llama4" ? kLlama4RopeBase : p.preset->rope_base);
  if (o.arch == "llama4") {
    w.set_u32(key("interleave_moe_layer_step"), kLlama4MoeStep);
    // llama.cpp fixes the chunk (8192) and the temperature floor (8192) and reads no key for them; these
    // two are moe's own keys, written only when asked (--chunk), so that short prompts reach them.
    if (o.n_chunk) {
      w.set_u32(key("attention.chunk_size"), o.n_chunk);
      w.set_u32(key("attention.temperature_length"), o.n_chunk);
    }
  }
  w.set_u32(key("expert_count"), o.n_expert);
  w.set_u32(key("expert_used_count"), o.n_expert_used);
  // llama, granitemoe and dbrx take the expert size from feed_forward_length.
  if (o.arch != "llama" && o.arch != "granitemoe" && o.arch != "dbrx" && o.arch != "arctic" &&
      o.arch != "grok" && o.arch != "phimoe")
    w.set_u32(key("expert_feed_forward_length"), o.n_ff);
  if (o.arch == "grok") {
    w.set_f32(key("embedding_scale"), kGrokEmbeddingScale);
    w.set_f32(key("attention.output_scale"), 1.0f / std::sqrt(static_cast<float>(o.head_dim)));
    w.set_f32(key("attn_logit_softcapping"), kGrokAttnSoftcap);
    w.set_f32(key("logit_scale"), kGrokLogitScale);
    w.set_f32(key("final_logit_softcapping"), kGrokFinalSoftcap);
  }
  if (o.arch == "granitemoe") {
    w.set_f32(key("embedding_scale"), kGraniteEmbeddingScale);
    w.set_f32(key("residual_scale"), kGraniteResidualScale);
    w.set_f32(key("attention.scale"), kGraniteAttentionScale);
    w.set_f32(key("logit_scale"), kGraniteLogitScale);
  }
  if (o.arch == "qwen2moe") w.set_u32(key("expert_shared_feed_forward_length"), o.n_ff_shared);
  w.set_u32(key("vocab_size"), vocab.n);
  struct Ftype { TensorType t; uint32_t v; };
  for (Ftype ft : {Ftype{TensorType::F32, 0}, {TensorType::F16, 1}, {TensorType::Q4_0, 2}, {TensorType::Q8_0, 7},
                   {TensorType::Q4_K, 15}, {TensorType::Q5_K, 17}, {TensorType::Q6_K, 18}, {TensorType::BF16, 32}})
    if (ft.t == p.req && !(oss && p.req_exp == TensorType::MXFP4))
      w.set_u32("general.file_type", ft.v);  // llama_ftype, for display only
  if (oss && p.req_exp == TensorType::MXFP4) w.set_u32("general.file_type", 38);  // MOSTLY_MXFP4_MOE
  w.set_u32("moe.gen.seed", static_cast<uint32_t>(o.seed));
  w.set_f32("moe.gen.router_skew", o.router_skew);
  for (const auto& [k, v] : vocab.kv) w.set(k, v);
  if ((oss || p.glm) && o.vocab != "none") {
    // The released chat template (gpt-oss: harmony format; glm4moe: GLM-4.6's); the gpt-2 vocabulary has
    // none of their special tokens, so they tokenize as text: enough for a random-weight model.
    const std::string tpath =
        resolve_data_dir(o) + (oss ? "/chat-templates/openai-gpt-oss-120b.jinja" : "/chat-templates/GLM-4.6.jinja");
    std::FILE* tf = std::fopen(tpath.c_str(), "rb");
    if (!tf) fail(ErrorCode::InvalidArgument, "{}: cannot open the {} chat template", tpath, o.arch);
    std::string tmpl;
    char buf[4096];
    for (size_t got; (got = std::fread(buf, 1, sizeof buf, tf)) > 0;) tmpl.append(buf, got);
    const bool bad = std::ferror(tf);
    std::fclose(tf);
    if (bad || tmpl.empty()) fail(ErrorCode::Io, "{}: cannot read the {} chat template", tpath, o.arch);
    w.set_string("tokenizer.chat_template", tmpl);
  }

  uint64_t total = 0;
  for (const auto& t : p.tensors) {
    w.add_tensor(t.name, t.type, t.ne);
    total += w.tensors().back().nbytes;
  }

  // --- tensor data, chunk by chunk --------------------------------------------------------------
  constexpr uint64_t kChunkElems = 1u << 20;  // 4 MiB of f32 per chunk: bounded memory, enough work per thread
  const unsigned nthreads = std::max(1u, o.threads);
  std::vector<std::vector<float>> scratch(nthreads);
  std::vector<uint8_t> out;
  uint64_t done = 0;
  w.write(o.out, [&](size_t i, const gguf::GgufWriter::Sink& sink) {
    const TPlan& t = p.tensors[i];
    const uint64_t ne0 = t.ne[0];
    uint64_t rows = 1;
    for (size_t d = 1; d < t.ne.size(); ++d) rows *= t.ne[d];
    const uint64_t rb = *row_bytes(t.type, ne0);
    const uint64_t chunk_rows = std::max<uint64_t>(1, kChunkElems / ne0);
    const uint64_t h = fnv1a(t.name);
    for (uint64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
      const uint64_t n = std::min(chunk_rows, rows - r0);
      out.resize(n * rb);
      std::atomic<bool> bad{false};
      auto work = [&](unsigned ti, uint64_t a, uint64_t b) {
        auto& buf = scratch[ti];
        buf.resize(ne0);
        for (uint64_t r = a; r < b; ++r) {
          uint8_t* dst = out.data() + (r - r0) * rb;
          if (t.type == TensorType::F32) {
            fill_row(p, t, h, r, reinterpret_cast<float*>(buf.data()));
            std::memcpy(dst, buf.data(), rb);
          } else {
            fill_row(p, t, h, r, buf.data());
            if (kernels::quantize_row(t.type, buf.data(), dst, static_cast<int64_t>(ne0)) != rb) bad = true;
          }
        }
      };
      const unsigned use = (n * ne0 >= (1u << 16)) ? static_cast<unsigned>(std::min<uint64_t>(nthreads, n)) : 1u;
      std::vector<std::thread> pool;
      for (unsigned ti = 1; ti < use; ++ti)
        pool.emplace_back(work, ti, r0 + n * ti / use, r0 + n * (ti + 1) / use);
      work(0, r0, r0 + n / use);
      for (auto& th : pool) th.join();
      if (bad) fail(ErrorCode::Internal, "{}: quantizing tensor '{}' to {} failed", o.out, t.name, type_name(t.type));
      sink(out.data(), out.size());
      done += out.size();
      if (o.progress) o.progress(done, total);
    }
  });
  GenResult r;
  r.resolved = o;
  r.resolved.n_vocab = vocab.n;
  r.n_tensors = p.tensors.size();
  auto f = gguf::GgufFile::open(o.out);  // re-open: validates what was written
  r.file_bytes = f->file_size();
  return r;
}

}  // namespace moe
