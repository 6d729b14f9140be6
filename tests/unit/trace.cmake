moe_add_test(test_trace SOURCES unit/test_trace.cpp LIBS moe_trace)
moe_add_test(test_json SOURCES unit/test_json.cpp LIBS moe_common)
