// moe/kernels/cpu_features.h — x86 CPU feature detection (cpuid + xgetbv) for kernel dispatch.
// Owns: one immutable snapshot of the features, computed on first use. Thread-safe.
#pragma once

namespace moe::kernels {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;          // usable (OS saves the ymm state)
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false;           // usable (OS saves the zmm state)
  // The AVX2 kernel level needs avx2+fma+f16c; the AVX-512 level needs f, bw, vl, vnni as well.
  bool has_avx2_level() const noexcept { return avx2 && fma && f16c; }
  bool has_avx512_level() const noexcept { return has_avx2_level() && avx512f && avx512bw && avx512vl && avx512vnni; }
};

const CpuFeatures& cpu_features() noexcept;

}  // namespace moe::kernels
