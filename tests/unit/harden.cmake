# Hardening (issue 9): the corruption table (malformed model and vocabulary files give a clear error,
# never a crash, hang or huge allocation; the `moe` binary exits 1 on them) and the churn soak (5,000
# tokens at the smallest legal expert cache with the predictors on: same tokens as the mmap baseline,
# flat resident memory, no leak under LeakSanitizer). tools/sanitize.sh runs both under ASan+UBSan.
moe_add_test(test_corruption SOURCES unit/test_corruption.cpp LIBS moe_engine moe_tokenizer moe_model moe_gguf)
add_dependencies(test_corruption moe)  # runs MOE_TOOL_PATH
if(TARGET moe_store)
  moe_add_test(test_soak SOURCES unit/test_soak.cpp LIBS moe_store moe_prefetch Threads::Threads)
endif()
