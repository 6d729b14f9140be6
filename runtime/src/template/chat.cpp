// template/chat.cpp — builds the render context from a Conversation the way HF's apply_chat_template
// passes it (messages as dicts with only the keys that are set, tools, add_generation_prompt,
// bos/eos tokens, extra template kwargs). Pure function of its input; reentrant.
#include "internal.h"

namespace moe::chat {

Value make_context(const Conversation& conv) {
  Value messages = Value::list();
  for (const ChatMessage& m : conv.messages) {
    Value msg = Value::dict();
    msg.set("role", Value(m.role));
    if (!m.content.is_undefined()) msg.set("content", m.content);
    if (m.reasoning_content) msg.set("reasoning_content", Value(*m.reasoning_content));
    if (!m.tool_calls.empty()) {
      Value calls = Value::list();
      for (const ToolCall& tc : m.tool_calls) {
        Value call = Value::dict();
        if (!tc.id.empty()) call.set("id", Value(tc.id));
        call.set("type", Value("function"));
        Value fn = Value::dict();
        fn.set("name", Value(tc.name));
        fn.set("arguments", tc.arguments.is_undefined() ? Value::dict() : tc.arguments);
        call.set("function", fn);
        calls.push_back(call);
      }
      msg.set("tool_calls", calls);
    }
    if (m.tool_call_id) msg.set("tool_call_id", Value(*m.tool_call_id));
    if (m.name) msg.set("name", Value(*m.name));
    messages.push_back(msg);
  }
  Value ctx = Value::dict();
  ctx.set("messages", messages);
  if (!conv.tools.is_undefined()) ctx.set("tools", conv.tools);
  ctx.set("add_generation_prompt", Value(conv.add_generation_prompt));
  ctx.set("bos_token", Value(conv.bos_token));
  ctx.set("eos_token", Value(conv.eos_token));
  if (conv.extra.is_dict())
    for (const auto& [k, v] : conv.extra.entries()) ctx.set(k, v);
  return ctx;
}

}  // namespace moe::chat
