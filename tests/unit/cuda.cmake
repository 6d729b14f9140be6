# CUDA kernels (kernels/cuda): the host half of the matvec arithmetic runs on the CPU in every build;
# each GPU kernel is compared with its CPU twin when CUDA is built (exit 77 = skipped without a device).
moe_add_test(test_matvec_host_cuda SOURCES kernels/test_matvec_host_cuda.cpp LIBS moe_kernels)
target_include_directories(test_matvec_host_cuda PRIVATE ${PROJECT_SOURCE_DIR}/kernels)
if(MOE_HAVE_CUDA AND TARGET moe_kernels_cuda)
  foreach(family matvec norm rope attention router act embed gemm)
    set(extra_libs "")
    if(family STREQUAL "router")
      set(extra_libs moe_engine)  # the CPU twin is moe::apply_gating (runtime/include/moe/engine.h)
    endif()
    moe_add_test(test_${family}_cuda SOURCES kernels/test_${family}_cuda.cpp
                 LIBS moe_kernels_cuda moe_kernels moe_common ${extra_libs})
  endforeach()
endif()
# The CUDA backend of Session end to end (GPU vs CPU engine, tokens across VRAM budgets).
if(MOE_HAVE_CUDA AND TARGET moe_kernels_cuda)
  moe_add_test(test_engine_cuda SOURCES kernels/test_engine_cuda.cpp LIBS moe_engine moe_kernels_cuda)
  target_compile_definitions(test_engine_cuda PRIVATE MOE_TEST_PYTHON_BUILD="${MOE_TEST_PYTHON}"
                             MOE_REFERENCE_DIR_BUILD="${PROJECT_SOURCE_DIR}/tests/reference")
endif()
