// kernels/cuda/attention.cuh — attention on the GPU: grouped-query attention of one query token (decode) or a
// batch of causal query tokens (prefill) over an f16 KV cache, plus the f32 -> f16 store of the new tokens' k
// and v into the cache.
// Thread-safety: stateless launchers; concurrent calls on different streams are fine.
//
// Design notes.
// - Twin: moe::kernels::ops::attention (moe/kernels/ops.h), same AttnShape and cache layout
//   (n_ctx, n_head_kv, hd) per layer. Softmax subtracts the max as the CPU does; the CPU sums in
//   double, the GPU in f32 with a fixed tree: tests allow 1e-5 absolute on unit-scale values.
// - One 128-thread block per query head; scores live in a caller-provided device scratch (n_head * n_ctx
//   floats, allocated once with the KV cache: nothing allocates per token). Pass 1: one warp per key
//   position, lanes split hd_k (coalesced f16 reads), warp_sum; pass 2: block max, exp, block sum;
//   pass 3: thread d accumulates sum_t p_t v[t][d] (coalesced across d), one division at the end.
// - n_kv may come from device memory (d_n_kv), so a captured decode graph serves every position.
// - kv_store writes the token's k and v with the shared f32_to_fp16 (round to nearest even, as
//   ops::f32_to_f16 for finite values), position read from device memory too.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "moe/kernels/ops.h"

namespace moe::cuda {

// One decode token, one block per head, scores in a buffer (the engine now calls attention() below; this
// simpler form stays as a tested kernel).
// out[h*hd_v + d] for h < n_head: softmax_t(scale * q_h . k[t][h/g]) weighted sum of v[t][h/g][d], t < n_kv,
// g = n_head / n_head_kv. q: (n_head, hd_k) f32; k_cache: (n_ctx, n_head_kv, hd_k) f16 bits; v_cache:
// (n_ctx, n_head_kv, hd_v); out: (n_head, hd_v) f32; scores: scratch of n_head * n_ctx floats.
// n_kv: the number of cached positions (1..n_ctx), or, when d_n_kv is non-null, the kernel reads it from
// *d_n_kv at run time (values outside [1, n_ctx] are clamped to it).
// PRECONDITIONS (InvalidArgument otherwise): n_head, n_head_kv >= 1 and n_head % n_head_kv == 0;
// hd_k, hd_v >= 1; n_ctx >= 1; d_n_kv or 1 <= n_kv <= n_ctx. All pointers: device memory.
void attention_decode(const kernels::ops::AttnShape& s, const float* q, const uint16_t* k_cache,
                      const uint16_t* v_cache, int n_ctx, int n_kv, const int32_t* d_n_kv, float* out, float* scores,
                      cudaStream_t stream = nullptr);

// Attention of n_tokens query tokens over an f16 KV cache in one launch (prefill batches, and decode with the
// positions split across blocks). Token t's query q + t*n_head*hd_k attends positions [0, n_kv_t) with
// n_kv_t = d_n_kv[t] read on the device (clamped to [1, n_ctx]); out + t*n_head*hd_v gets the result.
// The softmax is online (flash style): positions are read in tiles of 64, the running max rescales the running
// sum and values, so no score buffer is needed. With n_split > 1 each (head, token) is split into n_split blocks
// over contiguous position ranges whose partial (max, sum, values) land in `partials`
// (attention_partials_floats) and a second kernel merges them: many blocks for one decode token.
// Twin: ops::attention per token (tests allow 1e-5 absolute on unit-scale values).
// PRECONDITIONS (InvalidArgument otherwise): as attention_decode, plus hd_v <= 512, hd_k <= 1024, no softcap,
// 1 <= n_tokens <= 65535, 1 <= n_split <= 64, partials non-null when n_split > 1. All pointers: device memory.
void attention(const kernels::ops::AttnShape& s, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
               int n_ctx, const int32_t* d_n_kv, int n_tokens, float* out, int n_split, float* partials,
               cudaStream_t stream = nullptr);
// Floats of `partials` that attention() needs for n_tokens tokens and n_split blocks per (head, token).
inline size_t attention_partials_floats(const kernels::ops::AttnShape& s, int n_tokens, int n_split) {
  return n_split > 1 ? size_t(n_tokens) * size_t(s.n_head) * size_t(n_split) * (size_t(s.hd_v) + 2) : 0;
}

// kv_store for n_tokens tokens: k rows (n_tokens, k_row) and v rows (n_tokens, v_row) go to the cache rows
// d_pos[t] (out-of-range positions are not written). 0 <= n_tokens <= 65535.
void kv_store_tokens(const float* k, const float* v, uint16_t* k_cache, uint16_t* v_cache, int64_t k_row,
                     int64_t v_row, const int32_t* d_pos, int n_tokens, int n_ctx, cudaStream_t stream = nullptr);

// k_cache[pos][.] = f16(k[.]) (n_head_kv*hd_k values) and v_cache[pos][.] = f16(v[.]) (n_head_kv*hd_v), with
// pos = *d_pos read on the device (must be in [0, n_ctx): out-of-range positions are not written).
// k_row, v_row: elements per cache row (n_head_kv*hd_k, n_head_kv*hd_v). All pointers: device memory.
void kv_store(const float* k, const float* v, uint16_t* k_cache, uint16_t* v_cache, int64_t k_row, int64_t v_row,
              const int32_t* d_pos, int n_ctx, cudaStream_t stream = nullptr);

}  // namespace moe::cuda
