// moe/json.h — a small JSON value with a strict parser and a compact writer, for the formats moe
// reads and writes itself (usage profiles, routing logs, device profiles, bench output).
// Parse errors throw moe::Error(Corrupt) with the source name, line and column. Objects keep key
// order. Nesting depth is bounded (no stack overflow on hostile input). Values are plain data:
// thread-compatible.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::json {

class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : kind_(Kind::Bool), b_(b) {}
  Value(double d) : kind_(Kind::Number), n_(d) {}
  Value(int v) : kind_(Kind::Number), n_(v) {}
  Value(int64_t v) : kind_(Kind::Number), n_(static_cast<double>(v)) {}
  Value(uint64_t v) : kind_(Kind::Number), n_(static_cast<double>(v)) {}
  Value(uint32_t v) : kind_(Kind::Number), n_(v) {}
  Value(const char* s) : kind_(Kind::String), s_(s) {}
  Value(std::string s) : kind_(Kind::String), s_(std::move(s)) {}
  static Value array() { Value v; v.kind_ = Kind::Array; return v; }
  static Value object() { Value v; v.kind_ = Kind::Object; return v; }

  Kind kind() const noexcept { return kind_; }
  bool is_null() const noexcept { return kind_ == Kind::Null; }
  bool is_number() const noexcept { return kind_ == Kind::Number; }
  bool is_string() const noexcept { return kind_ == Kind::String; }
  bool is_array() const noexcept { return kind_ == Kind::Array; }
  bool is_object() const noexcept { return kind_ == Kind::Object; }
  bool as_bool() const noexcept { return b_; }
  double as_number() const noexcept { return n_; }
  const std::string& as_string() const noexcept { return s_; }
  const std::vector<Value>& items() const noexcept { return a_; }
  std::vector<Value>& items() noexcept { return a_; }
  const std::vector<std::pair<std::string, Value>>& members() const noexcept { return o_; }

  // Arrays
  void push(Value v) { a_.push_back(std::move(v)); }
  size_t size() const noexcept { return kind_ == Kind::Array ? a_.size() : o_.size(); }
  const Value& operator[](size_t i) const { return a_[i]; }
  // Objects: set replaces an existing key in place; get returns nullptr when absent.
  Value& set(std::string key, Value v);
  const Value* get(std::string_view key) const noexcept;

  std::string dump(int indent = -1) const;  // indent < 0: compact

 private:
  void dump_to(std::string& out, int indent, int level) const;
  Kind kind_ = Kind::Null;
  bool b_ = false;
  double n_ = 0;
  std::string s_;
  std::vector<Value> a_;
  std::vector<std::pair<std::string, Value>> o_;
};

// Parses exactly one JSON document (trailing whitespace allowed). `source` names the input in errors.
Value parse(std::string_view text, std::string_view source);
// Reads and parses a file; Io error naming the path when it cannot be read.
Value parse_file(const std::string& path);
// Escapes a string as a JSON string literal (with quotes). Invalid UTF-8 is passed through bytewise.
std::string quote(std::string_view s);

}  // namespace moe::json
