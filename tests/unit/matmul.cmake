moe_add_test(test_matmul SOURCES unit/test_matmul.cpp LIBS moe_kernels)
