# The CPU engine: ops, gating, sampler, and the forward pass against the numpy reference
# (tests/reference/forward.py). MOE_TEST_PYTHON is a python3 that imports numpy; when none is found
# the reference comparisons skip (exit 77 from their test binary) and the rest still runs.
if(NOT MOE_TEST_PYTHON)
  find_program(_moe_py3 NAMES python3)
  foreach(_cand ${_moe_py3} /usr/bin/python3)
    if(_cand AND NOT MOE_TEST_PYTHON)
      execute_process(COMMAND ${_cand} -c "import numpy" RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
      if(_rc EQUAL 0)
        set(MOE_TEST_PYTHON ${_cand} CACHE FILEPATH "python3 with numpy for the reference forward pass")
      endif()
    endif()
  endforeach()
endif()
if(NOT MOE_TEST_PYTHON)
  message(WARNING "moe: no python3 with numpy found; the engine's reference comparisons will be skipped")
endif()

moe_add_test(test_engine_ops SOURCES unit/test_engine_ops.cpp LIBS moe_engine)
moe_add_test(test_engine SOURCES unit/test_engine.cpp LIBS moe_engine)
moe_add_test(test_engine_reference SOURCES unit/test_engine_reference.cpp LIBS moe_engine)
target_compile_definitions(test_engine_reference PRIVATE
  MOE_TEST_PYTHON="${MOE_TEST_PYTHON}"
  MOE_REFERENCE_DIR="${PROJECT_SOURCE_DIR}/tests/reference")
# The CUDA backend's VRAM split, computed on the host (no GPU needed).
moe_add_test(test_gpu_plan SOURCES unit/test_gpu_plan.cpp LIBS moe_engine)
