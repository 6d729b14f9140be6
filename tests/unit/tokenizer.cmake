moe_add_test(test_tokenizer SOURCES unit/test_tokenizer.cpp LIBS moe_tokenizer moe_gguf)
