// moe/kernels/matmul.h — CPU matrix-vector and matrix-matrix products with quantized weights.
// Owns: the public entry points, their dispatch to the scalar reference / AVX2 / AVX-512 kernels
// (chosen at run time from cpu_features()), and the read-bandwidth benchmarks.
// Thread-safety: every function may be called from several threads at once (scratch space for the
// quantized activations and dequantized rows is thread_local and grows on first use only), except that
// one ThreadPool runs one parallel_for at a time (concurrent callers of the same pool are serialised).
//
// Numerics. The scalar level is the reference: dequantize_row (moe/kernels/quant.h) + f32 dot; it
// serves every dequantizable type. The SIMD levels (AVX2; AVX-512 = AVX2 code plus VNNI vpdpbusd /
// vpdpwssd and 512-bit float kernels) cover Q4_0, Q8_0, MXFP4, Q4_K, Q5_K, Q6_K, F32, F16, BF16: they
// quantize the activations to 8 bits once per call (per token; Q8_0-style blocks of 32 for
// Q4_0/Q8_0/MXFP4, Q8_K-style blocks of 256 for the K-quants) and use exact integer block dots; the
// activation rounding bounds the error by sum_blocks amax_b/254 * sum|w| (typically ~1e-3..1e-2
// relative). F32/F16/BF16 weights use f32 activations and f32 FMA (weights widened exactly; AVX512-BF16
// dot instructions are not used because they would round the activations to bf16). Every output is
// reduced in an order that depends only on (type, level, cols): results are bit-identical for any thread
// count and any batch size n (matmul row t == matvec of token t).
#pragma once
#include <cstddef>
#include <cstdint>

#include "moe/kernels/thread_pool.h"
#include "moe/kernels/types.h"

namespace moe::kernels {

enum class SimdLevel : int { Scalar = 0, AVX2 = 1, AVX512 = 2 };
const char* simd_level_name(SimdLevel l) noexcept;
// The best level this CPU (and this build) runs.
SimdLevel best_simd_level() noexcept;

// True when matvec/matmul accept weights of type wt (at least through the scalar reference).
bool matmul_supported(TensorType wt) noexcept;
// True when wt has a SIMD kernel at `level` (otherwise that level falls back to the reference).
bool matmul_has_simd(TensorType wt, SimdLevel level) noexcept;

// y[r] = sum_c W[r][c] * x[c] for r in [0, rows).
// PRECONDITIONS: matmul_supported(wt); cols is a multiple of wt's block size; W holds rows rows of
// row_bytes(wt, cols) bytes each, back to back; x has cols floats, y has rows floats (y must not alias
// x or W). pool may be null (runs on the calling thread). Throws std::invalid_argument when the type is
// unsupported or cols is not a block multiple.
void matvec(TensorType wt, const void* W, size_t rows, size_t cols, const float* x, float* y, ThreadPool* pool);

// Batched: X is n x cols (row-major f32, token t at X + t*cols), Y is n x rows (token t's output at
// Y + t*rows). Activations are quantized once per batch; blocks of ~128 KiB of weight rows are reused
// from L2 for every 4-token register tile, so weights are read from memory once per block of tokens
// whose activations fit in ~512 KiB (about 128 tokens at cols 4096 quantized, 32 for f32/f16/bf16
// weights). n == 0 is a no-op. Same preconditions as matvec. Y[t] equals matvec of X[t] bit for bit.
void matmul(TensorType wt, const void* W, size_t rows, size_t cols, const float* X, size_t n, float* Y,
            ThreadPool* pool);

// One product of matmul_many: Y (n x rows) = X (n x cols) times W's rows, as matmul's arguments.
struct MatmulJob {
  TensorType type;
  const void* W;
  size_t rows, cols;
  const float* X;
  size_t n;
  float* Y;
};

// Runs every job as matmul would (the same bits: results depend only on each job's own arguments)
// with ONE parallel_for over all their rows, so several small products (the k experts' gate and up
// matvecs of a decode step) pay for one fork/join instead of one each. Jobs with the same X, n and
// cols share one activation quantization. Same preconditions per job as matmul; outputs must not
// overlap each other or any input. Scratch is thread_local (grows on first use).
void matmul_many(const MatmulJob* jobs, size_t n_jobs, ThreadPool* pool);

// The same at a forced dispatch level (clamped to best_simd_level()); for tests and benchmarks.
void matmul_at(SimdLevel level, TensorType wt, const void* W, size_t rows, size_t cols, const float* X,
               size_t n, float* Y, ThreadPool* pool);

// ---- benchmarks (tools, not tests) ----
// Read bandwidth of DRAM in bytes/s: all pool threads sum a buffer of `bytes` (default 512 MiB, far larger
// than the caches); best of `reps` passes.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t(512) << 20, int reps = 5);
// Weight bytes/s streamed by matvec of type wt over a matrix of about `bytes` bytes (cols 4096);
// best of `reps` calls. Returns 0 when the type is unsupported.
double measure_matvec_bandwidth(TensorType wt, ThreadPool& pool, size_t bytes = size_t(256) << 20, int reps = 5,
                                SimdLevel level = SimdLevel::AVX512);

}  // namespace moe::kernels
