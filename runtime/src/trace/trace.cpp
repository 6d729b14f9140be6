// Trace building, the .moetrace file format (layout in moe/trace.h), synthetic traces and
// converters from routing logs. Functions are reentrant; a TraceBuilder is single-threaded.
#include "moe/trace.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include "moe/error.h"
#include "moe/json.h"

namespace moe::trace {
namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'T', 'R', 'A', 'C', 'E'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxLayers = 4096;
constexpr uint32_t kMaxPredictors = 64;
constexpr uint32_t kMaxName = 4096;

}  // namespace

// --- builder -----------------------------------------------------------------------------------

TraceBuilder::TraceBuilder(uint32_t n_layer, uint32_t n_expert, bool with_weights,
                           std::vector<std::string> predictors) {
  if (n_layer == 0 || n_layer > kMaxLayers) fail(ErrorCode::InvalidArgument, "trace: {} layers (1..{})", n_layer, kMaxLayers);
  if (n_expert == 0 || n_expert > 65535) fail(ErrorCode::InvalidArgument, "trace: {} experts (1..65535)", n_expert);
  if (predictors.size() > kMaxPredictors) fail(ErrorCode::InvalidArgument, "trace: too many predictors");
  t_.n_layer = n_layer;
  t_.n_expert = n_expert;
  t_.has_weights = with_weights;
  t_.predictors = std::move(predictors);
  t_.pred_off.assign(t_.predictors.size(), std::vector<uint64_t>{0});
  t_.pred_ids.resize(t_.predictors.size());
}

void TraceBuilder::begin_token(uint32_t request, uint8_t phase) {
  MOE_ASSERT(!open_ || layer_in_token_ == t_.n_layer, "previous token has missing layers");
  t_.request.push_back(request);
  t_.phase.push_back(phase);
  layer_in_token_ = 0;
  open_ = true;
}

void TraceBuilder::add_layer(std::span<const uint16_t> experts, std::span<const float> weights,
                             std::span<const std::vector<uint16_t>> guesses) {
  MOE_ASSERT(open_ && layer_in_token_ < t_.n_layer, "add_layer outside a token");
  if (experts.size() > 255) fail(ErrorCode::InvalidArgument, "trace: {} experts in one event (max 255)", experts.size());
  for (uint16_t e : experts)
    if (e >= t_.n_expert) fail(ErrorCode::InvalidArgument, "trace: expert {} out of range ({} experts)", e, t_.n_expert);
  t_.ids.insert(t_.ids.end(), experts.begin(), experts.end());
  if (t_.has_weights) {
    if (weights.size() == experts.size()) t_.weights.insert(t_.weights.end(), weights.begin(), weights.end());
    else t_.weights.insert(t_.weights.end(), experts.size(), 0.0f);
  }
  t_.off.push_back(t_.ids.size());
  t_.max_k = std::max<uint32_t>(t_.max_k, static_cast<uint32_t>(experts.size()));
  for (size_t p = 0; p < t_.predictors.size(); ++p) {
    if (p < guesses.size()) {
      size_t m = std::min<size_t>(guesses[p].size(), 255);
      for (size_t j = 0; j < m; ++j)
        if (guesses[p][j] < t_.n_expert) t_.pred_ids[p].push_back(guesses[p][j]);
    }
    t_.pred_off[p].push_back(t_.pred_ids[p].size());
  }
  ++layer_in_token_;
}

Trace TraceBuilder::finish() {
  MOE_ASSERT(!open_ || layer_in_token_ == t_.n_layer, "last token has missing layers");
  if (t_.max_k == 0) t_.max_k = 1;
  open_ = false;
  return std::move(t_);
}

// --- file IO -----------------------------------------------------------------------------------

void write(const Trace& t, const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(ErrorCode::Io, "{}: cannot create: {}", path, std::strerror(errno));
  std::vector<uint8_t> buf;
  buf.reserve(1 << 20);
  auto flush = [&] {
    if (!buf.empty() && std::fwrite(buf.data(), 1, buf.size(), f) != buf.size()) {
      int e = errno;
      std::fclose(f);
      fail(ErrorCode::Io, "{}: write failed: {}", path, std::strerror(e));
    }
    buf.clear();
  };
  auto put = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
  };
  auto u8 = [&](uint8_t v) { buf.push_back(v); };
  auto u16 = [&](uint16_t v) { put(&v, 2); };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };

  const std::string name = t.source.substr(0, kMaxName);
  put(kMagic, 8);
  u32(kVersion);
  u32(t.n_layer);
  u32(t.n_expert);
  u32(t.max_k);
  u32(static_cast<uint32_t>(t.predictors.size()));
  u32(t.has_weights ? 1u : 0u);
  u64(t.n_tokens());
  u64(t.expert_bytes);
  u32(static_cast<uint32_t>(name.size()));
  for (int i = 0; i < 12; ++i) u8(0);
  for (const auto& p : t.predictors) {
    std::string s = p.substr(0, 255);
    u8(static_cast<uint8_t>(s.size()));
    put(s.data(), s.size());
  }
  put(name.data(), name.size());
  for (uint64_t tok = 0; tok < t.n_tokens(); ++tok) {
    u32(t.request[tok]);
    u8(t.phase[tok]);
    for (uint32_t l = 0; l < t.n_layer; ++l) {
      uint64_t i = tok * t.n_layer + l;
      auto e = t.experts(tok, l);
      u8(static_cast<uint8_t>(e.size()));
      for (uint16_t x : e) u16(x);
      if (t.has_weights)
        for (float w : t.expert_weights(tok, l)) put(&w, 4);
      for (size_t p = 0; p < t.predictors.size(); ++p) {
        uint64_t a = t.pred_off[p][i], b = t.pred_off[p][i + 1];
        u8(static_cast<uint8_t>(b - a));
        for (uint64_t j = a; j < b; ++j) u16(t.pred_ids[p][j]);
      }
    }
    if (buf.size() > (1 << 20)) flush();
  }
  flush();
  if (std::fclose(f) != 0) fail(ErrorCode::Io, "{}: close failed: {}", path, std::strerror(errno));
}

namespace {

class Reader {
 public:
  Reader(std::span<const uint8_t> b, const std::string& name) : b_(b), name_(name) {}
  template <typename T>
  T get(const char* what) {
    if (sizeof(T) > b_.size() - pos_)
      fail(ErrorCode::Corrupt, "{}: truncated trace: {} at offset {} (file has {} bytes)", name_, what, pos_, b_.size());
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string bytes(size_t n, const char* what) {
    if (n > b_.size() - pos_) fail(ErrorCode::Corrupt, "{}: truncated trace: {} at offset {}", name_, what, pos_);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return b_.size() - pos_; }

 private:
  std::span<const uint8_t> b_;
  const std::string& name_;
  uint64_t pos_ = 0;
};

}  // namespace

Trace read_memory(std::span<const uint8_t> bytes, const std::string& name) {
  Reader r(bytes, name);
  std::string magic = r.bytes(8, "magic");
  if (std::memcmp(magic.data(), kMagic, 8) != 0) fail(ErrorCode::Corrupt, "{}: not a moe trace (bad magic)", name);
  uint32_t version = r.get<uint32_t>("version");
  if (version != kVersion) fail(ErrorCode::Unsupported, "{}: unsupported trace version {} (supported: 1)", name, version);
  Trace t;
  t.n_layer = r.get<uint32_t>("n_layer");
  t.n_expert = r.get<uint32_t>("n_expert");
  t.max_k = r.get<uint32_t>("max_k");
  uint32_t n_pred = r.get<uint32_t>("n_predictors");
  uint32_t flags = r.get<uint32_t>("flags");
  uint64_t n_tokens = r.get<uint64_t>("n_tokens");
  t.expert_bytes = r.get<uint64_t>("expert_bytes");
  uint32_t name_bytes = r.get<uint32_t>("name_bytes");
  r.bytes(12, "reserved");
  if (t.n_layer == 0 || t.n_layer > kMaxLayers) fail(ErrorCode::Corrupt, "{}: n_layer {} out of range", name, t.n_layer);
  if (t.n_expert == 0 || t.n_expert > 65535) fail(ErrorCode::Corrupt, "{}: n_expert {} out of range", name, t.n_expert);
  if (t.max_k == 0 || t.max_k > 255 || t.max_k > t.n_expert)
    fail(ErrorCode::Corrupt, "{}: max_k {} out of range", name, t.max_k);
  if (n_pred > kMaxPredictors) fail(ErrorCode::Corrupt, "{}: {} predictors (max {})", name, n_pred, kMaxPredictors);
  if (flags > 1) fail(ErrorCode::Corrupt, "{}: unknown flags {:#x}", name, flags);
  if (name_bytes > kMaxName) fail(ErrorCode::Corrupt, "{}: source name of {} bytes", name, name_bytes);
  t.has_weights = flags & 1;
  for (uint32_t p = 0; p < n_pred; ++p) {
    uint8_t len = r.get<uint8_t>("predictor name length");
    t.predictors.push_back(r.bytes(len, "predictor name"));
  }
  t.source = r.bytes(name_bytes, "source name");
  // Each token record takes at least 5 + n_layer * (1 + n_pred) bytes.
  const uint64_t min_record = 5 + static_cast<uint64_t>(t.n_layer) * (1 + n_pred);
  if (n_tokens > r.remaining() / min_record)
    fail(ErrorCode::Corrupt, "{}: {} tokens cannot fit in the {} bytes left", name, n_tokens, r.remaining());
  t.request.reserve(n_tokens);
  t.phase.reserve(n_tokens);
  t.off.reserve(n_tokens * t.n_layer + 1);
  t.pred_off.assign(n_pred, std::vector<uint64_t>{0});
  t.pred_ids.resize(n_pred);
  for (uint64_t tok = 0; tok < n_tokens; ++tok) {
    t.request.push_back(r.get<uint32_t>("request"));
    uint8_t ph = r.get<uint8_t>("phase");
    if (ph > 1) fail(ErrorCode::Corrupt, "{}: token {} has phase {} (0 or 1)", name, tok, ph);
    t.phase.push_back(ph);
    for (uint32_t l = 0; l < t.n_layer; ++l) {
      uint8_t k = r.get<uint8_t>("k");
      if (k > t.max_k) fail(ErrorCode::Corrupt, "{}: token {} layer {}: k = {} exceeds max_k {}", name, tok, l, k, t.max_k);
      for (uint8_t j = 0; j < k; ++j) {
        uint64_t at = r.pos();
        uint16_t e = r.get<uint16_t>("expert id");
        if (e >= t.n_expert) fail(ErrorCode::Corrupt, "{}: expert id {} at offset {} >= n_expert {}", name, e, at, t.n_expert);
        t.ids.push_back(e);
      }
      if (t.has_weights)
        for (uint8_t j = 0; j < k; ++j) t.weights.push_back(r.get<float>("weight"));
      t.off.push_back(t.ids.size());
      for (uint32_t p = 0; p < n_pred; ++p) {
        uint8_t m = r.get<uint8_t>("guess count");
        for (uint8_t j = 0; j < m; ++j) {
          uint64_t at = r.pos();
          uint16_t e = r.get<uint16_t>("guess id");
          if (e >= t.n_expert) fail(ErrorCode::Corrupt, "{}: guessed expert {} at offset {} >= n_expert {}", name, e, at, t.n_expert);
          t.pred_ids[p].push_back(e);
        }
        t.pred_off[p].push_back(t.pred_ids[p].size());
      }
    }
  }
  if (r.remaining() != 0) fail(ErrorCode::Corrupt, "{}: {} unexpected bytes after the last token", name, r.remaining());
  return t;
}

Trace read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(ErrorCode::Io, "{}: cannot open: {}", path, std::strerror(errno));
  std::vector<uint8_t> b{std::istreambuf_iterator<char>(f), {}};
  if (f.bad()) fail(ErrorCode::Io, "{}: read failed", path);
  return read_memory(b, path);
}

// --- synthetic traces --------------------------------------------------------------------------

namespace {

// Samples k distinct experts from weights w (without replacement), writing into out.
void sample_distinct(std::mt19937_64& rng, const std::vector<double>& cdf_base, uint32_t k,
                     std::vector<uint16_t>& out) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double total = cdf_base.back();
  while (out.size() < k) {
    double x = u(rng) * total;
    auto it = std::upper_bound(cdf_base.begin(), cdf_base.end(), x);
    auto e = static_cast<uint16_t>(std::min<size_t>(it - cdf_base.begin(), cdf_base.size() - 1));
    if (std::find(out.begin(), out.end(), e) == out.end()) out.push_back(e);
  }
}

}  // namespace

Trace synthesize(const SynthOptions& o) {
  if (o.k == 0 || o.k > o.n_expert || o.k > 255)
    fail(ErrorCode::InvalidArgument, "synthetic trace: top-k {} must be 1..min(n_expert, 255)", o.k);
  if (o.n_requests == 0) fail(ErrorCode::InvalidArgument, "synthetic trace: at least one request");
  if (!o.popularity.empty() && o.popularity.size() != o.n_layer)
    fail(ErrorCode::InvalidArgument, "synthetic trace: popularity has {} layers, expected {}", o.popularity.size(), o.n_layer);
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  // Per layer: popularity (Zipf over a random permutation of experts) as a cumulative table.
  std::vector<std::vector<double>> cdf(o.n_layer);
  std::vector<std::vector<uint16_t>> next_map(o.n_layer);  // layer l expert -> layer l+1 expert
  for (uint32_t l = 0; l < o.n_layer; ++l) {
    std::vector<double> w(o.n_expert);
    if (!o.popularity.empty()) {
      if (o.popularity[l].size() != o.n_expert)
        fail(ErrorCode::InvalidArgument, "synthetic trace: popularity layer {} has {} experts, expected {}", l,
             o.popularity[l].size(), o.n_expert);
      for (uint32_t e = 0; e < o.n_expert; ++e) w[e] = std::max(o.popularity[l][e], 1e-9);
    } else {
      std::vector<uint16_t> perm(o.n_expert);
      for (uint32_t e = 0; e < o.n_expert; ++e) perm[e] = static_cast<uint16_t>(e);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (uint32_t r = 0; r < o.n_expert; ++r) w[perm[r]] = 1.0 / std::pow(r + 1.0, o.skew);
    }
    cdf[l].resize(o.n_expert);
    double acc = 0;
    for (uint32_t e = 0; e < o.n_expert; ++e) cdf[l][e] = acc += w[e];
    next_map[l].resize(o.n_expert);
    for (uint32_t e = 0; e < o.n_expert; ++e) {
      // Map toward popular experts of the next layer so correlation does not flatten popularity.
      next_map[l][e] = static_cast<uint16_t>(e);
    }
    std::shuffle(next_map[l].begin(), next_map[l].end(), rng);
  }
  TraceBuilder b(o.n_layer, o.n_expert, true);
  b.set_source(fmt::format("synthetic(skew={}, repeat={}, layer_corr={}, seed={})", o.skew, o.repeat_prob,
                           o.layer_corr, o.seed));
  b.set_expert_bytes(o.expert_bytes);
  std::vector<std::vector<uint16_t>> prev_token(o.n_layer);
  std::vector<uint16_t> cur;
  std::vector<float> wts;
  const uint64_t per_req = std::max<uint64_t>(1, o.n_tokens / o.n_requests);
  for (uint64_t t = 0; t < o.n_tokens; ++t) {
    uint32_t req = static_cast<uint32_t>(std::min<uint64_t>(t / per_req, o.n_requests - 1));
    bool first_of_req = t % per_req == 0;
    b.begin_token(req, first_of_req ? 0 : 1);
    const std::vector<uint16_t>* prev_layer = nullptr;
    for (uint32_t l = 0; l < o.n_layer; ++l) {
      cur.clear();
      if (!first_of_req)
        for (uint16_t e : prev_token[l])
          if (cur.size() < o.k && u(rng) < o.repeat_prob) cur.push_back(e);
      if (prev_layer)
        for (uint16_t e : *prev_layer) {
          uint16_t m = next_map[l - 1][e];
          if (cur.size() < o.k && u(rng) < o.layer_corr && std::find(cur.begin(), cur.end(), m) == cur.end())
            cur.push_back(m);
        }
      sample_distinct(rng, cdf[l], o.k, cur);
      // Softmax-like weights: decreasing, summing to one.
      wts.resize(cur.size());
      double s = 0;
      for (size_t j = 0; j < cur.size(); ++j) s += wts[j] = static_cast<float>(0.5 + u(rng));
      for (auto& w : wts) w = static_cast<float>(w / s);
      b.add_layer(cur, wts);
      prev_token[l] = cur;
      prev_layer = &prev_token[l];
    }
  }
  return b.finish();
}

// --- converters --------------------------------------------------------------------------------

Trace from_jsonl(const std::string& path, uint32_t n_expert_hint) {
  std::ifstream f(path);
  if (!f) fail(ErrorCode::Io, "{}: cannot open: {}", path, std::strerror(errno));
  struct Rec {
    std::vector<uint16_t> experts;
    std::vector<float> weights;
  };
  std::map<uint64_t, std::map<uint32_t, Rec>> tokens;
  std::map<uint64_t, uint32_t> token_request;
  uint32_t max_layer = 0, max_expert = 0;
  bool any_weights = false;
  std::string line;
  size_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json::Value v = json::parse(line, fmt::format("{}:{}", path, lineno));
    auto num = [&](const char* k, bool required) -> std::optional<double> {
      const json::Value* x = v.get(k);
      if (!x) {
        if (required) fail(ErrorCode::Corrupt, "{}:{}: routing record lacks \"{}\"", path, lineno, k);
        return std::nullopt;
      }
      if (!x->is_number() || x->as_number() < 0 || x->as_number() != std::floor(x->as_number()))
        fail(ErrorCode::Corrupt, "{}:{}: \"{}\" must be a non-negative integer", path, lineno, k);
      return x->as_number();
    };
    auto tok = static_cast<uint64_t>(*num("token", true));
    auto layer = static_cast<uint32_t>(*num("layer", true));
    if (layer >= kMaxLayers) fail(ErrorCode::Corrupt, "{}:{}: layer {} out of range", path, lineno, layer);
    const json::Value* ex = v.get("experts");
    if (!ex || !ex->is_array() || ex->size() > 255)
      fail(ErrorCode::Corrupt, "{}:{}: \"experts\" must be an array of at most 255 ids", path, lineno);
    Rec r;
    for (const auto& e : ex->items()) {
      if (!e.is_number() || e.as_number() < 0 || e.as_number() > 65534 || e.as_number() != std::floor(e.as_number()))
        fail(ErrorCode::Corrupt, "{}:{}: expert ids must be integers in 0..65534", path, lineno);
      r.experts.push_back(static_cast<uint16_t>(e.as_number()));
      max_expert = std::max<uint32_t>(max_expert, r.experts.back());
    }
    const json::Value* w = v.get("weights");
    if (!w) w = v.get("probs");
    if (w) {
      if (!w->is_array() || w->size() != r.experts.size())
        fail(ErrorCode::Corrupt, "{}:{}: weights must be an array as long as experts", path, lineno);
      for (const auto& x : w->items()) {
        if (!x.is_number()) fail(ErrorCode::Corrupt, "{}:{}: weights must be numbers", path, lineno);
        r.weights.push_back(static_cast<float>(x.as_number()));
      }
      any_weights = true;
    }
    if (auto rq = num("request", false)) token_request[tok] = static_cast<uint32_t>(*rq);
    max_layer = std::max(max_layer, layer);
    tokens[tok][layer] = std::move(r);
  }
  if (tokens.empty()) fail(ErrorCode::Corrupt, "{}: no routing records", path);
  uint32_t n_expert = std::max(n_expert_hint, max_expert + 1);
  TraceBuilder b(max_layer + 1, n_expert, any_weights);
  b.set_source(path);
  uint64_t expected = 0;
  for (auto& [tok, layers] : tokens) {
    if (tok != expected) fail(ErrorCode::Corrupt, "{}: token numbers must be consecutive from 0 (missing {})", path, expected);
    ++expected;
    auto it = token_request.find(tok);
    b.begin_token(it == token_request.end() ? 0 : it->second, 1);
    for (uint32_t l = 0; l <= max_layer; ++l) {
      auto lt = layers.find(l);
      if (lt == layers.end()) b.add_layer({});
      else b.add_layer(lt->second.experts, lt->second.weights);
    }
  }
  return b.finish();
}

Trace from_popularity(const std::string& path, SynthOptions o, uint32_t k) {
  json::Value v = json::parse_file(path);
  const json::Value* total = v.get("total_input_tokens");
  const json::Value* pop = v.get("expert_popularity");
  if (!total || !total->is_number() || total->as_number() <= 0)
    fail(ErrorCode::Corrupt, "{}: \"total_input_tokens\" must be a positive number", path);
  if (!pop || !pop->is_array() || pop->size() == 0 || pop->size() > kMaxLayers)
    fail(ErrorCode::Corrupt, "{}: \"expert_popularity\" must be a non-empty array of per-layer counts", path);
  o.popularity.clear();
  size_t n_expert = 0;
  for (size_t l = 0; l < pop->size(); ++l) {
    const auto& row = (*pop)[l];
    if (!row.is_array() || row.size() == 0 || row.size() > 65535 || (n_expert && row.size() != n_expert))
      fail(ErrorCode::Corrupt, "{}: layer {} of expert_popularity must be an array of {} counts", path, l,
           n_expert ? n_expert : row.size());
    n_expert = row.size();
    std::vector<double> c;
    for (const auto& x : row.items()) {
      if (!x.is_number() || x.as_number() < 0) fail(ErrorCode::Corrupt, "{}: layer {}: counts must be non-negative numbers", path, l);
      c.push_back(x.as_number());
    }
    o.popularity.push_back(std::move(c));
  }
  o.n_layer = static_cast<uint32_t>(pop->size());
  o.n_expert = static_cast<uint32_t>(n_expert);
  if (k == 0) fail(ErrorCode::InvalidArgument, "{}: the experts used per token (top-k) must be given", path);
  o.k = k;
  Trace t = synthesize(o);
  t.source = fmt::format("popularity({}, k={})", path, o.k);
  return t;
}

}  // namespace moe::trace
