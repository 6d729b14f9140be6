# Chat templates: engine unit tests (no Python needed) and conformance against Python jinja2 with
# HF's settings (tests/tools/jinja_reference.py; cases are skipped when jinja2 is missing).
moe_add_test(test_template SOURCES unit/test_template.cpp LIBS moe_template)
moe_add_test(test_template_reference SOURCES unit/test_template_reference.cpp LIBS moe_template)
find_program(MOE_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT MOE_PYTHON3)
  find_program(MOE_PYTHON3 NAMES python3)
endif()
target_compile_definitions(test_template_reference PRIVATE
  MOE_JINJA_REFERENCE="${CMAKE_CURRENT_SOURCE_DIR}/tools/jinja_reference.py"
  MOE_PYTHON3="${MOE_PYTHON3}")
