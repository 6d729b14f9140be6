// runtime/src/engine/gpu_forward.h — the CUDA backend of Session (private to the engine): the same
// forward pass as session.cpp, run on one GPU with dense weights, the f16 KV cache and scratch in
// device memory and the rest of the --vram budget a cache of expert slots managed by the [4/9]
// ResidencyManager (the VRAM tier). Expert bytes come from the session's ExpertSource (the mmap or
// the DRAM tier over NVMe), staged through pinned host buffers.
//
// A miss is either uploaded (GpuMissMode::Upload: the expert is then computed on the GPU, so the
// output is the same bits for every budget) or computed on the CPU from the host copy while the
// GPU works on the hits and uploaded in the background for later tokens (GpuMissMode::Cpu, as
// llama.cpp's --cpu-moe and Fiddler do; the CPU kernels round differently, so tokens may differ
// from the all-GPU run within the kernels' tolerance).
//
// Built only with CUDA (MOE_HAVE_CUDA); without it make_gpu_forward says so and returns nullptr.
// Thread-safety: used by its Session's thread only.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "moe/engine.h"

namespace moe::detail {

class GpuForward {
 public:
  virtual ~GpuForward() = default;
  // Evaluates n tokens (any n >= 1) at positions pos .. pos+n-1. Writes the last token's logits to
  // `logits` (n_vocab floats) and, when all_logits is non-null, every token's (n x n_vocab). Records
  // the last token's routing into last_e/last_w (n_layer x kk) and adds to st.
  virtual void forward(const int32_t* tokens, uint32_t n, uint32_t pos, float* logits, float* all_logits,
                       SessionStats& st, int32_t* last_e, float* last_w, size_t kk) = 0;
  // One line: device name, budget split, slots.
  virtual std::string describe() const = 0;
};

// The CUDA backend's scratch buffer: float arrays for up to `batch` tokens at a time (each rounded to 64
// floats, in this order), then the router ids, the positions, token ids and key counts (pos + 1), the
// expert-sorted job permutation of a prefill batch, and the per-layer tables of expert pointers of the
// small-chunk path. plan_gpu_memory sizes the scratch from it and gpu_forward.cpp lays the buffer out by it.
// Decode and chunks of up to kTokens tokens use matvecs; larger prefill batches (up to `batch` = the
// session's n_batch) use GEMMs over dequantized tiles (Workspace) and group their tokens by expert (Gathered).
struct GpuScratchLayout {
  static constexpr uint64_t kTokens = 8;  // cuda::kMatvecMaxBatch: the matvec path's chunk
  enum Part { X, Xn, Q, K, V, Att, Tmp, Moe, RouterLogits, Weights, G, U, ExpertOut, Gathered, SharedGate, Ones,
              SharedWeight, Logits, Partials, Workspace, kParts };
  uint64_t batch = kTokens;      // tokens per forward call (>= kTokens)
  uint64_t workspace_floats = 0;  // GEMM tile workspace (0 when batch == kTokens)
  int attn_split = 1;             // position splits of decode attention (cuda::attention)
  uint64_t floats[kParts] = {};   // offset of each part, in floats
  // Byte offsets: int32 ids, positions+tokens+n_kv, the job permutation (token | job, batch*max_k each), the
  // pre-gated prediction (ids | weights, kTokens*max_k each), the pointer tables.
  uint64_t ids = 0, tokens = 0, perm = 0, pred = 0, ptrs = 0;
  uint64_t bytes = 0;                                 // the whole buffer
};
GpuScratchLayout gpu_scratch_layout(const Model& m, uint32_t n_ctx, uint32_t n_batch);

// Builds the GPU backend for `m` on device o.gpu_device with o.vram_bytes of device memory, or
// returns nullptr after printing a one-line notice on stderr (unless o.quiet_backend) when this
// build has no CUDA or no device is usable. Throws moe::Error (InvalidArgument) for a budget that
// cannot hold the dense weights, KV cache, scratch and one token's experts, naming the sizes.
std::unique_ptr<GpuForward> make_gpu_forward(const Model& m, ExpertSource& src, const SessionOptions& o,
                                             uint32_t n_ctx, kernels::ThreadPool* pool);

}  // namespace moe::detail
