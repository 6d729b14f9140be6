// template/value.cpp — moe::chat::Value: construction, Python truthiness and equality, str()/repr()
// as CPython prints them, json.dumps as Python's json module writes it, and a strict JSON parser.
// Recursive walks are bounded by the value nesting depth (RenderLimits::max_value_depth is enforced
// when containers are built; the parser bounds its own nesting). Plain data: thread-compatible.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "internal.h"

namespace moe::chat {

using detail::DictData;
using detail::ListData;

namespace {
const std::string kEmpty;
constexpr uint32_t kMaxWalkDepth = 4096;  // recursion guard for values built outside a render

[[noreturn]] void type_error(const std::string& msg) { throw Error(ErrorCode::InvalidArgument, msg); }
}  // namespace

Value::Value(std::string s) : type_(Type::String), s_(std::make_shared<const std::string>(std::move(s))) {}

const std::string& Value::as_string() const noexcept { return s_ ? *s_ : kEmpty; }

Value Value::undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.s_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}

Value Value::list(std::vector<Value> items) {
  Value v;
  v.type_ = Type::List;
  v.list_ = std::make_shared<ListData>();
  uint32_t d = 0;
  for (const Value& x : items) d = std::max(d, x.depth());
  v.list_->depth = d + 1;
  v.list_->items = std::move(items);
  return v;
}

Value Value::tuple(std::vector<Value> items) {
  Value v = list(std::move(items));
  v.list_->tuple = true;
  return v;
}

bool Value::is_tuple() const noexcept { return type_ == Type::List && list_->tuple; }

Value Value::dict() {
  Value v;
  v.type_ = Type::Dict;
  v.dict_ = std::make_shared<DictData>();
  return v;
}

Value Value::from_function(std::shared_ptr<const detail::FunctionData> f) {
  Value v;
  v.type_ = Type::Function;
  v.fn_ = std::move(f);
  return v;
}

Value Value::from_namespace(detail::NamespaceData* ns) {
  Value v;
  v.type_ = Type::Namespace;
  v.ns_ = ns;
  return v;
}

double Value::to_double() const noexcept {
  switch (type_) {
    case Type::Bool: return b_ ? 1.0 : 0.0;
    case Type::Int: return static_cast<double>(i_);
    case Type::Float: return f_;
    default: return 0.0;
  }
}

const std::vector<Value>& Value::items() const {
  MOE_ASSERT(is_list(), "Value::items() on a non-list");
  return list_->items;
}

void Value::push_back(Value v) {
  MOE_ASSERT(is_list(), "Value::push_back() on a non-list");
  list_->depth = std::max(list_->depth, v.depth() + 1);
  list_->items.push_back(std::move(v));
}

const std::vector<std::pair<Value, Value>>& Value::entries() const {
  MOE_ASSERT(is_dict(), "Value::entries() on a non-dict");
  return dict_->entries;
}

void Value::set(Value key, Value v) {
  MOE_ASSERT(is_dict(), "Value::set() on a non-dict");
  dict_->depth = std::max(dict_->depth, std::max(key.depth(), v.depth()) + 1);
  for (auto& [k, old] : dict_->entries)
    if (k == key) {
      old = std::move(v);
      return;
    }
  dict_->entries.emplace_back(std::move(key), std::move(v));
}

const Value* Value::find(const Value& key) const {
  if (!is_dict()) return nullptr;
  for (const auto& [k, v] : dict_->entries)
    if (k == key) return &v;
  return nullptr;
}

const Value* Value::find(std::string_view key) const {
  if (!is_dict()) return nullptr;
  for (const auto& [k, v] : dict_->entries)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

size_t Value::size() const {
  switch (type_) {
    case Type::List: return list_->items.size();
    case Type::Dict: return dict_->entries.size();
    case Type::String: return as_string().size();
    default: return 0;
  }
}

uint32_t Value::depth() const noexcept {
  if (type_ == Type::List) return list_->depth;
  if (type_ == Type::Dict) return dict_->depth;
  return 1;
}

bool Value::truthy() const {
  switch (type_) {
    case Type::Undefined:
    case Type::None: return false;
    case Type::Bool: return b_;
    case Type::Int: return i_ != 0;
    case Type::Float: return f_ != 0.0;
    case Type::String: return !as_string().empty();
    case Type::List: return !list_->items.empty();
    case Type::Dict: return !dict_->entries.empty();
    case Type::Namespace:
    case Type::Function: return true;
  }
  return false;
}

namespace {
bool equal(const Value& a, const Value& b, uint32_t depth) {
  if (depth > kMaxWalkDepth) type_error("comparison nested too deeply");
  using T = Value::Type;
  if (a.is_number() && b.is_number()) {
    if (a.type() != T::Float && b.type() != T::Float) {
      int64_t x = a.is_bool() ? a.as_bool() : a.as_int();
      int64_t y = b.is_bool() ? b.as_bool() : b.as_int();
      return x == y;
    }
    return a.to_double() == b.to_double();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case T::Undefined:
    case T::None: return true;
    case T::String: return a.as_string() == b.as_string();
    case T::List: {
      const auto& x = a.items();
      const auto& y = b.items();
      if (&x == &y) return true;
      if (x.size() != y.size() || a.is_tuple() != b.is_tuple()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!equal(x[i], y[i], depth + 1)) return false;
      return true;
    }
    case T::Dict: {
      const auto& x = a.entries();
      const auto& y = b.entries();
      if (&x == &y) return true;
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x) {
        const Value* w = b.find(k);
        if (!w || !equal(v, *w, depth + 1)) return false;
      }
      return true;
    }
    case T::Namespace: return a.namespace_data() == b.namespace_data();
    case T::Function: return a.function() == b.function();
    default: return false;
  }
}
}  // namespace

bool operator==(const Value& a, const Value& b) { return equal(a, b, 0); }

// ---- str / repr ----------------------------------------------------------------------------------

namespace {
void repr_to(std::string& out, const Value& v, uint32_t depth);

void str_to(std::string& out, const Value& v, uint32_t depth) {
  using T = Value::Type;
  switch (v.type()) {
    case T::Undefined: return;
    case T::String: out += v.as_string(); return;
    default: repr_to(out, v, depth);
  }
}

void repr_to(std::string& out, const Value& v, uint32_t depth) {
  if (depth > kMaxWalkDepth) type_error("value nested too deeply to print");
  using T = Value::Type;
  switch (v.type()) {
    case T::Undefined: out += "Undefined"; return;
    case T::None: out += "None"; return;
    case T::Bool: out += v.as_bool() ? "True" : "False"; return;
    case T::Int: out += std::to_string(v.as_int()); return;
    case T::Float: out += detail::py_float_repr(v.as_float()); return;
    case T::String: out += detail::py_str_repr(v.as_string()); return;
    case T::List: {
      const bool tup = v.is_tuple();
      out += tup ? '(' : '[';
      bool first = true;
      for (const Value& x : v.items()) {
        if (!first) out += ", ";
        first = false;
        repr_to(out, x, depth + 1);
      }
      if (tup && v.items().size() == 1) out += ',';
      out += tup ? ')' : ']';
      return;
    }
    case T::Dict: {
      out += '{';
      bool first = true;
      for (const auto& [k, x] : v.entries()) {
        if (!first) out += ", ";
        first = false;
        repr_to(out, k, depth + 1);
        out += ": ";
        repr_to(out, x, depth + 1);
      }
      out += '}';
      return;
    }
    case T::Namespace: {
      out += "<Namespace {";
      bool first = true;
      for (const auto& [k, x] : v.namespace_data()->attrs) {
        if (!first) out += ", ";
        first = false;
        out += detail::py_str_repr(k);
        out += ": ";
        repr_to(out, x, depth + 1);
      }
      out += "}>";
      return;
    }
    case T::Function: {
      const auto* f = v.function();
      if (f->kind == detail::FnKind::Macro) out += "<Macro '" + f->node->text + "'>";
      else out += "<built-in function " + f->name + ">";
      return;
    }
  }
}
}  // namespace

std::string Value::str() const {
  if (type_ == Type::String) return as_string();
  std::string out;
  str_to(out, *this, 0);
  return out;
}

std::string Value::repr() const {
  std::string out;
  repr_to(out, *this, 0);
  return out;
}

// ---- JSON ----------------------------------------------------------------------------------------

namespace {
struct JsonWriter {
  std::string out;
  int indent;
  bool ensure_ascii;
  bool sort_keys;
  std::string item_sep, key_sep;

  void newline(int level) {
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(level), ' ');
  }

  void string(std::string_view s) {
    out += '"';
    static const char* hex = "0123456789abcdef";
    auto u4 = [&](uint32_t c) {
      out += "\\u";
      for (int sh = 12; sh >= 0; sh -= 4) out += hex[(c >> sh) & 0xF];
    };
    if (!ensure_ascii) {
      for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        switch (c) {
          case '"': out += "\\\""; break;
          case '\\': out += "\\\\"; break;
          case '\n': out += "\\n"; break;
          case '\r': out += "\\r"; break;
          case '\t': out += "\\t"; break;
          case '\b': out += "\\b"; break;
          case '\f': out += "\\f"; break;
          default:
            if (c < 0x20) u4(c);
            else out += ch;
        }
      }
    } else {
      for (uint32_t c : detail::decode_utf8(s)) {
        switch (c) {
          case '"': out += "\\\""; break;
          case '\\': out += "\\\\"; break;
          case '\n': out += "\\n"; break;
          case '\r': out += "\\r"; break;
          case '\t': out += "\\t"; break;
          case '\b': out += "\\b"; break;
          case '\f': out += "\\f"; break;
          default:
            if (c < 0x20 || c > 0x7e) {
              if (c >= 0x10000) {
                uint32_t v = c - 0x10000;
                u4(0xD800 | (v >> 10));
                u4(0xDC00 | (v & 0x3FF));
              } else {
                u4(c);
              }
            } else {
              out += static_cast<char>(c);
            }
        }
      }
    }
    out += '"';
  }

  std::string key_text(const Value& k) {
    using T = Value::Type;
    switch (k.type()) {
      case T::String: return k.as_string();
      case T::Bool: return k.as_bool() ? "true" : "false";
      case T::None: return "null";
      case T::Int: return std::to_string(k.as_int());
      case T::Float: return number(k.as_float());
      default: type_error(fmt::format("tojson: keys must be str, int, float, bool or None, not {}", k.repr()));
    }
  }

  static std::string number(double d) {
    if (std::isnan(d)) return "NaN";
    if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
    return detail::py_float_repr(d);
  }

  void write(const Value& v, int level) {
    if (static_cast<uint32_t>(level) > kMaxWalkDepth) type_error("tojson: value nested too deeply");
    using T = Value::Type;
    switch (v.type()) {
      case T::None: out += "null"; return;
      case T::Bool: out += v.as_bool() ? "true" : "false"; return;
      case T::Int: out += std::to_string(v.as_int()); return;
      case T::Float: out += number(v.as_float()); return;
      case T::String: string(v.as_string()); return;
      case T::List: {
        const auto& items = v.items();
        if (items.empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (size_t i = 0; i < items.size(); ++i) {
          if (i) out += item_sep;
          if (indent >= 0) newline(level + 1);
          write(items[i], level + 1);
        }
        if (indent >= 0) newline(level);
        out += ']';
        return;
      }
      case T::Dict: {
        const auto& e = v.entries();
        if (e.empty()) {
          out += "{}";
          return;
        }
        std::vector<std::pair<std::string, const Value*>> kv;
        kv.reserve(e.size());
        for (const auto& [k, x] : e) kv.emplace_back(key_text(k), &x);
        if (sort_keys) std::stable_sort(kv.begin(), kv.end(), [](auto& a, auto& b) { return a.first < b.first; });
        out += '{';
        for (size_t i = 0; i < kv.size(); ++i) {
          if (i) out += item_sep;
          if (indent >= 0) newline(level + 1);
          string(kv[i].first);
          out += key_sep;
          write(*kv[i].second, level + 1);
        }
        if (indent >= 0) newline(level);
        out += '}';
        return;
      }
      case T::Undefined: type_error("tojson: Object of type Undefined is not JSON serializable");
      case T::Namespace: type_error("tojson: Object of type Namespace is not JSON serializable");
      case T::Function: type_error("tojson: Object of type function is not JSON serializable");
    }
  }
};
}  // namespace

std::string Value::to_json(int indent, bool ensure_ascii, bool sort_keys, std::string_view item_sep,
                           std::string_view key_sep) const {
  JsonWriter w{{}, indent, ensure_ascii, sort_keys, std::string(item_sep), std::string(key_sep)};
  if (item_sep.empty() && key_sep.empty()) {
    w.item_sep = indent >= 0 ? "," : ", ";
    w.key_sep = ": ";
  }
  w.write(*this, 0);
  return std::move(w.out);
}

namespace {
struct JsonParser {
  std::string_view s;
  std::string_view source;
  size_t i = 0;
  int depth = 0;

  [[noreturn]] void fail(const std::string& msg) const {
    int line = 1, col = 1;
    for (size_t k = 0; k < i && k < s.size(); ++k) {
      if (s[k] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw Error(ErrorCode::Corrupt, fmt::format("{}:{}:{}: invalid JSON: {}", source, line, col, msg));
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool lit(const char* w) {
    size_t n = std::strlen(w);
    if (s.substr(i, n) == w) {
      i += n;
      return true;
    }
    return false;
  }
  uint32_t hex4() {
    if (i + 4 > s.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s[i++];
      int h = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (h < 0) fail("bad \\u escape");
      v = v * 16 + static_cast<uint32_t>(h);
    }
    return v;
  }
  std::string str() {
    ++i;  // opening quote
    std::string out;
    while (true) {
      if (i >= s.size()) fail("unterminated string");
      char c = s[i++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) fail("unterminated string");
      char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s.substr(i, 2) == "\\u") {
            size_t save = i;
            i += 2;
            uint32_t lo = hex4();
            if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            else i = save;
          }
          detail::append_utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
  }
  Value number() {
    size_t start = i;
    if (s[i] == '-') ++i;
    bool is_float = false;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
                            s[i] == '+' || s[i] == '-')) {
      if (s[i] == '.' || s[i] == 'e' || s[i] == 'E') is_float = true;
      ++i;
    }
    std::string t(s.substr(start, i - start));
    if (t == "-" || t.empty()) fail("bad number");
    if (!is_float) {
      int64_t v = 0;
      auto r = std::from_chars(t.data(), t.data() + t.size(), v);
      if (r.ec == std::errc() && r.ptr == t.data() + t.size()) return Value(v);
    }
    char* end = nullptr;
    double d = std::strtod(t.c_str(), &end);
    if (end != t.c_str() + t.size()) fail("bad number");
    return Value(d);
  }
  Value value() {
    ws();
    if (i >= s.size()) fail("unexpected end");
    if (++depth > 512) fail("nested too deeply");
    Value r;
    char c = s[i];
    if (c == '{') {
      ++i;
      r = Value::dict();
      ws();
      if (i < s.size() && s[i] == '}') {
        ++i;
      } else {
        while (true) {
          ws();
          if (i >= s.size() || s[i] != '"') fail("expected a string key");
          std::string k = str();
          ws();
          if (i >= s.size() || s[i] != ':') fail("expected ':'");
          ++i;
          r.set(Value(std::move(k)), value());
          ws();
          if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
          }
          if (i < s.size() && s[i] == '}') {
            ++i;
            break;
          }
          fail("expected ',' or '}'");
        }
      }
    } else if (c == '[') {
      ++i;
      r = Value::list();
      ws();
      if (i < s.size() && s[i] == ']') {
        ++i;
      } else {
        while (true) {
          r.push_back(value());
          ws();
          if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
          }
          if (i < s.size() && s[i] == ']') {
            ++i;
            break;
          }
          fail("expected ',' or ']'");
        }
      }
    } else if (c == '"') {
      r = Value(str());
    } else if (lit("true")) {
      r = Value(true);
    } else if (lit("false")) {
      r = Value(false);
    } else if (lit("null")) {
      r = Value::none();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      r = number();
    } else {
      fail("unexpected character");
    }
    --depth;
    return r;
  }
};
}  // namespace

Value Value::parse_json(std::string_view text, std::string_view source) {
  JsonParser p{text, source};
  Value v = p.value();
  p.ws();
  if (p.i != text.size()) p.fail("trailing characters");
  return v;
}

}  // namespace moe::chat
