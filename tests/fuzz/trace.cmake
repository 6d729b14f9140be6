moe_add_fuzz(fuzz_trace ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_trace.cpp moe_trace)
