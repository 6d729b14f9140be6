moe_add_test(test_io SOURCES unit/test_io.cpp LIBS moe_prefetch)
