// cache/src/profile.cpp — usage profile reader / writer (format in moe/cache/profile.h): a small
// recursive-descent JSON reader that knows the profile's keys and skips any other value. Pure
// functions plus two std::fstream wrappers; no shared state.
#include "moe/cache/profile.h"

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

namespace moe::cache {

void UsageProfile::resize(uint32_t n_layer, uint32_t n_expert) {
  counts.resize(n_layer);
  for (auto& l : counts)
    if (l.size() < n_expert) l.resize(n_expert, 0);
}

void UsageProfile::add(ExpertKey k, uint64_t n) {
  if (k.layer >= counts.size()) counts.resize(size_t{k.layer} + 1);
  auto& l = counts[k.layer];
  if (k.expert >= l.size()) l.resize(size_t{k.expert} + 1, 0);
  l[k.expert] += n;
}

void UsageProfile::merge(const UsageProfile& o) {
  total_tokens += o.total_tokens;
  for (uint32_t l = 0; l < o.counts.size(); ++l)
    for (uint32_t e = 0; e < o.counts[l].size(); ++e)
      if (o.counts[l][e]) add(ExpertKey{l, e}, o.counts[l][e]);
  if (counts.size() < o.counts.size()) counts.resize(o.counts.size());
}

namespace {

class Reader {
 public:
  Reader(std::string_view text, std::string_view source) : t_(text), src_(source) {}

  CacheStatus run(UsageProfile* out) {
    *out = UsageProfile{};
    bool have_pop = false, have_tokens = false;
    ws();
    if (!eat('{')) return err("expected '{' at the start of a usage profile");
    ws();
    if (!eat('}')) {
      for (;;) {
        ws();
        std::string key;
        if (!string(&key)) return err_;
        ws();
        if (!eat(':')) return err("expected ':' after key \"" + key + "\"");
        ws();
        if (key == "expert_popularity") {
          if (have_pop) return err("duplicate key \"expert_popularity\"");
          have_pop = true;
          if (!popularity(out)) return err_;
        } else if (key == "total_tokens" || key == "total_input_tokens") {
          if (have_tokens) return err("duplicate token count (\"total_tokens\" / \"total_input_tokens\")");
          have_tokens = true;
          if (!count(&out->total_tokens, key.c_str())) return err_;
        } else if (key == "version") {
          uint64_t v = 0;
          if (!count(&v, "version")) return err_;
          if (v != 1) return err("unsupported usage profile version " + std::to_string(v) + " (this build reads 1)");
        } else if (key == "format") {
          std::string f;
          if (!string(&f)) return err_;
          if (f != "moe-usage-profile") return err("\"format\" is \"" + f + "\", expected \"moe-usage-profile\"");
        } else {
          if (!skip_value(0)) return err_;
        }
        ws();
        if (eat(',')) continue;
        if (eat('}')) break;
        return err("expected ',' or '}' in the profile object");
      }
    }
    ws();
    if (p_ != t_.size()) return err("unexpected data after the profile object");
    if (!have_pop) return err("missing key \"expert_popularity\"");
    return CacheStatus::success();
  }

 private:
  bool popularity(UsageProfile* out) {
    if (!eat('[')) return fail("\"expert_popularity\" must be an array of per-layer arrays");
    ws();
    if (eat(']')) return true;
    for (;;) {
      ws();
      const size_t layer = out->counts.size();
      const std::string where = "expert_popularity[" + std::to_string(layer) + "]";
      if (!eat('[')) return fail(where + " must be an array of counts");
      out->counts.emplace_back();
      ws();
      if (!eat(']')) {
        for (;;) {
          ws();
          uint64_t c = 0;
          if (!count(&c, (where + "[" + std::to_string(out->counts.back().size()) + "]").c_str())) return false;
          out->counts.back().push_back(c);
          ws();
          if (eat(',')) continue;
          if (eat(']')) break;
          return fail("expected ',' or ']' in " + where);
        }
      }
      ws();
      if (eat(',')) continue;
      if (eat(']')) return true;
      return fail("expected ',' or ']' in expert_popularity");
    }
  }

  // A non-negative integer below 2^64.
  bool count(uint64_t* v, const char* what) {
    const size_t start = p_;
    if (p_ < t_.size() && t_[p_] == '-') return fail(std::string(what) + ": negative count");
    if (p_ >= t_.size() || t_[p_] < '0' || t_[p_] > '9')
      return fail(std::string(what) + ": expected a non-negative integer");
    uint64_t x = 0;
    while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') {
      const uint64_t d = static_cast<uint64_t>(t_[p_] - '0');
      if (x > (UINT64_MAX - d) / 10) { p_ = start; return fail(std::string(what) + ": count does not fit in 64 bits"); }
      x = x * 10 + d;
      ++p_;
    }
    if (p_ < t_.size() && (t_[p_] == '.' || t_[p_] == 'e' || t_[p_] == 'E'))
      return fail(std::string(what) + ": counts must be integers");
    if (p_ - start > 1 && t_[start] == '0') { p_ = start; return fail(std::string(what) + ": leading zero"); }
    *v = x;
    return true;
  }

  bool string(std::string* out) {
    if (!eat('"')) return fail("expected a string");
    for (;;) {
      if (p_ >= t_.size()) return fail("unterminated string");
      const char c = t_[p_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) { --p_; return fail("control character in a string"); }
      if (c != '\\') { out->push_back(c); continue; }
      if (p_ >= t_.size()) return fail("unterminated string");
      const char e = t_[p_++];
      switch (e) {
        case '"': case '\\': case '/': out->push_back(e); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          // Keys we compare are ASCII; keep escaped code points as '?' (only skipped values use them).
          for (int i = 0; i < 4; ++i, ++p_)
            if (p_ >= t_.size() || !std::isxdigit(static_cast<unsigned char>(t_[p_])))
              return fail("bad \\u escape in a string");
          out->push_back('?');
          break;
        }
        default: --p_; return fail("bad escape in a string");
      }
    }
  }

  bool skip_value(int depth) {
    if (depth > 64) return fail("values nested too deeply");
    ws();
    if (p_ >= t_.size()) return fail("unexpected end of input");
    const char c = t_[p_];
    if (c == '"') { std::string s; return string(&s); }
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++p_;
      ws();
      if (eat(close)) return true;
      for (;;) {
        ws();
        if (c == '{') {
          std::string k;
          if (!string(&k)) return false;
          ws();
          if (!eat(':')) return fail("expected ':' in an object");
        }
        if (!skip_value(depth + 1)) return false;
        ws();
        if (eat(',')) continue;
        if (eat(close)) return true;
        return fail(std::string("expected ',' or '") + close + "'");
      }
    }
    if (literal("true") || literal("false") || literal("null")) return true;
    // A JSON number.
    const size_t start = p_;
    if (t_[p_] == '-') ++p_;
    size_t digits = 0;
    while (p_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[p_]))) ++p_, ++digits;
    if (digits && p_ < t_.size() && t_[p_] == '.') {
      ++p_;
      while (p_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[p_]))) ++p_;
    }
    if (digits && p_ < t_.size() && (t_[p_] == 'e' || t_[p_] == 'E')) {
      ++p_;
      if (p_ < t_.size() && (t_[p_] == '+' || t_[p_] == '-')) ++p_;
      while (p_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[p_]))) ++p_;
    }
    if (!digits) { p_ = start; return fail("expected a JSON value"); }
    return true;
  }

  bool literal(std::string_view w) {
    if (t_.substr(p_, w.size()) != w) return false;
    p_ += w.size();
    return true;
  }
  void ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\n' || t_[p_] == '\r' || t_[p_] == '\t')) ++p_;
  }
  bool eat(char c) {
    if (p_ < t_.size() && t_[p_] == c) { ++p_; return true; }
    return false;
  }
  bool fail(std::string msg) {
    err_ = err(std::move(msg));
    return false;
  }
  CacheStatus err(std::string msg) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p_ && i < t_.size(); ++i) {
      if (t_[i] == '\n') { ++line; col = 1; } else { ++col; }
    }
    return CacheStatus::error(CacheCode::Corrupt, std::string(src_) + ":" + std::to_string(line) + ":" +
                                                      std::to_string(col) + ": " + msg);
  }

  std::string_view t_, src_;
  size_t p_ = 0;
  CacheStatus err_;
};

}  // namespace

CacheStatus parse_usage_profile(std::string_view text, std::string_view source, UsageProfile* out) {
  return Reader(text, source).run(out);
}

std::string format_usage_profile(const UsageProfile& p) {
  std::string o = "{\"format\": \"moe-usage-profile\", \"version\": 1, \"total_tokens\": " +
                  std::to_string(p.total_tokens) + ",\n \"expert_popularity\": [";
  for (size_t l = 0; l < p.counts.size(); ++l) {
    o += l ? ",\n  [" : "\n  [";
    for (size_t e = 0; e < p.counts[l].size(); ++e) {
      if (e) o += ", ";
      o += std::to_string(p.counts[l][e]);
    }
    o += "]";
  }
  o += p.counts.empty() ? "]}\n" : "\n ]}\n";
  return o;
}

CacheStatus read_usage_profile(const std::string& path, UsageProfile* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    return CacheStatus::error(CacheCode::Io, path + ": cannot open usage profile: " + std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) return CacheStatus::error(CacheCode::Io, path + ": read error");
  return parse_usage_profile(ss.str(), path, out);
}

CacheStatus write_usage_profile(const std::string& path, const UsageProfile& p) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f)
    return CacheStatus::error(CacheCode::Io, path + ": cannot create usage profile: " + std::strerror(errno));
  const std::string text = format_usage_profile(p);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  f.close();
  if (!f) return CacheStatus::error(CacheCode::Io, path + ": write error: " + std::strerror(errno));
  return CacheStatus::success();
}

}  // namespace moe::cache
