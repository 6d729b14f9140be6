// kernels/cuda/router.cuh — MoE routing on the GPU: router logits -> k expert ids and weights per token,
// with the gating rules of moe::Gating (runtime/include/moe/model.h) that the CPU engine implements in
// moe::apply_gating (runtime/include/moe/engine.h), the twin of this kernel.
// Thread-safety: stateless launchers; concurrent calls on different streams are fine.
//
// Design notes.
// - One 128-thread block per token. Probabilities (softmax with max subtraction, or sigmoid) go to shared
//   memory; top-k is k rounds of a block-wide argmax (ties to the lower index), which yields ops::topk's
//   order: descending value, lower index first among equals. One thread then does the k-sized work:
//   gather, softmax/sigmoid over the k (topk_before_norm), renormalisation (double sum, as the CPU),
//   routed scale, and the final sort by ascending expert id (the order the CPU combines experts in).
// - The ids stay on the device and feed matvec_experts (matvec.cuh) and combine (act.cuh) directly, so a
//   decode step needs no host round trip to route; the host copies them back asynchronously for the
//   residency manager and the predictor.
// - Not implemented (throw InvalidArgument): selection bias (has_bias) and group-limited top-k
//   (n_group > 1), which the CPU engine rejects as well.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace moe::cuda {

struct RouterParams {
  bool sigmoid = false;           // GatingFunc::Sigmoid (else softmax)
  bool topk_before_norm = false;  // choose on raw logits, then normalise over the k
  bool renormalize = false;       // divide the k weights by their sum
  float scale = 1.0f;             // routed scaling factor
  bool has_bias = false;          // unsupported here (must be false)
  uint32_t n_group = 0;           // unsupported above 1
};

// For each token t < n_tokens: logits (n_tokens, n_expert) row t -> ids[t*k + j], weights[t*k + j], j < k,
// ids ascending within a token. PRECONDITIONS (InvalidArgument otherwise): 1 <= k <= n_expert <= 4096,
// k <= 64; n_tokens >= 0; p.has_bias false and p.n_group <= 1. All pointers: device memory.
// Asynchronous on `stream`; graph-capturable.
void route(const RouterParams& p, const float* logits, int64_t n_tokens, int n_expert, int k, int32_t* ids,
           float* weights, cudaStream_t stream = nullptr);

}  // namespace moe::cuda
