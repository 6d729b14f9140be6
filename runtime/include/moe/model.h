// moe/model.h — what a model is, read from a GGUF file's metadata and tensor table.
// ModelSpec: architecture hyperparameters and per-layer MoE structure, with the gating rules as
// data (the engine reads these flags; it never branches on the architecture name).
// ExpertTable: for every (layer, expert) the absolute file offsets and sizes of its slices, so one
// expert is a few direct reads.
// Both are built once at load and are immutable afterwards (safe to share across threads).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moe/gguf.h"
#include "moe/kernels/types.h"

namespace moe {

enum class Arch { Llama, Qwen2Moe, Qwen3Moe, Olmoe, Deepseek2, GptOss, Llama4, PhiMoe, GraniteMoe, Dbrx, Glm4Moe,
                  Arctic, Grok };
const char* arch_gguf_name(Arch a) noexcept;  // "llama", "qwen2moe", ...

enum class RopeStyle { Normal, NeoX };              // adjacent pairs vs. halves
enum class RopeScaling { None, Linear, Yarn };
enum class QkNorm { None, PerHead, Full };          // Qwen3: per head (head_dim); OLMoE: whole projection
enum class GatingFunc { Softmax, Sigmoid };
enum class FfnAct { SiluGlu, GeluGlu, SwigluOai };  // act(gate) * up; gpt-oss uses a clamped variant

// How router logits become expert weights. Examples:
//   Mixtral:   topk_before_norm = true  (top-k on logits, softmax over the k)
//   Qwen2-MoE: softmax over all, top-k, renormalize = false (+ shared expert with sigmoid gate)
//   Qwen3-MoE: softmax over all, top-k, renormalize = true
//   OLMoE:     softmax over all, top-k, renormalize = false
struct Gating {
  GatingFunc func = GatingFunc::Softmax;
  bool topk_before_norm = false;  // choose top-k on raw logits, then apply func over the k
  bool renormalize = false;       // divide the k weights by their sum
  bool has_bias = false;          // selection bias added to scores for choosing only (DeepSeek-V3)
  float scale = 1.0f;             // routed scaling factor applied to the final weights
  uint32_t n_group = 0;           // group-limited top-k (0 = off)
  uint32_t topk_group = 0;
  bool shared_gate = false;       // shared expert output multiplied by sigmoid(x . w_shared_gate)
  // Additions (model helper):
  bool router_bias = false;        // ffn_gate_inp.bias added to the router logits (gpt-oss)
  bool weight_before_ffn = false;  // expert input scaled by its weight before the FFN (llama4)
};

struct LayerSpec {
  bool is_moe = false;
  uint32_t n_expert = 0;         // routed experts (0 for dense layers)
  uint32_t n_expert_used = 0;
  uint32_t n_expert_shared = 0;  // shared experts (always resident, dense weights)
  uint32_t n_ff_expert = 0;      // hidden size of one routed expert
  uint32_t n_ff_shared = 0;      // hidden size of the shared expert block (all shared experts together)
  uint32_t n_ff_dense = 0;       // hidden size of the dense FFN (dense layers)
  bool swa = false;              // attention sees only the last ModelSpec::n_swa positions (gpt-oss)
  bool chunked = false;          // attention sees only its own chunk of ModelSpec::n_chunk positions (llama4)
  bool rope = true;              // q/k rotated (false: a llama4 NoPE layer, see ModelSpec::no_rope_layer_step)
};

struct ModelSpec {
  Arch arch = Arch::Llama;
  std::string arch_name;  // as in general.architecture
  std::string name;       // general.name if present
  uint32_t n_layer = 0, n_embd = 0, n_head = 0, n_head_kv = 0;
  uint32_t head_dim_k = 0, head_dim_v = 0;  // per-head key / value size
  uint32_t n_vocab = 0, n_ctx_train = 0;
  float rms_eps = 1e-5f;
  // RoPE
  RopeStyle rope_style = RopeStyle::Normal;
  uint32_t n_rot = 0;  // dimensions rotated per head
  float rope_freq_base = 10000.0f, rope_freq_scale = 1.0f;
  RopeScaling rope_scaling = RopeScaling::None;
  float yarn_orig_ctx = 0, yarn_ext_factor = -1.0f, yarn_attn_factor = 1.0f, yarn_beta_fast = 32.0f,
        yarn_beta_slow = 1.0f;
  QkNorm qk_norm = QkNorm::None;
  bool attn_bias = false;        // q/k/v projections carry biases (Qwen2-MoE)
  bool tied_embeddings = false;  // no output.weight: the LM head reuses token_embd
  FfnAct ffn_act = FfnAct::SiluGlu;
  // MoE (model-wide values; per-layer detail in layers)
  uint32_t n_expert = 0, n_expert_used = 0, n_expert_shared = 0, n_ff_expert = 0;
  Gating gating;
  std::vector<LayerSpec> layers;
  // Tokenizer facts the engine needs without loading the tokenizer.
  std::optional<uint32_t> bos_id, eos_id;

  // Additions (model helper); defaults mean "not used by this architecture".
  bool layer_norm = false;        // LayerNorm (dbrx) instead of RMSNorm; epsilon in rms_eps
  // phimoe (as llama.cpp runs it): attn_norm, ffn_norm and output_norm carry a bias added after the
  // weight (RMSNorm(x) * w + b), and the LM head a bias (output.bias).
  bool norm_bias = false;
  bool output_bias = false;
  // Phi-3 LongRoPE (phimoe): rope_factors_long / rope_factors_short hold one divisor per rotated pair
  // (theta_i = pos * base^(-2i/n_rot) / factor[i]); the long ones are used when the session's context
  // exceeds yarn_orig_ctx (rope.scaling.original_context_length), as llama.cpp decides by its n_ctx.
  bool rope_factors = false;
  // Llama-3-style RoPE scaling as GGUF stores it (llama3 rope type: Llama 3.1+, Llama 4 Scout): one
  // tensor rope_freqs.weight of n_rot / 2 divisors, applied like the LongRoPE factors to every rotated
  // layer (theta_i = pos * base^(-2i/n_rot) / rope_freqs[i]).
  bool rope_freqs = false;
  // cos/sin multiplier of RoPE without YaRN (rope.scaling.attn_factor; llama.cpp applies it to every
  // rotation; the Phi-3 converter writes sqrt(1 + ln(ctx/orig_ctx) / ln(orig_ctx)) with LongRoPE).
  float rope_attn_factor = 1.0f;
  bool attn_out_bias = false;     // attn_output carries a bias (gpt-oss, phimoe)
  bool fused_qkv = false;         // one attn_qkv projection (dbrx) instead of attn_q/k/v
  bool qk_l2_norm = false;        // llama4: each head of q and k RMS-normalised (no weight, rms_eps) after
                                  // RoPE, on RoPE layers (HF's Llama4TextL2Norm, as llama.cpp runs it)
  bool attn_sinks = false;        // gpt-oss: per-head attention sink logits (attn_sinks tensor)
  uint32_t n_swa = 0;             // sliding-window size; which layers use it: LayerSpec::swa (gpt-oss:
                                  // il % sliding_window_pattern < pattern - 1, pattern 2: even layers);
                                  // a query at p attends keys at p' with p - p' < n_swa
  bool ffn_norm_post_attention = false;  // gpt-oss: the pre-FFN RMSNorm is the tensor post_attention_norm
  // arctic: a dense residual MLP beside the MoE block. The MLP runs on ffn_norm(x + attention) as in a
  // dense layer; the MoE runs on ffn_norm_exps(x) of the layer's INPUT x (before attention), and both
  // outputs join the residual stream (LayerSpec::n_ff_dense is the MLP's hidden size).
  bool moe_parallel_dense = false;
  // grok: attention logits soft-capped (attn_logit_softcapping, with attention.output_scale as the
  // softmax scale in attention_scale); an RMSNorm on the attention output (attn_output_norm) and on
  // the MoE output (layer_output_norm / post_ffw_norm) before each joins the residual stream; logits
  // times logit_mul, then soft-capped by final_softcap. 0 / false = not used.
  float attn_softcap = 0.0f, logit_mul = 0.0f, final_softcap = 0.0f;
  bool attn_post_norm = false, ffn_post_norm = false;
  uint32_t no_rope_layer_step = 0;  // llama4: every n-th layer (il+1) % n == 0 uses no RoPE (LayerSpec::rope)
  // llama4 chunked attention: on LayerSpec::chunked layers a query at p attends keys p' with
  // p' >= (p / n_chunk) * n_chunk (and p' <= p).
  uint32_t n_chunk = 0;
  // llama4 attention temperature tuning on NoPE layers: q is multiplied by
  // 1 + attn_temp_scale * ln(floor((p + attn_temp_offset) / attn_temp_length) + 1) (0 = off).
  float attn_temp_scale = 0.0f, attn_temp_offset = 0.0f;
  uint32_t attn_temp_length = 0;
  uint32_t q_lora_rank = 0, kv_lora_rank = 0;  // deepseek2 MLA (0 = plain attention)
  // deepseek2 multi-head latent attention (kv_lora_rank > 0). The spec then describes the cache the
  // engine keeps: n_head_kv = 1, head_dim_k = kv_lora_rank + n_rot (the normalised latent followed by
  // the rotated shared key part), head_dim_v = kv_lora_rank (values are the latent itself, the first
  // kv_lora_rank entries of each cached row). The per-head sizes after decompression are here:
  uint32_t mla_head_dim_k = 0;  // q/k per head: qk_nope + qk_rope (= n_rot)
  uint32_t mla_head_dim_v = 0;  // v per head after attn_v_b
  bool mla_split_kv_b = false;  // attn_k_b + attn_v_b (newer files) instead of one attn_kv_b
  float yarn_log_mul = 0.0f;      // deepseek2 YaRN mscale multiplier
  float clamp_kqv = 0.0f;         // dbrx: clamp q/k/v activations to [-c, c] (0 = off)
  // granitemoe multipliers (0 = not used)
  float embedding_scale = 0.0f, residual_scale = 0.0f, attention_scale = 0.0f, logit_scale = 0.0f;
  uint32_t n_ff_dense = 0;        // feed_forward_length: hidden size of dense FFN layers
  uint32_t n_moe_layer = 0;       // number of layers with routed experts
  // glm4moe: trailing NextN / multi-token-prediction layers stored after the n_layer run ones
  // (nextn_predict_layers; block_count = n_layer + n_layer_nextn). Their tensors are in the file but
  // are never run (as llama.cpp loads and skips them); the ExpertTable counts them as skipped bytes.
  uint32_t n_layer_nextn = 0;
};

// Reads and validates the spec. Throws moe::Error: Unsupported naming the architecture when it is
// not one of Arch; Corrupt naming the key when a required key is missing, has the wrong type, or is
// inconsistent with the tensors (e.g. ffn_gate_exps shape vs. expert_count).
ModelSpec load_model_spec(const gguf::GgufFile& f);

// One contiguous piece of an expert in the file.
struct Slice {
  uint64_t offset = 0;  // absolute file offset
  uint64_t nbytes = 0;
  TensorType type = TensorType::F32;
};

// An expert's weights: gate (n_embd -> n_ff), up (n_embd -> n_ff), down (n_ff -> n_embd), and the
// optional per-expert biases (gpt-oss) — absent slices have nbytes == 0.
struct ExpertSlices {
  Slice gate, up, down;
  Slice gate_bias, up_bias, down_bias;
  uint64_t bytes() const noexcept {
    return gate.nbytes + up.nbytes + down.nbytes + gate_bias.nbytes + up_bias.nbytes + down_bias.nbytes;
  }
};

class ExpertTable {
 public:
  // Builds the table from ffn_{gate,up,down}_exps (stacked) or per-expert tensors
  // (blk.L.ffn_gate.E.weight, older Mixtral files). Throws moe::Error (Corrupt) on shape mismatches.
  static ExpertTable build(const gguf::GgufFile& f, const ModelSpec& spec);
  uint32_t n_layer() const noexcept { return n_layer_; }
  uint32_t n_expert() const noexcept { return n_expert_; }
  // nullptr for a dense layer.
  const ExpertSlices* at(uint32_t layer, uint32_t expert) const noexcept;
  uint64_t max_expert_bytes() const noexcept { return max_bytes_; }
  uint64_t total_bytes() const noexcept { return total_bytes_; }
  bool is_moe_layer(uint32_t layer) const noexcept { return layer < n_layer_ && moe_layer_[layer]; }
  // Bytes of every file tensor that belongs to no expert (always resident: attention, norms,
  // routers, shared experts, embeddings) and is read by the forward pass.
  // dense_bytes() + total_bytes() + skipped_bytes() == sum of tensor sizes.
  uint64_t dense_bytes() const noexcept { return dense_bytes_; }
  // Bytes of the tensors of layers the engine never runs (blk.L.* with L >= spec.n_layer: glm4moe's
  // NextN layers), and their names: neither dense nor experts, never read.
  uint64_t skipped_bytes() const noexcept { return skipped_bytes_; }
  const std::vector<std::string>& skipped_tensor_names() const noexcept { return skipped_tensors_; }
  // Names of the tensors whose bytes are expert slices (stacked *_exps and their biases, or
  // per-expert tensors); everything else is dense.
  const std::vector<std::string>& expert_tensor_names() const noexcept { return expert_tensors_; }

 private:
  uint32_t n_layer_ = 0, n_expert_ = 0;
  std::vector<ExpertSlices> e_;  // n_layer x n_expert, empty slices for dense layers
  std::vector<bool> moe_layer_;
  uint64_t max_bytes_ = 0, total_bytes_ = 0;
  uint64_t dense_bytes_ = 0, skipped_bytes_ = 0;
  std::vector<std::string> expert_tensors_, skipped_tensors_;
};

// Byte accounting of a model as `moe inspect` reports it.
struct ModelBytes {
  uint64_t file = 0;              // file size
  uint64_t tensors = 0;           // sum of tensor sizes
  uint64_t dense = 0;             // always resident (tensors in no expert)
  uint64_t experts = 0;           // all routed experts
  uint64_t per_expert = 0;        // one expert (the largest)
  uint64_t active_per_token = 0;  // dense + n_expert_used experts in every MoE layer
  uint64_t skipped = 0;           // tensors of layers never run (glm4moe NextN layers)
};
ModelBytes model_bytes(const gguf::GgufFile& f, const ModelSpec& spec, const ExpertTable& t);

}  // namespace moe
