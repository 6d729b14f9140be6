moe_add_test(test_model SOURCES unit/test_model.cpp LIBS moe_model)
moe_add_test(test_model_gen SOURCES unit/test_model_gen.cpp LIBS moe_model)
