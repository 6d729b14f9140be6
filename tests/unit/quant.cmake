# Block formats and the scalar reference (de)quantizers; the GPU twin when CUDA is built.
moe_add_test(test_quant SOURCES unit/test_quant.cpp LIBS moe_gguf moe_kernels)
if(MOE_HAVE_CUDA AND TARGET moe_kernels_cuda)
  moe_add_test(test_dequant_cuda SOURCES kernels/test_dequant_cuda.cpp LIBS moe_kernels_cuda moe_gguf moe_kernels)
endif()
