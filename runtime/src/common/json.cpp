// JSON parser and writer (RFC 8259). See moe/json.h for the contract.
#include "moe/json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "moe/error.h"
#include "moe/utf8.h"

namespace moe::json {
namespace {

constexpr int kMaxDepth = 256;

class Parser {
 public:
  Parser(std::string_view t, std::string_view src) : t_(t), src_(src) {}

  Value document() {
    ws();
    Value v = value(0);
    ws();
    if (i_ != t_.size()) error("unexpected text after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void error(std::string_view what) const {
    size_t line = 1, col = 1;
    for (size_t k = 0; k < i_ && k < t_.size(); ++k) {
      if (t_[k] == '\n') { ++line; col = 1; } else { ++col; }
    }
    fail(ErrorCode::Corrupt, "{}:{}:{}: invalid JSON: {}", src_, line, col, what);
  }
  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r')) ++i_;
  }
  bool eat(char c) {
    if (i_ < t_.size() && t_[i_] == c) { ++i_; return true; }
    return false;
  }
  void expect_word(std::string_view w) {
    if (t_.substr(i_, w.size()) != w) error("unknown literal");
    i_ += w.size();
  }
  Value value(int depth) {
    if (depth > kMaxDepth) error("nesting too deep");
    if (i_ >= t_.size()) error("unexpected end of input");
    char c = t_[i_];
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return Value(string());
    if (c == 't') { expect_word("true"); return Value(true); }
    if (c == 'f') { expect_word("false"); return Value(false); }
    if (c == 'n') { expect_word("null"); return Value(nullptr); }
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    error("unexpected character");
  }
  Value number() {
    size_t s = i_;
    eat('-');
    if (eat('0')) {
    } else if (i_ < t_.size() && t_[i_] >= '1' && t_[i_] <= '9') {
      while (i_ < t_.size() && isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
    } else {
      error("bad number");
    }
    if (eat('.')) {
      if (i_ >= t_.size() || !isdigit(static_cast<unsigned char>(t_[i_]))) error("bad number");
      while (i_ < t_.size() && isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
    }
    if (i_ < t_.size() && (t_[i_] == 'e' || t_[i_] == 'E')) {
      ++i_;
      if (!eat('+')) eat('-');
      if (i_ >= t_.size() || !isdigit(static_cast<unsigned char>(t_[i_]))) error("bad number");
      while (i_ < t_.size() && isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
    }
    std::string tok(t_.substr(s, i_ - s));
    return Value(std::strtod(tok.c_str(), nullptr));
  }
  uint32_t hex4() {
    if (i_ + 4 > t_.size()) error("bad \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = t_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else error("bad \\u escape");
    }
    return v;
  }
  std::string string() {
    ++i_;  // opening quote
    std::string out;
    for (;;) {
      if (i_ >= t_.size()) error("unterminated string");
      char c = t_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') { out += c; continue; }
      if (i_ >= t_.size()) error("unterminated string");
      char e = t_[i_++];
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
          if (cp >= 0xD800 && cp < 0xDC00) {
            if (!(eat('\\') && eat('u'))) error("unpaired surrogate");
            uint32_t lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) error("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            error("unpaired surrogate");
          }
          append_utf8(out, cp);
          break;
        }
        default: error("bad escape");
      }
    }
  }
  Value array(int depth) {
    ++i_;
    Value v = Value::array();
    ws();
    if (eat(']')) return v;
    for (;;) {
      ws();
      v.push(value(depth + 1));
      ws();
      if (eat(']')) return v;
      if (!eat(',')) error("expected ',' or ']'");
    }
  }
  Value object(int depth) {
    ++i_;
    Value v = Value::object();
    ws();
    if (eat('}')) return v;
    for (;;) {
      ws();
      if (i_ >= t_.size() || t_[i_] != '"') error("expected a string key");
      std::string k = string();
      ws();
      if (!eat(':')) error("expected ':'");
      ws();
      v.set(std::move(k), value(depth + 1));
      ws();
      if (eat('}')) return v;
      if (!eat(',')) error("expected ',' or '}'");
    }
  }

  std::string_view t_;
  std::string_view src_;
  size_t i_ = 0;
};

}  // namespace

Value& Value::set(std::string key, Value v) {
  for (auto& [k, old] : o_)
    if (k == key) return old = std::move(v);
  o_.emplace_back(std::move(key), std::move(v));
  return o_.back().second;
}

const Value* Value::get(std::string_view key) const noexcept {
  for (const auto& [k, v] : o_)
    if (k == key) return &v;
  return nullptr;
}

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

void Value::dump_to(std::string& out, int indent, int level) const {
  auto nl = [&](int lv) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent * lv), ' ');
  };
  switch (kind_) {
    case Kind::Null: out += "null"; break;
    case Kind::Bool: out += b_ ? "true" : "false"; break;
    case Kind::Number: {
      if (!std::isfinite(n_)) { out += "null"; break; }
      char buf[32];
      if (n_ == std::floor(n_) && std::fabs(n_) < 9.007199254740992e15)
        std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n_));
      else
        std::snprintf(buf, sizeof buf, "%.17g", n_);
      out += buf;
      break;
    }
    case Kind::String: out += quote(s_); break;
    case Kind::Array:
      out += '[';
      for (size_t i = 0; i < a_.size(); ++i) {
        if (i) out += indent < 0 ? "," : ",";
        nl(level + 1);
        a_[i].dump_to(out, indent, level + 1);
      }
      if (!a_.empty()) nl(level);
      out += ']';
      break;
    case Kind::Object:
      out += '{';
      for (size_t i = 0; i < o_.size(); ++i) {
        if (i) out += ",";
        nl(level + 1);
        out += quote(o_[i].first);
        out += indent < 0 ? ":" : ": ";
        o_[i].second.dump_to(out, indent, level + 1);
      }
      if (!o_.empty()) nl(level);
      out += '}';
      break;
  }
}

std::string Value::dump(int indent) const {
  std::string out;
  dump_to(out, indent, 0);
  return out;
}

Value parse(std::string_view text, std::string_view source) { return Parser(text, source).document(); }

Value parse_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(ErrorCode::Io, "{}: cannot open", path);
  std::stringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail(ErrorCode::Io, "{}: read failed", path);
  return parse(ss.str(), path);
}

}  // namespace moe::json
