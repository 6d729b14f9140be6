# The prefetch planner (runtime/src/planner) and the miss cost model (prefetch/cost_model.h):
# bit-identical outputs with every predictor, recall, prefetch use and cancellation, slow-link stalls,
# and the metrics of `moe bench --json` (the test runs the moe tool, so it depends on it).
moe_add_test(test_planner SOURCES unit/test_planner.cpp LIBS moe_planner moe_store moe_common Threads::Threads)
add_dependencies(test_planner moe)
