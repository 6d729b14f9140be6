// template/lexer.cpp — turns template source into tokens, reproducing jinja2's lexer with HF's
// settings: newlines normalized to \n, one trailing newline dropped (keep_trailing_newline=False),
// trim_blocks (a newline right after %} or #} is dropped), lstrip_blocks (spaces and tabs between a
// line start and {% or {# are dropped), '-' strips all whitespace on that side of a tag, '+' keeps
// it. Inside tags: names, strings (Python escapes), integers, floats and operators; a closing
// }} / %} only counts while (), [] and {} are balanced. Stateless and reentrant.
#include <cstring>

#include "internal.h"

namespace moe::chat::detail {
namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Python's str.rstrip() on the bytes of UTF-8 text: strips ASCII whitespace and the Unicode spaces
// Python's isspace() knows.
size_t rstrip_len(std::string_view s) {
  std::vector<uint32_t> cps = decode_utf8(s);
  size_t n = cps.size();
  while (n > 0 && py_isspace(cps[n - 1])) --n;
  return encode_utf8(cps, 0, n).size();
}

// True when every code point of s is whitespace (and s is not empty): Python's \s+ fullmatch.
bool all_space(std::string_view s) {
  if (s.empty()) return false;
  for (uint32_t cp : decode_utf8(s))
    if (!py_isspace(cp)) return false;
  return true;
}

struct Lexer {
  std::string src;
  const std::string& name;
  std::vector<Token> out;
  size_t pos = 0;
  int line = 1;
  bool line_starting = true;

  [[noreturn]] void fail(const std::string& msg) { throw_at(ErrorCode::Corrupt, name, line, msg); }

  void count_lines(size_t from, size_t to) {
    for (size_t i = from; i < to; ++i)
      if (src[i] == '\n') ++line;
  }

  void push(Tok t, std::string text = {}) { out.push_back(Token{t, line, std::move(text)}); }

  void emit_text(std::string text) {
    if (!text.empty()) push(Tok::Text, std::move(text));
  }

  // Applies the whitespace control of a tag start to the data before it.
  std::string strip_before(std::string text, char sign, bool is_variable) {
    if (sign == '-') {
      text.resize(rstrip_len(text));
    } else if (sign != '+' && !is_variable) {  // lstrip_blocks
      size_t nl = text.rfind('\n');
      size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting) && all_space(std::string_view(text).substr(l_pos))) text.resize(l_pos);
    }
    return text;
  }

  // At pos: the end of a tag ("%}", "#}" or "}}") with optional sign. Returns the length matched
  // (including trailing whitespace it strips) or 0.
  size_t match_end(const char* end, bool trim) {
    size_t n = std::strlen(end);
    std::string_view rest(src.data() + pos, src.size() - pos);
    if (rest.size() >= n + 1 && rest[0] == '+' && rest.substr(1, n) == end) return n + 1;
    if (rest.size() >= n + 1 && rest[0] == '-' && rest.substr(1, n) == end) {
      size_t k = n + 1;
      while (k < rest.size() && is_ws(rest[k])) ++k;
      return k;
    }
    if (rest.substr(0, n) == end) {
      if (trim && rest.size() > n && rest[n] == '\n') return n + 1;
      return n;
    }
    return 0;
  }

  void finish_match(size_t start, size_t end_pos) {
    count_lines(start, end_pos);
    line_starting = end_pos > start && src[end_pos - 1] == '\n';
    pos = end_pos;
  }

  void lex_string() {
    char q = src[pos];
    size_t i = pos + 1;
    std::string raw;
    while (true) {
      if (i >= src.size()) fail("unterminated string literal");
      char c = src[i];
      if (c == q) break;
      if (c == '\\') {
        if (i + 1 >= src.size()) fail("unterminated string literal");
        raw += c;
        raw += src[i + 1];
        i += 2;
        continue;
      }
      raw += c;
      ++i;
    }
    out.push_back(Token{Tok::String, line, unescape(raw)});
    finish_match(pos, i + 1);
  }

  static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Python's unicode-escape decoding of a literal body.
  std::string unescape(const std::string& s) {
    std::string r;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\\' || i + 1 >= s.size()) {
        r += s[i];
        continue;
      }
      char c = s[++i];
      switch (c) {
        case '\n': break;  // line continuation
        case '\\': r += '\\'; break;
        case '\'': r += '\''; break;
        case '"': r += '"'; break;
        case 'a': r += '\a'; break;
        case 'b': r += '\b'; break;
        case 'f': r += '\f'; break;
        case 'n': r += '\n'; break;
        case 'r': r += '\r'; break;
        case 't': r += '\t'; break;
        case 'v': r += '\v'; break;
        case 'x': case 'u': case 'U': {
          int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < digits; ++k) {
            int h = i + 1 < s.size() ? hexval(s[i + 1]) : -1;
            if (h < 0) fail(fmt::format("truncated \\{} escape in string literal", c));
            cp = cp * 16 + static_cast<uint32_t>(h);
            ++i;
          }
          if (cp > 0x10FFFF) fail("illegal Unicode character in string literal");
          append_utf8(r, cp);
          break;
        }
        case 'N': fail("\\N{...} escapes are not supported in string literals");
        default:
          if (c >= '0' && c <= '7') {
            uint32_t cp = static_cast<uint32_t>(c - '0');
            for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k)
              cp = cp * 8 + static_cast<uint32_t>(s[++i] - '0');
            append_utf8(r, cp);
          } else {
            r += '\\';
            r += c;
          }
      }
    }
    return r;
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  static bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (static_cast<unsigned char>(c) >= 0x80);
  }
  static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

  // Digits with single underscores between them ((\d+_)*\d+) starting at i; returns the end or i.
  size_t digits(size_t i) const {
    size_t j = i;
    if (j >= src.size() || !is_digit(src[j])) return i;
    while (j < src.size()) {
      if (is_digit(src[j])) { ++j; continue; }
      if (src[j] == '_' && j + 1 < src.size() && is_digit(src[j + 1])) { ++j; continue; }
      break;
    }
    return j;
  }

  void lex_number() {
    size_t start = pos;
    // float: digits ( (.digits)? e[+-]?digits | .digits ), not preceded by '.'
    bool prev_dot = start > 0 && src[start - 1] == '.';
    size_t d = digits(start);
    if (!prev_dot) {
      size_t f = d;
      bool frac = false;
      if (f < src.size() && src[f] == '.') {
        size_t g = digits(f + 1);
        if (g > f + 1) { f = g; frac = true; }
      }
      size_t e = f;
      bool expo = false;
      if (e < src.size() && (src[e] == 'e' || src[e] == 'E')) {
        size_t k = e + 1;
        if (k < src.size() && (src[k] == '+' || src[k] == '-')) ++k;
        size_t g = digits(k);
        if (g > k) { e = g; expo = true; }
      }
      if (expo || frac) {
        size_t end = expo ? e : f;
        std::string t;
        for (size_t i = start; i < end; ++i)
          if (src[i] != '_') t += src[i];
        Token tok{Tok::Float, line, t};
        tok.fval = std::strtod(t.c_str(), nullptr);
        out.push_back(tok);
        finish_match(start, end);
        return;
      }
    }
    // integer: 0b / 0o / 0x prefixes, [1-9](_?\d)*, 0(_?0)*
    auto parse_prefixed = [&](int base, size_t i) -> bool {
      size_t j = i;
      uint64_t v = 0;
      bool any = false;
      while (j < src.size()) {
        char c = src[j];
        if (c == '_' && j + 1 < src.size()) { ++j; c = src[j]; }
        int h = hexval(c);
        if (h < 0 || h >= base) break;
        if (v > (UINT64_MAX - static_cast<uint64_t>(h)) / static_cast<uint64_t>(base)) fail("integer literal too large");
        v = v * static_cast<uint64_t>(base) + static_cast<uint64_t>(h);
        any = true;
        ++j;
      }
      if (!any) return false;
      if (v > static_cast<uint64_t>(INT64_MAX)) fail("integer literal too large");
      Token tok{Tok::Int, line, src.substr(start, j - start)};
      tok.ival = static_cast<int64_t>(v);
      out.push_back(tok);
      finish_match(start, j);
      return true;
    };
    if (src[start] == '0' && start + 1 < src.size()) {
      char p = static_cast<char>(src[start + 1] | 0x20);
      if (p == 'b' && parse_prefixed(2, start + 2)) return;
      if (p == 'o' && parse_prefixed(8, start + 2)) return;
      if (p == 'x' && parse_prefixed(16, start + 2)) return;
    }
    size_t end;
    if (src[start] == '0') {
      end = start + 1;
      while (end < src.size() && (src[end] == '0' || (src[end] == '_' && end + 1 < src.size() && src[end + 1] == '0')))
        ++end;
    } else {
      end = d;
    }
    uint64_t v = 0;
    for (size_t i = start; i < end; ++i) {
      if (src[i] == '_') continue;
      uint64_t dgt = static_cast<uint64_t>(src[i] - '0');
      if (v > (static_cast<uint64_t>(INT64_MAX) - dgt) / 10) fail("integer literal too large");
      v = v * 10 + dgt;
    }
    Token tok{Tok::Int, line, src.substr(start, end - start)};
    tok.ival = static_cast<int64_t>(v);
    out.push_back(tok);
    finish_match(start, end);
  }

  // Lexes the inside of a {{ }} or {% %} tag up to and including its end.
  void lex_tag(bool is_block) {
    const char* end = is_block ? "%}" : "}}";
    std::vector<char> balance;
    while (true) {
      if (pos >= src.size()) fail(is_block ? "unexpected end of template inside a {% %} tag"
                                           : "unexpected end of template inside a {{ }} tag");
      if (balance.empty()) {
        if (size_t n = match_end(end, is_block)) {
          push(is_block ? Tok::BlockEnd : Tok::VarEnd);
          finish_match(pos, pos + n);
          return;
        }
      }
      char c = src[pos];
      if (is_ws(c)) {
        size_t j = pos;
        while (j < src.size() && is_ws(src[j])) ++j;
        finish_match(pos, j);
        continue;
      }
      if (is_digit(c)) { lex_number(); continue; }
      if (is_name_start(c)) {
        size_t j = pos;
        while (j < src.size() && is_name_char(src[j])) ++j;
        push(Tok::Name, src.substr(pos, j - pos));
        finish_match(pos, j);
        continue;
      }
      if (c == '\'' || c == '"') { lex_string(); continue; }
      static const char* const two[] = {"//", "**", "==", "!=", ">=", "<="};
      std::string op;
      for (const char* t : two)
        if (src.compare(pos, 2, t) == 0) op = t;
      if (op.empty()) {
        if (std::strchr("+-/*%~[](){}><=.:|,;", c) == nullptr || c == '\0')
          fail(fmt::format("unexpected character '{}'", c));
        op = std::string(1, c);
      }
      if (op == "{" || op == "(" || op == "[") {
        if (balance.size() > 10000) fail("brackets nested too deeply");
        balance.push_back(op == "{" ? '}' : op == "(" ? ')' : ']');
      } else if (op == "}" || op == ")" || op == "]") {
        if (balance.empty()) fail(fmt::format("unexpected '{}'", op));
        if (balance.back() != op[0]) fail(fmt::format("unexpected '{}', expected '{}'", op, balance.back()));
        balance.pop_back();
      }
      push(Tok::Op, op);
      finish_match(pos, pos + op.size());
    }
  }

  // {% raw %} ... {% endraw %}: returns true when a raw block started at `at` (already known "{%").
  bool try_raw(size_t at, const std::string& text_before, char sign) {
    size_t i = at + 2;
    if (i < src.size() && (src[i] == '-' || src[i] == '+')) ++i;
    while (i < src.size() && is_ws(src[i])) ++i;
    if (src.compare(i, 3, "raw") != 0) return false;
    i += 3;
    while (i < src.size() && is_ws(src[i])) ++i;
    size_t body;
    if (src.compare(i, 3, "-%}") == 0) {
      body = i + 3;
      while (body < src.size() && is_ws(src[body])) ++body;
    } else if (src.compare(i, 2, "%}") == 0) {
      body = i + 2;
    } else {
      return false;
    }
    emit_text(strip_before(text_before, sign, false));
    finish_match(pos, body);
    // Find {%[-+]? endraw ... %}
    size_t search = body;
    while (true) {
      size_t open = src.find("{%", search);
      if (open == std::string::npos) fail("missing end of raw directive");
      size_t j = open + 2;
      char esign = 0;
      if (j < src.size() && (src[j] == '-' || src[j] == '+')) esign = src[j++];
      while (j < src.size() && is_ws(src[j])) ++j;
      if (src.compare(j, 6, "endraw") != 0) { search = open + 2; continue; }
      j += 6;
      while (j < src.size() && is_ws(src[j])) ++j;
      size_t save = pos;
      pos = j;
      size_t n = match_end("%}", true);
      pos = save;
      if (n == 0) { search = open + 2; continue; }
      emit_text(strip_before(src.substr(body, open - body), esign, false));
      finish_match(body, j + n);
      return true;
    }
  }

  void run() {
    while (pos < src.size()) {
      // Earliest tag start.
      size_t at = src.find('{', pos);
      while (at != std::string::npos && at + 1 < src.size() && src[at + 1] != '{' && src[at + 1] != '%' &&
             src[at + 1] != '#')
        at = src.find('{', at + 1);
      if (at == std::string::npos || at + 1 >= src.size()) {
        emit_text(src.substr(pos));
        finish_match(pos, src.size());
        return;
      }
      char kind = src[at + 1];
      char sign = at + 2 < src.size() && (src[at + 2] == '-' || src[at + 2] == '+') ? src[at + 2] : 0;
      std::string text = src.substr(pos, at - pos);
      if (kind == '%' && try_raw(at, text, sign)) continue;
      emit_text(strip_before(std::move(text), sign, kind == '{'));
      size_t tag_end = at + 2 + (sign ? 1 : 0);
      finish_match(pos, tag_end);
      if (kind == '#') {
        // Comment: up to +#}, -#}\s*, or #}\n?
        size_t close = src.find("#}", pos);
        if (close == std::string::npos) fail("missing end of comment tag");
        size_t from = close;
        if (close > pos && (src[close - 1] == '-' || src[close - 1] == '+')) from = close - 1;
        size_t save = pos;
        pos = from;
        size_t n = match_end("#}", true);
        pos = save;
        finish_match(pos, from + n);
      } else if (kind == '%') {
        push(Tok::BlockBegin);
        lex_tag(true);
      } else {
        push(Tok::VarBegin);
        lex_tag(false);
      }
    }
  }
};

}  // namespace

std::vector<Token> lex(std::string_view source, const std::string& name) {
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      src += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src += source[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();  // keep_trailing_newline=False
  Lexer lx{std::move(src), name, {}};
  lx.run();
  lx.out.push_back(Token{Tok::Eof, lx.line, {}});
  return std::move(lx.out);
}

}  // namespace moe::chat::detail
