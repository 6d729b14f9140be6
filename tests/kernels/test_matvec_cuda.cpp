// GPU twin test of the dequantizing matvec (kernels/cuda/matvec.cuh): for every dequantizable type, the
// GPU result equals the host emulation of the same warp arithmetic (mv::emulate_matvec) bit for bit, and
// the CPU reference (kernels::matmul_at Scalar) within 4 * cols * 2^-24 * sum|w x| (summation order only);
// the expert-indexed variant reads weights through a device slot table (null slots and out-of-range ids
// are skipped, outputs untouched); an input x that is not 16-byte aligned (scalar loads) gives the same
// bits. Exits with 77 (skipped) when no CUDA device is usable.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/matvec.cuh"
#include "cuda/matvec_impl.cuh"
#include "cuda_test_util.h"
#include "moe/error.h"
#include "moe/kernels/matmul.h"
#include "moe/kernels/quant.h"

using namespace moe;

TEST_CASE("GpuMatvecMatchesEmulationAndCpu") {
  test::require_device("test_matvec_cuda");
  std::mt19937_64 rng(11);
  for (uint32_t raw = 0; raw < 64; ++raw) {
    const TypeTraits* tr = type_traits(raw);
    if (!tr || !tr->dequantizable) continue;
    const TensorType t = tr->type;
    CAPTURE(std::string(tr->name));
    REQUIRE(cuda::matvec_supported(t));
    for (int n : {1, 2, 8}) {
      CAPTURE(n);
      const int64_t rows = 37, cols = 2048 + 256;
      const size_t rb = *row_bytes(t, cols);
      const auto W = test::random_weights(t, rows, cols, rng);
      const auto x = test::gaussian(static_cast<size_t>(n * cols), rng);
      std::vector<float> ref(static_cast<size_t>(n * rows)), emu(ref.size());
      kernels::matmul_at(kernels::SimdLevel::Scalar, t, W.data(), rows, cols, x.data(), n, ref.data(), nullptr);
      REQUIRE(cuda::mv::emulate_matvec(t, W.data(), rb, rows, cols, x.data(), n, emu.data()));
      test::Dev<uint8_t> dW(W);
      test::Dev<float> dx(x), dy(ref.size());
      cuda::matvec(t, dW.p, rb, rows, cols, dx.p, n, dy.p);
      const auto gpu = dy.get();
      int bad = 0;
      for (size_t i = 0; i < gpu.size(); ++i) {
        if (!test::same_bits_or_nan(gpu[i], emu[i]) && bad++ < 3) CHECK(gpu[i] == emu[i]);
        CHECK(gpu[i] == doctest::Approx(ref[i]).epsilon(1e-3).scale(10.0));
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("GpuExpertMatvecReadsTheSlotTable") {
  test::require_device("test_matvec_cuda");
  std::mt19937_64 rng(12);
  const TensorType t = TensorType::Q4_K;
  const int64_t rows = 64, cols = 512, n_expert = 6;
  const size_t rb = *row_bytes(t, cols);
  const size_t offset = 256;  // the matrix sits after a 256-byte header in each slot
  std::vector<std::vector<uint8_t>> host(n_expert);
  std::vector<test::Dev<uint8_t>*> dev;
  std::vector<const void*> table(n_expert, nullptr);
  for (int e = 0; e < n_expert; ++e) {
    host[e] = test::random_weights(t, rows, cols, rng);
    std::vector<uint8_t> slot(offset + host[e].size(), 0xEE);
    std::copy(host[e].begin(), host[e].end(), slot.begin() + offset);
    dev.push_back(new test::Dev<uint8_t>(slot));
    if (e != 4) table[e] = dev.back()->p;  // expert 4 is not resident: computed elsewhere
  }
  test::Dev<const void*> dtable(table);
  const std::vector<int32_t> ids = {5, 0, 4, 2, 17};  // 4: null slot, 17: out of range
  test::Dev<int32_t> dids(ids);
  const int k = static_cast<int>(ids.size());
  for (bool shared_x : {true, false}) {
    CAPTURE(shared_x);
    const auto x = test::gaussian(static_cast<size_t>((shared_x ? 1 : k) * cols), rng);
    test::Dev<float> dx(x), dy(static_cast<size_t>(k * rows));
    dy.set(std::vector<float>(static_cast<size_t>(k * rows), -7.0f));
    cuda::ExpertMatvec a;
    a.type = t;
    a.slots = dtable.p;
    a.n_slots = static_cast<int32_t>(n_expert);
    a.ids = dids.p;
    a.n_jobs = k;
    a.offset = offset;
    a.row_stride = rb;
    a.rows = rows;
    a.cols = cols;
    a.x = dx.p;
    a.x_job_stride = shared_x ? 0 : cols;
    a.n = 1;
    a.y = dy.p;
    a.y_job_stride = rows;
    cuda::matvec_experts(a);
    const auto gpu = dy.get();
    std::vector<float> emu(rows);
    for (int j = 0; j < k; ++j) {
      CAPTURE(j);
      if (ids[j] == 4 || ids[j] >= n_expert) {
        for (int64_t r = 0; r < rows; ++r) CHECK(gpu[j * rows + r] == -7.0f);
        continue;
      }
      REQUIRE(cuda::mv::emulate_matvec(t, host[ids[j]].data(), rb, rows, cols, x.data() + (shared_x ? 0 : j * cols), 1,
                                       emu.data(), 1));  // experts: one warp per row
      for (int64_t r = 0; r < rows; ++r) CHECK(test::same_bits_or_nan(gpu[j * rows + r], emu[r]));
    }
  }
  for (auto* d : dev) delete d;
}

// Two matrices per expert in one launch (jobs_lo / offset_hi: the decode step's gate and up): every job's
// output is bit for bit that of a launch of its own.
TEST_CASE("GpuExpertMatvecTwoMatricesPerExpert") {
  test::require_device("test_matvec_cuda");
  std::mt19937_64 rng(13);
  const TensorType t = TensorType::Q8_0;
  const int64_t rows = 96, cols = 256, n_expert = 4;
  const size_t rb = *row_bytes(t, cols), mat = rb * rows, off_hi = (mat + 255) / 256 * 256;
  std::vector<std::vector<uint8_t>> slots(n_expert);
  std::vector<test::Dev<uint8_t>*> dev;
  std::vector<const void*> table;
  for (int e = 0; e < n_expert; ++e) {
    const auto lo = test::random_weights(t, rows, cols, rng), hi = test::random_weights(t, rows, cols, rng);
    slots[e].assign(off_hi + mat, 0);
    std::copy(lo.begin(), lo.end(), slots[e].begin());
    std::copy(hi.begin(), hi.end(), slots[e].begin() + off_hi);
    dev.push_back(new test::Dev<uint8_t>(slots[e]));
    table.push_back(dev.back()->p);
  }
  test::Dev<const void*> dtable(table);
  const std::vector<int32_t> ids = {3, 1, 2};
  test::Dev<int32_t> dids(ids);
  const int k = static_cast<int>(ids.size());
  const auto x = test::gaussian(static_cast<size_t>(cols), rng);
  test::Dev<float> dx(x), fused(static_cast<size_t>(2 * k * rows)), sep(static_cast<size_t>(2 * k * rows));
  cuda::ExpertMatvec a;
  a.type = t;
  a.slots = dtable.p;
  a.n_slots = static_cast<int32_t>(n_expert);
  a.ids = dids.p;
  a.row_stride = rb;
  a.rows = rows;
  a.cols = cols;
  a.x = dx.p;
  a.y_job_stride = rows;
  a.n_jobs = k;  // separately: the low matrices, then the high ones
  a.y = sep.p;
  cuda::matvec_experts(a);
  a.offset = off_hi;
  a.y = sep.p + k * rows;
  cuda::matvec_experts(a);
  a.offset = 0;  // fused
  a.offset_hi = off_hi;
  a.jobs_lo = k;
  a.n_jobs = 2 * k;
  a.y = fused.p;
  cuda::matvec_experts(a);
  const auto f = fused.get(), g = sep.get();
  for (size_t i = 0; i < f.size(); ++i) REQUIRE(test::same_bits_or_nan(f[i], g[i]));
  a.jobs_lo = 2 * k + 1;  // beyond n_jobs
  CHECK_THROWS_AS(cuda::matvec_experts(a), Error);
  for (auto* d : dev) delete d;
}

TEST_CASE("GpuMatvecOneWarpPerRowAboveTheSplitThreshold") {
  // rows > kSplitRows: one warp per row (the dense kernel's other instance), still the emulation's bits.
  test::require_device("test_matvec_cuda");
  std::mt19937_64 rng(14);
  for (TensorType t : {TensorType::Q8_0, TensorType::Q6_K}) {
    CAPTURE(std::string(type_name(t)));
    for (int n : {1, 4}) {
      CAPTURE(n);
      const int64_t rows = cuda::mv::kSplitRows + 3, cols = 256;
      const size_t rb = *row_bytes(t, cols);
      const auto W = test::random_weights(t, rows, cols, rng);
      const auto x = test::gaussian(static_cast<size_t>(n * cols), rng);
      std::vector<float> emu(static_cast<size_t>(n * rows));
      REQUIRE(cuda::mv::emulate_matvec(t, W.data(), rb, rows, cols, x.data(), n, emu.data()));
      test::Dev<uint8_t> dW(W);
      test::Dev<float> dx(x), dy(emu.size());
      cuda::matvec(t, dW.p, rb, rows, cols, dx.p, n, dy.p);
      const auto gpu = dy.get();
      int bad = 0;
      for (size_t i = 0; i < gpu.size(); ++i)
        if (!test::same_bits_or_nan(gpu[i], emu[i]) && bad++ < 3) CHECK(gpu[i] == emu[i]);
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("GpuMatvecUnalignedInputUsesScalarLoads") {
  // x 4 bytes past a 16-byte boundary: the kernel reads it as floats instead of float4, same bits.
  test::require_device("test_matvec_cuda");
  std::mt19937_64 rng(13);
  for (TensorType t : {TensorType::Q8_0, TensorType::Q4_K, TensorType::F16}) {
    CAPTURE(std::string(type_name(t)));
    for (int n : {1, 3}) {
      CAPTURE(n);
      const int64_t rows = 19, cols = 512 + 256;
      const size_t rb = *row_bytes(t, cols);
      const auto W = test::random_weights(t, rows, cols, rng);
      auto x = test::gaussian(static_cast<size_t>(n * cols + 1), rng);
      std::vector<float> emu(static_cast<size_t>(n * rows));
      REQUIRE(cuda::mv::emulate_matvec(t, W.data(), rb, rows, cols, x.data() + 1, n, emu.data()));
      test::Dev<uint8_t> dW(W);
      test::Dev<float> dx(x), dy(emu.size());
      cuda::matvec(t, dW.p, rb, rows, cols, dx.p + 1, n, dy.p);
      const auto gpu = dy.get();
      for (size_t i = 0; i < gpu.size(); ++i) CHECK(test::same_bits_or_nan(gpu[i], emu[i]));
    }
  }
}

TEST_CASE("GpuMatvecArgumentChecks") {
  test::require_device("test_matvec_cuda");
  test::Dev<float> d(4096);
  CHECK_THROWS_AS(cuda::matvec(TensorType::Q4_0, d.p, 18, 2, 48, d.p, 1, d.p), Error);   // cols not 32k
  CHECK_THROWS_AS(cuda::matvec(TensorType::IQ2_XXS, d.p, 66, 1, 256, d.p, 1, d.p), Error);  // no decoder
  CHECK_THROWS_AS(cuda::matvec(TensorType::Q4_0, d.p, 18, 1, 32, d.p, 9, d.p), Error);  // n > 8
  CHECK_THROWS_AS(cuda::matvec(TensorType::Q4_0, d.p, 17, 2, 32, d.p, 1, d.p), Error);  // stride < row bytes
  CHECK_NOTHROW(cuda::matvec(TensorType::Q4_0, d.p, 18, 0, 32, d.p, 1, d.p));
}
