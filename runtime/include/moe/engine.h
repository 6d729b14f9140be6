// moe/engine.h — the CPU inference engine: a loaded Model (mapped GGUF + ModelSpec + ExpertTable +
// dense weight views) and a Session (f16 KV cache and every scratch buffer, allocated once) that runs
// the forward pass of Llama/Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, granite-MoE, DBRX, gpt-oss and
// DeepSeek-V2/V3 (multi-head latent attention over a cache of the compressed latent and the rotated key part).
//
// Expert weights are reached only through ExpertSource (acquire/release): the session never touches
// expert bytes any other way, so an offloading cache can replace the mmap-backed source without
// changing the math.
//
// Thread-safety: a Model is immutable after load and may be shared by sessions on different threads.
// A Session is single-threaded (it drives its own ThreadPool); an ExpertSource must tolerate the
// calls of every session that shares it (MmapExpertSource is stateless).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "moe/gguf.h"
#include "moe/kernels/types.h"
#include "moe/model.h"

namespace moe {

namespace kernels {
class ThreadPool;
}
namespace detail {
class GpuForward;
}

// A weight matrix as stored: rows of `cols` elements of `type` (GGUF ne[0] = cols, ne[1] = rows).
struct WeightView {
  const void* data = nullptr;  // nullptr: absent
  TensorType type = TensorType::F32;
  uint32_t rows = 0, cols = 0;
  uint64_t nbytes = 0;
  explicit operator bool() const noexcept { return data != nullptr; }
};

// One expert's weights as the kernels read them. gate/up: (n_ff rows, n_embd cols);
// down: (n_embd rows, n_ff cols). Optional per-expert biases (gpt-oss), F32, one row each:
// gate_bias/up_bias (1, n_ff), down_bias (1, n_embd); absent ones have data == nullptr.
struct ExpertWeights {
  WeightView gate, up, down;
  WeightView gate_bias, up_bias, down_bias;
  uint64_t bytes() const noexcept {
    return gate.nbytes + up.nbytes + down.nbytes + gate_bias.nbytes + up_bias.nbytes + down_bias.nbytes;
  }
};

// The one seam through which expert bytes are read. acquire() returns views valid until the matching
// release(); every acquire is released exactly once. Throws moe::Error when the bytes cannot be had
// (IO error in a cached source).
class ExpertSource {
 public:
  virtual ~ExpertSource() = default;
  virtual ExpertWeights acquire(uint32_t layer, uint32_t expert) = 0;
  virtual void release(uint32_t layer, uint32_t expert) noexcept = 0;
  // True when acquire(layer, expert) would not wait for IO right now (a hint only: the answer may
  // change at once). The session computes such experts first while the others load. Never blocks.
  virtual bool resident(uint32_t /*layer*/, uint32_t /*expert*/) const noexcept { return false; }
  // The caller will acquire(layer, expert) soon: a source that reads on demand may start that read
  // now, at demand priority, so it overlaps the caller's other work. A hint: never blocks or throws
  // (a failed start is retried, and reported, by the acquire).
  virtual void will_acquire(uint32_t /*layer*/, uint32_t /*expert*/) noexcept {}
};

// Optional callbacks from inside Session's layer loop (the prefetch planner's hook). Called on the
// session's thread, synchronously; they must not call back into the session. Buffers are valid only
// during the call. Nothing an observer does can change the session's math (it gets const views).
class LayerObserver {
 public:
  virtual ~LayerObserver() = default;
  // Layer `layer`'s residual stream after its attention residual: n_tokens rows of n_embd floats.
  virtual void after_attention(uint32_t /*layer*/, const float* /*x*/, uint32_t /*n_tokens*/) {}
  // The routing of MoE layer `layer`: n_tokens rows of k expert ids (ascending per row).
  virtual void after_routing(uint32_t /*layer*/, const int32_t* /*experts*/, uint32_t /*n_tokens*/,
                             uint32_t /*k*/) {}
  // Layer `layer`'s residual stream after its FFN (the next layer's input): n_tokens x n_embd.
  virtual void after_layer(uint32_t /*layer*/, const float* /*x*/, uint32_t /*n_tokens*/) {}
};

class Model;

// Reads experts straight from the model's memory map (the page cache is the only cache).
class MmapExpertSource final : public ExpertSource {
 public:
  explicit MmapExpertSource(const Model& m) : m_(m) {}
  ExpertWeights acquire(uint32_t layer, uint32_t expert) override;
  void release(uint32_t, uint32_t) noexcept override {}

 private:
  const Model& m_;
};

struct LayerWeights {
  std::vector<float> attn_norm;                  // (n_embd)
  std::vector<float> attn_norm_b, ffn_norm_b;    // (n_embd) norm biases (phimoe); empty when absent
  WeightView wq, wk, wv, wo;                     // q: (n_head*hd_k, n_embd) ... o: (n_embd, n_head*hd_v)
  WeightView wqkv;                               // fused (HQ + HK + HV, n_embd) in that row order (dbrx);
                                                 // then wq/wk/wv are empty
  std::vector<float> bq, bk, bv;                 // biases (empty when absent)
  std::vector<float> bo;                         // (n_embd) attn_output bias (gpt-oss); empty when absent
  std::vector<float> sinks;                      // (n_head) attention sink logits (gpt-oss); empty when absent
  std::vector<float> q_norm, k_norm;             // per head (hd) or full (n_head*hd), per spec
  std::vector<float> ffn_norm;                   // (n_embd)
  std::vector<float> ffn_norm_exps;              // (n_embd) arctic: the MoE's own norm (of the layer input)
  std::vector<float> attn_post_norm, ffn_post_norm;  // (n_embd) grok: norms of the attention / MoE outputs
  WeightView router;                             // (n_expert, n_embd); absent for dense layers
  std::vector<float> router_b;                   // (n_expert) router logit bias (gpt-oss); empty when absent
  WeightView gate_sh, up_sh, down_sh;            // shared expert(s) or dense FFN
  WeightView shared_gate;                        // (1, n_embd): sigmoid gate of the shared expert
  uint32_t n_ff_sh = 0;                          // rows of gate_sh (0: none)
  std::vector<float> exp_probs_b;                // (n_expert) selection bias (DeepSeek-V3); empty: none
  // Multi-head latent attention (deepseek2; spec.kv_lora_rank > 0). dk = mla_head_dim_k, dv =
  // mla_head_dim_v, r = kv_lora_rank, nope = dk - n_rot. wq (n_head*dk, n_embd) when q_lora_rank is 0,
  // else wq_a (q_lora_rank, n_embd) -> q_a_norm -> wq_b (n_head*dk, q_lora_rank).
  WeightView wq_a, wq_b;
  std::vector<float> q_a_norm;                   // (q_lora_rank)
  WeightView wkv_a;                              // (r + n_rot, n_embd): latent, then the shared rope key
  std::vector<float> kv_a_norm;                  // (r)
  // Per head h: wk_b[h] (r, nope) maps q_nope to the latent space (the absorbed W_UK^T); wv_b[h]
  // (dv, r) maps the attended latent to the head's values. Views into the file (attn_k_b / attn_v_b,
  // or the V rows of attn_kv_b); for attn_kv_b files wk_b views wk_b_t, its K rows transposed to f32
  // once at load (n_head * r * nope floats).
  std::vector<WeightView> wk_b, wv_b;
  std::vector<float> wk_b_t;
};

class Model {
 public:
  // Maps (or, to_ram, copies: see gguf::GgufFile::open) and validates the file; throws moe::Error (Io,
  // Corrupt, Unsupported) naming the path.
  static std::unique_ptr<Model> load(const std::string& path, bool to_ram = false);
  // Builds from an already open file (takes ownership).
  static std::unique_ptr<Model> from_file(std::unique_ptr<gguf::GgufFile> f);

  const gguf::GgufFile& file() const noexcept { return *file_; }
  const ModelSpec& spec() const noexcept { return spec_; }
  const ExpertTable& experts() const noexcept { return experts_; }
  const LayerWeights& layer(uint32_t i) const noexcept { return layers_[i]; }
  const WeightView& tok_embd() const noexcept { return tok_embd_; }  // (n_vocab, n_embd)
  const WeightView& output() const noexcept { return output_; }      // tied: same as tok_embd
  const std::vector<float>& output_norm() const noexcept { return output_norm_; }
  const std::vector<float>& output_norm_b() const noexcept { return output_norm_b_; }  // empty: none
  const std::vector<float>& output_b() const noexcept { return output_b_; }  // (n_vocab) LM head bias; empty: none
  // The norm weights (and bias, empty when none) in front of layer il's router: ffn_norm_exps (arctic)
  // or ffn_norm.
  const std::vector<float>& router_norm(uint32_t il) const noexcept {
    return layers_[il].ffn_norm_exps.empty() ? layers_[il].ffn_norm : layers_[il].ffn_norm_exps;
  }
  const std::vector<float>& router_norm_b(uint32_t il) const noexcept {
    return layers_[il].ffn_norm_exps.empty() ? layers_[il].ffn_norm_b : no_bias_;
  }
  // LongRoPE factors (spec().rope_factors; n_rot / 2 divisors each, empty otherwise): the long ones
  // apply to sessions whose context exceeds spec().yarn_orig_ctx.
  const std::vector<float>& rope_factors(bool long_ctx) const noexcept { return long_ctx ? rope_long_ : rope_short_; }
  // llama3-style RoPE divisors (spec().rope_freqs; n_rot / 2 of them, empty otherwise).
  const std::vector<float>& rope_freqs() const noexcept { return rope_freqs_; }
  // The model's normalization of one row of n_embd: RMSNorm, or LayerNorm when spec().layer_norm,
  // with weight w, epsilon spec().rms_eps, then + b when b is not empty. x and y may alias.
  void norm(const float* x, const std::vector<float>& w, float* y) const noexcept { norm(x, w, no_bias_, y); }
  void norm(const float* x, const std::vector<float>& w, const std::vector<float>& b, float* y) const noexcept;
  // Bytes of non-expert weights one decoded token reads (attention, norms, routers, shared experts,
  // LM head, one embedding row).
  uint64_t dense_bytes_per_token() const noexcept { return dense_bytes_; }

 private:
  Model() = default;
  void bind();
  std::unique_ptr<gguf::GgufFile> file_;
  ModelSpec spec_;
  ExpertTable experts_;
  std::vector<LayerWeights> layers_;
  WeightView tok_embd_, output_;
  std::vector<float> output_norm_, output_norm_b_, output_b_;
  std::vector<float> rope_long_, rope_short_, rope_freqs_;
  std::vector<float> no_bias_;  // always empty
  uint64_t dense_bytes_ = 0;
};

// What the CUDA backend does with an expert that is not in VRAM (runtime/src/engine/gpu_forward.h).
enum class GpuMissMode {
  Upload,  // copy it to a VRAM slot and compute on the GPU: the same bits for every budget
  Cpu,     // compute it on the CPU from the host copy now, upload it in the background for later
  Auto,    // split each layer's misses between the CPU and PCIe uploads so both finish together
           // (per-expert CPU time and upload time are measured as it runs)
};

struct SessionOptions {
  uint32_t n_ctx = 0;     // KV cache positions; 0: min(n_ctx_train, 4096)
  uint32_t n_batch = 64;  // tokens per prefill batch (scratch is sized for this)
  int n_threads = 1;
  // CUDA backend: bytes of device memory to use (dense weights, KV cache, scratch, the rest expert
  // slots); 0 = run on the CPU. Without CUDA or a device: a one-line notice and the CPU backend.
  uint64_t vram_bytes = 0;
  int gpu_device = 0;
  GpuMissMode gpu_miss = GpuMissMode::Upload;
  std::string vram_policy = "lru";  // the VRAM tier's eviction policy (moe::cache::make_policy names)
  bool quiet_backend = false;       // no notice on stderr
  // CUDA backend with every expert resident: capture one decode step as a CUDA graph and replay it for each
  // token (the same kernels, so the same logits; false launches them one by one).
  bool cuda_graph = true;
  // CUDA backend with an expert cache: while layer N's experts run, upload the experts that layer N+1's router
  // picks on layer N's post-attention state (pre-gated prediction) into free or evictable VRAM slots. The
  // tokens do not change (a prefetch only changes where an expert already is when its layer runs).
  bool gpu_prefetch = true;
  // CUDA backend prefill GEMMs with quantized weights: full f32 products instead of TF32 tensor cores.
  bool gpu_exact_gemm = false;
  // CUDA backend: a prefill batch of more than this many tokens (and more than 8) runs as GEMMs over
  // dequantized tiles with its tokens grouped by expert; smaller ones as matvecs of up to 8 tokens. H100,
  // OLMoE-1B-7B Q8_0, 52-token prompt: every expert resident, 924 tok/s as matvecs and 698 as one GEMM batch;
  // at 4 GiB, 80 as matvecs (each 8-token chunk uploads its experts) and 372 as a batch (each expert once).
  uint32_t gpu_gemm_min_tokens = 8;
};

// Counters since the session was created or reset_stats().
struct SessionStats {
  uint64_t tokens = 0;           // tokens evaluated
  uint64_t batches = 0;          // forward calls (after splitting into n_batch chunks)
  uint64_t expert_acquires = 0;  // acquire() calls
  uint64_t expert_bytes = 0;     // bytes of the experts acquired
  uint64_t dense_bytes = 0;      // non-expert weight bytes read (one pass per batch)
  uint64_t kv_bytes = 0;         // KV cache bytes read by attention
  // CUDA backend only: routed experts found in VRAM, not found, bytes uploaded to VRAM, and misses
  // computed on the CPU (GpuMissMode::Cpu).
  uint64_t vram_hits = 0, vram_misses = 0, vram_upload_bytes = 0, cpu_expert_runs = 0;
  uint64_t gpu_graph_launches = 0;  // decode steps replayed from the captured CUDA graph
  uint64_t vram_prefetches = 0, vram_prefetch_hits = 0;  // predicted uploads issued; of those, used by a lookup
};

class Session {
 public:
  // The source must outlive the session. Throws InvalidArgument for impossible options and
  // Unsupported for a spec this engine cannot run.
  Session(const Model& m, ExpertSource& src, SessionOptions o = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Appends tokens at the current position (prefill in chunks of n_batch, or one decode step) and
  // returns the logits of the last token (n_vocab floats, valid until the next call).
  // If all_logits is non-null it receives tokens.size() x n_vocab floats (every position).
  // Throws InvalidArgument when the context would overflow or a token id is out of range.
  std::span<const float> eval(std::span<const int32_t> tokens, float* all_logits = nullptr);
  uint32_t pos() const noexcept { return pos_; }
  uint32_t n_ctx() const noexcept { return n_ctx_; }
  void reset() noexcept { pos_ = 0; }  // forget the KV cache
  // Keeps only the first n positions of the KV cache (no-op when n >= pos()): a chat whose new
  // rendering shares a prefix with what was evaluated re-evaluates only the rest.
  void truncate(uint32_t n) noexcept {
    if (n < pos_) pos_ = n;
  }
  const SessionStats& stats() const noexcept { return stats_; }
  void reset_stats() noexcept { stats_ = {}; }
  const Model& model() const noexcept { return m_; }
  // The experts (ascending ids) and weights chosen for the last token evaluated, per MoE layer
  // (for traces and tests): n_expert_used entries each.
  std::span<const int32_t> last_experts(uint32_t layer) const noexcept;
  std::span<const float> last_expert_weights(uint32_t layer) const noexcept;
  // Installs (or removes, with nullptr) the layer observer; it must outlive its installation.
  void set_observer(LayerObserver* o) noexcept { observer_ = o; }
  // "cpu", or "cuda" when the session runs on the GPU (SessionOptions::vram_bytes); backend_info()
  // describes the device and the VRAM split.
  const char* backend() const noexcept { return gpu_ ? "cuda" : "cpu"; }
  std::string backend_info() const;

 private:
  void forward(const int32_t* tokens, uint32_t n, float* all_logits);
  void attention_block(uint32_t il, uint32_t n);
  // Which FFN parts ffn_block runs into moe_out_ (zeroed first): routed experts, the shared expert /
  // dense FFN / residual MLP, or both.
  enum class FfnPart { All, Routed, Dense };
  void scale_logits(float* l, size_t cnt) const noexcept;  // the spec's logit multipliers and soft-cap
  void ffn_block(uint32_t il, uint32_t n, FfnPart part = FfnPart::All);
  void route(uint32_t il, uint32_t n);

  const Model& m_;
  ExpertSource& src_;
  SessionOptions o_;
  std::unique_ptr<kernels::ThreadPool> pool_;
  uint32_t n_ctx_ = 0, pos_ = 0;
  const float* rope_ff_ = nullptr;  // LongRoPE factors in use (the model's long or short ones), or none
  SessionStats stats_;
  // KV cache, per layer (n_ctx, n_head_kv, hd) f16.
  std::vector<std::vector<uint16_t>> k_cache_, v_cache_;
  // Scratch (B = n_batch).
  std::vector<float> x_, xn_;         // (B, n_embd) residual stream / normalised
  std::vector<float> q_, k_, v_;      // (B, n_head*hd_k), (B, n_kv*hd_k), (B, n_kv*hd_v)
  std::vector<float> qkv_;            // (B, HQ + HK + HV) for a fused projection, else empty
  std::vector<float> x0_;             // (B, n_embd) arctic: the layer input, the MoE's input; else empty
  std::vector<float> att_;            // (B, n_head*hd_v)
  std::vector<float> scores_;         // (n_threads, n_ctx)
  std::vector<float> rope_cs_;        // (n_rot)
  std::vector<float> tmp_;            // (B, n_embd) projection / expert outputs
  std::vector<float> moe_out_;        // (B, n_embd)
  std::vector<float> router_;         // (B, n_expert)
  std::vector<float> gw_;             // (B, n_expert_used) chosen weights
  std::vector<int32_t> gi_;           // (B, n_expert_used) chosen experts (ascending id)
  std::vector<int32_t> topk_idx_;     // (n_expert)
  std::vector<float> probs_;          // (n_expert)
  std::vector<float> sel_;            // (2 * n_expert) biased / group-limited selection scores
  std::vector<uint32_t> e_count_, e_start_;  // (n_expert + 1) tokens per expert, offsets
  std::vector<uint32_t> e_tok_;       // (B * n_expert_used) token index per routed slot
  std::vector<float> e_w_;            // (B * n_expert_used) weight per routed slot
  std::vector<float> xg_;             // (B, n_embd) gathered inputs of one expert
  std::vector<float> g_, u_;          // (B, max n_ff)
  std::vector<float> sg_;             // (B) shared gate logits
  std::vector<float> logits_;         // (n_vocab)
  std::vector<int32_t> last_e_;       // (n_layer, n_expert_used)
  std::vector<float> last_w_;         // (n_layer, n_expert_used)
  LayerObserver* observer_ = nullptr;
  std::unique_ptr<detail::GpuForward> gpu_;  // the CUDA backend, when in use
  bool src_may_block_ = false;  // the source is not the memory map: acquire may wait for a free slot
  std::vector<float> ys_;             // (n_batch * max_k, n_embd) per-slot expert outputs
  std::vector<uint8_t> e_done_;       // (n_expert) computed in the resident-first pass
  // MLA scratch (deepseek2 only; empty otherwise). dk, dv, r, nope as in LayerWeights.
  void attention_mla(uint32_t il, uint32_t n);
  std::vector<float> mla_q_;          // (B, n_head * dk) q before absorption
  std::vector<float> mla_qa_;         // (B, q_lora_rank) compressed q
  std::vector<float> mla_hin_;        // (n_head, B, max(nope, r)) per-head gathered inputs
  std::vector<float> mla_hout_;       // (n_head, B, max(r, dv)) per-head outputs
  std::vector<float> mla_o_;          // (B, n_head * dv) per-head values, input of attn_output
};

// How the CUDA backend splits SessionOptions::vram_bytes for a model (computed on the host: `moe inspect
// --vram` prints it without a GPU, and the backend allocates exactly this). Upload mode needs room for
// one token's experts (min_slots); the CPU-miss mode runs with no expert slot at all.
struct GpuMemoryPlan {
  uint64_t budget = 0;      // vram_bytes
  uint64_t dense = 0;       // every non-expert weight, as stored (256-byte aligned pieces)
  uint64_t kv = 0;          // f16 KV cache of n_ctx positions
  uint64_t scratch = 0;     // activations for 8 tokens, logits, attention scores, routing tables
  uint64_t slot_bytes = 0;  // one expert slot (gate | up | down of the largest layer's expert)
  uint32_t min_slots = 0;   // slots upload mode cannot run with fewer of (experts per token)
  uint64_t minimum = 0;     // dense + kv + scratch (+ min_slots * slot_bytes in upload mode)
  uint32_t n_experts = 0;   // routed experts of the model (all MoE layers)
  uint32_t slots = 0;       // expert slots the budget pays for (capped at n_experts); 0 when !fits()
  uint32_t n_ctx = 0;
  bool fits() const noexcept { return budget >= minimum; }
  bool all_resident() const noexcept { return fits() && slots > 0 && slots == n_experts; }
  std::string to_text() const;  // one line: "vram X = dense A + KV B + scratch C + N expert slots x S"
};
// The split for `m` with options `o` (o.vram_bytes, o.gpu_miss) and a KV cache of n_ctx positions
// (0: as Session picks). Never throws for a small budget (fits() is false).
GpuMemoryPlan plan_gpu_memory(const Model& m, const SessionOptions& o, uint32_t n_ctx);

// The gating rule applied to one token's router logits (n_expert floats), exposed for tests:
// writes k expert ids (ascending) and their weights. probs/idx are scratch of n_expert entries.
// bias (n_expert, may be null): added to the scores for choosing only (DeepSeek-V3 exp_probs_b); with
// g.n_group > 1 the choice is limited to the g.topk_group groups (of n_expert / n_group consecutive
// experts) whose two best biased scores sum highest. sel: scratch of 2 * n_expert floats, required
// when bias is given or g.n_group > 1.
void apply_gating(const Gating& g, const float* logits, uint32_t n_expert, uint32_t k, int32_t* out_ids,
                  float* out_w, float* probs, int32_t* idx, const float* bias = nullptr, float* sel = nullptr);

}  // namespace moe
