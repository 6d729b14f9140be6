moe_add_test(test_cache
  SOURCES unit/test_cache.cpp unit/test_cache_policy.cpp unit/test_cache_profile.cpp unit/test_cache_stress.cpp
  LIBS moe_cache Threads::Threads)
