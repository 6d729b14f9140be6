// kernels/cuda/matvec_q.cu — matvec kernel instances for the 32-element block types (Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0, Q8_1, IQ4_NL, MXFP4). Split from matvec_k.cu / matvec_float.cu so nvcc builds them in
// parallel. Thread-safety: stateless.
#include "matvec_kernel.cuh"

namespace moe::cuda::mv {
MOE_MATVEC_INSTANTIATE(TensorType::Q4_0)
MOE_MATVEC_INSTANTIATE(TensorType::Q4_1)
MOE_MATVEC_INSTANTIATE(TensorType::Q5_0)
MOE_MATVEC_INSTANTIATE(TensorType::Q5_1)
MOE_MATVEC_INSTANTIATE(TensorType::Q8_0)
MOE_MATVEC_INSTANTIATE(TensorType::Q8_1)
MOE_MATVEC_INSTANTIATE(TensorType::IQ4_NL)
MOE_MATVEC_INSTANTIATE(TensorType::MXFP4)
}  // namespace moe::cuda::mv
