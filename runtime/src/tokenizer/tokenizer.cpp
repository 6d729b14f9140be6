// tokenizer/tokenizer.cpp — moe::Tokenizer (see moe/tokenizer.h): loading and validating the
// GGUF vocabulary, special-token partitioning, the SentencePiece and byte-level BPE encoders, and
// the detokenizer. The encoders follow the published algorithms as llama.cpp applies them, so that
// token ids match its reference outputs exactly.
// Thread-safety: Tokenizer is immutable after from_gguf(); all const methods are safe to call
// concurrently. StreamingDecoder is not thread-safe.
#include "moe/tokenizer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "moe/error.h"
#include "moe/gguf.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace moe {

namespace {

// Token attributes (a bit set, as a token can be forced to control while keeping its type).
enum : uint16_t {
  kAttrNormal = 1 << 0,
  kAttrUnknown = 1 << 1,
  kAttrControl = 1 << 2,
  kAttrUserDefined = 1 << 3,
  kAttrUnused = 1 << 4,
  kAttrByte = 1 << 5,
  kAttrLstrip = 1 << 6,
  kAttrRstrip = 1 << 7,
};

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// Texts that llama.cpp treats as end-of-generation markers (and forces to control type).
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "[e~[",
};
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
    "_<EOT>", "[EOT]", "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "<end_of_utterance>",
};

bool is_space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0xNN>" -> NN, -1 when malformed.
int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  int hi = hex_digit(t[3]), lo = hex_digit(t[4]);
  if (hi < 0 || lo < 0) return -1;
  return hi * 16 + lo;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (;;) {
    size_t m = s.find(from, pos);
    if (m == std::string::npos) break;
    out.append(s, pos, m - pos);
    out.append(to);
    pos = m + from.size();
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

struct Fragment {
  TokenId token;      // kNoToken for raw text
  size_t off, len;    // raw text range
};

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::string model, pre;
  VocabFamily family = VocabFamily::SentencePiece;
  tok::PreInfo pre_info;

  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<TokenType> type;
  std::vector<uint16_t> attr;
  std::unordered_map<std::string, TokenId> to_id;
  std::unordered_map<uint64_t, int32_t> merge_rank;  // (left id << 32 | right id) -> rank
  std::vector<TokenId> special_cache;                  // control/user-defined/unknown, longest first
  std::vector<std::string> pieces;                     // token_to_piece(id, special = true)
  std::vector<uint8_t> eog;

  TokenId bos = kNoToken, eos = kNoToken, eot = kNoToken, eom = kNoToken, unk = kNoToken, pad = kNoToken;
  bool add_bos = false, add_eos = false, add_space_prefix = false, clean_spaces = false;
  bool ignore_merges = false;

  int32_t n() const { return static_cast<int32_t>(text.size()); }
  TokenId find(std::string_view t) const {
    auto it = to_id.find(std::string(t));
    return it == to_id.end() ? kNoToken : it->second;
  }

  void load(const gguf::GgufFile& f);
  std::string make_piece(TokenId id) const;
  void partition(std::string_view text, bool parse_special, std::vector<Fragment>& frags) const;
  void spm_encode(std::string_view text, std::vector<TokenId>& out) const;
  void bpe_encode(std::string_view text, std::vector<TokenId>& out) const;
  TokenId spm_byte_token(uint8_t b) const;
};

// ---------------------------------------------------------------------------------------------
// Loading

void Tokenizer::Impl::load(const gguf::GgufFile& f) {
  path = f.path();
#define corrupt(...) fail(ErrorCode::Corrupt, "{}: {}", path, fmt::format(__VA_ARGS__))

  auto m = f.get_string("tokenizer.ggml.model");
  if (!m) fail(ErrorCode::Unsupported, "{}: no tokenizer in this file (tokenizer.ggml.model is missing)", path);
  model = *m;
  if (model == "llama") {
    family = VocabFamily::SentencePiece;
  } else if (model == "gpt2") {
    family = VocabFamily::BytePairBpe;
  } else {
    fail(ErrorCode::Unsupported, "{}: tokenizer model '{}' is not supported (supported: llama, gpt2)", path, model);
  }
  pre = f.get_string("tokenizer.ggml.pre").value_or("");

  // Tokens.
  const gguf::Value* tv = f.find("tokenizer.ggml.tokens");
  if (!tv) corrupt("tokenizer.ggml.tokens is missing");
  if (tv->type != gguf::ValueType::ARRAY || tv->elem_type != gguf::ValueType::STRING)
    corrupt("tokenizer.ggml.tokens must be an array of strings (found {} of {})", gguf::value_type_name(tv->type),
            gguf::value_type_name(tv->elem_type));
  const size_t nt = tv->arr.size();
  if (nt == 0) corrupt("tokenizer.ggml.tokens is empty");
  if (nt > static_cast<size_t>(INT32_MAX)) corrupt("tokenizer.ggml.tokens has {} entries (too many)", nt);
  text.resize(nt);
  to_id.reserve(nt * 2);
  for (size_t i = 0; i < nt; ++i) {
    std::string w(tv->arr.str(i));
    if (w.empty()) w = "[EMPTY_" + std::to_string(i) + "]";
    auto [it, fresh] = to_id.emplace(w, static_cast<TokenId>(i));
    if (!fresh) corrupt("duplicate token '{}' in tokenizer.ggml.tokens (ids {} and {})", w, it->second, i);
    text[i] = std::move(w);
  }

  // Scores: float32 (or int32, which some converters write), one per token.
  score.assign(nt, 0.0f);
  if (const gguf::Value* sv = f.find("tokenizer.ggml.scores")) {
    if (sv->type != gguf::ValueType::ARRAY ||
        (sv->elem_type != gguf::ValueType::FLOAT32 && sv->elem_type != gguf::ValueType::INT32))
      corrupt("tokenizer.ggml.scores must be an array of float32 (found {} of {})", gguf::value_type_name(sv->type),
              gguf::value_type_name(sv->elem_type));
    if (sv->arr.size() != nt)
      corrupt("tokenizer.ggml.scores has {} entries for {} tokens", sv->arr.size(), nt);
    for (size_t i = 0; i < nt; ++i) {
      double d = *sv->arr.as_double(i);  // f32 or i32 (checked above)
      if (std::isnan(d)) corrupt("tokenizer.ggml.scores[{}] is NaN", i);
      score[i] = static_cast<float>(d);
    }
  } else if (family == VocabFamily::SentencePiece) {
    corrupt("SentencePiece vocabulary without tokenizer.ggml.scores");
  }

  // Token types.
  type.assign(nt, TokenType::Normal);
  if (const gguf::Value* yv = f.find("tokenizer.ggml.token_type")) {
    if (yv->type != gguf::ValueType::ARRAY || !(yv->elem_type == gguf::ValueType::INT32 ||
                                               yv->elem_type == gguf::ValueType::UINT32 ||
                                               yv->elem_type == gguf::ValueType::INT8 ||
                                               yv->elem_type == gguf::ValueType::UINT8))
      corrupt("tokenizer.ggml.token_type must be an array of int32 (found {} of {})", gguf::value_type_name(yv->type),
              gguf::value_type_name(yv->elem_type));
    if (yv->arr.size() != nt)
      corrupt("tokenizer.ggml.token_type has {} entries for {} tokens", yv->arr.size(), nt);
    for (size_t i = 0; i < nt; ++i) {
      auto v = yv->arr.as_int(i);
      if (!v || *v < 0 || *v > 6) corrupt("tokenizer.ggml.token_type[{}] = {} is not a token type (0..6)", i, v.value_or(-1));
      type[i] = static_cast<TokenType>(*v);
    }
  }
  attr.assign(nt, 0);
  for (size_t i = 0; i < nt; ++i) {
    switch (type[i]) {
      case TokenType::Undefined: attr[i] = 0; break;
      case TokenType::Normal: attr[i] = kAttrNormal; break;
      case TokenType::Unknown: attr[i] = kAttrUnknown; break;
      case TokenType::Control: attr[i] = kAttrControl; break;
      case TokenType::UserDefined: attr[i] = kAttrUserDefined; break;
      case TokenType::Unused: attr[i] = kAttrUnused; break;
      case TokenType::Byte:
        attr[i] = kAttrByte;
        if (parse_byte_token(text[i]) < 0)
          corrupt("token {} '{}' has type byte but is not of the form <0xNN>", i, text[i]);
        break;
    }
  }

  // Family defaults, then the file's flags.
  if (family == VocabFamily::BytePairBpe) {
    if (!tok::lookup_pre(pre, pre_info))
      fail(ErrorCode::Unsupported, "{}: unknown pre-tokenizer '{}' (tokenizer.ggml.pre)", path, pre);
    clean_spaces = pre_info.clean_spaces;
    ignore_merges = pre_info.ignore_merges;
    add_bos = pre_info.add_bos;
    add_space_prefix = false;
  } else {
    add_space_prefix = true;
    add_bos = true;
    clean_spaces = false;
    if (nt > 0) unk = 0;
    if (nt > 1) bos = 1;
    if (nt > 2) eos = 2;
  }
  if (auto v = f.get_bool("tokenizer.ggml.add_space_prefix")) add_space_prefix = *v;

  // Merges.
  if (family == VocabFamily::BytePairBpe) {
    const gguf::Value* mv = f.find("tokenizer.ggml.merges");
    if (!mv) corrupt("byte-level BPE vocabulary without tokenizer.ggml.merges");
    if (mv->type != gguf::ValueType::ARRAY || mv->elem_type != gguf::ValueType::STRING)
      corrupt("tokenizer.ggml.merges must be an array of strings (found {} of {})", gguf::value_type_name(mv->type),
              gguf::value_type_name(mv->elem_type));
    merge_rank.reserve(mv->arr.size() * 2);
    for (size_t i = 0; i < mv->arr.size(); ++i) {
      std::string_view w = mv->arr.str(i);
      size_t sp = w.size() > 1 ? w.find(' ', 1) : std::string::npos;
      if (sp == std::string::npos || sp + 1 >= w.size())
        corrupt("tokenizer.ggml.merges[{}] = '{}' is not of the form 'LEFT RIGHT'", i, w);
      TokenId a = find(std::string_view(w).substr(0, sp)), b = find(std::string_view(w).substr(sp + 1));
      if (a == kNoToken || b == kNoToken)
        corrupt("tokenizer.ggml.merges[{}] = '{}' names a token that is not in the vocabulary", i, w);
      merge_rank.emplace((uint64_t(uint32_t(a)) << 32) | uint32_t(b), static_cast<int32_t>(i));
    }
  }

  // Special token ids: must be in range when present.
  auto special = [&](const char* key, TokenId& id) {
    auto v = f.get_uint(key);
    if (!v) return;
    if (*v >= nt) corrupt("{} = {} is out of range (vocabulary has {} tokens)", key, *v, nt);
    id = static_cast<TokenId>(*v);
  };
  TokenId sep = kNoToken, mask = kNoToken, fim[6] = {kNoToken, kNoToken, kNoToken, kNoToken, kNoToken, kNoToken};
  special("tokenizer.ggml.bos_token_id", bos);
  special("tokenizer.ggml.eos_token_id", eos);
  special("tokenizer.ggml.eot_token_id", eot);
  special("tokenizer.ggml.eom_token_id", eom);
  special("tokenizer.ggml.unknown_token_id", unk);
  special("tokenizer.ggml.seperator_token_id", sep);
  special("tokenizer.ggml.padding_token_id", pad);
  special("tokenizer.ggml.mask_token_id", mask);
  special("tokenizer.ggml.fim_pre_token_id", fim[0]);
  special("tokenizer.ggml.fim_suf_token_id", fim[1]);
  special("tokenizer.ggml.fim_mid_token_id", fim[2]);
  special("tokenizer.ggml.fim_pad_token_id", fim[3]);
  special("tokenizer.ggml.fim_rep_token_id", fim[4]);
  special("tokenizer.ggml.fim_sep_token_id", fim[5]);
  if (pre_info.no_bos) bos = kNoToken;
  if (auto v = f.get_bool("tokenizer.ggml.add_bos_token")) add_bos = *v;
  if (auto v = f.get_bool("tokenizer.ggml.add_eos_token")) add_eos = *v;
  if (add_bos && bos == kNoToken) corrupt("tokenizer.ggml.add_bos_token is true but there is no BOS token");
  if (add_eos && eos == kNoToken) corrupt("tokenizer.ggml.add_eos_token is true but there is no EOS token");

  // End-of-generation markers (by id and by well-known text); such tokens are control tokens.
  eog.assign(nt, 0);
  auto force_control = [&](TokenId id) { attr[id] |= kAttrControl; };
  if (eot == kNoToken) {
    for (std::string_view t : kEotTexts)
      if (TokenId id = find(t); id != kNoToken && (eot == kNoToken || id < eot)) eot = id;
    if (eot != kNoToken) force_control(eot);
  }
  if (eom == kNoToken) {
    eom = find("<|eom_id|>");
    if (eom != kNoToken) force_control(eom);
  }
  for (std::string_view t : kEogTexts)
    if (TokenId id = find(t); id != kNoToken) {
      eog[id] = 1;
      force_control(id);
    }
  for (TokenId id : {eos, eot, eom, fim[3], fim[4], fim[5]})
    if (id != kNoToken) eog[id] = 1;
  for (int32_t i = 0; i < n(); ++i)
    if ((attr[i] & kAttrControl) && text[i].find("unused") != std::string::npos) attr[i] |= kAttrUnused;

  // Tokens matched in raw text before pre-tokenization, longest first (ties by id: deterministic).
  for (int32_t i = 0; i < n(); ++i)
    if (attr[i] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) special_cache.push_back(i);
  std::stable_sort(special_cache.begin(), special_cache.end(),
                   [&](TokenId a, TokenId b) { return text[a].size() > text[b].size(); });

  // Phi-3 strips the whitespace that follows its special tokens (a per-model rule, keyed by
  // general.name as in the reference).
  std::string name = f.get_string("general.name").value_or("");
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
    for (TokenId id : special_cache) attr[id] |= kAttrRstrip;
    if (TokenId id = find("</s>"); id != kNoToken) attr[id] |= kAttrRstrip;
    for (std::string_view t : {"<unk>", "<s>", "<|endoftext|>"})
      if (TokenId id = find(t); id != kNoToken) attr[id] &= ~kAttrRstrip;
  }

  pieces.resize(nt);
  for (int32_t i = 0; i < n(); ++i) pieces[i] = make_piece(i);
#undef corrupt
}

std::string Tokenizer::Impl::make_piece(TokenId id) const {
  const uint16_t a = attr[id];
  const std::string& t = text[id];
  if (a & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return t;
  if (a & kAttrNormal) {
    if (family == VocabFamily::SentencePiece) {
      std::string r = t;
      replace_all(r, kSpaceMarker, " ");
      return r;
    }
    std::string r;
    for (uint32_t cp : tok::decode_utf8(t)) {
      int b = tok::cpt_to_byte(cp);
      if (b >= 0) r.push_back(static_cast<char>(b));
      else tok::append_utf8(r, cp);  // not byte-level encoded: keep the character
    }
    return r;
  }
  if (a & kAttrByte) return std::string(1, static_cast<char>(parse_byte_token(t)));
  return {};
}

// ---------------------------------------------------------------------------------------------
// Special tokens in raw text

void Tokenizer::Impl::partition(std::string_view raw, bool parse_special, std::vector<Fragment>& frags) const {
  frags.clear();
  if (raw.empty()) return;
  frags.push_back({kNoToken, 0, raw.size()});
  std::vector<Fragment> next;
  for (TokenId sid : special_cache) {
    const uint16_t a = attr[sid];
    if (!parse_special && (a & (kAttrControl | kAttrUnknown))) continue;
    const std::string& st = text[sid];
    next.clear();
    bool changed = false;
    for (const Fragment& fr : frags) {
      if (fr.token != kNoToken) { next.push_back(fr); continue; }
      size_t cur = fr.off;
      const size_t end = fr.off + fr.len;
      for (;;) {
        size_t m = raw.substr(0, end).find(st, cur);
        if (m == std::string_view::npos) break;
        changed = true;
        size_t left_len = m - cur;
        if (a & kAttrLstrip)
          while (left_len > 0 && is_space_byte(raw[cur + left_len - 1])) --left_len;
        if (left_len > 0) next.push_back({kNoToken, cur, left_len});
        next.push_back({sid, 0, 0});
        cur = m + st.size();
        if (a & kAttrRstrip)
          while (cur < end && is_space_byte(raw[cur])) ++cur;
      }
      if (cur < end) next.push_back({kNoToken, cur, end - cur});
    }
    if (changed) frags.swap(next);
  }
}

// ---------------------------------------------------------------------------------------------
// SentencePiece

TokenId Tokenizer::Impl::spm_byte_token(uint8_t b) const {
  static const char* hex = "0123456789ABCDEF";
  const char buf[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
  if (TokenId id = find(std::string_view(buf, 6)); id != kNoToken) return id;
  if (TokenId id = find(std::string_view(reinterpret_cast<const char*>(&b), 1)); id != kNoToken) return id;
  if (unk != kNoToken) return unk;
  fail(ErrorCode::Unsupported, "{}: vocabulary has no byte token for 0x{:02X} and no unknown token", path, b);
}

void Tokenizer::Impl::spm_encode(std::string_view s, std::vector<TokenId>& out) const {
  struct Sym {
    int prev, next;
    size_t off, n;
  };
  struct Bigram {
    int left, right;
    float score;
    size_t size;
  };
  // Highest score first; among equals, the leftmost.
  auto worse = [](const Bigram& l, const Bigram& r) {
    return l.score < r.score || (l.score == r.score && l.left > r.left);
  };
  std::vector<Sym> sym;
  for (size_t off = 0; off < s.size();) {
    size_t len = std::min(tok::utf8_len(static_cast<uint8_t>(s[off])), s.size() - off);
    int idx = static_cast<int>(sym.size());
    sym.push_back({idx - 1, off + len == s.size() ? -1 : idx + 1, off, len});
    off += len;
  }
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> q(worse);
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    std::string_view t = s.substr(sym[l].off, sym[l].n + sym[r].n);
    TokenId id = find(t);
    if (id == kNoToken) return;
    q.push({l, r, score[id], t.size()});
  };
  for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);
  while (!q.empty()) {
    Bigram b = q.top();
    q.pop();
    Sym& L = sym[b.left];
    Sym& R = sym[b.right];
    if (L.n == 0 || R.n == 0 || L.n + R.n != b.size) continue;  // stale
    L.n += R.n;
    R.n = 0;
    L.next = R.next;
    if (R.next >= 0) sym[R.next].prev = b.left;
    try_add(L.prev, b.left);
    try_add(b.left, L.next);
  }
  for (int i = sym.empty() ? -1 : 0; i != -1; i = sym[i].next) {
    std::string_view t = s.substr(sym[i].off, sym[i].n);
    if (TokenId id = find(t); id != kNoToken) {
      out.push_back(id);
    } else {
      for (char c : t) out.push_back(spm_byte_token(static_cast<uint8_t>(c)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Byte-level BPE

void Tokenizer::Impl::bpe_encode(std::string_view s, std::vector<TokenId>& out) const {
  const std::vector<uint32_t> cpts = tok::decode_utf8(s);
  const std::vector<size_t> words = tok::pre_split(pre_info.kind, cpts);
  struct Sym {
    int prev, next;
    size_t off, n;
    TokenId id;
  };
  struct Bigram {
    int left, right;
    int32_t rank;
    size_t ln, rn;
  };
  // Lowest rank first; among equals, the leftmost.
  auto worse = [](const Bigram& l, const Bigram& r) { return l.rank > r.rank || (l.rank == r.rank && l.left > r.left); };
  std::string w;
  std::vector<Sym> sym;
  size_t start = 0;
  for (size_t wl : words) {
    // Byte-level encoding of the word: each UTF-8 byte becomes one printable code point.
    w.clear();
    std::string utf8;
    for (size_t i = start; i < start + wl; ++i) tok::append_utf8(utf8, cpts[i]);
    for (char c : utf8) tok::append_utf8(w, tok::byte_to_cpt(static_cast<uint8_t>(c)));
    start += wl;

    sym.clear();
    if (ignore_merges) {
      if (TokenId id = find(w); id != kNoToken) { out.push_back(id); continue; }
    }
    for (size_t off = 0; off < w.size();) {
      size_t len = std::min(tok::utf8_len(static_cast<uint8_t>(w[off])), w.size() - off);
      int idx = static_cast<int>(sym.size());
      sym.push_back({idx - 1, off + len == w.size() ? -1 : idx + 1, off, len, find(std::string_view(w).substr(off, len))});
      off += len;
    }
    std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> q(worse);
    auto try_add = [&](int l, int r) {
      if (l < 0 || r < 0 || sym[l].id == kNoToken || sym[r].id == kNoToken) return;
      auto it = merge_rank.find((uint64_t(uint32_t(sym[l].id)) << 32) | uint32_t(sym[r].id));
      if (it == merge_rank.end()) return;
      q.push({l, r, it->second, sym[l].n, sym[r].n});
    };
    for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);
    while (!q.empty()) {
      Bigram b = q.top();
      q.pop();
      Sym& L = sym[b.left];
      Sym& R = sym[b.right];
      if (L.n == 0 || R.n == 0 || L.n != b.ln || R.n != b.rn) continue;  // stale
      L.n += R.n;
      R.n = 0;
      L.id = find(std::string_view(w).substr(L.off, L.n));
      L.next = R.next;
      if (R.next >= 0) sym[R.next].prev = b.left;
      try_add(L.prev, b.left);
      try_add(b.left, L.next);
    }
    for (int i = sym.empty() ? -1 : 0; i != -1; i = sym[i].next) {
      if (sym[i].id != kNoToken) {
        out.push_back(sym[i].id);
        continue;
      }
      // Not a token: each raw byte that happens to be a token, the rest dropped (reference behaviour).
      for (size_t k = 0; k < sym[i].n; ++k)
        if (TokenId id = find(std::string_view(w).substr(sym[i].off + k, 1)); id != kNoToken) out.push_back(id);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Public API

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::GgufFile& f) {
  auto impl = std::make_unique<Impl>();
  impl->load(f);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::unique_ptr<Tokenizer> Tokenizer::open(const std::string& path) {
  auto f = gguf::GgufFile::open(path);
  return from_gguf(*f);
}

std::vector<TokenId> Tokenizer::tokenize(std::string_view text, bool add_special, bool parse_special) const {
  const Impl& I = *impl_;
  std::vector<Fragment> frags;
  I.partition(text, parse_special, frags);
  std::vector<TokenId> out;
  if (add_special && I.add_bos) out.push_back(I.bos);
  if (I.family == VocabFamily::SentencePiece) {
    bool prev_special = true;  // the first text fragment gets the space prefix
    std::string buf;
    for (const Fragment& fr : frags) {
      if (fr.token != kNoToken) {
        out.push_back(fr.token);
        prev_special = true;
        continue;
      }
      buf.clear();
      if (I.add_space_prefix && prev_special) buf.push_back(' ');
      buf.append(text.substr(fr.off, fr.len));
      replace_all(buf, " ", kSpaceMarker);
      I.spm_encode(buf, out);
      prev_special = false;
    }
  } else {
    for (const Fragment& fr : frags) {
      if (fr.token != kNoToken) out.push_back(fr.token);
      else I.bpe_encode(text.substr(fr.off, fr.len), out);
    }
  }
  if (add_special && I.add_eos) out.push_back(I.eos);
  return out;
}

std::string Tokenizer::token_to_piece(TokenId id, bool special) const {
  MOE_ASSERT(id >= 0 && id < impl_->n(), "token id out of range");
  if (!special && (impl_->attr[id] & (kAttrUnknown | kAttrControl))) return {};
  return impl_->pieces[id];
}

std::string Tokenizer::detokenize(std::span<const TokenId> ids, bool remove_special, bool unparse_special) const {
  const Impl& I = *impl_;
  for (TokenId id : ids)
    if (id < 0 || id >= I.n())
      fail(ErrorCode::InvalidArgument, "{}: token id {} out of range (vocabulary has {} tokens)", I.path, id, I.n());
  bool strip_space = I.add_space_prefix;
  if (remove_special && I.add_bos && !ids.empty() && ids.front() == I.bos) {
    strip_space = false;
    ids = ids.subspan(1);
  }
  if (remove_special && I.add_eos && !ids.empty() && ids.back() == I.eos) ids = ids.first(ids.size() - 1);
  std::string s;
  for (TokenId id : ids) {
    const std::string piece = token_to_piece(id, unparse_special);
    std::string_view p = piece;
    if (strip_space && !p.empty() && p.front() == ' ') p.remove_prefix(1);
    strip_space = false;
    s.append(p);
  }
  if (!I.clean_spaces || s.empty()) return s;
  // Clean-up passes of the reference detokenizer (HF's clean_up_tokenization_spaces).
  std::string a;
  a.push_back(s[0]);
  for (size_t i = 1; i < s.size(); ++i) {  // " ?", " !", " .", " ,"
    char x = s[i];
    if (s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) a.pop_back();
    a.push_back(x);
  }
  std::string b;
  b.push_back(a[0]);
  for (size_t i = 1; i < a.size(); ++i) {  // " ' " -> "'"
    char x = a[i];
    if (x == '\'' && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
      b.pop_back();
      b.push_back(x);
      ++i;  // drop the following space
      continue;
    }
    b.push_back(x);
  }
  std::string c;
  c.push_back(b[0]);
  for (size_t i = 1; i < b.size(); ++i) {  // " 's", " 'm", " 're", " 've"
    char x = b[i];
    if (b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
      char x1 = b[i + 1];
      if (x1 == 's' || x1 == 'm') c.pop_back();
      else if (i + 2 < b.size() && ((x1 == 'r' && b[i + 2] == 'e') || (x1 == 'v' && b[i + 2] == 'e'))) c.pop_back();
    }
    c.push_back(x);
  }
  return c;
}

int32_t Tokenizer::n_vocab() const noexcept { return impl_->n(); }
VocabFamily Tokenizer::family() const noexcept { return impl_->family; }
const std::string& Tokenizer::model_name() const noexcept { return impl_->model; }
const std::string& Tokenizer::pre_name() const noexcept { return impl_->pre; }
const std::string& Tokenizer::token_text(TokenId id) const {
  MOE_ASSERT(id >= 0 && id < impl_->n(), "token id out of range");
  return impl_->text[id];
}
TokenType Tokenizer::token_type(TokenId id) const {
  MOE_ASSERT(id >= 0 && id < impl_->n(), "token id out of range");
  return impl_->type[id];
}
float Tokenizer::token_score(TokenId id) const {
  MOE_ASSERT(id >= 0 && id < impl_->n(), "token id out of range");
  return impl_->score[id];
}
bool Tokenizer::is_control(TokenId id) const {
  MOE_ASSERT(id >= 0 && id < impl_->n(), "token id out of range");
  return impl_->attr[id] & (kAttrControl | kAttrUnknown);
}
bool Tokenizer::is_eog(TokenId id) const { return id >= 0 && id < impl_->n() && impl_->eog[id]; }
TokenId Tokenizer::bos() const noexcept { return impl_->bos; }
TokenId Tokenizer::eos() const noexcept { return impl_->eos; }
TokenId Tokenizer::eot() const noexcept { return impl_->eot; }
TokenId Tokenizer::unk() const noexcept { return impl_->unk; }
TokenId Tokenizer::pad() const noexcept { return impl_->pad; }
bool Tokenizer::add_bos() const noexcept { return impl_->add_bos; }
bool Tokenizer::add_eos() const noexcept { return impl_->add_eos; }
bool Tokenizer::add_space_prefix() const noexcept { return impl_->add_space_prefix; }
bool Tokenizer::clean_spaces() const noexcept { return impl_->clean_spaces; }
TokenId Tokenizer::find_token(std::string_view t) const { return impl_->find(t); }

// ---------------------------------------------------------------------------------------------
// UTF-8 validation and streaming

namespace {
// At s[i]: length of a complete valid character; 0 when the bytes so far are a valid but
// incomplete prefix running to the end of s; -1 when s[i] starts no valid character.
int utf8_char_at(std::string_view s, size_t i) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  uint8_t b = p[i];
  if (b < 0x80) return 1;
  int len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) len = 2;
  else if (b == 0xE0) { len = 3; lo = 0xA0; }
  else if (b >= 0xE1 && b <= 0xEC) len = 3;
  else if (b == 0xED) { len = 3; hi = 0x9F; }
  else if (b >= 0xEE && b <= 0xEF) len = 3;
  else if (b == 0xF0) { len = 4; lo = 0x90; }
  else if (b >= 0xF1 && b <= 0xF3) len = 4;
  else if (b == 0xF4) { len = 4; hi = 0x8F; }
  else return -1;
  for (int k = 1; k < len; ++k) {
    if (i + k >= n) return 0;
    uint8_t c = p[i + k];
    if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) return -1;
  }
  return len;
}
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
}  // namespace

size_t utf8_valid_prefix(std::string_view s) noexcept {
  size_t i = 0;
  while (i < s.size()) {
    int l = utf8_char_at(s, i);
    if (l <= 0) break;
    i += static_cast<size_t>(l);
  }
  return i;
}

StreamingDecoder::StreamingDecoder(const Tokenizer& tok, Options opt) : tok_(tok), opt_(opt) {}

std::string StreamingDecoder::push(TokenId id) {
  std::string piece = tok_.token_to_piece(id, opt_.special);
  std::string_view p = piece;
  if (first_ && opt_.strip_leading_space && !p.empty() && p.front() == ' ') p.remove_prefix(1);
  first_ = false;
  pending_.append(p);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    int l = utf8_char_at(pending_, i);
    if (l == 0) break;  // wait for the rest of this character
    if (l < 0) {
      out.append(kReplacement);
      i += 1;
    } else {
      out.append(pending_, i, static_cast<size_t>(l));
      i += static_cast<size_t>(l);
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamingDecoder::flush() {
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    int l = utf8_char_at(pending_, i);
    if (l > 0) {
      out.append(pending_, i, static_cast<size_t>(l));
      i += static_cast<size_t>(l);
    } else {
      // An incomplete character: one U+FFFD for its lead byte and the continuation bytes present.
      out.append(kReplacement);
      size_t j = i + 1;
      while (j < pending_.size() && (static_cast<uint8_t>(pending_[j]) & 0xC0) == 0x80 && j - i < 4) ++j;
      i = l == 0 ? j : i + 1;
    }
  }
  pending_.clear();
  return out;
}

void StreamingDecoder::reset() {
  first_ = true;
  pending_.clear();
}

}  // namespace moe
