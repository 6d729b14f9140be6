// kernels/cuda/embed.cu — embedding lookup kernel (embed.cuh). Thread-safety: stateless.
#include <string>

#include "common.cuh"
#include "embed.cuh"
#include "matvec.cuh"
#include "matvec_impl.cuh"

namespace moe::cuda {

namespace {

constexpr unsigned kBlock = 128;

__device__ void decode_any(TensorType t, const uint8_t* row, int64_t c, float* y) {
  using namespace mv;
  switch (t) {
    case TensorType::F32: decode_chunk<TensorType::F32>(row, c, y); break;
    case TensorType::F16: decode_chunk<TensorType::F16>(row, c, y); break;
    case TensorType::BF16: decode_chunk<TensorType::BF16>(row, c, y); break;
    case TensorType::Q4_0: decode_chunk<TensorType::Q4_0>(row, c, y); break;
    case TensorType::Q4_1: decode_chunk<TensorType::Q4_1>(row, c, y); break;
    case TensorType::Q5_0: decode_chunk<TensorType::Q5_0>(row, c, y); break;
    case TensorType::Q5_1: decode_chunk<TensorType::Q5_1>(row, c, y); break;
    case TensorType::Q8_0: decode_chunk<TensorType::Q8_0>(row, c, y); break;
    case TensorType::Q8_1: decode_chunk<TensorType::Q8_1>(row, c, y); break;
    case TensorType::Q2_K: decode_chunk<TensorType::Q2_K>(row, c, y); break;
    case TensorType::Q3_K: decode_chunk<TensorType::Q3_K>(row, c, y); break;
    case TensorType::Q4_K: decode_chunk<TensorType::Q4_K>(row, c, y); break;
    case TensorType::Q5_K: decode_chunk<TensorType::Q5_K>(row, c, y); break;
    case TensorType::Q6_K: decode_chunk<TensorType::Q6_K>(row, c, y); break;
    case TensorType::Q8_K: decode_chunk<TensorType::Q8_K>(row, c, y); break;
    case TensorType::IQ4_NL: decode_chunk<TensorType::IQ4_NL>(row, c, y); break;
    case TensorType::IQ4_XS: decode_chunk<TensorType::IQ4_XS>(row, c, y); break;
    case TensorType::MXFP4: decode_chunk<TensorType::MXFP4>(row, c, y); break;
    case TensorType::TQ2_0: decode_chunk<TensorType::TQ2_0>(row, c, y); break;
    default:
      for (int l = 0; l < mv::kChunk; ++l) y[l] = __int_as_float(0x7fc00000);
  }
}

__global__ void __launch_bounds__(kBlock) embed_kernel(TensorType t, const uint8_t* table, size_t row_stride,
                                                       int32_t n_vocab, const int32_t* ids, int64_t n_embd,
                                                       float* out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t tok = blockIdx.y;
  if (c >= n_embd / mv::kChunk) return;
  float* y = out + tok * n_embd + c * mv::kChunk;
  const int32_t id = ids[tok];
  if (id < 0 || id >= n_vocab) {
    for (int l = 0; l < mv::kChunk; ++l) y[l] = __int_as_float(0x7fc00000);
    return;
  }
  float w[mv::kChunk];
  decode_any(t, table + static_cast<int64_t>(id) * static_cast<int64_t>(row_stride), c, w);
  for (int l = 0; l < mv::kChunk; ++l) y[l] = w[l];
}

size_t load_alignment(TensorType t) {
  switch (t) {
    case TensorType::F32: case TensorType::Q8_K: return 4;
    case TensorType::MXFP4: return 1;
    default: return 2;
  }
}

}  // namespace

void embed(TensorType t, const void* table, size_t row_stride, int32_t n_vocab, const int32_t* ids, int64_t n_tokens,
           int64_t n_embd, float* out, cudaStream_t stream) {
  const TypeTraits* tr = type_traits(static_cast<uint32_t>(t));
  if (!tr || !matvec_supported(t))
    fail_invalid_argument(std::string("cuda::embed: no GPU decoder for type ") + (tr ? tr->name : "unknown"));
  if (n_embd < 0 || n_embd % mv::kChunk != 0 || n_embd % tr->block_elems != 0 || n_tokens < 0 || n_tokens > 65535 ||
      n_vocab < 0)
    fail_invalid_argument(std::string("cuda::embed: ") + tr->name + ": n_embd " + std::to_string(n_embd) +
                          " must be a multiple of 32 and of the block size; n_tokens " + std::to_string(n_tokens) +
                          " in [0, 65535]; n_vocab " + std::to_string(n_vocab) + " >= 0");
  const uint64_t rb = *row_bytes(t, static_cast<uint64_t>(n_embd));
  const size_t a = load_alignment(t);
  if ((n_vocab > 1 && row_stride < rb) || row_stride % a != 0 || reinterpret_cast<uintptr_t>(table) % a != 0)
    fail_invalid_argument(std::string("cuda::embed: ") + tr->name + ": row stride " + std::to_string(row_stride) +
                          " < row bytes " + std::to_string(rb) + " or not aligned to " + std::to_string(a));
  if (n_tokens == 0 || n_embd == 0) return;
  const dim3 grid(grid_for(n_embd / mv::kChunk, kBlock), static_cast<unsigned>(n_tokens));
  embed_kernel<<<grid, kBlock, 0, stream>>>(t, static_cast<const uint8_t*>(table), row_stride, n_vocab, ids, n_embd,
                                            out);
  MOE_CUDA_CHECK(cudaGetLastError());
}

}  // namespace moe::cuda
