// moe/kernels/types.h — tensor element types as GGUF numbers them, and their block geometry.
// Owns: the type enum (values are the on-disk GGUF/ggml numbers), block size in elements and bytes,
// names, and size arithmetic with overflow checks. Pure functions; thread-safe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moe {

// Values are fixed by the GGUF file format. Numbers 31-33 and 36-38 were used by ggml for repacked
// layouts that were later removed; files carrying them are rejected as unknown types.
enum class TensorType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct TypeTraits {
  TensorType type;
  const char* name;      // as llama.cpp prints it: "q4_K", "f16", ...
  uint32_t block_elems;  // elements per block (1 for plain types)
  uint32_t block_bytes;  // bytes per block
  bool dequantizable;    // this build has a scalar dequantizer for it
  bool quantizable;      // this build can quantize f32 into it
};

// nullptr for a number that is not a known type.
const TypeTraits* type_traits(uint32_t raw_type) noexcept;
inline const TypeTraits& traits(TensorType t) noexcept { return *type_traits(static_cast<uint32_t>(t)); }
const char* type_name(TensorType t) noexcept;
// Case-insensitive: "q4_k", "Q4_K", "f32", "mxfp4", ...
std::optional<TensorType> type_from_name(std::string_view name) noexcept;

// Bytes of a row of n elements; nullopt when n is not a multiple of the block size or the
// product overflows.
std::optional<uint64_t> row_bytes(TensorType t, uint64_t n) noexcept;

}  // namespace moe
