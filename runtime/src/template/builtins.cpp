// template/builtins.cpp — what templates call: Jinja filters and tests, the globals HF provides
// (range, namespace, dict, raise_exception, strftime_now), Python str/dict/list methods allowed by
// jinja2's ImmutableSandboxedEnvironment, attribute/item lookup with Jinja's rules, and the Python
// string helpers (code-point length, slicing, strip, split, repr, float repr).
// Filters: abs attr batch capitalize center count d default dictsort e escape first float
//   forceescape format indent int items join last length list lower map max min pprint reject
//   rejectattr replace reverse round safe select selectattr sort string sum title tojson trim unique
//   upper wordcount.
// Tests: boolean callable defined divisibleby eq equalto escaped even false filter float ge gt
//   greaterthan in integer iterable le lessthan lower lt mapping ne none number odd sameas sequence
//   string test true undefined upper, and == != < <= > >=.
// Known divergences: upper/lower/title/capitalize change ASCII letters only; map/select/... return
// lists where Jinja returns generators (identical once joined, listed or iterated).
// Stateless apart from the Ctx passed in; reentrant.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>

#include "internal.h"
#include "moe/utf8.h"

namespace moe::chat::detail {

// ---- UTF-8 ----------------------------------------------------------------------------------------

std::vector<uint32_t> decode_utf8(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    uint32_t cp;
    int n;
    if (b < 0x80) { cp = b; n = 0; }
    else if ((b & 0xE0) == 0xC0) { cp = b & 0x1F; n = 1; }
    else if ((b & 0xF0) == 0xE0) { cp = b & 0x0F; n = 2; }
    else if ((b & 0xF8) == 0xF0) { cp = b & 0x07; n = 3; }
    else { out.push_back(0xDC80 + (b & 0x7F)); ++i; continue; }
    bool ok = true;
    for (int k = 1; k <= n; ++k) {
      if (i + static_cast<size_t>(k) >= s.size()) { ok = false; break; }
      auto c = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((c & 0xC0) != 0x80) { ok = false; break; }
      cp = (cp << 6) | (c & 0x3F);
    }
    if (!ok) {
      out.push_back(0xDC80 + (b & 0x7F));
      ++i;
      continue;
    }
    out.push_back(cp);
    i += static_cast<size_t>(n) + 1;
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp >= 0xDC80 && cp <= 0xDCFF) {  // an undecodable byte, restored as is
    out += static_cast<char>(0x80 + (cp - 0xDC80));
  } else {
    moe::append_utf8(out, cp);
  }
}

std::string encode_utf8(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end && i < cps.size(); ++i) append_utf8(out, cps[i]);
  return out;
}

static bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

size_t py_len(std::string_view s) {
  if (is_ascii(s)) return s.size();
  return decode_utf8(s).size();
}

bool py_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string py_strip(std::string_view s, const Value& chars, bool left, bool right) {
  std::vector<uint32_t> cps = decode_utf8(s);
  std::vector<uint32_t> set;
  bool ws = chars.is_undefined() || chars.is_none();
  if (!ws) set = decode_utf8(chars.as_string());
  auto strip_it = [&](uint32_t c) {
    return ws ? py_isspace(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return encode_utf8(cps, b, e);
}

std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  // sci: [-]D[.DDD]e[+-]XX
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp = std::atoi(sci.c_str() + epos + 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    int point = exp + 1;  // digits before the decimal point
    if (point <= 0) {
      out += "0.";
      out.append(static_cast<size_t>(-point), '0');
      out += digits;
    } else if (static_cast<size_t>(point) >= digits.size()) {
      out += digits;
      out.append(static_cast<size_t>(point) - digits.size(), '0');
      out += ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(point));
      out += '.';
      out += digits.substr(static_cast<size_t>(point));
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char eb[16];
  std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return out + eb;
}

static bool py_printable(uint32_t c) {
  if (c < 0x20 || c == 0x7F) return false;
  if (c >= 0x80 && c <= 0xA0) return false;
  if (c == 0xAD) return false;
  if (c >= 0xD800 && c <= 0xDFFF) return false;
  if ((c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x206F)) return false;
  if (c == 0x1680 || c == 0x180E || c == 0x3000 || c == 0xFEFF || (c >= 0xE000 && c <= 0xF8FF)) return false;
  if (c >= 0xFFF9 && c <= 0xFFFB) return false;
  return true;
}

std::string py_str_repr(std::string_view s) {
  bool has_sq = s.find('\'') != std::string_view::npos;
  bool has_dq = s.find('"') != std::string_view::npos;
  char q = (has_sq && !has_dq) ? '"' : '\'';
  std::string out(1, q);
  for (uint32_t c : decode_utf8(s)) {
    if (c == static_cast<uint32_t>(q) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!py_printable(c)) {
      char buf[16];
      if (c < 0x100) std::snprintf(buf, sizeof buf, "\\x%02x", c);
      else if (c < 0x10000) std::snprintf(buf, sizeof buf, "\\u%04x", c);
      else std::snprintf(buf, sizeof buf, "\\U%08x", c);
      out += buf;
    } else {
      append_utf8(out, c);
    }
  }
  out += q;
  return out;
}

// ---- Args / Ctx -----------------------------------------------------------------------------------

const Value& Args::get(size_t i, std::string_view name, const Value& def) const {
  if (i < pos.size()) return pos[i];
  for (const auto& [k, v] : kw)
    if (k == name) return v;
  return def;
}

bool Args::has(size_t i, std::string_view name) const {
  if (i < pos.size()) return true;
  for (const auto& kv : kw)
    if (kv.first == name) return true;
  return false;
}

void Ctx::fail(ErrorCode code, const std::string& msg) const { throw_at(code, prog->name, line, msg); }

void Ctx::check_size(size_t bytes) const {
  if (bytes > opts.limits.max_output_bytes)
    fail(ErrorCode::InvalidArgument, fmt::format("a value of {} bytes exceeds the limit of {} bytes", bytes,
                                                 opts.limits.max_output_bytes));
}

void Ctx::charge(size_t bytes) {
  check_size(bytes);
  alloc += bytes;
  if (alloc > opts.limits.max_alloc_bytes)
    fail(ErrorCode::InvalidArgument,
         fmt::format("the template built more than {} bytes of data", opts.limits.max_alloc_bytes));
}

void Ctx::step(uint64_t n) {
  steps += n;
  if (steps > opts.limits.max_steps)
    fail(ErrorCode::InvalidArgument, fmt::format("the template ran more than {} steps", opts.limits.max_steps));
}

Value Ctx::make_list(std::vector<Value> items) {
  charge(items.size() * sizeof(Value));
  Value v = Value::list(std::move(items));
  if (v.depth() > opts.limits.max_value_depth)
    type_error(fmt::format("lists and dicts nested deeper than {}", opts.limits.max_value_depth));
  return v;
}

Value Ctx::make_tuple(std::vector<Value> items) {
  charge(items.size() * sizeof(Value));
  Value v = Value::tuple(std::move(items));
  if (v.depth() > opts.limits.max_value_depth)
    type_error(fmt::format("lists and dicts nested deeper than {}", opts.limits.max_value_depth));
  return v;
}

Value Ctx::new_namespace() {
  charge(sizeof(NamespaceData));
  namespaces.push_back(std::make_unique<NamespaceData>());
  return Value::from_namespace(namespaces.back().get());
}

namespace {

const char* type_name(const Value& v) {
  switch (v.type()) {
    case Value::Type::Undefined: return "Undefined";
    case Value::Type::None: return "NoneType";
    case Value::Type::Bool: return "bool";
    case Value::Type::Int: return "int";
    case Value::Type::Float: return "float";
    case Value::Type::String: return "str";
    case Value::Type::List: return "list";
    case Value::Type::Dict: return "dict";
    case Value::Type::Namespace: return "Namespace";
    case Value::Type::Function: return "function";
  }
  return "object";
}

Value str_value(Ctx& c, std::string s) {
  c.charge(s.size());
  return Value(std::move(s));
}

[[noreturn]] void undefined_error(const Ctx& c, const Value& u) { c.type_error(undefined_message(u)); }

int64_t need_int(const Ctx& c, const Value& v, const char* what) {
  if (v.is_int()) return v.as_int();
  if (v.is_bool()) return v.as_bool() ? 1 : 0;
  c.type_error(fmt::format("{} must be an integer, not {}", what, type_name(v)));
}

const std::string& need_str(const Ctx& c, const Value& v, const char* what) {
  if (!v.is_string()) c.type_error(fmt::format("{} must be a string, not {}", what, type_name(v)));
  return v.as_string();
}

std::string ascii_upper(std::string s) {
  for (char& ch : s)
    if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 32);
  return s;
}
std::string ascii_lower(std::string s) {
  for (char& ch : s)
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch + 32);
  return s;
}
bool is_alpha(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }

// Python str.split / rsplit.
std::vector<std::string> py_split(const Ctx& c, const std::string& s, const Value& sep, int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (sep.is_undefined() || sep.is_none()) {
    std::vector<uint32_t> cps = decode_utf8(s);
    std::vector<std::pair<size_t, size_t>> words;
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && py_isspace(cps[i])) ++i;
      if (i >= cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !py_isspace(cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    if (maxsplit < 0 || static_cast<size_t>(maxsplit) >= words.size()) {
      for (auto [a, b] : words) parts.push_back(encode_utf8(cps, a, b));
      return parts;
    }
    // Limited split: the remainder keeps its inner whitespace.
    size_t m = static_cast<size_t>(maxsplit);
    if (!from_right) {
      for (size_t k = 0; k < m; ++k) parts.push_back(encode_utf8(cps, words[k].first, words[k].second));
      size_t rest = words[m].first;
      size_t end = cps.size();
      while (end > rest && py_isspace(cps[end - 1])) --end;
      parts.push_back(encode_utf8(cps, rest, end));
    } else {
      size_t n = words.size();
      size_t start = 0;
      while (start < cps.size() && py_isspace(cps[start])) ++start;
      parts.push_back(encode_utf8(cps, start, words[n - m - 1].second));
      for (size_t k = n - m; k < n; ++k) parts.push_back(encode_utf8(cps, words[k].first, words[k].second));
    }
    return parts;
  }
  const std::string& d = need_str(c, sep, "split separator");
  if (d.empty()) c.type_error("empty separator");
  if (!from_right) {
    size_t start = 0;
    int64_t n = 0;
    while (maxsplit < 0 || n < maxsplit) {
      size_t p = s.find(d, start);
      if (p == std::string::npos) break;
      parts.push_back(s.substr(start, p - start));
      start = p + d.size();
      ++n;
    }
    parts.push_back(s.substr(start));
  } else {
    size_t end = s.size();
    int64_t n = 0;
    std::vector<std::string> rev;
    while (maxsplit < 0 || n < maxsplit) {
      if (end < d.size()) break;
      size_t p = s.rfind(d, end - d.size());
      if (p == std::string::npos) break;
      rev.push_back(s.substr(p + d.size(), end - p - d.size()));
      end = p;
      ++n;
    }
    rev.push_back(s.substr(0, end));
    parts.assign(rev.rbegin(), rev.rend());
  }
  return parts;
}

std::string py_replace(Ctx& c, const std::string& s, const std::string& old, const std::string& rep, int64_t count) {
  std::string out;
  if (old.empty()) {
    std::vector<uint32_t> cps = decode_utf8(s);
    int64_t n = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || n < count) {
        out += rep;
        ++n;
      }
      if (i < cps.size()) append_utf8(out, cps[i]);
      c.check_size(out.size());
    }
    return out;
  }
  size_t start = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t p = s.find(old, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += rep;
    c.check_size(out.size());
    start = p + old.size();
    ++n;
  }
  out.append(s, start);
  return out;
}

std::vector<std::string> py_splitlines(const std::string& s) {
  std::vector<std::string> lines;
  std::vector<uint32_t> cps = decode_utf8(s);
  size_t start = 0, i = 0;
  while (i < cps.size()) {
    uint32_t ch = cps[i];
    bool br = ch == '\n' || ch == '\r' || ch == 0x0B || ch == 0x0C || ch == 0x1C || ch == 0x1D || ch == 0x1E ||
              ch == 0x85 || ch == 0x2028 || ch == 0x2029;
    if (!br) {
      ++i;
      continue;
    }
    lines.push_back(encode_utf8(cps, start, i));
    if (ch == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
    ++i;
    start = i;
  }
  if (start < cps.size()) lines.push_back(encode_utf8(cps, start, cps.size()));
  return lines;
}

// Python str.startswith/endswith with a str or a tuple (list) of str.
bool affix(const Ctx& c, const std::string& s, const Value& arg, bool start) {
  auto one = [&](const Value& p) {
    const std::string& x = need_str(c, p, start ? "startswith argument" : "endswith argument");
    if (x.size() > s.size()) return false;
    return start ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (arg.is_list()) {
    for (const Value& p : arg.items())
      if (one(p)) return true;
    return false;
  }
  return one(arg);
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

Value int_of(const Value& v, const Value& def, int base) {
  if (v.is_int()) return v;
  if (v.is_bool()) return Value(int64_t{v.as_bool() ? 1 : 0});
  if (v.is_float()) {
    double d = v.as_float();
    if (std::isnan(d) || std::isinf(d) || std::fabs(d) >= 9.2e18) return def;
    return Value(static_cast<int64_t>(d));
  }
  if (v.is_string()) {
    std::string s = py_strip(v.as_string(), Value(), true, true);
    std::string t;
    bool ok = !s.empty();
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '_' && i > 0 && i + 1 < s.size() && s[i - 1] != '_' && s[i - 1] != '+' && s[i - 1] != '-') continue;
      t += s[i];
    }
    if (ok) {
      const char* b = t.data();
      const char* e = t.data() + t.size();
      bool neg = false;
      if (b < e && (*b == '+' || *b == '-')) {
        neg = *b == '-';
        ++b;
      }
      uint64_t u = 0;
      auto r = std::from_chars(b, e, u, base);
      if (r.ec == std::errc() && r.ptr == e && b != e && u <= static_cast<uint64_t>(INT64_MAX))
        return Value(neg ? -static_cast<int64_t>(u) : static_cast<int64_t>(u));
    }
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size() && !std::isnan(d) && !std::isinf(d) && std::fabs(d) < 9.2e18)
      return Value(static_cast<int64_t>(d));
  }
  return def;
}

Value float_of(const Value& v, const Value& def) {
  if (v.is_number()) return Value(v.to_double());
  if (v.is_string()) {
    std::string s = py_strip(v.as_string(), Value(), true, true);
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size()) return Value(d);
  }
  return def;
}

// Jinja's attribute getter for map/selectattr/sort(attribute=...): dotted path, digits as indexes.
Value attr_path(Ctx& c, const Value& v, const Value& attribute) {
  if (attribute.is_int()) return get_item(c, v, attribute);
  std::string path = attribute.str();
  Value cur = v;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    int64_t idx = 0;
    auto r = std::from_chars(part.data(), part.data() + part.size(), idx);
    if (!part.empty() && r.ec == std::errc() && r.ptr == part.data() + part.size())
      cur = get_item(c, cur, Value(idx));
    else
      cur = get_item(c, cur, Value(part));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value(ascii_lower(v.as_string()));
  return v;
}

std::vector<Value> sorted(Ctx& c, std::vector<Value> items, bool reverse, bool case_sensitive, const Value& attribute) {
  std::vector<std::pair<Value, Value>> keyed;
  keyed.reserve(items.size());
  for (Value& v : items) {
    Value k = attribute.is_undefined() || attribute.is_none() ? v : attr_path(c, v, attribute);
    keyed.emplace_back(sort_key(k, case_sensitive), std::move(v));
  }
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    return reverse ? compare(c, b.first, a.first) < 0 : compare(c, a.first, b.first) < 0;
  });
  std::vector<Value> out;
  out.reserve(keyed.size());
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return out;
}

std::string join_str(Ctx& c, const std::vector<Value>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i].str();
    c.check_size(out.size());
  }
  return out;
}

// Python printf-style "%s" % args (the format filter): %s %r %d %i %f %%.
std::string percent_format(Ctx& c, const std::string& fmt_s, const std::vector<Value>& args) {
  std::string out;
  size_t ai = 0;
  for (size_t i = 0; i < fmt_s.size(); ++i) {
    if (fmt_s[i] != '%') {
      out += fmt_s[i];
      continue;
    }
    if (i + 1 >= fmt_s.size()) c.type_error("format: incomplete format");
    char k = fmt_s[++i];
    if (k == '%') {
      out += '%';
      continue;
    }
    if (ai >= args.size()) c.type_error("format: not enough arguments for format string");
    const Value& a = args[ai++];
    if (k == 's') out += a.str();
    else if (k == 'r') out += a.repr();
    else if (k == 'd' || k == 'i') out += std::to_string(need_int(c, int_of(a, a, 10), "%d argument"));
    else if (k == 'f') out += fmt::format("{:.6f}", a.to_double());
    else c.fail(ErrorCode::Unsupported, fmt::format("unsupported format conversion '%{}'", k));
    c.check_size(out.size());
  }
  if (ai < args.size()) c.type_error("format: not all arguments converted during string formatting");
  return out;
}

// Python str.format with {} / {0} / {name} fields (no format specs).
std::string brace_format(Ctx& c, const std::string& f, const Args& args) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    char ch = f[i];
    if (ch == '{' && i + 1 < f.size() && f[i + 1] == '{') { out += '{'; ++i; continue; }
    if (ch == '}' && i + 1 < f.size() && f[i + 1] == '}') { out += '}'; ++i; continue; }
    if (ch != '{') { out += ch; continue; }
    size_t close = f.find('}', i);
    if (close == std::string::npos) c.type_error("str.format: single '{' encountered in format string");
    std::string field = f.substr(i + 1, close - i - 1);
    if (field.find_first_of(":!") != std::string::npos)
      c.fail(ErrorCode::Unsupported, "str.format with a format spec or conversion");
    const Value* v = nullptr;
    if (field.empty()) {
      if (auto_idx >= args.pos.size()) c.type_error("str.format: index out of range");
      v = &args.pos[auto_idx++];
    } else if (field[0] >= '0' && field[0] <= '9') {
      size_t idx = static_cast<size_t>(std::atoi(field.c_str()));
      if (idx >= args.pos.size()) c.type_error("str.format: index out of range");
      v = &args.pos[idx];
    } else {
      for (const auto& [k, x] : args.kw)
        if (k == field) v = &x;
      if (!v) c.type_error(fmt::format("str.format: missing key '{}'", field));
    }
    out += v->str();
    c.check_size(out.size());
    i = close;
  }
  return out;
}

std::string py_center(Ctx& c, const std::string& s, int64_t width) {
  int64_t len = static_cast<int64_t>(py_len(s));
  if (width <= len) return s;
  c.check_size(static_cast<size_t>(width) * 1 + s.size());
  int64_t marg = width - len;
  int64_t left = marg / 2 + (marg & width & 1);
  return std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(marg - left), ' ');
}

std::vector<Value> as_list(Ctx& c, const Value& v) { return iterate(c, v); }

}  // namespace

std::string undefined_message(const Value& u) {
  if (!u.as_string().empty()) return u.as_string();
  return "value is undefined";
}

// ---- lookups --------------------------------------------------------------------------------------

static bool is_str_method(std::string_view n) {
  static const char* const names[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith",
                                      "upper", "lower", "title", "capitalize", "replace", "find", "rfind", "index",
                                      "rindex", "count", "join", "splitlines", "isdigit", "isalpha", "isalnum",
                                      "isspace", "isupper", "islower", "isnumeric", "isdecimal", "format", "zfill",
                                      "center", "ljust", "rjust", "partition", "rpartition", "swapcase", "casefold"};
  for (const char* x : names)
    if (n == x) return true;
  return false;
}
static bool is_dict_method(std::string_view n, bool* unsafe) {
  static const char* const safe[] = {"items", "keys", "values", "get", "copy"};
  static const char* const bad[] = {"pop", "popitem", "setdefault", "update", "clear", "fromkeys"};
  for (const char* x : safe)
    if (n == x) return true;
  for (const char* x : bad)
    if (n == x) { *unsafe = true; return true; }
  return false;
}
static bool is_list_method(std::string_view n, bool* unsafe) {
  static const char* const safe[] = {"index", "count", "copy"};
  static const char* const bad[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"};
  for (const char* x : safe)
    if (n == x) return true;
  for (const char* x : bad)
    if (n == x) { *unsafe = true; return true; }
  return false;
}

static Value bound(const Value& self, const std::string& name) {
  auto f = std::make_shared<FunctionData>();
  f->kind = FnKind::Method;
  f->name = name;
  f->self = self;
  return Value::from_function(std::move(f));
}

// Python getattr only (no item fallback); nullopt-like Undefined when absent.
static Value python_getattr(const Value& obj, const std::string& name, bool* found) {
  *found = true;
  bool unsafe = false;
  if (!name.empty() && name[0] == '_') {
    *found = false;
    return Value::undefined(fmt::format("access to attribute '{}' of '{}' object is unsafe", name, type_name(obj)));
  }
  switch (obj.type()) {
    case Value::Type::String:
      if (is_str_method(name)) return bound(obj, name);
      break;
    case Value::Type::Dict:
      if (is_dict_method(name, &unsafe)) {
        if (unsafe) return Value::undefined(fmt::format("access to attribute '{}' of 'dict' object is unsafe", name));
        return bound(obj, name);
      }
      break;
    case Value::Type::List:
      if (is_list_method(name, &unsafe)) {
        if (unsafe) return Value::undefined(fmt::format("access to attribute '{}' of 'list' object is unsafe", name));
        return bound(obj, name);
      }
      break;
    case Value::Type::Namespace:
      for (const auto& [k, v] : obj.namespace_data()->attrs)
        if (k == name) return v;
      break;
    default: break;
  }
  *found = false;
  return Value::undefined(fmt::format("'{}' object has no attribute '{}'", type_name(obj), name));
}

static const char* object_desc(const Value& v) {
  switch (v.type()) {
    case Value::Type::Dict: return "dict object";
    case Value::Type::List: return "list object";
    case Value::Type::String: return "str object";
    case Value::Type::None: return "None";
    default: return "object";
  }
}

Value get_attr(Ctx& c, const Value& obj, const std::string& name) {
  if (obj.is_undefined()) undefined_error(c, obj);
  bool found = false;
  Value v = python_getattr(obj, name, &found);
  if (found) return v;
  if (obj.is_dict()) {
    if (const Value* x = obj.find(std::string_view(name))) return *x;
    return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_desc(obj), name));
  }
  if (v.is_undefined() && name.size() && name[0] == '_') return v;
  return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_desc(obj), name));
}

Value get_item(Ctx& c, const Value& obj, const Value& key) {
  if (obj.is_undefined()) undefined_error(c, obj);
  switch (obj.type()) {
    case Value::Type::Dict:
      if (const Value* x = obj.find(key)) return *x;
      break;
    case Value::Type::List:
      if (key.is_int() || key.is_bool()) {
        int64_t i = key.is_bool() ? key.as_bool() : key.as_int();
        int64_t n = static_cast<int64_t>(obj.items().size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return obj.items()[static_cast<size_t>(i)];
        return Value::undefined(fmt::format("list object has no element {}", key.repr()));
      }
      break;
    case Value::Type::String:
      if (key.is_int() || key.is_bool()) {
        int64_t i = key.is_bool() ? key.as_bool() : key.as_int();
        std::vector<uint32_t> cps = decode_utf8(obj.as_string());
        int64_t n = static_cast<int64_t>(cps.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return Value(encode_utf8(cps, static_cast<size_t>(i), static_cast<size_t>(i) + 1));
        return Value::undefined(fmt::format("str object has no element {}", key.repr()));
      }
      break;
    default: break;
  }
  if (key.is_string()) {
    bool found = false;
    Value v = python_getattr(obj, key.as_string(), &found);
    if (found) return v;
    return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_desc(obj), key.as_string()));
  }
  return Value::undefined(fmt::format("'{}' has no element {}", object_desc(obj), key.repr()));
}

Value slice(Ctx& c, const Value& obj, const Value& start, const Value& stop, const Value& step_v) {
  if (obj.is_undefined()) undefined_error(c, obj);
  auto opt = [&](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    return need_int(c, v, what);
  };
  std::optional<int64_t> a = opt(start, "slice start"), b = opt(stop, "slice stop"), s = opt(step_v, "slice step");
  int64_t step = s.value_or(1);
  if (step == 0) c.type_error("slice step cannot be zero");
  auto indices = [&](int64_t n) {
    std::vector<size_t> idx;
    int64_t lo, hi;
    if (step > 0) {
      lo = a ? (*a < 0 ? std::max<int64_t>(*a + n, 0) : std::min(*a, n)) : 0;
      hi = b ? (*b < 0 ? std::max<int64_t>(*b + n, 0) : std::min(*b, n)) : n;
      for (int64_t i = lo; i < hi; i += step) idx.push_back(static_cast<size_t>(i));
    } else {
      lo = a ? (*a < 0 ? std::max<int64_t>(*a + n, -1) : std::min(*a, n - 1)) : n - 1;
      hi = b ? (*b < 0 ? std::max<int64_t>(*b + n, -1) : std::min(*b, n - 1)) : -1;
      for (int64_t i = lo; i > hi; i += step) idx.push_back(static_cast<size_t>(i));
    }
    return idx;
  };
  if (obj.is_list()) {
    const auto& items = obj.items();
    std::vector<Value> out;
    for (size_t i : indices(static_cast<int64_t>(items.size()))) out.push_back(items[i]);
    return obj.is_tuple() ? c.make_tuple(std::move(out)) : c.make_list(std::move(out));
  }
  if (obj.is_string()) {
    std::vector<uint32_t> cps = decode_utf8(obj.as_string());
    std::string out;
    for (size_t i : indices(static_cast<int64_t>(cps.size()))) append_utf8(out, cps[i]);
    return str_value(c, std::move(out));
  }
  c.type_error(fmt::format("'{}' object is not subscriptable", type_name(obj)));
}

std::vector<Value> iterate(Ctx& c, const Value& v) {
  switch (v.type()) {
    case Value::Type::Undefined: return {};
    case Value::Type::List: return v.items();
    case Value::Type::Dict: {
      std::vector<Value> keys;
      for (const auto& kv : v.entries()) keys.push_back(kv.first);
      return keys;
    }
    case Value::Type::String: {
      std::vector<Value> chars;
      std::vector<uint32_t> cps = decode_utf8(v.as_string());
      c.charge(cps.size() * sizeof(Value));
      for (uint32_t cp : cps) {
        std::string s;
        append_utf8(s, cp);
        chars.emplace_back(std::move(s));
      }
      return chars;
    }
    default: c.type_error(fmt::format("'{}' object is not iterable", type_name(v)));
  }
}

bool contains(Ctx& c, const Value& container, const Value& item) {
  switch (container.type()) {
    case Value::Type::String:
      if (!item.is_string())
        c.type_error(fmt::format("'in <string>' requires string as left operand, not {}", type_name(item)));
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Type::List:
      for (const Value& x : container.items())
        if (x == item) return true;
      return false;
    case Value::Type::Dict: return container.find(item) != nullptr;
    case Value::Type::Undefined: return false;
    default: c.type_error(fmt::format("argument of type '{}' is not iterable", type_name(container)));
  }
}

int compare(Ctx& c, const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (!a.is_float() && !b.is_float()) {
      int64_t x = a.is_bool() ? a.as_bool() : a.as_int(), y = b.is_bool() ? b.as_bool() : b.as_int();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    double x = a.to_double(), y = b.to_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int r = a.as_string().compare(b.as_string());  // UTF-8 byte order == code point order
    return r < 0 ? -1 : r > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list()) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i] == y[i]) continue;
      return compare(c, x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  if (a.is_undefined() || b.is_undefined()) undefined_error(c, a.is_undefined() ? a : b);
  c.type_error(fmt::format("'<' not supported between instances of '{}' and '{}'", type_name(a), type_name(b)));
}

// ---- tests ----------------------------------------------------------------------------------------

static const char* const kTests[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "filter",
    "float", "ge", "gt", "greaterthan", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping",
    "ne", "none", "number", "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper",
    "==", "!=", "<", "<=", ">", ">="};

static const char* const kFilters[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first",
    "float", "forceescape", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map",
    "max", "min", "pprint", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select",
    "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper", "wordcount"};

bool is_known_test(std::string_view name) {
  for (const char* t : kTests)
    if (name == t) return true;
  return false;
}

bool is_known_filter(std::string_view name) {
  for (const char* f : kFilters)
    if (name == f) return true;
  return false;
}

bool apply_test(Ctx& c, const std::string& name, const Value& v, const Args& args) {
  using T = Value::Type;
  static const Value kUndef;
  const Value& arg = args.get(0, "value", kUndef);
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "sequence") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "callable") return v.is_function() || v.is_undefined();
  if (name == "escaped") return false;
  if (name == "lower" || name == "upper") {
    std::string s = v.str();
    bool cased = false;
    for (char ch : s) {
      if (!is_alpha(ch)) continue;
      cased = true;
      bool low = ch >= 'a' && ch <= 'z';
      if (low != (name == "lower")) return false;
    }
    return cased;
  }
  if (name == "even" || name == "odd") {
    int64_t i = need_int(c, v, "even/odd operand");
    return ((i % 2) == 0) == (name == "even");
  }
  if (name == "divisibleby") {
    int64_t d = need_int(c, arg, "divisibleby argument");
    if (d == 0) c.type_error("integer division or modulo by zero");
    if (d == -1) return true;
    return need_int(c, v, "divisibleby operand") % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return v == arg;
  if (name == "ne" || name == "!=") return !(v == arg);
  if (name == "lt" || name == "lessthan" || name == "<") return compare(c, v, arg) < 0;
  if (name == "le" || name == "<=") return compare(c, v, arg) <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return compare(c, v, arg) > 0;
  if (name == "ge" || name == ">=") return compare(c, v, arg) >= 0;
  if (name == "in") return contains(c, arg, v);
  if (name == "sameas") {
    if (v.type() != arg.type()) return false;
    if (v.type() == T::List || v.type() == T::Dict) return v.size() == arg.size() && v == arg && &v.items() == &arg.items();
    return v == arg;
  }
  if (name == "filter") return v.is_string() && is_known_filter(v.as_string());
  if (name == "test") return v.is_string() && is_known_test(v.as_string());
  c.fail(ErrorCode::Unsupported, fmt::format("unsupported test '{}'", name));
}

// ---- filters --------------------------------------------------------------------------------------

static Value select_like(Ctx& c, const Value& in, const Args& args, bool by_attr, bool keep) {
  std::vector<Value> items = as_list(c, in);
  size_t first = by_attr ? 1 : 0;
  Value attribute = by_attr ? args.get(0, "attribute", Value()) : Value();
  std::string test;
  Args targs;
  if (args.pos.size() > first) {
    test = need_str(c, args.pos[first], "test name");
    if (!is_known_test(test)) c.fail(ErrorCode::Unsupported, fmt::format("unsupported test '{}'", test));
    targs.pos.assign(args.pos.begin() + static_cast<std::ptrdiff_t>(first) + 1, args.pos.end());
  }
  for (const auto& kv : args.kw)
    if (kv.first != "attribute") targs.kw.push_back(kv);
  std::vector<Value> out;
  for (const Value& x : items) {
    c.step();
    Value subject = by_attr ? attr_path(c, x, attribute) : x;
    bool r = test.empty() ? subject.truthy() : apply_test(c, test, subject, targs);
    if (r == keep) out.push_back(x);
  }
  return c.make_list(std::move(out));
}

Value apply_filter(Ctx& c, const std::string& name, const Value& in, const Args& args) {
  static const Value kUndef;
  auto arg = [&](size_t i, std::string_view n) -> const Value& { return args.get(i, n, kUndef); };
  auto s_in = [&]() -> std::string { return in.str(); };

  if (name == "safe") return in;
  if (name == "string") return in.is_string() ? in : str_value(c, in.str());
  if (name == "pprint") return str_value(c, in.repr());
  if (name == "tojson") {
    // HF: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
    bool ensure_ascii = arg(0, "ensure_ascii").truthy();
    const Value& ind = arg(1, "indent");
    int indent = -1;
    if (!ind.is_undefined() && !ind.is_none()) {
      int64_t n = need_int(c, ind, "tojson indent");
      indent = static_cast<int>(std::clamp<int64_t>(n, 0, 64));
    }
    std::string item_sep, key_sep;
    const Value& seps = arg(2, "separators");
    if (seps.is_list() && seps.items().size() == 2) {
      item_sep = need_str(c, seps.items()[0], "separator");
      key_sep = need_str(c, seps.items()[1], "separator");
    } else if (!seps.is_undefined() && !seps.is_none()) {
      c.type_error("tojson separators must be a (item, key) pair");
    }
    bool sort_keys = arg(3, "sort_keys").truthy();
    std::string js;
    try {
      js = in.to_json(indent, ensure_ascii, sort_keys, item_sep, key_sep);
    } catch (const Error& e) {
      c.type_error(e.what());
    }
    return str_value(c, std::move(js));
  }
  if (name == "trim") return str_value(c, py_strip(s_in(), arg(0, "chars"), true, true));
  if (name == "upper") return str_value(c, ascii_upper(s_in()));
  if (name == "lower") return str_value(c, ascii_lower(s_in()));
  if (name == "capitalize") {
    std::string s = ascii_lower(s_in());
    if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 32);
    return str_value(c, std::move(s));
  }
  if (name == "title") {
    std::string s = s_in(), out;
    bool word_start = true;
    for (char ch : s) {
      bool sep = ch == '-' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v' ||
                 ch == '(' || ch == '{' || ch == '[' || ch == '<';
      if (sep) {
        out += ch;
        word_start = true;
        continue;
      }
      if (word_start) out += (ch >= 'a' && ch <= 'z') ? static_cast<char>(ch - 32) : ch;
      else out += (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch + 32) : ch;
      word_start = false;
    }
    return str_value(c, std::move(out));
  }
  if (name == "length" || name == "count") {
    if (in.is_string()) return Value(static_cast<int64_t>(py_len(in.as_string())));
    if (in.is_list() || in.is_dict()) return Value(static_cast<int64_t>(in.size()));
    if (in.is_undefined()) return Value(int64_t{0});
    if (in.is_namespace()) c.type_error("object of type 'Namespace' has no len()");
    c.type_error(fmt::format("object of type '{}' has no len()", type_name(in)));
  }
  if (name == "default" || name == "d") {
    bool boolean = arg(1, "boolean").truthy();
    if (in.is_undefined() || (boolean && !in.truthy())) {
      const Value& dv = arg(0, "default_value");
      return dv.is_undefined() && !args.has(0, "default_value") ? Value("") : dv;
    }
    return in;
  }
  if (name == "first") {
    if (in.is_undefined()) undefined_error(c, in);
    std::vector<Value> items = as_list(c, in);
    if (items.empty()) return Value::undefined("No first item, sequence was empty.");
    return items.front();
  }
  if (name == "last") {
    if (in.is_undefined()) undefined_error(c, in);
    std::vector<Value> items = as_list(c, in);
    if (items.empty()) return Value::undefined("No last item, sequence was empty.");
    return items.back();
  }
  if (name == "list") return c.make_list(as_list(c, in));
  if (name == "items") {
    if (in.is_undefined()) return c.make_list({});
    if (!in.is_dict()) c.type_error("Can only get item pairs from a mapping.");
    std::vector<Value> out;
    for (const auto& [k, v] : in.entries()) out.push_back(c.make_tuple({k, v}));
    return c.make_list(std::move(out));
  }
  if (name == "join") {
    std::vector<Value> items = as_list(c, in);
    const Value& attribute = arg(1, "attribute");
    if (!attribute.is_undefined() && !attribute.is_none())
      for (Value& x : items) x = attr_path(c, x, attribute);
    const Value& sep = arg(0, "d");
    return str_value(c, join_str(c, items, sep.is_undefined() ? std::string() : sep.str()));
  }
  if (name == "replace") {
    const Value& cnt = arg(2, "count");
    int64_t count = cnt.is_undefined() || cnt.is_none() ? -1 : need_int(c, cnt, "replace count");
    return str_value(c, py_replace(c, s_in(), arg(0, "old").str(), arg(1, "new").str(), count));
  }
  if (name == "int") {
    const Value& def = args.has(0, "default") ? arg(0, "default") : Value(int64_t{0});
    int64_t base = args.has(1, "base") ? need_int(c, arg(1, "base"), "int base") : 10;
    if (base < 2 || base > 36) c.type_error("int() base must be >= 2 and <= 36");
    return int_of(in, def, static_cast<int>(base));
  }
  if (name == "float") return float_of(in, args.has(0, "default") ? arg(0, "default") : Value(0.0));
  if (name == "abs") {
    if (in.is_float()) return Value(std::fabs(in.as_float()));
    int64_t i = need_int(c, in, "abs operand");
    if (i == INT64_MIN) c.type_error("integer overflow in abs");
    return Value(i < 0 ? -i : i);
  }
  if (name == "round") {
    int64_t prec = args.has(0, "precision") ? need_int(c, arg(0, "precision"), "round precision") : 0;
    std::string method = args.has(1, "method") ? arg(1, "method").str() : "common";
    if (!in.is_number()) c.type_error(fmt::format("round: a number is required, not {}", type_name(in)));
    if (method == "common" && !in.is_float() && prec >= 0) return Value(need_int(c, in, "round operand"));
    prec = std::clamp<int64_t>(prec, -300, 300);
    double p = std::pow(10.0, static_cast<double>(prec));
    double x = in.to_double() * p;
    double r;
    if (method == "common") r = std::nearbyint(x);
    else if (method == "ceil") r = std::ceil(x);
    else if (method == "floor") r = std::floor(x);
    else c.type_error("method must be common, ceil or floor");
    return Value(r / p);
  }
  if (name == "reverse") {
    if (in.is_string()) {
      std::vector<uint32_t> cps = decode_utf8(in.as_string());
      std::reverse(cps.begin(), cps.end());
      return str_value(c, encode_utf8(cps, 0, cps.size()));
    }
    std::vector<Value> items = as_list(c, in);
    std::reverse(items.begin(), items.end());
    return c.make_list(std::move(items));
  }
  if (name == "sort") {
    return c.make_list(sorted(c, as_list(c, in), arg(0, "reverse").truthy(), arg(1, "case_sensitive").truthy(),
                              arg(2, "attribute")));
  }
  if (name == "dictsort") {
    if (!in.is_dict()) c.type_error("dictsort: a mapping is required");
    bool cs = arg(0, "case_sensitive").truthy();
    std::string by = args.has(1, "by") ? arg(1, "by").str() : "key";
    bool rev = arg(2, "reverse").truthy();
    if (by != "key" && by != "value") c.type_error("You can only sort by either \"key\" or \"value\"");
    std::vector<Value> pairs;
    for (const auto& [k, v] : in.entries()) pairs.push_back(c.make_tuple({k, v}));
    std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) {
      size_t i = by == "key" ? 0 : 1;
      int r = compare(c, sort_key(a.items()[i], cs), sort_key(b.items()[i], cs));
      return rev ? r > 0 : r < 0;
    });
    return c.make_list(std::move(pairs));
  }
  if (name == "unique") {
    bool cs = arg(0, "case_sensitive").truthy();
    const Value& attribute = arg(1, "attribute");
    std::vector<Value> out, seen;
    for (const Value& x : as_list(c, in)) {
      c.step();
      Value k = sort_key(attribute.is_undefined() || attribute.is_none() ? x : attr_path(c, x, attribute), cs);
      if (std::find(seen.begin(), seen.end(), k) != seen.end()) continue;
      seen.push_back(k);
      out.push_back(x);
    }
    return c.make_list(std::move(out));
  }
  if (name == "min" || name == "max") {
    bool cs = arg(0, "case_sensitive").truthy();
    const Value& attribute = arg(1, "attribute");
    std::vector<Value> items = as_list(c, in);
    if (items.empty()) return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
    const Value* best = &items[0];
    Value best_key = sort_key(attribute.is_undefined() ? items[0] : attr_path(c, items[0], attribute), cs);
    for (size_t i = 1; i < items.size(); ++i) {
      Value k = sort_key(attribute.is_undefined() ? items[i] : attr_path(c, items[i], attribute), cs);
      int r = compare(c, k, best_key);
      if (name == "min" ? r < 0 : r > 0) {
        best = &items[i];
        best_key = k;
      }
    }
    return *best;
  }
  if (name == "sum") {
    const Value& attribute = arg(0, "attribute");
    Value acc = args.has(1, "start") ? arg(1, "start") : Value(int64_t{0});
    for (const Value& x0 : as_list(c, in)) {
      Value x = attribute.is_undefined() || attribute.is_none() ? x0 : attr_path(c, x0, attribute);
      if (!acc.is_number() || !x.is_number()) c.type_error("sum: operands must be numbers");
      if (acc.is_float() || x.is_float()) {
        acc = Value(acc.to_double() + x.to_double());
      } else {
        int64_t r;
        if (__builtin_add_overflow(need_int(c, acc, "sum"), need_int(c, x, "sum"), &r)) c.type_error("integer overflow");
        acc = Value(r);
      }
    }
    return acc;
  }
  if (name == "map") {
    std::vector<Value> items = as_list(c, in);
    std::vector<Value> out;
    if (args.pos.empty() || args.has(99, "attribute")) {
      const Value& attribute = arg(99, "attribute");
      if (attribute.is_undefined()) c.type_error("map: a filter name or attribute= is required");
      const Value& def = arg(99, "default");
      for (const Value& x : items) {
        c.step();
        Value r = attr_path(c, x, attribute);
        out.push_back(r.is_undefined() && !def.is_undefined() ? def : r);
      }
    } else {
      std::string fname = need_str(c, args.pos[0], "map filter name");
      if (!is_known_filter(fname)) c.fail(ErrorCode::Unsupported, fmt::format("unsupported filter '{}'", fname));
      Args fargs;
      fargs.pos.assign(args.pos.begin() + 1, args.pos.end());
      fargs.kw = args.kw;
      for (const Value& x : items) {
        c.step();
        out.push_back(apply_filter(c, fname, x, fargs));
      }
    }
    return c.make_list(std::move(out));
  }
  if (name == "select") return select_like(c, in, args, false, true);
  if (name == "reject") return select_like(c, in, args, false, false);
  if (name == "selectattr") return select_like(c, in, args, true, true);
  if (name == "rejectattr") return select_like(c, in, args, true, false);
  if (name == "attr") {
    if (in.is_undefined()) undefined_error(c, in);
    bool found = false;
    return python_getattr(in, arg(0, "name").str(), &found);
  }
  if (name == "batch") {
    int64_t n = need_int(c, arg(0, "linecount"), "batch size");
    if (n <= 0) c.type_error("batch size must be positive");
    const Value& fill = arg(1, "fill_with");
    std::vector<Value> out, cur;
    for (const Value& x : as_list(c, in)) {
      cur.push_back(x);
      if (static_cast<int64_t>(cur.size()) == n) {
        out.push_back(c.make_list(std::move(cur)));
        cur.clear();
      }
    }
    if (!cur.empty()) {
      if (!fill.is_undefined() && !fill.is_none())
        while (static_cast<int64_t>(cur.size()) < n) cur.push_back(fill);
      out.push_back(c.make_list(std::move(cur)));
    }
    return c.make_list(std::move(out));
  }
  if (name == "center") {
    int64_t w = args.has(0, "width") ? need_int(c, arg(0, "width"), "center width") : 80;
    return str_value(c, py_center(c, s_in(), w));
  }
  if (name == "indent") {
    const Value& wv = arg(0, "width");
    std::string ind;
    if (wv.is_string()) {
      ind = wv.as_string();
    } else {
      int64_t w = wv.is_undefined() ? 4 : need_int(c, wv, "indent width");
      c.check_size(static_cast<size_t>(std::max<int64_t>(w, 0)));
      ind.assign(static_cast<size_t>(std::max<int64_t>(w, 0)), ' ');
    }
    bool first = arg(1, "first").truthy(), blank = arg(2, "blank").truthy();
    std::string s = s_in() + "\n";
    std::vector<std::string> lines = py_splitlines(s);
    std::string rv;
    if (blank) {
      for (size_t i = 0; i < lines.size(); ++i) {
        if (i) rv += "\n" + ind;
        rv += lines[i];
        c.check_size(rv.size());
      }
    } else {
      rv = lines.empty() ? std::string() : lines[0];
      for (size_t i = 1; i < lines.size(); ++i) {
        rv += "\n";
        if (!lines[i].empty()) rv += ind;
        rv += lines[i];
        c.check_size(rv.size());
      }
    }
    if (first) rv = ind + rv;
    return str_value(c, std::move(rv));
  }
  if (name == "escape" || name == "e" || name == "forceescape") return str_value(c, html_escape(s_in()));
  if (name == "wordcount") {
    int64_t n = 0;
    bool in_word = false;
    for (char ch : s_in()) {
      bool w = is_alpha(ch) || (ch >= '0' && ch <= '9') || ch == '_' || static_cast<unsigned char>(ch) >= 0x80;
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value(n);
  }
  if (name == "format") {
    if (!args.kw.empty()) c.fail(ErrorCode::Unsupported, "format filter with keyword arguments");
    return str_value(c, percent_format(c, s_in(), args.pos));
  }
  c.fail(ErrorCode::Unsupported, fmt::format("unsupported filter '{}'", name));
}

// ---- methods --------------------------------------------------------------------------------------

Value call_method(Ctx& c, const FunctionData& f, const Args& args) {
  static const Value kUndef;
  const Value& self = f.self;
  const std::string& m = f.name;
  auto arg = [&](size_t i) -> const Value& { return i < args.pos.size() ? args.pos[i] : kUndef; };
  if (self.is_string()) {
    const std::string& s = self.as_string();
    if (m == "strip") return str_value(c, py_strip(s, arg(0), true, true));
    if (m == "lstrip") return str_value(c, py_strip(s, arg(0), true, false));
    if (m == "rstrip") return str_value(c, py_strip(s, arg(0), false, true));
    if (m == "split" || m == "rsplit") {
      const Value& sep = args.get(0, "sep", kUndef);
      const Value& ms = args.get(1, "maxsplit", kUndef);
      int64_t maxsplit = ms.is_undefined() ? -1 : need_int(c, ms, "maxsplit");
      std::vector<Value> out;
      for (auto& p : py_split(c, s, sep, maxsplit, m == "rsplit")) out.emplace_back(std::move(p));
      c.charge(s.size());
      return c.make_list(std::move(out));
    }
    if (m == "startswith") return Value(affix(c, s, arg(0), true));
    if (m == "endswith") return Value(affix(c, s, arg(0), false));
    if (m == "upper") return str_value(c, ascii_upper(s));
    if (m == "lower" || m == "casefold") return str_value(c, ascii_lower(s));
    if (m == "swapcase") {
      std::string r = s;
      for (char& ch : r) {
        if (ch >= 'a' && ch <= 'z') ch = static_cast<char>(ch - 32);
        else if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch + 32);
      }
      return str_value(c, std::move(r));
    }
    if (m == "title") {
      std::string r = s;
      bool prev_cased = false;
      for (char& ch : r) {
        if (is_alpha(ch)) {
          ch = prev_cased ? static_cast<char>(ascii_lower(std::string(1, ch))[0])
                          : static_cast<char>(ascii_upper(std::string(1, ch))[0]);
          prev_cased = true;
        } else {
          prev_cased = false;
        }
      }
      return str_value(c, std::move(r));
    }
    if (m == "capitalize") {
      std::string r = ascii_lower(s);
      if (!r.empty() && r[0] >= 'a' && r[0] <= 'z') r[0] = static_cast<char>(r[0] - 32);
      return str_value(c, std::move(r));
    }
    if (m == "replace") {
      int64_t count = arg(2).is_undefined() ? -1 : need_int(c, arg(2), "replace count");
      return str_value(c, py_replace(c, s, need_str(c, arg(0), "replace old"), need_str(c, arg(1), "replace new"), count));
    }
    if (m == "find" || m == "rfind" || m == "index" || m == "rindex") {
      const std::string& sub = need_str(c, arg(0), "substring");
      size_t p = (m == "find" || m == "index") ? s.find(sub) : s.rfind(sub);
      if (p == std::string::npos) {
        if (m == "index" || m == "rindex") c.type_error("substring not found");
        return Value(int64_t{-1});
      }
      return Value(static_cast<int64_t>(py_len(std::string_view(s).substr(0, p))));
    }
    if (m == "count") {
      const std::string& sub = need_str(c, arg(0), "substring");
      if (sub.empty()) return Value(static_cast<int64_t>(py_len(s) + 1));
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    }
    if (m == "join") return str_value(c, join_str(c, as_list(c, arg(0)), s));
    if (m == "splitlines") {
      std::vector<Value> out;
      for (auto& l : py_splitlines(s)) out.emplace_back(std::move(l));
      return c.make_list(std::move(out));
    }
    auto all_of = [&](auto pred) {
      if (s.empty()) return Value(false);
      for (char ch : s)
        if (!pred(ch)) return Value(false);
      return Value(true);
    };
    if (m == "isdigit" || m == "isnumeric" || m == "isdecimal") return all_of([](char ch) { return ch >= '0' && ch <= '9'; });
    if (m == "isalpha") return all_of([](char ch) { return is_alpha(ch); });
    if (m == "isalnum") return all_of([](char ch) { return is_alpha(ch) || (ch >= '0' && ch <= '9'); });
    if (m == "isspace") {
      if (s.empty()) return Value(false);
      for (uint32_t cp : decode_utf8(s))
        if (!py_isspace(cp)) return Value(false);
      return Value(true);
    }
    if (m == "isupper" || m == "islower") {
      Args a;
      return Value(apply_test(c, m == "isupper" ? "upper" : "lower", self, a));
    }
    if (m == "format") return str_value(c, brace_format(c, s, args));
    if (m == "zfill" || m == "center" || m == "ljust" || m == "rjust") {
      int64_t w = need_int(c, arg(0), "width");
      int64_t len = static_cast<int64_t>(py_len(s));
      if (w <= len) return self;
      c.check_size(static_cast<size_t>(w));
      size_t pad = static_cast<size_t>(w - len);
      std::string fill = arg(1).is_string() ? arg(1).as_string() : " ";
      if (m == "center") return str_value(c, py_center(c, s, w));
      if (m == "ljust") {
        std::string r = s;
        for (size_t i = 0; i < pad; ++i) r += fill;
        return str_value(c, std::move(r));
      }
      if (m == "rjust") {
        std::string r;
        for (size_t i = 0; i < pad; ++i) r += fill;
        return str_value(c, r + s);
      }
      std::string r = s;
      size_t at = (!r.empty() && (r[0] == '+' || r[0] == '-')) ? 1 : 0;
      r.insert(at, pad, '0');
      return str_value(c, std::move(r));
    }
    if (m == "partition" || m == "rpartition") {
      const std::string& sep = need_str(c, arg(0), "separator");
      if (sep.empty()) c.type_error("empty separator");
      size_t p = m == "partition" ? s.find(sep) : s.rfind(sep);
      if (p == std::string::npos)
        return m == "partition" ? c.make_tuple({Value(s), Value(""), Value("")}) : c.make_tuple({Value(""), Value(""), Value(s)});
      return c.make_tuple({Value(s.substr(0, p)), Value(sep), Value(s.substr(p + sep.size()))});
    }
  } else if (self.is_dict()) {
    if (m == "items") {
      std::vector<Value> out;
      for (const auto& [k, v] : self.entries()) out.push_back(c.make_tuple({k, v}));
      return c.make_list(std::move(out));
    }
    if (m == "keys") return c.make_list(iterate(c, self));
    if (m == "values") {
      std::vector<Value> out;
      for (const auto& kv : self.entries()) out.push_back(kv.second);
      return c.make_list(std::move(out));
    }
    if (m == "get") {
      if (const Value* v = self.find(arg(0))) return *v;
      return args.pos.size() > 1 ? args.pos[1] : Value::none();
    }
    if (m == "copy") return self;
  } else if (self.is_list()) {
    if (m == "index") {
      const auto& items = self.items();
      for (size_t i = 0; i < items.size(); ++i)
        if (items[i] == arg(0)) return Value(static_cast<int64_t>(i));
      c.type_error(fmt::format("{} is not in list", arg(0).repr()));
    }
    if (m == "count") {
      int64_t n = 0;
      for (const Value& x : self.items())
        if (x == arg(0)) ++n;
      return Value(n);
    }
    if (m == "copy") return self;
  }
  c.fail(ErrorCode::Unsupported, fmt::format("unsupported method '{}' of '{}' object", m, type_name(self)));
}

// ---- globals --------------------------------------------------------------------------------------

bool is_global(std::string_view name) {
  return name == "range" || name == "namespace" || name == "dict" || name == "raise_exception" ||
         name == "strftime_now";
}

Value call_global(Ctx& c, const std::string& name, const Args& args) {
  if (name == "raise_exception") {
    std::string msg = args.pos.empty() ? std::string() : args.pos[0].str();
    c.fail(ErrorCode::InvalidArgument, "template raised an exception: " + msg);
  }
  if (name == "strftime_now") {
    std::string f = args.pos.empty() ? std::string() : need_str(c, args.pos[0], "strftime format");
    std::time_t t = c.opts.now_epoch_s ? static_cast<std::time_t>(*c.opts.now_epoch_s) : std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    if (f.empty()) return Value("");
    std::string buf(f.size() * 8 + 64, '\0');
    size_t n = std::strftime(buf.data(), buf.size(), f.c_str(), &tm);
    if (n == 0) c.type_error("strftime_now: format produced no output or too much");
    buf.resize(n);
    return str_value(c, std::move(buf));
  }
  if (name == "range") {
    int64_t start = 0, stop, step = 1;
    if (args.pos.empty() || args.pos.size() > 3) c.type_error("range expected 1 to 3 arguments");
    if (args.pos.size() == 1) {
      stop = need_int(c, args.pos[0], "range stop");
    } else {
      start = need_int(c, args.pos[0], "range start");
      stop = need_int(c, args.pos[1], "range stop");
      if (args.pos.size() == 3) step = need_int(c, args.pos[2], "range step");
    }
    if (step == 0) c.type_error("range() arg 3 must not be zero");
    // The sandbox's MAX_RANGE.
    long double count = step > 0 ? (static_cast<long double>(stop) - start) / step : (static_cast<long double>(start) - stop) / -step;
    if (count > 100000) c.type_error("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    std::vector<Value> out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.emplace_back(i);
    return c.make_list(std::move(out));
  }
  if (name == "dict") {
    Value d = Value::dict();
    if (!args.pos.empty()) {
      if (args.pos.size() > 1 || !args.pos[0].is_dict()) c.type_error("dict() takes a mapping and keyword arguments");
      for (const auto& [k, v] : args.pos[0].entries()) d.set(k, v);
    }
    for (const auto& [k, v] : args.kw) d.set(Value(k), v);
    c.charge(d.size() * 2 * sizeof(Value));
    return d;
  }
  if (name == "namespace") {
    Value ns = c.new_namespace();
    auto& attrs = ns.namespace_data()->attrs;
    auto put = [&](const std::string& k, const Value& v) {
      for (auto& kv : attrs)
        if (kv.first == k) {
          kv.second = v;
          return;
        }
      attrs.emplace_back(k, v);
    };
    for (const Value& p : args.pos) {
      if (!p.is_dict()) c.type_error("namespace() positional arguments must be mappings");
      for (const auto& [k, v] : p.entries()) put(k.str(), v);
    }
    for (const auto& [k, v] : args.kw) put(k, v);
    return ns;
  }
  c.fail(ErrorCode::Unsupported, fmt::format("unsupported function '{}'", name));
}

}  // namespace moe::chat::detail
