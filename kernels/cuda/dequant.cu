// kernels/cuda/dequant.cu — the dequantization kernels (GPU twin of kernels/cpu/quant.cpp's
// dequantize_row). Block types: one thread per 4-element slice of a 32-element chunk, decoded with the
// matvec kernels' slice decoders (matvec_impl.cuh: bit for bit blocks.h's decoders, tested on the host), so
// consecutive threads write consecutive 16-byte pieces (coalesced; the prefill GEMM decodes every expert
// matrix of a batch through this). An earlier version ran one thread per whole block (each writing 32 to 256
// floats alone): 44 us for a 1024 x 2048 Q8_0 matrix on an H100. Plain types (F32/F16/BF16) use one thread
// per element. Thread-safety: stateless.
#include <algorithm>
#include <string>

#include "common.cuh"
#include "dequant.cuh"
#include "moe/kernels/blocks.h"
#include "moe/kernels/half.h"
#include "matvec_impl.cuh"

namespace moe::cuda {

namespace {

using namespace moe::kernels;

// One thread per (row, chunk, slice): elements 4s..4s+3 of 32-element chunk g of row r, stored as one float4.
// Grid-stride over rows * chunks_per_row * 8 slices.
template <TensorType T>
__global__ void dequant_slices_kernel(const uint8_t* __restrict__ src, size_t stride, float* __restrict__ dst,
                                      int64_t chunks_per_row, int64_t rows, bool aligned) {
  using D = mv::Dec<T>;
  const int64_t total = rows * chunks_per_row * mv::kSlices;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int s = static_cast<int>(i % mv::kSlices);
    const int64_t gc = i / mv::kSlices, r = gc / chunks_per_row, g = gc % chunks_per_row;
    const uint8_t* b = src + r * static_cast<int64_t>(stride) +
                       (g / D::kChunks) * static_cast<int64_t>(sizeof(typename D::Block));
    float w[mv::kSlice];
    D::slice(b, static_cast<int>(g % D::kChunks), s, w);
    float* y = dst + (r * chunks_per_row + g) * mv::kChunk + mv::kSlice * s;
    if (aligned) {
      *reinterpret_cast<float4*>(y) = make_float4(w[0], w[1], w[2], w[3]);
    } else {
      for (int k = 0; k < mv::kSlice; ++k) y[k] = w[k];
    }
  }
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

template <TensorType T>
void launch_slices(const void* src, size_t stride, float* dst, int64_t rows, int64_t cols, cudaStream_t s) {
  const int64_t chunks = cols / mv::kChunk;
  if (chunks * rows == 0) return;
  const int64_t n = chunks * rows * mv::kSlices;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8));
  const bool aligned = reinterpret_cast<uintptr_t>(dst) % 16 == 0;  // float4 stores (chunks are 128 bytes)
  dequant_slices_kernel<T><<<grid, kThreads, 0, s>>>(static_cast<const uint8_t*>(src), stride, dst, chunks, rows,
                                                      aligned);
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
    case TensorType::Q4_0: return launch_slices<TensorType::Q4_0>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q4_1: return launch_slices<TensorType::Q4_1>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q5_0: return launch_slices<TensorType::Q5_0>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q5_1: return launch_slices<TensorType::Q5_1>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q8_0: return launch_slices<TensorType::Q8_0>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q8_1: return launch_slices<TensorType::Q8_1>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q2_K: return launch_slices<TensorType::Q2_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q3_K: return launch_slices<TensorType::Q3_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q4_K: return launch_slices<TensorType::Q4_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q5_K: return launch_slices<TensorType::Q5_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q6_K: return launch_slices<TensorType::Q6_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::Q8_K: return launch_slices<TensorType::Q8_K>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::IQ4_NL: return launch_slices<TensorType::IQ4_NL>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::IQ4_XS: return launch_slices<TensorType::IQ4_XS>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::MXFP4: return launch_slices<TensorType::MXFP4>(src, src_row_stride, dst, rows, cols, stream);
    case TensorType::TQ2_0: return launch_slices<TensorType::TQ2_0>(src, src_row_stride, dst, rows, cols, stream);
    default: break;
  }
}

}  // namespace moe::cuda
