# Tokenizer fuzz target (see CMakeLists.txt here for what moe_add_fuzz builds): arbitrary text through
# the shipped vocabularies, which it loads from MOE_SHARED_DATA/tokenizers ($MOE_FUZZ_VOCAB_DIR overrides).
moe_add_fuzz(fuzz_tokenizer ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_tokenizer.cpp moe_tokenizer moe_gguf)
foreach(t fuzz_tokenizer_replay fuzz_tokenizer)
  if(TARGET ${t})
    target_compile_definitions(${t} PRIVATE MOE_SHARED_DATA="${MOE_SHARED_DATA}")
  endif()
endforeach()
