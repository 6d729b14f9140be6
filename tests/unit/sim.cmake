moe_add_test(test_predictor SOURCES unit/test_predictor.cpp LIBS moe_prefetch)
moe_add_test(test_sim SOURCES unit/test_sim.cpp LIBS moe_sim moe_common)
