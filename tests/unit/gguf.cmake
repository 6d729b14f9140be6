moe_add_test(test_gguf SOURCES unit/test_gguf.cpp LIBS moe_gguf)
