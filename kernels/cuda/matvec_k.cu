// kernels/cuda/matvec_k.cu — matvec kernel instances for the 256-element super-block types (Q2_K, Q3_K,
// Q4_K, Q5_K, Q6_K, Q8_K, IQ4_XS, TQ2_0). Thread-safety: stateless.
#include "matvec_kernel.cuh"

namespace moe::cuda::mv {
MOE_MATVEC_INSTANTIATE(TensorType::Q2_K)
MOE_MATVEC_INSTANTIATE(TensorType::Q3_K)
MOE_MATVEC_INSTANTIATE(TensorType::Q4_K)
MOE_MATVEC_INSTANTIATE(TensorType::Q5_K)
MOE_MATVEC_INSTANTIATE(TensorType::Q6_K)
MOE_MATVEC_INSTANTIATE(TensorType::Q8_K)
MOE_MATVEC_INSTANTIATE(TensorType::IQ4_XS)
MOE_MATVEC_INSTANTIATE(TensorType::TQ2_0)
}  // namespace moe::cuda::mv
