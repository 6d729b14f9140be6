// template/internal.h — the chat-template engine's private parts: tokens, the AST, function and
// namespace objects, the render state, and the helpers shared by the lexer, parser, evaluator and
// builtins. Not installed; nothing here is thread-shared except the immutable Program.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/chat_template.h"
#include "moe/error.h"

namespace moe::chat::detail {

// ---- tokens ---------------------------------------------------------------------------------------
enum class Tok : uint8_t {
  Text,        // template data (whitespace control already applied)
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,
  String,      // text holds the unescaped value
  Int,
  Float,
  Op,          // text holds the operator
  Eof,
};

struct Token {
  Tok type;
  int line;
  std::string text;
  int64_t ival = 0;
  double fval = 0;
};

// Tokenizes `src` with HF's settings (trim_blocks, lstrip_blocks, trailing newline dropped).
std::vector<Token> lex(std::string_view src, const std::string& name);

// ---- AST ------------------------------------------------------------------------------------------
enum class EK : uint8_t {
  Const, Name, Attr, Item, Slice, Call, Filter, Test, Neg, Pos, Not, And, Or, Binary, Compare, Cond,
  List, Dict, Input,  // Input: the value piped into a filter chain of a {% filter %} / {% set %} block
};

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
  EK kind;
  int line = 0;
  bool tuple = false;                            // List: a tuple literal
  Value value;                                   // Const
  std::string name;                              // Name / Attr / Filter / Test / Binary op
  ExprP a, b, c;                                 // operands (Slice: a=obj, b=start, c=stop, step in args[0])
  std::vector<ExprP> args;                       // Call / Filter / Test / List / Dict (k,v,k,v...)
  std::vector<std::pair<std::string, ExprP>> kwargs;
  std::vector<std::string> ops;                  // Compare operators, one per args entry
};

enum class SK : uint8_t {
  Text, Output, If, For, Set, SetNs, SetBlock, Macro, CallBlock, FilterBlock, Break, Continue, Body, With,
};

struct Stmt;
using StmtP = std::unique_ptr<Stmt>;
using Body = std::vector<StmtP>;

struct Stmt {
  SK kind;
  int line = 0;
  std::string text;                            // Text; Macro name; SetNs attribute
  ExprP expr;                                  // Output / Set / For iterable / CallBlock call / SetNs value
  ExprP cond;                                  // For filter
  std::vector<std::string> targets;            // Set / For / SetNs (namespace name) / SetBlock
  std::vector<std::pair<ExprP, Body>> branches;  // If (cond, body)...
  Body body, else_body;
  std::vector<std::string> params;             // Macro / CallBlock parameters
  std::vector<ExprP> defaults;                 // aligned to the end of params
  std::vector<ExprP> filters;                  // FilterBlock / SetBlock filter chain (Input at the root)
  std::vector<std::pair<std::string, ExprP>> with_vars;  // With
  bool uses_caller = false;
};

struct Program {
  std::string name;
  Body body;
  RenderLimits limits;
};

std::shared_ptr<Program> parse(std::vector<Token> tokens, const std::string& name, const RenderLimits& limits);

// ---- runtime objects -----------------------------------------------------------------------------
struct NamespaceData {
  std::vector<std::pair<std::string, Value>> attrs;
};

enum class FnKind : uint8_t { Builtin, Macro, Method, Caller, LoopCycle };

struct FunctionData {
  FnKind kind;
  std::string name;          // builtin / method name
  Value self;                // Method receiver; LoopCycle: index0 as Int
  const Stmt* node = nullptr;  // Macro / Caller: the defining statement
  void* frame = nullptr;       // Caller: the frame the call block ran in (alive while it runs)
};

// ---- UTF-8 and Python string helpers (builtins.cpp) -------------------------------------------------
std::vector<uint32_t> decode_utf8(std::string_view s);  // invalid bytes map to 0xDC80+byte
void append_utf8(std::string& out, uint32_t cp);
std::string encode_utf8(const std::vector<uint32_t>& cps, size_t begin, size_t end);
size_t py_len(std::string_view s);  // length in code points
bool py_isspace(uint32_t cp);
std::string py_strip(std::string_view s, const Value& chars, bool left, bool right);
std::string py_float_repr(double d);
std::string py_str_repr(std::string_view s);

// ---- render state shared by the evaluator and the builtins ------------------------------------------
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // Argument `i` positionally or by `name`; `def` when absent.
  const Value& get(size_t i, std::string_view name, const Value& def) const;
  bool has(size_t i, std::string_view name) const;
};

struct Ctx {
  const Program* prog = nullptr;
  RenderOptions opts;
  std::vector<std::unique_ptr<NamespaceData>> namespaces;  // owned by the render; Values point here
  size_t alloc = 0;
  uint64_t steps = 0;
  int line = 0;  // line of the expression being evaluated, for errors

  [[noreturn]] void fail(ErrorCode code, const std::string& msg) const;
  [[noreturn]] void type_error(const std::string& msg) const { fail(ErrorCode::InvalidArgument, msg); }
  // Counts `bytes` of newly built data against max_alloc_bytes and checks one object's size.
  void charge(size_t bytes);
  void check_size(size_t bytes) const;
  void step(uint64_t n = 1);
  Value make_list(std::vector<Value> items);
  Value make_tuple(std::vector<Value> items);
  Value new_namespace();
};

// builtins.cpp
Value apply_filter(Ctx& c, const std::string& name, const Value& in, const Args& args);
bool apply_test(Ctx& c, const std::string& name, const Value& in, const Args& args);
Value call_method(Ctx& c, const FunctionData& f, const Args& args);
Value call_global(Ctx& c, const std::string& name, const Args& args);
bool is_global(std::string_view name);
Value get_attr(Ctx& c, const Value& obj, const std::string& name);  // obj.name (Jinja getattr)
Value get_item(Ctx& c, const Value& obj, const Value& key);         // obj[key] (Jinja getitem)
Value slice(Ctx& c, const Value& obj, const Value& start, const Value& stop, const Value& step);
std::vector<Value> iterate(Ctx& c, const Value& v);  // for-loop items (dict: keys, str: characters)
bool contains(Ctx& c, const Value& container, const Value& item);  // Python `in`
int compare(Ctx& c, const Value& a, const Value& b);  // Python <: -1/0/1, TypeError when unordered
std::string undefined_message(const Value& u);

// ---- errors ----------------------------------------------------------------------------------------
[[noreturn]] void throw_at(ErrorCode code, const std::string& name, int line, const std::string& msg);

// Known names, checked at parse time so unknown ones fail before rendering.
bool is_known_filter(std::string_view name);
bool is_known_test(std::string_view name);

}  // namespace moe::chat::detail
