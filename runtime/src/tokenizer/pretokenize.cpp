// tokenizer/pretokenize.cpp — see pretokenize.h.
//
// Two kinds of passes:
//  * "loop" passes (the GPT-2 and Llama-3 style rule sets) walk a piece once and cut it, emitting
//    any character no alternative matches as a one-character word;
//  * "search" passes behave like a regex iterator: find the leftmost match at or after the current
//    position, emit the unmatched text before it as one word, then the match.
// Character classes follow the reference (llama.cpp) semantics: \s is White_Space; \p{L}, \p{N},
// \p{P}, \p{M}, \p{S} are General Category classes, except that a White_Space code point belongs
// to none of them, and ASCII '~' is not \p{S} in the search passes (the reference maps ASCII
// characters to fixed sets and leaves '~' out). Explicit code point ranges in a rule set compare
// code points, with non-ASCII White_Space code points reading as U+000B.
// Pure functions over their arguments: thread-safe.
#include "tokenizer/pretokenize.h"

#include <string>
#include <unordered_map>

#include "tokenizer/unicode.h"

namespace moe::tok {

namespace {

struct Text {
  const std::vector<uint32_t>& cp;
  std::vector<uint8_t> fl;   // category flags per code point
  std::vector<uint32_t> wcp; // code point with non-ASCII White_Space replaced by U+000B
  explicit Text(const std::vector<uint32_t>& c) : cp(c), fl(c.size()), wcp(c.size()) {
    for (size_t i = 0; i < c.size(); ++i) {
      fl[i] = cpt_flags(c[i]);
      wcp[i] = (c[i] > 0x7F && (fl[i] & kWs)) ? 0x0B : c[i];
    }
  }
};

// A view of one piece [b, e): out-of-piece positions read as "no character" (flags 0).
struct Piece {
  const Text& t;
  size_t b, e;
  static constexpr uint32_t kNone = 0xFFFFFFFF;
  uint32_t cp(size_t i) const { return i < e ? t.cp[i] : kNone; }
  uint32_t wcp(size_t i) const { return i < e ? t.wcp[i] : kNone; }
  uint8_t fl(size_t i) const { return i < e ? t.fl[i] : 0; }
  bool in(size_t i) const { return i < e; }
  bool ws(size_t i) const { return fl(i) & kWs; }
  bool L(size_t i) const { return fl(i) & kL; }
  bool N(size_t i) const { return fl(i) & kN; }
  bool P(size_t i) const { return fl(i) & kP; }
  bool M(size_t i) const { return fl(i) & kM; }
  bool S(size_t i) const { return (fl(i) & kS) && t.cp[i] != '~'; }  // search-pass \p{S}
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const { return in(i) && !(fl(i) & (kWs | kL | kN)); }
  bool nl(size_t i) const { return cp(i) == '\r' || cp(i) == '\n'; }
};

inline uint32_t ascii_lower(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// 's 't 're 've 'm 'll 'd at i (optionally any case): length or 0.
size_t contraction(const Piece& p, size_t i, bool any_case) {
  if (p.cp(i) != '\'' || !p.in(i + 1)) return 0;
  auto low = [&](size_t k) { return any_case ? ascii_lower(p.cp(k)) : p.cp(k); };
  uint32_t a = low(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (p.in(i + 2)) {
    uint32_t b = low(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  return 0;
}

// \s*[\r\n]+ | \s+(?!\S) | \s+ at i: length or 0.
size_t whitespace_tail(const Piece& p, size_t i) {
  size_t k = 0, last_nl = 0;
  while (p.ws(i + k)) {
    if (p.nl(i + k)) last_nl = k + 1;
    ++k;
  }
  if (last_nl) return last_nl;
  if (k > 1 && p.in(i + k)) return k - 1;
  return k;
}

using Lens = std::vector<size_t>;

// ---- loop passes ----

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void loop_gpt2(const Piece& p, Lens& out) {
  size_t pos = p.b;
  auto emit = [&](size_t end) { out.push_back(end - pos); pos = end; };
  while (pos < p.e) {
    if (size_t c = contraction(p, pos, false)) { emit(pos + c); continue; }
    const bool sp = p.cp(pos) == ' ';
    const size_t s = pos + (sp ? 1 : 0);  // first character after an optional leading space
    if (p.L(s)) { size_t k = s; while (p.L(k)) ++k; emit(k); continue; }
    if (p.N(s)) { size_t k = s; while (p.N(k)) ++k; emit(k); continue; }
    if (p.other(s)) { size_t k = s; while (p.other(k)) ++k; emit(k); continue; }
    size_t k = 0;
    while (p.ws(pos + k)) ++k;
    if (k > 1 && p.in(pos + k)) { emit(pos + k - 1); continue; }
    if (k > 0) { emit(pos + k); continue; }
    emit(pos + 1);
  }
}

// Llama-3 family: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}|
//                  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// max_digits 0 means unbounded; punct_newlines=false drops the [\r\n]* after punctuation.
void loop_llama3(const Piece& p, Lens& out, size_t max_digits, bool punct_newlines) {
  size_t pos = p.b;
  auto emit = [&](size_t end) { out.push_back(end - pos); pos = end; };
  while (pos < p.e) {
    if (size_t c = contraction(p, pos, true)) { emit(pos + c); continue; }
    if (!(p.nl(pos) || p.N(pos)) && (p.L(pos) || p.L(pos + 1))) {
      size_t k = pos + 1;
      while (p.L(k)) ++k;
      emit(k);
      continue;
    }
    if (p.N(pos)) {
      size_t k = pos;
      while (p.N(k) && (max_digits == 0 || k - pos < max_digits)) ++k;
      emit(k);
      continue;
    }
    const size_t s = pos + (p.cp(pos) == ' ' ? 1 : 0);
    if (p.other(s) || (s != pos && !p.in(s))) {
      size_t k = s;
      while (p.other(k)) ++k;
      if (punct_newlines) while (p.nl(k)) ++k;
      emit(k);
      continue;
    }
    size_t w = whitespace_tail(p, pos);
    emit(pos + (w ? w : 1));
  }
}

// ---- search passes: match(p, i) returns the match length at i, 0 for none ----

template <class Match>
void search(const Piece& p, Lens& out, Match match) {
  size_t gap = p.b, pos = p.b;
  while (pos < p.e) {
    size_t m = match(p, pos);
    if (m == 0) { ++pos; continue; }
    if (pos > gap) out.push_back(pos - gap);
    out.push_back(m);
    pos += m;
    gap = pos;
  }
  if (gap < p.e) out.push_back(p.e - gap);
}

template <class Pred>
size_t run(const Piece& p, size_t i, Pred pred) {
  size_t k = i;
  while (p.in(k) && pred(k)) ++k;
  return k - i;
}

// \s?C+ where C is pred.
template <class Pred>
size_t opt_space_run(const Piece& p, size_t i, Pred pred) {
  if (p.ws(i) && p.in(i + 1) && pred(i + 1)) return 1 + run(p, i + 1, pred);
  return p.in(i) && pred(i) ? run(p, i, pred) : 0;
}

bool in_any(uint32_t c, std::initializer_list<std::pair<uint32_t, uint32_t>> r) {
  for (auto& [a, b] : r)
    if (c >= a && c <= b) return true;
  return false;
}

// [\p{P}\$\+<=>\^~\|]+
size_t m_punct_run(const Piece& p, size_t i) {
  auto c = [&](size_t k) {
    uint32_t x = p.cp(k);
    return p.P(k) || x == '$' || x == '+' || x == '<' || x == '=' || x == '>' || x == '^' || x == '~' ||
           x == '|';
  };
  return run(p, i, c);
}
size_t m_digit_run(const Piece& p, size_t i) { return run(p, i, [&](size_t k) { return p.N(k); }); }
size_t m_digit1(const Piece& p, size_t i) { return p.N(i) ? 1 : 0; }
size_t m_digit3(const Piece& p, size_t i) {  // \p{N}{1,3}
  size_t k = 0;
  while (k < 3 && p.N(i + k)) ++k;
  return k;
}
size_t m_ascii_ddd(const Piece& p, size_t i) {  // [0-9][0-9][0-9]
  for (size_t k = 0; k < 3; ++k)
    if (p.cp(i + k) < '0' || p.cp(i + k) > '9') return 0;
  return 3;
}
size_t m_newline1(const Piece& p, size_t i) { return p.nl(i) ? 1 : 0; }

bool cjk_hangul(uint32_t c) {  // [一-龥ࠀ-一가-퟿]
  return in_any(c, {{0x4E00, 0x9FA5}, {0x0800, 0x4E00}, {0xAC00, 0xD7FF}});
}
size_t m_cjk_hangul(const Piece& p, size_t i) { return run(p, i, [&](size_t k) { return cjk_hangul(p.wcp(k)); }); }

// DeepSeek-LLM.
size_t m_ds_letters(const Piece& p, size_t i) {
  return opt_space_run(p, i, [&](size_t k) {
    return in_ranges(p.wcp(k), kDeepseekLetterRanges, kDeepseekLetterRangesCount);
  });
}
size_t m_ds_punct(const Piece& p, size_t i) {  // \s?[!-/:-~！-／：-～‘-‟　-。]+
  return opt_space_run(p, i, [&](size_t k) {
    return in_any(p.wcp(k), {{0x21, 0x2F}, {0x3A, 0x7E}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E}, {0x2018, 0x201F},
                             {0x3000, 0x3002}});
  });
}
size_t m_trailing_ws(const Piece& p, size_t i) {  // \s+$
  if (!p.ws(i)) return 0;
  size_t k = i;
  while (p.ws(k)) ++k;
  return k == p.e ? k - i : 0;
}

// DeepSeek-V3.
size_t m_ds3_kana(const Piece& p, size_t i) {  // [一-龥぀-ゟ゠-ヿ]+
  return run(p, i, [&](size_t k) { return in_any(p.wcp(k), {{0x4E00, 0x9FA5}, {0x3040, 0x309F}, {0x30A0, 0x30FF}}); });
}
size_t m_ds3_main(const Piece& p, size_t i) {
  auto ascii_alpha = [&](size_t k) {
    uint32_t c = p.cp(k);
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
  };
  // [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+
  uint32_t c = p.cp(i);
  if (in_any(c, {{0x21, 0x2F}, {0x3A, 0x40}, {0x5B, 0x60}, {0x7B, 0x7E}}) && ascii_alpha(i + 1))
    return 1 + run(p, i + 1, ascii_alpha);
  // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
  auto lm = [&](size_t k) { return p.L(k) || p.M(k); };
  bool x = p.in(i) && !p.nl(i) && !p.L(i) && !p.P(i) && !p.S(i);
  if (x && p.in(i + 1) && lm(i + 1)) return 1 + run(p, i + 1, lm);
  if (p.in(i) && lm(i)) return run(p, i, lm);
  //  ?[\p{P}\p{S}]+[\r\n]*
  auto ps = [&](size_t k) { return p.P(k) || p.S(k); };
  size_t s = (c == ' ' && p.in(i + 1) && ps(i + 1)) ? i + 1 : i;
  if (p.in(s) && ps(s)) {
    size_t k = s + run(p, s, ps);
    while (p.nl(k)) ++k;
    return k - i;
  }
  return whitespace_tail(p, i);
}

// DeepSeek-Coder.
size_t m_dsc_letters(const Piece& p, size_t i) { return opt_space_run(p, i, [&](size_t k) { return p.L(k); }); }
size_t m_dsc_punct(const Piece& p, size_t i) { return opt_space_run(p, i, [&](size_t k) { return p.P(k); }); }

// GPT-4o (o200k) and Tekken:
// [^\r\n\p{L}\p{N}]?U*W+C?|[^\r\n\p{L}\p{N}]?U+W*C?|\p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n/]*|
// \s*[\r\n]+|\s+(?!\S)|\s+   with U = letter but not a-z, W = letter but not A-Z, C = contraction.
size_t m_o200k(const Piece& p, size_t i, bool contractions, size_t max_digits) {
  auto U = [&](size_t k) { uint32_t c = p.cp(k); return p.L(k) && !(c >= 'a' && c <= 'z'); };
  auto W = [&](size_t k) { uint32_t c = p.cp(k); return p.L(k) && !(c >= 'A' && c <= 'Z'); };
  auto tail = [&](size_t end) { return contractions ? end + contraction(p, end, true) : end; };
  const bool x = p.in(i) && !p.nl(i) && !p.L(i) && !p.N(i);
  auto alt1 = [&](size_t s) -> size_t {  // U*W+ with backtracking of U*
    size_t u = s;
    while (U(u)) ++u;
    if (W(u)) {
      size_t w = u;
      while (W(w)) ++w;
      return tail(w);
    }
    for (size_t j = u; j > s; --j)
      if (W(j - 1)) return tail(j);
    return 0;
  };
  auto alt2 = [&](size_t s) -> size_t {  // U+W*
    if (!U(s)) return 0;
    size_t u = s;
    while (U(u)) ++u;
    while (W(u)) ++u;
    return tail(u);
  };
  for (int a = 0; a < 2; ++a) {
    if (x && p.in(i + 1))
      if (size_t end = a == 0 ? alt1(i + 1) : alt2(i + 1)) return end - i;
    if (size_t end = a == 0 ? alt1(i) : alt2(i)) return end - i;
  }
  if (p.N(i)) {
    size_t k = i;
    while (p.N(k) && (max_digits == 0 || k - i < max_digits)) ++k;
    return k - i;
  }
  size_t s = (p.cp(i) == ' ' && p.other(i + 1)) ? i + 1 : i;
  if (p.other(s)) {
    size_t k = s;
    while (p.other(k)) ++k;
    while (p.nl(k) || p.cp(k) == '/') ++k;
    return k - i;
  }
  return whitespace_tail(p, i);
}

// Poro / Bloom:  ?[^(\s|.,!?…。，、।۔،)]+
size_t m_poro(const Piece& p, size_t i) {
  auto q = [&](size_t k) {
    if (!p.in(k) || p.ws(k)) return false;
    switch (p.cp(k)) {
      case '(': case ')': case '|': case '.': case ',': case '!': case '?': case 0x2026: case 0x3002:
      case 0xFF0C: case 0x3001: case 0x0964: case 0x06D4: case 0x060C:
        return false;
      default:
        return true;
    }
  };
  if (p.cp(i) == ' ' && q(i + 1)) return 1 + run(p, i + 1, q);
  return q(i) ? run(p, i, q) : 0;
}

size_t m_lines(const Piece& p, size_t i) {  // [^\n]+|[\n]+
  bool n = p.cp(i) == '\n';
  return run(p, i, [&](size_t k) { return (p.cp(k) == '\n') == n; });
}

// One pass over every piece of `in`.
template <class Fn>
Lens pass(const Text& t, const Lens& in, Fn fn) {
  Lens out;
  out.reserve(in.size() * 2);
  size_t b = 0;
  for (size_t len : in) {
    Piece p{t, b, b + len};
    fn(p, out);
    b += len;
  }
  return out;
}

template <size_t (*M)(const Piece&, size_t)>
Lens spass(const Text& t, const Lens& in) {
  return pass(t, in, [](const Piece& p, Lens& out) { search(p, out, M); });
}

}  // namespace

std::vector<size_t> pre_split(PreKind kind, const std::vector<uint32_t>& cpts) {
  if (cpts.empty()) return {};
  Text t(cpts);
  Lens v{cpts.size()};
  auto gpt2 = [&](const Lens& in) { return pass(t, in, [](const Piece& p, Lens& o) { loop_gpt2(p, o); }); };
  auto llama3 = [&](const Lens& in, size_t max_digits, bool nl) {
    return pass(t, in, [&](const Piece& p, Lens& o) { loop_llama3(p, o, max_digits, nl); });
  };
  auto o200k = [&](const Lens& in, bool contr, size_t max_digits) {
    return pass(t, in, [&](const Piece& p, Lens& o) {
      search(p, o, [&](const Piece& q, size_t i) { return m_o200k(q, i, contr, max_digits); });
    });
  };
  switch (kind) {
    case PreKind::Default:
      v = spass<m_punct_run>(t, v);
      v = gpt2(v);
      v = spass<m_digit_run>(t, v);
      v = spass<m_ascii_ddd>(t, v);
      break;
    case PreKind::Gpt2: v = gpt2(v); break;
    case PreKind::Llama3: v = llama3(v, 3, true); break;
    case PreKind::Qwen2: v = llama3(v, 1, true); break;
    case PreKind::SeedCoder: v = llama3(v, 1, false); break;
    case PreKind::MiniCpm5:
      v = spass<m_digit3>(t, v);
      v = llama3(v, 0, true);
      break;
    case PreKind::Laguna:
      v = spass<m_lines>(t, v);
      v = llama3(v, 1, true);
      break;
    case PreKind::DeepseekLlm:
      v = spass<m_newline1>(t, v);
      v = spass<m_ds_letters>(t, v);
      v = spass<m_ds_punct>(t, v);
      v = spass<m_trailing_ws>(t, v);
      v = spass<m_cjk_hangul>(t, v);
      v = spass<m_digit_run>(t, v);
      break;
    case PreKind::Deepseek3:
      v = spass<m_digit3>(t, v);
      v = spass<m_ds3_kana>(t, v);
      v = spass<m_ds3_main>(t, v);
      break;
    case PreKind::DeepseekCoder:
      v = spass<m_newline1>(t, v);
      v = spass<m_dsc_letters>(t, v);
      v = spass<m_dsc_punct>(t, v);
      v = spass<m_cjk_hangul>(t, v);
      v = spass<m_digit1>(t, v);
      break;
    case PreKind::Falcon:
      v = spass<m_punct_run>(t, v);
      v = gpt2(v);
      v = spass<m_ascii_ddd>(t, v);
      break;
    case PreKind::Starcoder:
      v = spass<m_digit1>(t, v);
      v = gpt2(v);
      break;
    case PreKind::Gpt4o: v = o200k(v, true, 3); break;
    case PreKind::Tekken: v = o200k(v, false, 1); break;
    case PreKind::Poro: v = spass<m_poro>(t, v); break;
    case PreKind::Viking:
      v = spass<m_poro>(t, v);
      v = spass<m_digit1>(t, v);
      break;
  }
  return v;
}

bool lookup_pre(std::string_view name, PreInfo& out) {
  struct E {
    PreKind kind;
    bool clean, ignore_merges, add_bos, no_bos;
  };
  // Names with identical rules share a kind; flags as the reference loader sets them.
  static const std::unordered_map<std::string_view, E> kNames = {
      {"", {PreKind::Default, true, false, false, false}},
      {"default", {PreKind::Default, true, false, false, false}},
      // GPT-2 rules
      {"gpt-2", {PreKind::Gpt2, true, false, false, false}},
      {"gpt2", {PreKind::Gpt2, true, false, false, false}},
      {"phi-2", {PreKind::Gpt2, true, false, false, false}},
      {"jina-es", {PreKind::Gpt2, true, false, false, false}},
      {"jina-de", {PreKind::Gpt2, true, false, false, false}},
      {"jina-v2-es", {PreKind::Gpt2, true, false, false, false}},
      {"jina-v2-de", {PreKind::Gpt2, true, false, false, false}},
      {"gigachat", {PreKind::Gpt2, true, false, false, false}},
      {"a.x-4.0", {PreKind::Gpt2, true, false, false, false}},
      {"mellum", {PreKind::Gpt2, true, false, false, false}},
      {"modern-bert", {PreKind::Gpt2, true, false, false, false}},
      {"exaone4", {PreKind::Gpt2, true, false, false, false}},
      {"mpt", {PreKind::Gpt2, true, false, false, false}},
      {"olmo", {PreKind::Gpt2, true, false, false, false}},
      {"jais", {PreKind::Gpt2, true, false, false, false}},
      {"trillion", {PreKind::Gpt2, false, false, false, false}},
      {"granite-docling", {PreKind::Gpt2, false, false, false, false}},
      // Llama-3 rules
      {"llama3", {PreKind::Llama3, true, true, true, false}},
      {"llama-v3", {PreKind::Llama3, true, true, true, false}},
      {"llama-bpe", {PreKind::Llama3, true, true, true, false}},
      {"falcon3", {PreKind::Llama3, true, true, true, false}},
      {"falcon-h1", {PreKind::Llama3, true, true, true, false}},
      {"pixtral", {PreKind::Llama3, true, true, true, false}},
      {"midm-2.0", {PreKind::Llama3, true, true, true, false}},
      {"lfm2", {PreKind::Llama3, true, true, true, false}},
      {"dbrx", {PreKind::Llama3, true, false, false, false}},
      {"smaug-bpe", {PreKind::Llama3, true, false, false, false}},
      {"glm4", {PreKind::Llama3, true, false, false, true}},
      {"chatglm-bpe", {PreKind::Llama3, true, false, false, true}},
      // Qwen2 rules
      {"qwen2", {PreKind::Qwen2, false, false, false, false}},
      {"deepseek-r1-qwen", {PreKind::Qwen2, false, false, false, false}},
      {"kormo", {PreKind::Qwen2, false, false, false, false}},
      {"f2llmv2", {PreKind::Qwen2, false, false, false, false}},
      {"megrez", {PreKind::Qwen2, true, false, false, false}},
      {"stablelm2", {PreKind::Qwen2, true, false, false, false}},
      {"hunyuan", {PreKind::Qwen2, false, false, false, false}},
      {"solar-open", {PreKind::Qwen2, false, false, false, false}},
      {"grok-2", {PreKind::Qwen2, false, false, false, false}},
      {"bailingmoe", {PreKind::Qwen2, false, false, false, false}},
      {"bailingmoe2", {PreKind::Qwen2, false, false, false, false}},
      {"llada-moe", {PreKind::Qwen2, false, false, false, false}},
      {"seed-coder", {PreKind::SeedCoder, false, false, false, false}},
      {"minicpm5", {PreKind::MiniCpm5, true, true, false, false}},
      {"laguna", {PreKind::Laguna, false, false, false, false}},
      // DeepSeek
      {"deepseek-llm", {PreKind::DeepseekLlm, false, false, false, false}},
      {"deepseek-v3", {PreKind::Deepseek3, false, false, false, false}},
      {"hunyuan-dense", {PreKind::Deepseek3, false, false, false, false}},
      {"hy_v4", {PreKind::Deepseek3, false, false, false, false}},
      {"joyai-llm", {PreKind::Deepseek3, false, false, false, false}},
      {"deepseek-coder", {PreKind::DeepseekCoder, false, false, false, false}},
      // others
      {"falcon", {PreKind::Falcon, true, false, false, false}},
      {"starcoder", {PreKind::Starcoder, true, false, false, false}},
      {"refact", {PreKind::Starcoder, true, false, false, false}},
      {"command-r", {PreKind::Starcoder, false, false, false, false}},
      {"smollm", {PreKind::Starcoder, false, false, false, false}},
      {"codeshell", {PreKind::Starcoder, true, false, false, false}},
      {"exaone", {PreKind::Starcoder, true, false, false, false}},
      {"minerva-7b", {PreKind::Starcoder, true, false, false, false}},
      {"mellum2", {PreKind::Starcoder, true, false, false, false}},
      {"gpt-4o", {PreKind::Gpt4o, false, false, false, false}},
      {"o200k", {PreKind::Gpt4o, false, false, false, false}},
      {"llama4", {PreKind::Gpt4o, false, false, false, false}},
      {"kanana2", {PreKind::Gpt4o, false, false, false, false}},
      {"minimax-m2", {PreKind::Gpt4o, false, false, false, false}},
      {"tekken", {PreKind::Tekken, false, true, true, false}},
      {"poro-chat", {PreKind::Poro, false, false, false, false}},
      {"bloom", {PreKind::Poro, true, false, false, false}},
      {"gpt3-finnish", {PreKind::Poro, true, false, false, false}},
      {"viking", {PreKind::Viking, false, false, false, false}},
  };
  auto it = kNames.find(name);
  if (it == kNames.end()) return false;
  out = PreInfo{it->second.kind, it->second.clean, it->second.ignore_merges, it->second.add_bos, it->second.no_bos};
  return true;
}

}  // namespace moe::tok
