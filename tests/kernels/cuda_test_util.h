// tests/kernels/cuda_test_util.h — shared helpers of the GPU-vs-CPU-twin kernel tests: the skip-without-
// device rule (exit 77), device buffers, and seeded random weights of every dequantizable type with finite
// scales. Header-only; single-threaded test use.
#pragma once
#if !defined(MOE_TEST_NO_CUDA)  // the host-only test (no CUDA toolkit needed) defines it
#include <cuda_runtime.h>
#endif
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "moe/kernels/half.h"
#include "moe/kernels/types.h"

namespace moe::test {

#if !defined(MOE_TEST_NO_CUDA)
// Exits with 77 (ctest SKIP_RETURN_CODE) when no CUDA device is usable. Call first in every GPU test case.
inline void require_device(const char* test) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::fprintf(stderr, "%s: no CUDA device, skipping\n", test);
    std::exit(77);
  }
}

// Device copy of a host vector (or uninitialised storage of n elements).
template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { REQUIRE(cudaMalloc(&p, (n ? n : 1) * sizeof(T)) == cudaSuccess); }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) {
    REQUIRE(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<T> get() const {
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    std::vector<T> h(n);
    REQUIRE(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
  void set(const std::vector<T>& h) {
    REQUIRE(h.size() == n);
    REQUIRE(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
};
#endif

inline std::vector<float> gaussian(size_t n, std::mt19937_64& rng, float sigma = 1.0f) {
  std::normal_distribution<float> nd(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

inline bool same_bits_or_nan(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, 4) == 0;
}

// Byte offsets of the scale fields of one block (fp16 unless noted), so random blocks get finite scales.
struct ScaleFields {
  int f16[2] = {-1, -1};
  int f32 = -1;   // Q8_K's float d
  int e8m0 = -1;  // MXFP4's exponent byte
};
inline ScaleFields scale_fields(TensorType t) {
  switch (t) {
    case TensorType::Q4_0: case TensorType::Q5_0: case TensorType::Q8_0: case TensorType::IQ4_NL:
    case TensorType::IQ4_XS: return {{0, -1}};
    case TensorType::Q4_1: case TensorType::Q5_1: case TensorType::Q8_1: case TensorType::Q4_K:
    case TensorType::Q5_K: return {{0, 2}};
    case TensorType::Q2_K: return {{80, 82}};
    case TensorType::Q3_K: return {{108, -1}};
    case TensorType::Q6_K: return {{208, -1}};
    case TensorType::TQ2_0: return {{64, -1}};
    case TensorType::Q8_K: return {{-1, -1}, 0};
    case TensorType::MXFP4: return {{-1, -1}, -1, 0};
    default: return {};
  }
}

// rows x cols weights of type t, rows back to back: random quant bits, random finite scales of about
// `scale` (so values stay O(1)); plain types from a gaussian.
inline std::vector<uint8_t> random_weights(TensorType t, int64_t rows, int64_t cols, std::mt19937_64& rng,
                                           float scale = 0.05f) {
  const TypeTraits& tr = traits(t);
  const size_t rb = *row_bytes(t, static_cast<uint64_t>(cols));
  std::vector<uint8_t> q(rb * static_cast<size_t>(rows));
  std::uniform_real_distribution<float> ud(0.25f, 1.0f);
  if (tr.block_elems == 1) {
    const auto g = gaussian(static_cast<size_t>(rows * cols), rng);
    for (size_t i = 0; i < g.size(); ++i) {
      if (t == TensorType::F32) std::memcpy(q.data() + 4 * i, &g[i], 4);
      const uint16_t h = t == TensorType::F16 ? kernels::f32_to_fp16(g[i]) : kernels::f32_to_bf16(g[i]);
      if (t != TensorType::F32) std::memcpy(q.data() + 2 * i, &h, 2);
    }
    return q;
  }
  for (auto& b : q) b = static_cast<uint8_t>(rng());
  const ScaleFields f = scale_fields(t);
  for (size_t off = 0; off < q.size(); off += tr.block_bytes) {
    for (int k = 0; k < 2; ++k)
      if (f.f16[k] >= 0) {
        const float s = (rng() & 1 ? 1.0f : -1.0f) * scale * ud(rng) / (k == 1 ? 4.0f : 1.0f);
        const uint16_t h = kernels::f32_to_fp16(s);
        std::memcpy(q.data() + off + f.f16[k], &h, 2);
      }
    if (f.f32 >= 0) {
      const float s = scale * ud(rng) / 32.0f;  // Q8_K: q up to 127
      std::memcpy(q.data() + off + f.f32, &s, 4);
    }
    if (f.e8m0 >= 0) q[off + f.e8m0] = static_cast<uint8_t>(118 + rng() % 6);  // 2^-10 .. 2^-5, halved
  }
  return q;
}

}  // namespace moe::test
