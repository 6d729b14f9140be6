// moe/gen.h — synthetic MoE models: random weights in the real GGUF layout of an architecture
// (tensor names, shapes and the metadata keys llama.cpp requires), with a real tokenizer's metadata
// copied from a vocabulary GGUF. Used by `moe gen`, the tests and the benchmarks.
// generate_model() is reentrant (no global state); it writes one file and uses opts.threads threads.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace moe {

struct GenOptions {
  // llama (Mixtral layout), qwen2moe, qwen3moe, olmoe, granitemoe, dbrx, deepseek2, gpt-oss, llama4, glm4moe,
  // arctic, grok, phimoe; empty = from the preset (else qwen3moe). llama4: MoE every 2nd layer (top-1, sigmoid,
  // shared expert), chunked attention on 3 of 4 layers, NoPE every 4th layer, vocabulary gpt-2 by default
  // (llama.cpp's converter writes gpt2). phimoe: biased norms and LM head, q/k/v/o biases, LongRoPE
  // factors (original context 256), vocabulary phi-3 by default.
  std::string arch;
  std::string out;     // output path (required)
  // "", "tiny", "tiny-v3", "olmoe-1b-7b", "qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v2-lite", "gpt-oss-20b",
  // "glm-4.5-air".
  // deepseek2: "tiny" is a DeepSeek-V2(-Lite)-like model (plain attn_q, softmax gating, no groups);
  // "tiny-v3" a DeepSeek-V3-like one (compressed q, sigmoid gating + exp_probs_b, group-limited top-k,
  // normalised weights); both with MLA, a leading dense layer, one shared expert, a routed scaling
  // factor and YaRN. The MLA sizes (q/kv LoRA ranks, rope/nope/v head sizes) come from the preset.
  // glm4moe (GLM-4.5/4.6): "tiny" has a dense first layer, one shared expert, sigmoid routing with
  // exp_probs_b, normalised weights times a routed scale, q/k/v biases, RoPE on half of each head
  // (NeoX), a head size (64) other than n_embd / n_head, and one trailing NextN layer.
  std::string preset;
  // Dimensions; 0 = from the preset (or the tiny defaults).
  uint32_t n_layer = 0, n_embd = 0;
  uint32_t n_ff = 0;         // hidden size of one routed expert
  uint32_t n_ff_shared = 0;  // qwen2moe shared expert hidden size
  uint32_t n_expert = 0, n_expert_used = 0;
  uint32_t n_head = 0, n_head_kv = 0, head_dim = 0;
  uint32_t n_ctx = 0;
  uint32_t n_vocab = 0;  // 0 = the vocabulary file's size; larger pads it with unused tokens
  std::string type = "f32";  // type of the projection (and expert) weights (norms, biases, routers stay f32)
  // Type of the routed experts' weights; "" = the architecture's default: mxfp4 for gpt-oss (as the
  // released gpt-oss files store them), else `type`.
  std::string expert_type;
  // gpt-oss: sliding-window size of the even layers (0 = the preset's: tiny 4, so short test prompts
  // cross it; gpt-oss-20b 128).
  uint32_t n_swa = 0;
  // llama4: attention chunk size, also used as the temperature-tuning floor (0 = llama.cpp's fixed
  // 8192 for both, no key written). A non-zero value writes moe's own keys llama4.attention.chunk_size
  // and llama4.attention.temperature_length, which llama.cpp ignores: such a file runs the same in
  // llama.cpp only for prompts shorter than the chunk.
  uint32_t n_chunk = 0;
  // llama4: also write rope_freqs.weight, Llama-3.1-style RoPE divisors (factor 8, low/high frequency
  // factors 1 and 4) computed for an original context of 32 tokens so they act within short test
  // prompts (Scout's files carry this tensor; llama.cpp applies it).
  bool rope_freqs = false;
  uint64_t seed = 1;
  // Vocabulary: a path to a GGUF, a name from <data>/tokenizers (ggml-vocab-NAME.gguf, e.g. "gpt-2"),
  // "" = the architecture's default (llama-spm for llama, gpt-2 otherwise), or "none" = no tokenizer
  // (tokenizer.ggml.model "none"; n_vocab from n_vocab, default 256) for fast tests.
  // gpt-oss: its o200k vocabulary is not in the shared data, so the default is gpt-2 (byte-level BPE,
  // pre-tokenizer "gpt-2", which llama.cpp and moe's tokenizer both run); with a vocabulary, the file
  // also gets <data>/chat-templates/openai-gpt-oss-120b.jinja as tokenizer.chat_template.
  std::string vocab;
  std::string data_dir;  // folder holding tokenizers/; "" = $MOE_SHARED_DATA or the build default
  float router_skew = 0.0f;  // Zipf-like exponent of expert popularity (0 = uniform)
  // deepseek2: write one attn_kv_b per layer (older files; llama.cpp runs them without the absorbed
  // cache) instead of attn_k_b / attn_v_b with key_length_mla / value_length_mla.
  bool mla_kv_b = false;
  // glm4moe: per-head q/k RMSNorm (attn_q_norm / attn_k_norm, as GLM-4.5 355B's use_qk_norm).
  bool qk_norm = false;
  // glm4moe: NextN (multi-token prediction) layers written after the n_layer run ones (block_count =
  // n_layer + n_nextn; llama.cpp and moe skip them); -1 = the preset's (1).
  int32_t n_nextn = -1;
  unsigned threads = 2;
  std::function<void(uint64_t bytes_done, uint64_t bytes_total)> progress;  // optional, called per chunk
};

struct GenResult {
  GenOptions resolved;  // options after applying the preset and defaults (every dimension set)
  uint64_t file_bytes = 0;
  uint64_t n_tensors = 0;
};

// Applies the preset and defaults. Throws moe::Error (InvalidArgument) for an unknown preset or
// architecture, or inconsistent dimensions (top-k > experts, heads not dividing, ...).
GenOptions resolve_gen_options(const GenOptions& opts);

// Writes the model to opts.out in bounded memory (one chunk of a few MiB per thread at a time).
// Deterministic: the same options (seed included) give byte-identical files, whatever opts.threads.
// Throws moe::Error: InvalidArgument (options), Unsupported (a type this build cannot quantize to),
// Io (writing), Corrupt (a bad vocabulary file).
GenResult generate_model(const GenOptions& opts);

}  // namespace moe
