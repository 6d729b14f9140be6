// moe/chat_template.h — chat templates: a Jinja2-subset interpreter (lexer, parser to an AST,
// tree-walking evaluator) that renders the `tokenizer.chat_template` strings shipped with models the
// way Hugging Face transformers' apply_chat_template does: trim_blocks=True, lstrip_blocks=True, the
// loopcontrols extension ({% break %}, {% continue %}), `tojson` as json.dumps(ensure_ascii=False,
// indent=..., separators=..., sort_keys=...), and the globals raise_exception(msg) and
// strftime_now(fmt). Output is byte-for-byte Python jinja2's for the supported subset.
//
// Supported: text with {{ }}, {% %}, {# #} and whitespace control (-, +); if/elif/else, for (tuple
// targets, `if` filter, else, loop.index/index0/revindex/revindex0/first/last/length/previtem/
// nextitem/cycle), set (expression, namespace attribute, block form), macro (defaults, varargs,
// kwargs), call blocks, filter blocks, raw, break/continue, generation (HF's tag, rendered as is);
// Python-like values (none, bool, int, float, str, list, dict in insertion order, namespace,
// callables) with Jinja's Undefined; the usual operators, slicing, string escapes, literals; the
// filters, tests and str/dict/list methods chat templates use (see builtins.cpp for the list).
// Anything else (include/extends/import, an unknown filter, test or method) is a moe::Error
// (Unsupported) naming the construct and the template line. Errors raised by the template itself
// (raise_exception), type errors and undefined-variable errors are moe::Error(InvalidArgument).
//
// Bounds: parse nesting, call depth, value nesting, evaluation steps, loop iterations and the size of
// every string/list produced are limited by RenderLimits, so hostile templates end in moe::Error,
// never a crash or unbounded memory.
//
// Thread-safety: a compiled Template is immutable; render() may run concurrently on one Template.
// Values share their list/dict storage between copies (cheap copies); mutate a Value only while
// building it, before handing it to render().
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::chat {

class Value;
namespace detail {
struct ListData;
struct DictData;
struct NamespaceData;
struct FunctionData;
}  // namespace detail

// A template value, modelled on the Python objects Jinja templates see.
class Value {
 public:
  enum class Type : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };

  Value() = default;  // Undefined
  Value(std::nullptr_t) : type_(Type::None) {}
  Value(bool b) : type_(Type::Bool), b_(b) {}
  Value(int v) : type_(Type::Int), i_(v) {}
  Value(int64_t v) : type_(Type::Int), i_(v) {}
  Value(double v) : type_(Type::Float), f_(v) {}
  Value(const char* s) : Value(std::string(s)) {}
  Value(std::string s);
  Value(std::string_view s) : Value(std::string(s)) {}

  static Value none() { return Value(nullptr); }
  static Value undefined(std::string hint = {});  // hint: what was looked up, for error messages
  static Value list(std::vector<Value> items = {});
  static Value tuple(std::vector<Value> items);  // a list that prints as (a, b) and != a list
  static Value dict();
  static Value from_function(std::shared_ptr<const detail::FunctionData> f);
  static Value from_namespace(detail::NamespaceData* ns);  // non-owning: the render owns it

  Type type() const noexcept { return type_; }
  bool is_undefined() const noexcept { return type_ == Type::Undefined; }
  bool is_none() const noexcept { return type_ == Type::None; }
  bool is_bool() const noexcept { return type_ == Type::Bool; }
  bool is_int() const noexcept { return type_ == Type::Int; }
  bool is_float() const noexcept { return type_ == Type::Float; }
  bool is_number() const noexcept { return type_ == Type::Int || type_ == Type::Float || type_ == Type::Bool; }
  bool is_string() const noexcept { return type_ == Type::String; }
  bool is_list() const noexcept { return type_ == Type::List; }  // lists and tuples
  bool is_tuple() const noexcept;
  bool is_dict() const noexcept { return type_ == Type::Dict; }
  bool is_namespace() const noexcept { return type_ == Type::Namespace; }
  bool is_function() const noexcept { return type_ == Type::Function; }

  bool as_bool() const noexcept { return b_; }
  int64_t as_int() const noexcept { return i_; }
  double as_float() const noexcept { return f_; }
  const std::string& as_string() const noexcept;  // strings; the hint of Undefined; "" otherwise
  double to_double() const noexcept;                            // Bool/Int/Float as a double

  // Lists (PRECONDITION: is_list()).
  const std::vector<Value>& items() const;
  void push_back(Value v);
  // Dicts (PRECONDITION: is_dict()). Keys are Values (usually strings), kept in insertion order;
  // set() replaces an existing equal key in place.
  const std::vector<std::pair<Value, Value>>& entries() const;
  void set(Value key, Value v);
  const Value* find(const Value& key) const;  // nullptr when absent
  const Value* find(std::string_view key) const;
  const Value* find(const char* key) const { return find(std::string_view(key)); }
  // Lists, dicts and strings: number of items / entries / bytes; 0 otherwise.
  size_t size() const;
  // Nesting depth of containers (1 for scalars), bounded by RenderLimits::max_value_depth.
  uint32_t depth() const noexcept;

  detail::NamespaceData* namespace_data() const noexcept { return ns_; }
  const detail::FunctionData* function() const noexcept { return fn_.get(); }

  // Python truthiness (empty containers, 0, "", none and undefined are false).
  bool truthy() const;
  // Python ==, deep for lists and dicts (1 == 1.0 == True).
  friend bool operator==(const Value& a, const Value& b);

  // Python str(): what {{ value }} prints (None, True, 1.5, ['a', 1], {'k': 'v'}).
  std::string str() const;
  // Python repr().
  std::string repr() const;
  // Python json.dumps(value, ensure_ascii, indent, separators, sort_keys); indent < 0 means None.
  // Throws moe::Error for values JSON cannot hold (undefined, functions, namespaces).
  std::string to_json(int indent = -1, bool ensure_ascii = false, bool sort_keys = false,
                      std::string_view item_sep = {}, std::string_view key_sep = {}) const;
  // Parse strict JSON (objects keep key order; integers become Int when they fit in int64).
  // Throws moe::Error(Corrupt) naming `source`, line and column.
  static Value parse_json(std::string_view text, std::string_view source = "json");

 private:
  Type type_ = Type::Undefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::shared_ptr<const std::string> s_;  // shared: copying a Value never copies its text
  std::shared_ptr<detail::ListData> list_;
  std::shared_ptr<detail::DictData> dict_;
  std::shared_ptr<const detail::FunctionData> fn_;
  detail::NamespaceData* ns_ = nullptr;
};

namespace detail {
struct ListData {
  std::vector<Value> items;
  uint32_t depth = 1;
  bool tuple = false;
};
struct DictData {
  std::vector<std::pair<Value, Value>> entries;
  uint32_t depth = 1;
};
}  // namespace detail

// Bounds on one render; exceeding any is moe::Error(InvalidArgument) naming the bound.
struct RenderLimits {
  size_t max_output_bytes = size_t{64} << 20;  // also the largest string or list any expression builds
  uint64_t max_steps = 50'000'000;             // evaluated nodes + loop iterations
  int max_call_depth = 64;                     // nested macro calls
  int max_parse_depth = 256;                   // nesting of expressions and blocks in the source
  uint32_t max_value_depth = 512;              // nesting of lists/dicts
  size_t max_alloc_bytes = size_t{1} << 30;    // total bytes of strings/lists built during one render
  size_t max_stack_bytes = size_t{2} << 20;    // C++ stack the parser/evaluator may use (run on a thread
                                               // with at least this much stack to spare)
};

struct RenderOptions {
  RenderLimits limits;
  // The time strftime_now() formats (seconds since the epoch, shown in local time); unset: now.
  std::optional<int64_t> now_epoch_s;
};

namespace detail {
struct Program;
}

// A parsed template. compile() throws moe::Error (Unsupported for unknown constructs, Corrupt for
// syntax errors) whose message names the construct and line, prefixed by `name`.
class Template {
 public:
  static Template compile(std::string_view source, std::string_view name = "chat template",
                          const RenderLimits& limits = {});
  // Render with `context` (a dict: messages, tools, add_generation_prompt, bos_token, ...).
  // PRECONDITION: context.is_dict(). Throws moe::Error on template errors (see top of file).
  std::string render(const Value& context, const RenderOptions& options = {}) const;
  const std::string& name() const;

 private:
  std::shared_ptr<const detail::Program> prog_;
};

// compile + render in one call.
std::string render(std::string_view template_source, const Value& context,
                   const RenderOptions& options = {});

// ---- Building the context from a conversation ----------------------------------------------------

struct ToolCall {
  std::string id;         // may be empty (then omitted)
  std::string name;       // function name
  Value arguments;        // usually a dict; a string (raw JSON) is passed through as a string
};

struct ChatMessage {
  std::string role;                              // "system", "user", "assistant", "tool", ...
  Value content;                                 // a string, or a list of parts ({type, text}); undefined: omitted
  std::optional<std::string> reasoning_content;  // assistant thinking, where the template renders it
  std::vector<ToolCall> tool_calls;              // assistant tool calls; empty: key omitted
  std::optional<std::string> tool_call_id;       // tool results
  std::optional<std::string> name;               // tool results: the tool's name
};

struct Conversation {
  std::vector<ChatMessage> messages;
  Value tools;                        // a list of tool schemas ({type: function, function: {...}}), or undefined
  bool add_generation_prompt = true;
  std::string bos_token;
  std::string eos_token;
  Value extra;                        // a dict of extra variables (enable_thinking, ...), or undefined
};

// Builds {messages: [{role, content, [reasoning_content], [tool_calls: [{id, type: "function",
// function: {name, arguments}}]], [tool_call_id], [name]}], [tools], add_generation_prompt,
// bos_token, eos_token, ...extra}. Optional keys are present only when set, as HF passes them.
Value make_context(const Conversation& conv);

}  // namespace moe::chat
