// kernels/cuda/matvec_float.cu — matvec kernel instances for F32, F16 and BF16 weights (read as
// pseudo-blocks of 32 elements). Thread-safety: stateless.
#include "matvec_kernel.cuh"

namespace moe::cuda::mv {
MOE_MATVEC_INSTANTIATE(TensorType::F32)
MOE_MATVEC_INSTANTIATE(TensorType::F16)
MOE_MATVEC_INSTANTIATE(TensorType::BF16)
}  // namespace moe::cuda::mv
