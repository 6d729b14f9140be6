// libFuzzer target: the GGUF reader on arbitrary bytes. Any input must either parse or throw
// moe::Error; parsed files are walked (metadata accessors, tensor views) to touch everything.
#include <cstdint>
#include <span>

#include "moe/error.h"
#include "moe/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = moe::gguf::GgufFile::parse_memory(std::span<const uint8_t>(data, size), "fuzz.gguf");
    volatile size_t touched = 0;
    for (const auto& [k, v] : f->metadata()) {
      (void)v.as_int();
      (void)v.as_double();
      if (v.type == moe::gguf::ValueType::ARRAY) {  // every element through the typed readers
        const auto& a = v.arr;
        for (size_t i = 0; i < a.size(); ++i) {
          if (a.elem_type() == moe::gguf::ValueType::STRING) touched = touched + a.str(i).size();
          else if (a.elem_type() == moe::gguf::ValueType::ARRAY) touched = touched + a.nested(i).arr.size();
          else touched = touched + a.as_double(i).has_value() + a.as_int(i).has_value();
        }
        if (!a.empty()) touched = touched + a[a.size() - 1].bytes_used();
      }
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
