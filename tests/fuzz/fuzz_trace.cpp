// libFuzzer target: the trace reader on arbitrary bytes (parse or moe::Error, nothing else).
#include <cstdint>
#include <span>

#include "moe/error.h"
#include "moe/trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto t = moe::trace::read_memory(std::span<const uint8_t>(data, size), "fuzz.moetrace");
    volatile uint64_t s = 0;
    for (uint64_t tok = 0; tok < t.n_tokens(); ++tok)
      for (uint32_t l = 0; l < t.n_layer; ++l) s = s + t.experts(tok, l).size();
  } catch (const moe::Error&) {
  }
  return 0;
}
