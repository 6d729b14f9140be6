// `moe gen`: writes a random-weight MoE model in the real GGUF layout of an architecture (see
// moe/gen.h), for tests and benchmarks without downloading a model. Single command, streams the
// file in bounded memory.
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "cli.h"
#include "moe/gen.h"

namespace moe::tools {
namespace {

Registrar reg("gen", "Write a random-weight MoE model (GGUF) for tests and benchmarks", [](CLI::App& app) -> Action {
  auto o = std::make_shared<GenOptions>();
  auto quiet = std::make_shared<bool>(false);
  app.add_option("--arch", o->arch,
                 "llama (Mixtral layout), qwen2moe, qwen3moe, olmoe, granitemoe, dbrx, deepseek2, gpt-oss, llama4, glm4moe, arctic, "
                 "grok, phimoe "
                 "(gpt-oss: "
                 "experts mxfp4 by default; vocabulary gpt-2 with the gpt-2 pre-tokenizer, since gpt-oss's o200k "
                 "vocabulary is not in the shared data; chat template openai-gpt-oss-120b.jinja)");
  app.add_option("--out,-o", o->out, "Output GGUF path")->required();
  app.add_option("--preset", o->preset,
                 "tiny, olmoe-1b-7b, qwen3-30b-a3b, mixtral-8x7b, deepseek-v2-lite, gpt-oss-20b, glm-4.5-air (default tiny). "
                 "deepseek2: '--arch deepseek2 --preset tiny' is DeepSeek-V2-like (plain q, softmax routing), "
                 "'--preset tiny-v3' DeepSeek-V3-like (compressed q, sigmoid routing + exp_probs_b, group-limited "
                 "top-k, normalised weights); both with latent attention, a dense first layer, a shared expert, a "
                 "routed scale, YaRN. glm4moe: '--preset tiny' has a dense first layer, a shared expert, sigmoid "
                 "routing + exp_probs_b, q/k/v biases, RoPE on half of each head, head size 64 and one NextN layer");
  app.add_option("--layers", o->n_layer, "Number of layers");
  app.add_option("--embd", o->n_embd, "Embedding size");
  app.add_option("--ff", o->n_ff, "Hidden size of one expert");
  app.add_option("--shared-ff", o->n_ff_shared, "Hidden size of the shared expert (qwen2moe)");
  app.add_option("--experts", o->n_expert, "Routed experts per layer");
  app.add_option("--top-k", o->n_expert_used, "Experts used per token");
  app.add_option("--heads", o->n_head, "Attention heads");
  app.add_option("--heads-kv", o->n_head_kv, "Key/value heads");
  app.add_option("--head-dim", o->head_dim, "Head size");
  app.add_option("--ctx", o->n_ctx, "Training context length (metadata)");
  app.add_option("--vocab-size", o->n_vocab, "Vocabulary size (pads the vocabulary file; with --vocab none, the size)");
  app.add_option("--type", o->type, "Weight type: f32, f16, bf16, q8_0, q4_0, q4_K, q5_K, q6_K, mxfp4, ...");
  app.add_option("--expert-type", o->expert_type,
                 "Routed experts' weight type (default: mxfp4 for gpt-oss, else --type)");
  app.add_option("--swa", o->n_swa, "gpt-oss sliding window of the even layers (default: tiny 4, gpt-oss-20b 128)");
  app.add_option("--chunk", o->n_chunk,
                 "llama4 attention chunk and temperature floor (default: none written = llama.cpp's fixed 8192; "
                 "other values are moe-only keys that llama.cpp ignores)");
  app.add_flag("--rope-freqs", o->rope_freqs,
               "llama4: write rope_freqs.weight (Llama-3.1-style RoPE divisors, as Scout's files carry)");
  app.add_option("--seed", o->seed, "Random seed (same seed, same bytes)");
  app.add_option("--vocab", o->vocab, "Vocabulary GGUF path or name in <data>/tokenizers (gpt-2, llama-spm, ...), or none");
  app.add_option("--data", o->data_dir, "Shared data folder holding tokenizers/");
  app.add_option("--router-skew", o->router_skew, "Zipf-like exponent of expert popularity (0 = uniform)");
  app.add_option("--threads", o->threads, "Generator threads (default 2)");
  app.add_flag("--mla-kv-b", o->mla_kv_b,
               "deepseek2: one attn_kv_b per layer (older files) instead of attn_k_b / attn_v_b");
  app.add_flag("--qk-norm", o->qk_norm, "glm4moe: per-head q/k RMSNorm (use_qk_norm, as GLM-4.5 355B)");
  app.add_option("--nextn", o->n_nextn, "glm4moe: NextN (MTP) layers after the run ones (default: the preset's, 1)");
  app.add_flag("--quiet,-q", *quiet, "No progress output");
  return [o, quiet] {
    int last = -1;
    if (!*quiet)
      o->progress = [&last](uint64_t done, uint64_t total) {
        int pct = total ? static_cast<int>(100 * done / total) : 100;
        if (pct != last) std::fprintf(stderr, "\rmoe gen: %3d%%", pct), last = pct;
      };
    GenResult r = generate_model(*o);
    if (!*quiet) std::fprintf(stderr, "\n");
    const GenOptions& g = r.resolved;
    fmt::print("wrote {} ({} bytes, {} tensors): {} preset {}, {} layers, {} experts (top-{}), n_embd {}, n_ff {}, "
               "vocab {}, type {}, experts {}, seed {}\n",
               g.out, r.file_bytes, r.n_tensors, g.arch, g.preset, g.n_layer, g.n_expert, g.n_expert_used, g.n_embd,
               g.n_ff, g.n_vocab, g.type, g.expert_type, g.seed);
    return 0;
  };
});

}  // namespace
}  // namespace moe::tools
