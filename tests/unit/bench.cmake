# `moe bench` grid (tools/bench_grid.cpp, tools/svg.cpp) on a generated model and on a synthetic
# trace, plus the replay rate `moe sim` reports (the test runs the moe tool, so it depends on it).
moe_add_test(test_bench_grid SOURCES unit/test_bench_grid.cpp LIBS moe_sim moe_trace moe_common)
add_dependencies(test_bench_grid moe)
