// Type table for moe/kernels/types.h. Block geometry follows the GGUF/ggml block layouts.
#include "moe/kernels/types.h"

#include <array>
#include <cctype>

namespace moe {
namespace {

// dequantizable/quantizable say what kernels/cpu/quant*.cpp implements; tests/unit/test_quant.cpp checks
// that every flagged type really round-trips and that the others are refused.
constexpr TypeTraits kTable[] = {
    {TensorType::F32, "f32", 1, 4, true, true},
    {TensorType::F16, "f16", 1, 2, true, true},
    {TensorType::Q4_0, "q4_0", 32, 18, true, true},
    {TensorType::Q4_1, "q4_1", 32, 20, true, true},
    {TensorType::Q5_0, "q5_0", 32, 22, true, true},
    {TensorType::Q5_1, "q5_1", 32, 24, true, true},
    {TensorType::Q8_0, "q8_0", 32, 34, true, true},
    {TensorType::Q8_1, "q8_1", 32, 36, true, false},
    {TensorType::Q2_K, "q2_K", 256, 84, true, false},
    {TensorType::Q3_K, "q3_K", 256, 110, true, false},
    {TensorType::Q4_K, "q4_K", 256, 144, true, true},
    {TensorType::Q5_K, "q5_K", 256, 176, true, true},
    {TensorType::Q6_K, "q6_K", 256, 210, true, true},
    {TensorType::Q8_K, "q8_K", 256, 292, true, true},
    {TensorType::IQ2_XXS, "iq2_xxs", 256, 66, false, false},
    {TensorType::IQ2_XS, "iq2_xs", 256, 74, false, false},
    {TensorType::IQ3_XXS, "iq3_xxs", 256, 98, false, false},
    {TensorType::IQ1_S, "iq1_s", 256, 50, false, false},
    {TensorType::IQ4_NL, "iq4_nl", 32, 18, true, true},
    {TensorType::IQ3_S, "iq3_s", 256, 110, false, false},
    {TensorType::IQ2_S, "iq2_s", 256, 82, false, false},
    {TensorType::IQ4_XS, "iq4_xs", 256, 136, true, false},
    {TensorType::I8, "i8", 1, 1, false, false},
    {TensorType::I16, "i16", 1, 2, false, false},
    {TensorType::I32, "i32", 1, 4, false, false},
    {TensorType::I64, "i64", 1, 8, false, false},
    {TensorType::F64, "f64", 1, 8, false, false},
    {TensorType::IQ1_M, "iq1_m", 256, 56, false, false},
    {TensorType::BF16, "bf16", 1, 2, true, true},
    {TensorType::TQ1_0, "tq1_0", 256, 54, false, false},
    {TensorType::TQ2_0, "tq2_0", 256, 66, true, false},
    {TensorType::MXFP4, "mxfp4", 32, 17, true, true},
};

constexpr size_t kMaxRaw = 40;
constexpr std::array<const TypeTraits*, kMaxRaw> make_index() {
  std::array<const TypeTraits*, kMaxRaw> idx{};
  for (const auto& t : kTable) idx[static_cast<uint32_t>(t.type)] = &t;
  return idx;
}
constexpr auto kIndex = make_index();

}  // namespace

const TypeTraits* type_traits(uint32_t raw_type) noexcept {
  return raw_type < kMaxRaw ? kIndex[raw_type] : nullptr;
}

const char* type_name(TensorType t) noexcept {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(t));
  return tr ? tr->name : "unknown";
}

std::optional<TensorType> type_from_name(std::string_view name) noexcept {
  for (const auto& t : kTable) {
    std::string_view n = t.name;
    if (n.size() != name.size()) continue;
    bool eq = true;
    for (size_t i = 0; i < n.size() && eq; ++i)
      eq = std::tolower(static_cast<unsigned char>(n[i])) == std::tolower(static_cast<unsigned char>(name[i]));
    if (eq) return t.type;
  }
  return std::nullopt;
}

std::optional<uint64_t> row_bytes(TensorType t, uint64_t n) noexcept {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(t));
  if (!tr || n % tr->block_elems != 0) return std::nullopt;
  uint64_t blocks = n / tr->block_elems;
  uint64_t out = 0;
  if (__builtin_mul_overflow(blocks, static_cast<uint64_t>(tr->block_bytes), &out)) return std::nullopt;
  return out;
}

}  // namespace moe
