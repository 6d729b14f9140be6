// libFuzzer target: the GGUF reader on arbitrary bytes. Any input must either parse or throw
// moe::Error; parsed files are walked (metadata accessors, tensor views) to touch everything.
#include <cstdint>
#include <span>

#include "moe/error.h"
#include "moe/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = moe::gguf::GgufFile::parse_memory(std::span<const uint8_t>(data, size), "fuzz.gguf");
    for (const auto& [k, v] : f->metadata()) {
      (void)v.as_int();
      (void)v.as_double();
      try {
        (void)f->get_string_array(k);
      } catch (const moe::Error&) {
      }
    }
    volatile uint8_t sink = 0;
    for (const auto& t : f->tensors()) {
      auto d = f->data(t);
      if (!d.empty()) sink = sink + d[0] + d[d.size() - 1];
    }
  } catch (const moe::Error&) {
  }
  return 0;
}
