# The DRAM expert store (runtime/src/store): correctness against the mmap baseline, faults, prefetch.
moe_add_test(test_store SOURCES unit/test_store.cpp LIBS moe_store Threads::Threads)
# The --ram budget and the page cache, measured in a binary of its own (VmRSS of a fresh process).
moe_add_test(test_store_budget SOURCES unit/test_store_budget.cpp LIBS moe_store Threads::Threads)
