# The embedding API (moe/moe.h, moe/moe.hpp) and `moe chat` (runs the tool: MOE_TOOL_PATH).
moe_add_test(test_api SOURCES unit/test_api.cpp LIBS moe_api moe_model moe_engine)
add_dependencies(test_api moe)
# Install to a temporary prefix, build tools/examples against the installed package (CMake and
# pkg-config) and run both examples on a generated model.
add_test(NAME test_examples
         COMMAND bash ${PROJECT_SOURCE_DIR}/tests/integration/test_examples.sh
                 ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/tmp/examples)
set_tests_properties(test_examples PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
