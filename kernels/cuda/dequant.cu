// kernels/cuda/dequant.cu — the dequantization kernels (GPU twin of kernels/cpu/quant.cpp's
// dequantize_row). One thread decodes one block with the shared
// blocks.h decoder (exact roundings via __fmul_rn/__fadd_rn, so the bits match the CPU reference);
// plain types (F32/F16/BF16) use one thread per element. This is the reference twin, not a tuned
// kernel: fused dequant-matmul kernels come later and are checked against it.
// Thread-safety: stateless.
#include <string>

#include "common.cuh"
#include "dequant.cuh"
#include "moe/kernels/blocks.h"
#include "moe/kernels/half.h"

namespace moe::cuda {

namespace {

using namespace moe::kernels;

// One thread per (row, block). QK floats are written per thread; rows are independent.
template <class B, int QK>
__global__ void dequant_blocks_kernel(const uint8_t* __restrict__ src, size_t stride, float* __restrict__ dst,
                                      int64_t blocks_per_row, int64_t rows) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= blocks_per_row * rows) return;
  const int64_t r = i / blocks_per_row, b = i % blocks_per_row;
  const B* blk = reinterpret_cast<const B*>(src + r * stride + b * static_cast<int64_t>(sizeof(B)));
  float* y = dst + r * blocks_per_row * QK + b * QK;
  float tmp[QK];
  dequant_block(*blk, tmp);
  for (int j = 0; j < QK; ++j) y[j] = tmp[j];
}

enum class Plain { F32, F16, BF16 };

template <Plain P>
__global__ void dequant_plain_kernel(const uint8_t* __restrict__ src, size_t stride, float* __restrict__ dst,
                                     int64_t cols, int64_t rows) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= cols * rows) return;
  const int64_t r = i / cols, c = i % cols;
  const uint8_t* row = src + r * stride;
  if constexpr (P == Plain::F32) {
    dst[i] = reinterpret_cast<const float*>(row)[c];
  } else if constexpr (P == Plain::F16) {
    dst[i] = fp16_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
  } else {
    dst[i] = bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
  }
}

constexpr unsigned kThreads = 128;

template <class B, int QK>
void launch_blocks(const void* src, size_t stride, float* dst, int64_t rows, int64_t cols, cudaStream_t s) {
  const int64_t nb = cols / QK;
  if (nb * rows == 0) return;
  dequant_blocks_kernel<B, QK><<<grid_for(nb * rows, kThreads), kThreads, 0, s>>>(
      static_cast<const uint8_t*>(src), stride, dst, nb, rows);
  MOE_CUDA_CHECK(cudaGetLastError());
}

template <Plain P>
void launch_plain(const void* src, size_t stride, float* dst, int64_t rows, int64_t cols, cudaStream_t s) {
  if (cols * rows == 0) return;
  dequant_plain_kernel<P><<<grid_for(cols * rows, kThreads), kThreads, 0, s>>>(static_cast<const uint8_t*>(src),
                                                                               stride, dst, cols, rows);
  MOE_CUDA_CHECK(cudaGetLastError());
}

// Alignment the kernel's loads need for type t (the block struct's, or the element's for plain types).
size_t load_alignment(TensorType t) {
  switch (t) {
    case TensorType::F32: return 4;
    case TensorType::Q8_K: return alignof(BlockQ8_K);
    case TensorType::MXFP4: return alignof(BlockMXFP4);
    default: return 2;
  }
}

}  // namespace

bool dequantize_supported(TensorType t) noexcept {
  switch (t) {
    case TensorType::F32: case TensorType::F16: case TensorType::BF16:
    case TensorType::Q4_0: case TensorType::Q4_1: case TensorType::Q5_0: case TensorType::Q5_1:
    case TensorType::Q8_0: case TensorType::Q8_1:
    case TensorType::Q2_K: case TensorType::Q3_K: case TensorType::Q4_K: case TensorType::Q5_K:
    case TensorType::Q6_K: case TensorType::Q8_K:
    case TensorType::IQ4_NL: case TensorType::IQ4_XS: case TensorType::MXFP4: case TensorType::TQ2_0:
      return true;
    default: return false;
  }
}

void dequantize_rows(TensorType t, const void* src, size_t src_row_stride, float* dst, int64_t rows, int64_t cols,
                     cudaStream_t stream) {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(t));
  if (!tr || !dequantize_supported(t))
    fail_invalid_argument(std::string("cuda::dequantize_rows: no GPU decoder for type ") +
                                                (tr ? tr->name : "unknown"));
  const auto rb = row_bytes(t, cols < 0 ? 1 : static_cast<uint64_t>(cols));
  if (rows < 0 || cols < 0 || !rb)
    fail_invalid_argument(std::string("cuda::dequantize_rows: ") + tr->name + ": cols " +
                                                std::to_string(cols) + " is not a multiple of the block size " +
                                                std::to_string(tr->block_elems) + " (rows " + std::to_string(rows) + ")");
  const size_t align = load_alignment(t);
  if (rows > 1 && src_row_stride < *rb)
    fail_invalid_argument(std::string("cuda::dequantize_rows: row stride ") +
                                                std::to_string(src_row_stride) + " < row bytes " + std::to_string(*rb));
  if (src_row_stride % align != 0 || reinterpret_cast<uintptr_t>(src) % align != 0)
    fail_invalid_argument(std::string("cuda::dequantize_rows: ") + tr->name +
                                                " source or row stride not aligned to " + std::to_string(align));
  switch (t) {
    case TensorType::F32: return launch_plain<Plain::F32>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::F16: return launch_plain<Plain::F16>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::BF16: return launch_plain<Plain::BF16>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q4_0: return launch_blocks<BlockQ4_0, QK4_0>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q4_1: return launch_blocks<BlockQ4_1, QK4_1>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q5_0: return launch_blocks<BlockQ5_0, QK5_0>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q5_1: return launch_blocks<BlockQ5_1, QK5_1>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q8_0: return launch_blocks<BlockQ8_0, QK8_0>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q8_1: return launch_blocks<BlockQ8_1, QK8_1>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q2_K: return launch_blocks<BlockQ2_K, QK_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q3_K: return launch_blocks<BlockQ3_K, QK_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q4_K: return launch_blocks<BlockQ4_K, QK_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q5_K: return launch_blocks<BlockQ5_K, QK_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q6_K: return launch_blocks<BlockQ6_K, QK_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q8_K: return launch_blocks<BlockQ8_K, QK_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::IQ4_NL: return launch_blocks<BlockIQ4_NL, QK4_NL>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::IQ4_XS: return launch_blocks<BlockIQ4_XS, QK_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::MXFP4: return launch_blocks<BlockMXFP4, QK_MXFP4>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::TQ2_0: return launch_blocks<BlockTQ2_0, QK_K>(src, src_row_stride, dst, rows, cols, stream);
    default: break;
  }
}

}  // namespace moe::cuda
