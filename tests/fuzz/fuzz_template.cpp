// libFuzzer target for the chat-template engine: the input bytes are a template, rendered against a
// fixed conversation (system/user/assistant/tool messages, tool calls, tools, kwargs). Compile and
// render errors (moe::Error) are expected; anything else — a crash, a sanitizer report, another
// exception type, a hang or unbounded memory — is a bug. Tight RenderLimits keep each run small.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "moe/chat_template.h"
#include "moe/error.h"

namespace {

const moe::chat::Value& context() {
  static const moe::chat::Value ctx = moe::chat::Value::parse_json(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Hi <b>there</b> \u00e9\ud83d\ude00"},
      {"role": "assistant", "content": "<think>hmm</think>Hello", "reasoning_content": "hmm",
       "tool_calls": [{"id": "call12345", "type": "function",
                       "function": {"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}}]},
      {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": 3}"},
      {"role": "user", "content": [{"type": "text", "text": "parts"}]}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"},
               "days": {"type": "integer"}}, "required": ["city"]}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": false
  })", "fuzz context");
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  moe::chat::RenderOptions opts;
  opts.now_epoch_s = 0;
  opts.limits.max_output_bytes = 256 * 1024;
  opts.limits.max_alloc_bytes = 16 << 20;
  opts.limits.max_steps = 100000;
  opts.limits.max_call_depth = 32;
  opts.limits.max_parse_depth = 128;
  opts.limits.max_value_depth = 64;
  std::string_view src(reinterpret_cast<const char*>(data), size);
  try {
    auto t = moe::chat::Template::compile(src, "fuzz", opts.limits);
    (void)t.render(context(), opts);
  } catch (const moe::Error&) {
  }
  return 0;
}
