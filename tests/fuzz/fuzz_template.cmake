# Chat-template fuzz target (see CMakeLists.txt here for what moe_add_fuzz builds).
moe_add_fuzz(fuzz_template ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_template.cpp moe_template)
