// Private to kernels/cpu: the contract between the matmul driver (matmul.cpp) and the SIMD tile
// kernels (dot_avx2.cpp, dot_avx512.cpp, both compiled from dot_impl.h with per-file ISA flags).
// Only plain structs and declarations here: a SIMD translation unit must not emit any inline function
// that a baseline translation unit could also use (the linker could pick the AVX-512 copy).
#pragma once
#include <cstddef>
#include <cstdint>

namespace moe::kernels::detail {

// One token's activations as a kernel reads them.
struct ActView {
  const float* x = nullptr;         // cols floats (F32/F16/BF16 weights)
  const int8_t* q = nullptr;        // cols int8, x ~= q * d[block]
  const float* d = nullptr;         // per activation block (32 for ActKind::Q8_32, 256 for Q8_256)
  const float* s = nullptr;         // Q8_32: per block d * sum(q)
  const int32_t* qsum = nullptr;    // Q8_32: per block sum(q) (exact)
  const int16_t* bsums = nullptr;   // Q8_256: per 16 elements sum(q)
  const uint16_t* h = nullptr;      // ActKind::BF16: cols bfloat16 (x rounded to nearest even)
};

// Q8_32P is Q8_32 with the int8 values of each pair of blocks (2j, 2j+1) stored as
// [2j: 0..15][2j+1: 0..15][2j: 16..31][2j+1: 16..31] (a last odd block stays as is): the layout in which
// one 256-bit load of two nibble-packed weight blocks lines up with the activations.
// BF16: the activations rounded to bfloat16 (for BF16 weights on CPUs with AVX512_BF16: vdpbf16ps).
enum class ActKind : int { F32 = 0, Q8_32 = 1, Q8_256 = 2, Q8_32P = 3, BF16 = 4 };

// Computes Y[t * ldy + r] = dot(row r of W, token t) for r in [r0, r1), t in [0, n_tok),
// n_tok <= the table's tile for the type (kMaxTile unless a kernel takes more). W points at row 0; rows
// are row_bytes apart. The order of every reduction depends only on cols (never on n_tok or r0/r1), so
// results do not depend on tiling or thread count.
using TileFn = void (*)(const uint8_t* W, size_t row_bytes, size_t r0, size_t r1, size_t cols,
                        const ActView* acts, int n_tok, float* Y, size_t ldy);

constexpr int kMaxTile = 8;
constexpr int kNumTypes = 40;

// Activation quantizers (cols a multiple of 32 / 256). For each block: amax = max |x|, d = amax / 127,
// q = round_to_nearest_even(x * (127 / amax)) (0 when amax == 0), and Q8_32: s = d * sum(q);
// Q8_256: bsums[g] = sum of q over the 16 elements of group g. Q8_32 also stores qsum = sum(q).
using QuantFn32 = void (*)(const float* x, size_t cols, int8_t* q, float* d, float* s, int32_t* qsum,
                           bool paired);
using QuantFn256 = void (*)(const float* x, size_t cols, int8_t* q, float* d, int16_t* bsums);

struct KernelTable {
  TileFn fn[kNumTypes];      // null: no SIMD kernel for this type
  ActKind act[kNumTypes];    // activation format the kernel expects
  int tile[kNumTypes];       // most tokens fn takes per call (>= 1)
  QuantFn32 quant32;
  QuantFn256 quant256;
};

// Filled by the ISA translation units; only called when cpu_features() allows.
void fill_table_avx2(KernelTable& t);
void fill_table_avx512(KernelTable& t);

}  // namespace moe::kernels::detail
