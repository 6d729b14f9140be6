// GPU twin test of the dequantizers: moe::cuda::dequantize_rows against the CPU reference
// moe::kernels::dequantize_row on seeded data (random bytes for every dequantizable type, quantized
// gaussians for the quantizable ones, and the shared known-answer vectors). The two share the blocks.h
// decoders with unfused roundings, so the comparison is bit-exact (NaN equal to NaN).
// Exits with 77 (skipped) when no CUDA device is usable.
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "cuda/dequant.cuh"
#include "moe/error.h"
#include "moe/gguf.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/types.h"

using namespace moe;

namespace {

void require_device() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::fprintf(stderr, "test_dequant_cuda: no CUDA device, skipping\n");
    std::exit(77);  // ctest SKIP_RETURN_CODE
  }
}

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { REQUIRE(cudaMalloc(&p, bytes ? bytes : 1) == cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

bool same_bits_or_nan(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, 4) == 0;
}

// Decodes `rows` rows (stride `stride` bytes in host memory `q`) on the GPU and on the CPU and compares.
void compare(TensorType t, const std::vector<uint8_t>& q, size_t stride, int64_t rows, int64_t cols) {
  CAPTURE(std::string(type_name(t)));
  CAPTURE(rows);
  CAPTURE(cols);
  std::vector<float> cpu(static_cast<size_t>(rows * cols)), gpu(cpu.size(), -1.0f);
  for (int64_t r = 0; r < rows; ++r)
    REQUIRE(kernels::dequantize_row(t, q.data() + r * stride, cpu.data() + r * cols, cols));
  DeviceBuffer dq(q.size()), dy(cpu.size() * sizeof(float));
  REQUIRE(cudaMemcpy(dq.p, q.data(), q.size(), cudaMemcpyHostToDevice) == cudaSuccess);
  cuda::dequantize_rows(t, dq.p, stride, static_cast<float*>(dy.p), rows, cols);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  REQUIRE(cudaMemcpy(gpu.data(), dy.p, gpu.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  size_t bad = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (!same_bits_or_nan(cpu[i], gpu[i]) && bad++ < 3) {
      CAPTURE(i);
      CHECK(gpu[i] == cpu[i]);
    }
  }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("GpuMatchesCpuOnRandomBlocks") {
  require_device();
  std::mt19937_64 rng(42);
  for (uint32_t raw = 0; raw < 64; ++raw) {
    const TypeTraits* tr = type_traits(raw);
    if (!tr || !tr->dequantizable) continue;
    REQUIRE(cuda::dequantize_supported(tr->type));
    const int64_t cols = tr->block_elems * 8, rows = 5;
    const size_t rb = *row_bytes(tr->type, cols);
    const size_t stride = rb + 4;  // rows not back to back: the stride is honoured
    std::vector<uint8_t> q(stride * rows);
    for (auto& b : q) b = static_cast<uint8_t>(rng());  // every bit pattern, including inf/NaN scales
    compare(tr->type, q, stride, rows, cols);
  }
}

TEST_CASE("GpuMatchesCpuOnQuantizedGaussians") {
  require_device();
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd;
  for (uint32_t raw = 0; raw < 64; ++raw) {
    const TypeTraits* tr = type_traits(raw);
    if (!tr || !tr->quantizable) continue;
    const int64_t cols = 1024, rows = 33;
    const size_t rb = *row_bytes(tr->type, cols);
    std::vector<float> x(static_cast<size_t>(cols));
    std::vector<uint8_t> q(rb * rows);
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& v : x) v = nd(rng) * (r + 1) * 0.1f;
      REQUIRE(kernels::quantize_row(tr->type, x.data(), q.data() + r * rb, cols) == rb);
    }
    compare(tr->type, q, rb, rows, cols);
  }
}

TEST_CASE("GpuMatchesKnownAnswerVectors") {
  require_device();
  const std::filesystem::path dir = std::filesystem::path(MOE_SHARED_DATA) / "quant-vectors";
  REQUIRE(std::filesystem::is_directory(dir));
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".gguf") continue;
    CAPTURE(entry.path().string());
    auto f = gguf::GgufFile::open(entry.path().string());
    const gguf::TensorInfo* q = f->find_tensor("q");
    const gguf::TensorInfo* e = f->find_tensor("expected");
    REQUIRE((q && e));
    const auto bytes = f->data(*q);
    const std::vector<uint8_t> qb(bytes.begin(), bytes.end());
    const int64_t cols = static_cast<int64_t>(q->ne[0]);
    const int64_t rows = static_cast<int64_t>(q->n_elements()) / cols;
    compare(q->type, qb, q->row_bytes(), rows, cols);
  }
}

TEST_CASE("GpuArgumentChecks") {
  require_device();
  DeviceBuffer d(4096);
  CHECK_THROWS_AS(cuda::dequantize_rows(TensorType::Q4_0, d.p, 18, static_cast<float*>(d.p), 1, 33), Error);
  CHECK_THROWS_AS(cuda::dequantize_rows(TensorType::IQ2_XXS, d.p, 66, static_cast<float*>(d.p), 1, 256), Error);
  CHECK_THROWS_AS(cuda::dequantize_rows(TensorType::Q8_K, d.p, 290, static_cast<float*>(d.p), 2, 256), Error);
  CHECK_NOTHROW(cuda::dequantize_rows(TensorType::Q4_0, d.p, 18, static_cast<float*>(d.p), 0, 32));
}
