// runtime/src/api/moe_api.cpp — the C API (moe/moe.h) over the C++ library: model loading with
// progress, sessions with streamed generation, chat through the model's template with KV-cache
// prefix reuse, cancellation, statistics.
//
// Every exported function catches everything (moe::Error, std::bad_alloc, any other exception) and
// turns it into a moe_status plus the thread-local last-error message: no exception crosses the C
// boundary. The only process state is that thread_local string.
//
// Thread-safety: a moe_model is immutable after load (its expert source is internally synchronised;
// the live-session counter is atomic). A moe_session is driven by one thread at a time; its cancel
// flag is a lock-free std::atomic<bool> (moe_session_cancel may run on any thread or in a signal
// handler).
#include "moe/moe.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "moe/cache/profile.h"
#include "moe/chat_template.h"
#include "moe/engine.h"
#include "moe/error.h"
#include "moe/expert_store.h"
#include "moe/planner.h"
#include "moe/sampler.h"
#include "moe/tokenizer.h"

#ifndef MOE_VERSION_STRING
#define MOE_VERSION_STRING "0.1.0"
#endif

namespace {

thread_local std::string t_last_error;

moe_status status_of(moe::ErrorCode c) noexcept {
  switch (c) {
    case moe::ErrorCode::Ok: return MOE_STATUS_OK;
    case moe::ErrorCode::InvalidArgument: return MOE_STATUS_INVALID_ARGUMENT;
    case moe::ErrorCode::Io: return MOE_STATUS_IO;
    case moe::ErrorCode::Corrupt: return MOE_STATUS_CORRUPT;
    case moe::ErrorCode::Unsupported: return MOE_STATUS_UNSUPPORTED;
    case moe::ErrorCode::OutOfMemory: return MOE_STATUS_OUT_OF_MEMORY;
    case moe::ErrorCode::Cancelled: return MOE_STATUS_CANCELLED;
    case moe::ErrorCode::Internal: return MOE_STATUS_INTERNAL;
  }
  return MOE_STATUS_INTERNAL;
}

moe_status set_error(moe_status s, const char* msg) noexcept {
  try {
    t_last_error = msg ? msg : "";
  } catch (...) {
    // Out of memory while copying the message: keep the old one rather than fail.
  }
  return s;
}

// An exception that carries a status the library itself decided (context full, cancelled).
struct ApiError {
  moe_status status;
  std::string message;
};

// Runs f() (returning moe_status) and maps every exception to a status + message.
template <typename F>
moe_status guard(F&& f) noexcept {
  try {
    return f();
  } catch (const ApiError& e) {
    return set_error(e.status, e.message.c_str());
  } catch (const moe::Error& e) {
    return set_error(status_of(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return set_error(MOE_STATUS_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return set_error(MOE_STATUS_INTERNAL, e.what());
  } catch (...) {
    return set_error(MOE_STATUS_INTERNAL, "unknown exception");
  }
}

[[noreturn]] void api_fail(moe_status s, std::string msg) { throw ApiError{s, std::move(msg)}; }

#define MOE_REQUIRE(cond, msg) \
  do {                         \
    if (!(cond)) api_fail(MOE_STATUS_INVALID_ARGUMENT, msg); \
  } while (0)

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int default_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// The plain format used when a model carries no tokenizer.chat_template.
constexpr const char* kFallbackStop = "\nUser:";
std::string render_fallback(const moe_chat_message* msgs, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const std::string role = msgs[i].role ? msgs[i].role : "";
    const char* content = msgs[i].content ? msgs[i].content : "";
    if (role == "system") out += std::string(content) + "\n\n";
    else if (role == "user") out += std::string("User: ") + content + "\n\n";
    // The reply is kept as generated: it carries its own leading space after "Assistant:".
    else if (role == "assistant") out += std::string("Assistant:") + (content[0] == ' ' ? "" : " ") + content + "\n\n";
    else out += role + ": " + content + "\n\n";
  }
  out += "Assistant:";
  return out;
}

}  // namespace

// ---- the handles --------------------------------------------------------------------------------

struct moe_model {
  std::unique_ptr<moe::Model> model;
  std::unique_ptr<moe::Tokenizer> tok;           // null: the file has no usable vocabulary
  std::optional<moe::chat::Template> tmpl;       // absent: fallback chat format
  std::unique_ptr<moe::ExpertSource> src;
  moe::CachedExpertSource* cache = nullptr;      // src when it is a cache
  std::string predictor = "pregated";            // what sessions on the CPU prefetch with (cache only)
  moe::SessionOptions reserved;                  // the session shape the budget reserved room for
  uint32_t n_sessions = 1;
  int n_threads = 1;
  std::atomic<uint32_t> live_sessions{0};
  std::string bos_text, eos_text;
};

struct moe_session {
  moe_model* m = nullptr;
  moe_session_params params{};
  std::unique_ptr<moe::PrefetchPlanner> planner;  // declared before s: outlives the session using it
  uint32_t requests = 0;                          // conversations begun (the planner's request ids)
  std::unique_ptr<moe::Session> s;
  std::unique_ptr<moe::Sampler> sampler;
  std::vector<int32_t> ctx;        // tokens evaluated (in the KV cache); ctx.size() == s->pos()
  std::optional<int32_t> pending;  // sampled and emitted, not evaluated yet
  std::span<const float> logits;   // of the last evaluated token (valid while logits_valid)
  bool logits_valid = false;
  std::atomic<bool> cancel{false};
  // Totals.
  uint64_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_s = 0, decode_s = 0;
  uint64_t decode_evals = 0;
  // Last call.
  uint64_t last_prompt = 0, last_reused = 0, last_generated = 0, last_decode_evals = 0;
  double last_prefill_s = 0, last_decode_s = 0;
  moe_stop_reason last_stop = MOE_STOP_NONE;
  moe::StoreStats cache_before, cache_after;
};

// ---- status, errors, version --------------------------------------------------------------------

extern "C" {

const char* moe_status_string(moe_status s) {
  switch (s) {
    case MOE_STATUS_OK: return "ok";
    case MOE_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case MOE_STATUS_IO: return "io error";
    case MOE_STATUS_CORRUPT: return "corrupt file";
    case MOE_STATUS_UNSUPPORTED: return "unsupported";
    case MOE_STATUS_OUT_OF_MEMORY: return "out of memory";
    case MOE_STATUS_CANCELLED: return "cancelled";
    case MOE_STATUS_CONTEXT_FULL: return "context full";
    case MOE_STATUS_INTERNAL: return "internal error";
    case MOE_STATUS_COUNT: break;
  }
  return "unknown status";
}

const char* moe_last_error(void) { return t_last_error.c_str(); }

const char* moe_version(void) { return MOE_VERSION_STRING; }

// ---- model --------------------------------------------------------------------------------------

moe_model_params moe_model_default_params(void) {
  moe_model_params p;
  std::memset(&p, 0, sizeof p);
  p.n_threads = 0;
  p.ram_budget_bytes = 0;
  p.cache_policy = nullptr;
  p.cache_scope = nullptr;
  p.usage_profile = nullptr;
  p.io_backend = nullptr;
  p.direct_io = true;
  p.n_sessions = 1;
  p.n_ctx = 0;
  p.n_batch = 64;
  p.warm_dense = true;
  p.predictor = nullptr;
  p.load_to_ram = false;
  return p;
}

namespace {

// Reads every page of the dense (non-expert) weights once, reporting progress from p0 to p1.
// Returns false when the callback cancelled.
bool warm_dense(const moe::Model& m, moe_progress_callback cb, void* ud, float p0, float p1) {
  std::vector<const moe::WeightView*> views;
  auto add = [&](const moe::WeightView& v) {
    if (v) views.push_back(&v);
  };
  add(m.tok_embd());
  if (m.output().data != m.tok_embd().data) add(m.output());
  for (uint32_t il = 0; il < m.spec().n_layer; ++il) {
    const moe::LayerWeights& L = m.layer(il);
    for (const moe::WeightView* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.router, &L.gate_sh, &L.up_sh, &L.down_sh,
                                     &L.shared_gate})
      add(*v);
  }
  uint64_t total = 0;
  for (auto* v : views) total += v->nbytes;
  if (total == 0) return true;
  constexpr uint64_t kPage = 4096, kReport = 8ull << 20;  // report every 8 MiB
  uint64_t done = 0, next_report = kReport;
  volatile unsigned char sink = 0;
  for (auto* v : views) {
    const auto* p = static_cast<const unsigned char*>(v->data);
    for (uint64_t off = 0; off < v->nbytes; off += kPage) {
      sink = sink + p[off];  // one read per page faults it in
      done += std::min(kPage, v->nbytes - off);
      if (cb && done >= next_report) {
        next_report = done + kReport;
        if (!cb(p0 + (p1 - p0) * float(double(done) / double(total)), ud)) return false;
      }
    }
  }
  (void)sink;
  return true;
}

moe::prefetch::IoBackend parse_backend(const char* s) {
  const std::string b = s ? s : "auto";
  if (b == "auto") return moe::prefetch::IoBackend::Auto;
  if (b == "uring" || b == "io_uring") return moe::prefetch::IoBackend::Uring;
  if (b == "pread") return moe::prefetch::IoBackend::Pread;
  api_fail(MOE_STATUS_INVALID_ARGUMENT, "io_backend: unknown backend '" + b + "' (auto, uring, pread)");
}

}  // namespace

moe_status moe_model_load(const char* path, const moe_model_params* params, moe_progress_callback progress,
                          void* user_data, moe_model** out) {
  if (out) *out = nullptr;
  return guard([&]() -> moe_status {
    MOE_REQUIRE(path != nullptr, "moe_model_load: path is NULL");
    MOE_REQUIRE(out != nullptr, "moe_model_load: out is NULL");
    const moe_model_params p = params ? *params : moe_model_default_params();
    MOE_REQUIRE(p.n_sessions >= 1, "moe_model_load: n_sessions must be >= 1");
    MOE_REQUIRE(p.n_batch >= 1, "moe_model_load: n_batch must be >= 1");
    MOE_REQUIRE(p.n_threads >= 0, "moe_model_load: n_threads must be >= 0");
    MOE_REQUIRE(!(p.load_to_ram && p.ram_budget_bytes > 0),
                "moe_model_load: load_to_ram copies the whole model; it cannot be combined with ram_budget_bytes");
    auto report = [&](float f) {
      if (progress && !progress(f, user_data))
        api_fail(MOE_STATUS_CANCELLED, std::string(path) + ": loading cancelled by the progress callback");
    };
    report(0.0f);
    auto m = std::make_unique<moe_model>();
    m->model = moe::Model::load(path, p.load_to_ram);
    const moe::gguf::GgufFile& f = m->model->file();
    report(0.05f);
    if (f.find("tokenizer.ggml.tokens") && f.get_string("tokenizer.ggml.model").value_or("none") != "none") {
      m->tok = moe::Tokenizer::from_gguf(f);
      if (m->tok->bos() != moe::kNoToken) m->bos_text = m->tok->token_text(m->tok->bos());
      if (m->tok->eos() != moe::kNoToken) m->eos_text = m->tok->token_text(m->tok->eos());
    }
    if (auto t = f.get_string("tokenizer.chat_template"); t && !t->empty())
      m->tmpl = moe::chat::Template::compile(*t, std::string(path) + ": tokenizer.chat_template");
    report(0.10f);

    m->n_threads = p.n_threads > 0 ? p.n_threads : default_threads();
    m->n_sessions = p.n_sessions;
    m->reserved.n_ctx = p.n_ctx;
    m->reserved.n_batch = p.n_batch;
    m->reserved.n_threads = m->n_threads;

    moe::StoreOptions so;
    so.ram_budget_bytes = p.ram_budget_bytes;
    so.policy = p.cache_policy ? p.cache_policy : "arc";
    m->predictor = p.predictor ? p.predictor : "pregated";
    {
      moe::PlannerOptions po;  // checks the names now (throws InvalidArgument for an unknown one)
      po.predictor = m->predictor;
      moe::PrefetchPlanner check(*m->model, nullptr, po, 1);
      if (!check.active()) m->predictor = "none";
    }
    // A planner drops its own stale prefetches; fresh ones must not be the first victims.
    if (m->predictor != "none") so.prefetched_unused_first = false;
    if (p.cache_scope && !moe::cache::parse_scope(p.cache_scope, &so.scope))
      api_fail(MOE_STATUS_INVALID_ARGUMENT,
               std::string("cache_scope: unknown scope '") + p.cache_scope + "' (global, layer)");
    if (p.usage_profile) {
      auto prof = std::make_shared<moe::cache::UsageProfile>();
      const moe::cache::CacheStatus st = moe::cache::read_usage_profile(p.usage_profile, prof.get());
      if (!st.ok())
        api_fail(st.code == moe::cache::CacheCode::Io ? MOE_STATUS_IO : MOE_STATUS_CORRUPT, st.message);
      so.profile = std::move(prof);
    }
    so.io_backend = parse_backend(p.io_backend);
    so.direct = p.direct_io;
    so.session = m->reserved;
    so.n_sessions = p.n_sessions;
    m->src = moe::make_expert_source(*m->model, so);
    m->cache = dynamic_cast<moe::CachedExpertSource*>(m->src.get());
    report(0.15f);
    if (p.warm_dense && !warm_dense(*m->model, progress, user_data, 0.15f, 1.0f))
      api_fail(MOE_STATUS_CANCELLED, std::string(path) + ": loading cancelled by the progress callback");
    report(1.0f);
    *out = m.release();
    return MOE_STATUS_OK;
  });
}

void moe_model_free(moe_model* model) { delete model; }

moe_status moe_model_get_info(const moe_model* model, moe_model_info* info) {
  return guard([&]() -> moe_status {
    MOE_REQUIRE(model && info, "moe_model_get_info: NULL argument");
    moe_model_info r;
    std::memset(&r, 0, sizeof r);
    const moe::ModelSpec& s = model->model->spec();
    std::snprintf(r.architecture, sizeof r.architecture, "%s", s.arch_name.c_str());
    r.n_vocab = s.n_vocab;
    r.n_ctx_train = s.n_ctx_train;
    r.n_layer = s.n_layer;
    r.n_embd = s.n_embd;
    r.n_expert = s.n_expert;
    r.n_expert_used = s.n_expert_used;
    r.file_bytes = model->model->file().file_size();
    r.expert_bytes = model->model->experts().total_bytes();
    r.has_tokenizer = model->tok != nullptr;
    r.has_chat_template = model->tmpl.has_value();
    r.has_cache = model->cache != nullptr;
    r.cache_slots = model->cache ? model->cache->plan().slots : 0;
    r.bos_token = model->tok ? model->tok->bos() : (s.bos_id ? int32_t(*s.bos_id) : -1);
    r.eos_token = model->tok ? model->tok->eos() : (s.eos_id ? int32_t(*s.eos_id) : -1);
    *info = r;
    return MOE_STATUS_OK;
  });
}

moe_status moe_model_tokenize(const moe_model* model, const char* text, size_t text_len, bool add_special,
                              bool parse_special, int32_t* tokens, size_t capacity, size_t* n_tokens) {
  return guard([&]() -> moe_status {
    MOE_REQUIRE(model && text && n_tokens, "moe_model_tokenize: NULL argument");
    MOE_REQUIRE(tokens || capacity == 0, "moe_model_tokenize: tokens is NULL with a capacity");
    if (!model->tok) api_fail(MOE_STATUS_UNSUPPORTED, "the model has no tokenizer");
    const auto ids = model->tok->tokenize(std::string_view(text, text_len), add_special, parse_special);
    *n_tokens = ids.size();
    if (ids.size() > capacity)
      api_fail(MOE_STATUS_INVALID_ARGUMENT, "moe_model_tokenize: " + std::to_string(ids.size()) +
                                                " tokens do not fit in a capacity of " + std::to_string(capacity));
    std::copy(ids.begin(), ids.end(), tokens);
    return MOE_STATUS_OK;
  });
}

moe_status moe_model_detokenize(const moe_model* model, const int32_t* tokens, size_t n_tokens, char* buf,
                                size_t capacity, size_t* length) {
  return guard([&]() -> moe_status {
    MOE_REQUIRE(model && (tokens || n_tokens == 0), "moe_model_detokenize: NULL argument");
    MOE_REQUIRE(buf || capacity == 0, "moe_model_detokenize: buf is NULL with a capacity");
    if (!model->tok) api_fail(MOE_STATUS_UNSUPPORTED, "the model has no tokenizer");
    const std::string s = model->tok->detokenize(std::span<const int32_t>(tokens, n_tokens));
    if (length) *length = s.size();
    if (capacity > 0) {
      const size_t n = std::min(s.size(), capacity - 1);
      std::memcpy(buf, s.data(), n);
      buf[n] = '\0';
    }
    return MOE_STATUS_OK;
  });
}

// ---- session ------------------------------------------------------------------------------------

moe_session_params moe_session_default_params(void) {
  moe_session_params p;
  std::memset(&p, 0, sizeof p);
  const moe::SamplerParams d;
  p.n_ctx = 0;
  p.n_batch = 0;
  p.n_threads = 0;
  p.sampling.temperature = d.temperature;
  p.sampling.top_k = d.top_k;
  p.sampling.top_p = d.top_p;
  p.sampling.min_p = d.min_p;
  p.sampling.repeat_penalty = d.repeat_penalty;
  p.sampling.presence_penalty = d.presence_penalty;
  p.sampling.frequency_penalty = d.frequency_penalty;
  p.sampling.penalty_last_n = d.penalty_last_n;
  p.sampling.seed = d.seed;
  return p;
}

namespace {

moe::SamplerParams sampler_params(const moe_sampling_params& s) {
  moe::SamplerParams p;
  p.temperature = s.temperature;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.min_p = s.min_p;
  p.repeat_penalty = s.repeat_penalty;
  p.presence_penalty = s.presence_penalty;
  p.frequency_penalty = s.frequency_penalty;
  p.penalty_last_n = s.penalty_last_n;
  p.seed = s.seed;
  return p;
}

// Frees a live-session slot when a session dies (or its construction fails).
struct LiveSlot {
  moe_model* m;
  bool held = true;
  ~LiveSlot() {
    if (held) m->live_sessions.fetch_sub(1);
  }
};

}  // namespace

moe_status moe_session_new(moe_model* model, const moe_session_params* params, moe_session** out) {
  if (out) *out = nullptr;
  return guard([&]() -> moe_status {
    MOE_REQUIRE(model && out, "moe_session_new: NULL argument");
    const moe_session_params p = params ? *params : moe_session_default_params();
    MOE_REQUIRE(p.n_threads >= 0, "moe_session_new: n_threads must be >= 0");
    moe::SessionOptions o;
    o.n_ctx = p.n_ctx ? p.n_ctx : model->reserved.n_ctx;
    o.n_batch = p.n_batch ? p.n_batch : model->reserved.n_batch;
    o.n_threads = p.n_threads ? p.n_threads : model->n_threads;
    o.vram_bytes = p.vram_bytes;
    o.gpu_device = p.gpu_device;
    const uint32_t live = model->live_sessions.fetch_add(1) + 1;
    LiveSlot slot{model};
    if (model->cache) {
      // Under a RAM budget, a session larger than the reservation would exceed the budget.
      auto eff_ctx = [&](uint32_t n) {
        const uint32_t train = model->model->spec().n_ctx_train;
        return n ? n : std::min(train ? train : 4096u, 4096u);
      };
      if (eff_ctx(o.n_ctx) > eff_ctx(model->reserved.n_ctx) || o.n_batch > model->reserved.n_batch)
        api_fail(MOE_STATUS_INVALID_ARGUMENT,
                 "moe_session_new: n_ctx " + std::to_string(eff_ctx(o.n_ctx)) + " / n_batch " +
                     std::to_string(o.n_batch) + " exceed what the RAM budget reserved (n_ctx " +
                     std::to_string(eff_ctx(model->reserved.n_ctx)) + ", n_batch " +
                     std::to_string(model->reserved.n_batch) + "); raise moe_model_params.n_ctx/n_batch");
      if (live > model->n_sessions)
        api_fail(MOE_STATUS_INVALID_ARGUMENT,
                 "moe_session_new: the RAM budget reserved room for " + std::to_string(model->n_sessions) +
                     " session(s); raise moe_model_params.n_sessions");
    }
    auto s = std::make_unique<moe_session>();
    s->m = model;
    s->params = p;
    s->s = std::make_unique<moe::Session>(*model->model, *model->src, o);
    if (model->cache && o.vram_bytes == 0 && model->predictor != "none") {
      moe::PlannerOptions po;
      po.predictor = model->predictor;
      s->planner = std::make_unique<moe::PrefetchPlanner>(*model->model, model->cache, po, o.n_batch);
      s->s->set_observer(s->planner.get());
    }
    s->sampler = std::make_unique<moe::Sampler>(sampler_params(p.sampling), model->model->spec().n_vocab);
    s->ctx.reserve(s->s->n_ctx());
    slot.held = false;
    *out = s.release();
    return MOE_STATUS_OK;
  });
}

void moe_session_free(moe_session* session) {
  if (!session) return;
  session->m->live_sessions.fetch_sub(1);
  delete session;
}

moe_generate_params moe_generate_default_params(void) {
  moe_generate_params p;
  std::memset(&p, 0, sizeof p);
  p.n_predict = -1;
  p.add_special = true;
  p.parse_special = true;
  p.ignore_eog = false;
  p.render_special = false;
  p.stop = nullptr;
  p.n_stop = 0;
  return p;
}

namespace {

// Evaluates `input` after the session's context, then samples. Updates the session's statistics.
// Throws ApiError / moe::Error; the context stays consistent (ctx mirrors the KV cache) either way.
moe_status run_generation(moe_session* S, std::vector<int32_t> input, const moe_generate_params& gp,
                          const std::vector<std::string>& stops, moe_token_callback cb, void* ud,
                          uint64_t reused) {
  S->cancel.store(false, std::memory_order_relaxed);
  S->last_prompt = 0;
  S->last_reused = reused;
  S->last_generated = 0;
  S->last_decode_evals = 0;
  S->last_prefill_s = S->last_decode_s = 0;
  S->last_stop = MOE_STOP_ERROR;
  if (S->m->cache) S->cache_before = S->m->cache->stats();
  struct CacheSnap {
    moe_session* S;
    ~CacheSnap() {
      if (S->m->cache) S->cache_after = S->m->cache->stats();
    }
  } snap{S};

  moe::Session& sess = *S->s;
  const uint32_t n_vocab = S->m->model->spec().n_vocab;
  for (int32_t t : input)
    if (t < 0 || uint32_t(t) >= n_vocab)
      api_fail(MOE_STATUS_INVALID_ARGUMENT, "token id " + std::to_string(t) + " is out of range (n_vocab " +
                                                std::to_string(n_vocab) + ")");
  if (S->ctx.size() + input.size() > sess.n_ctx())
    api_fail(MOE_STATUS_CONTEXT_FULL, "the prompt (" + std::to_string(input.size()) + " new tokens after " +
                                          std::to_string(S->ctx.size()) + ") does not fit in the context of " +
                                          std::to_string(sess.n_ctx()) + " tokens");
  if (input.empty() && !S->logits_valid)
    api_fail(MOE_STATUS_INVALID_ARGUMENT, "nothing to evaluate: the prompt is empty and the session has no context");

  // The pending token (if any) leads `input` now.
  S->pending.reset();
  // Prefill in n_batch chunks; cancellation is checked between chunks.
  const uint32_t n_batch = std::max<uint32_t>(1, S->params.n_batch ? S->params.n_batch : S->m->reserved.n_batch);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < input.size(); i += n_batch) {
    if (S->cancel.load(std::memory_order_relaxed)) {
      S->last_prefill_s = seconds_since(t0);
      S->prefill_s += S->last_prefill_s;
      S->last_stop = MOE_STOP_CANCELLED;
      api_fail(MOE_STATUS_CANCELLED, "generation cancelled during prefill");
    }
    const size_t n = std::min<size_t>(n_batch, input.size() - i);
    S->logits_valid = false;
    S->logits = sess.eval(std::span<const int32_t>(input.data() + i, n));
    S->logits_valid = true;
    S->ctx.insert(S->ctx.end(), input.begin() + i, input.begin() + i + n);
    S->last_prompt += n;
    S->prompt_tokens += n;
  }
  S->last_prefill_s = seconds_since(t0);
  S->prefill_s += S->last_prefill_s;

  // Decode.
  const moe::Tokenizer* tok = S->m->tok.get();
  std::optional<moe::StreamingDecoder> dec;
  if (tok) {
    moe::StreamingDecoder::Options o;
    o.special = gp.render_special;
    dec.emplace(*tok, o);
  }
  const moe::ModelSpec& spec = S->m->model->spec();
  auto is_eog = [&](int32_t t) { return tok ? tok->is_eog(t) : (spec.eos_id && uint32_t(t) == *spec.eos_id); };

  std::string held;  // decoded text not yet given to the callback (possible stop-string prefix)
  bool stopped_by_string = false;
  // Moves what cannot start a stop string any more from `held` to the callback. Returns the
  // callback's verdict.
  auto deliver = [&](int32_t token, bool final) -> bool {
    size_t safe = held.size();
    if (!stopped_by_string) {
      for (const auto& s : stops) {
        const size_t pos = held.find(s);
        if (pos != std::string::npos) {
          held.resize(pos);
          safe = pos;
          stopped_by_string = true;
        }
      }
    }
    if (!final && !stopped_by_string)
      for (const auto& s : stops)
        for (size_t k = std::min(s.size() - 1, held.size()); k > 0; --k)
          if (held.compare(held.size() - k, k, s, 0, k) == 0) {
            safe = std::min(safe, held.size() - k);
            break;
          }
    const std::string piece = held.substr(0, safe);
    held.erase(0, safe);
    if (!cb) return true;
    if (final && piece.empty()) return true;
    return cb(piece.c_str(), piece.size(), token, ud);
  };

  const auto t1 = std::chrono::steady_clock::now();
  moe_stop_reason reason = MOE_STOP_N_PREDICT;
  moe_status status = MOE_STATUS_OK;
  int32_t produced = 0;
  for (;;) {
    if (gp.n_predict >= 0 && produced >= gp.n_predict) {
      reason = MOE_STOP_N_PREDICT;
      break;
    }
    if (S->cancel.load(std::memory_order_relaxed)) {
      reason = MOE_STOP_CANCELLED;
      status = MOE_STATUS_CANCELLED;
      break;
    }
    // The last sampled token is still to be evaluated when `pending` is set.
    if (S->pending) {
      if (S->ctx.size() >= sess.n_ctx()) {
        reason = MOE_STOP_CONTEXT_FULL;
        break;
      }
      const int32_t t = *S->pending;
      S->logits_valid = false;
      S->logits = sess.eval(std::span<const int32_t>(&t, 1));
      S->logits_valid = true;
      S->ctx.push_back(t);
      S->pending.reset();
      ++S->last_decode_evals;
      ++S->decode_evals;
      if (S->cancel.load(std::memory_order_relaxed)) {
        reason = MOE_STOP_CANCELLED;
        status = MOE_STATUS_CANCELLED;
        break;
      }
    }
    const int32_t t = S->sampler->sample(S->logits, S->ctx);
    if (is_eog(t) && !gp.ignore_eog) {
      reason = MOE_STOP_EOG;
      break;
    }
    S->pending = t;
    ++produced;
    ++S->last_generated;
    ++S->generated_tokens;
    if (dec) held += dec->push(t);
    const bool go_on = deliver(t, false);
    if (stopped_by_string) {
      reason = MOE_STOP_STRING;
      break;
    }
    if (!go_on) {
      reason = MOE_STOP_CALLBACK;
      break;
    }
  }
  if (dec) held += dec->flush();
  if (reason != MOE_STOP_STRING) deliver(-1, true);
  S->last_decode_s = seconds_since(t1);
  S->decode_s += S->last_decode_s;
  S->last_stop = reason;
  if (status == MOE_STATUS_CANCELLED) set_error(status, "generation cancelled");
  return status;
}

// Cuts the engine's KV cache back to n tokens when the engine offers Session::truncate (a one-line
// engine addition); false (and nothing done) otherwise.
extern "C++" {
template <typename EngineSession>
bool try_truncate(EngineSession& e, uint32_t n) {
  if constexpr (requires { e.truncate(n); }) {
    e.truncate(n);
    return true;
  } else {
    return false;
  }
}
}

std::vector<std::string> stop_strings(const moe_generate_params& gp) {
  std::vector<std::string> v;
  MOE_REQUIRE(gp.stop || gp.n_stop == 0, "generate params: stop is NULL with n_stop > 0");
  for (size_t i = 0; i < gp.n_stop; ++i)
    if (gp.stop[i] && gp.stop[i][0]) v.emplace_back(gp.stop[i]);
  return v;
}

std::vector<int32_t> with_pending(moe_session* S, std::vector<int32_t> prompt) {
  if (S->pending) {
    prompt.insert(prompt.begin(), *S->pending);  // run_generation clears it once it evaluates
  }
  return prompt;
}

}  // namespace

moe_status moe_session_generate(moe_session* session, const char* prompt, const moe_generate_params* params,
                                moe_token_callback callback, void* user_data) {
  return guard([&]() -> moe_status {
    MOE_REQUIRE(session && prompt, "moe_session_generate: NULL argument");
    const moe_generate_params gp = params ? *params : moe_generate_default_params();
    if (!session->m->tok) api_fail(MOE_STATUS_UNSUPPORTED, "the model has no tokenizer: use moe_session_generate_tokens");
    const bool first = session->ctx.empty() && !session->pending;
    auto ids = session->m->tok->tokenize(prompt, gp.add_special && first, gp.parse_special);
    return run_generation(session, with_pending(session, std::move(ids)), gp, stop_strings(gp), callback,
                          user_data, 0);
  });
}

moe_status moe_session_generate_tokens(moe_session* session, const int32_t* tokens, size_t n_tokens,
                                       const moe_generate_params* params, moe_token_callback callback,
                                       void* user_data) {
  return guard([&]() -> moe_status {
    MOE_REQUIRE(session && (tokens || n_tokens == 0), "moe_session_generate_tokens: NULL argument");
    const moe_generate_params gp = params ? *params : moe_generate_default_params();
    std::vector<int32_t> ids(tokens, tokens + n_tokens);
    return run_generation(session, with_pending(session, std::move(ids)), gp, stop_strings(gp), callback,
                          user_data, 0);
  });
}

moe_status moe_session_chat(moe_session* session, const moe_chat_message* messages, size_t n_messages,
                            const moe_generate_params* params, moe_token_callback callback, void* user_data) {
  return guard([&]() -> moe_status {
    MOE_REQUIRE(session && (messages || n_messages == 0), "moe_session_chat: NULL argument");
    MOE_REQUIRE(n_messages > 0, "moe_session_chat: no messages");
    moe_model* m = session->m;
    if (!m->tok) api_fail(MOE_STATUS_UNSUPPORTED, "the model has no tokenizer: chat needs one");
    const moe_generate_params gp = params ? *params : moe_generate_default_params();
    std::vector<std::string> stops = stop_strings(gp);
    std::string text;
    if (m->tmpl) {
      moe::chat::Conversation conv;
      for (size_t i = 0; i < n_messages; ++i) {
        moe::chat::ChatMessage msg;
        msg.role = messages[i].role ? messages[i].role : "user";
        msg.content = moe::chat::Value(std::string(messages[i].content ? messages[i].content : ""));
        conv.messages.push_back(std::move(msg));
      }
      conv.add_generation_prompt = true;
      conv.bos_token = m->bos_text;
      conv.eos_token = m->eos_text;
      text = m->tmpl->render(moe::chat::make_context(conv));
    } else {
      text = render_fallback(messages, n_messages);
      stops.emplace_back(kFallbackStop);
    }
    std::vector<int32_t> ids = m->tok->tokenize(text, /*add_special=*/false, /*parse_special=*/true);
    const moe::TokenId bos = m->tok->bos();
    if (m->tok->add_bos() && bos != moe::kNoToken && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);

    // Reuse the longest prefix already in the KV cache (at least one token is always re-evaluated,
    // for its logits). When the cached tokens diverge from the new rendering (a reply that
    // re-tokenizes differently, a template that rewrites history), the cache is cut back to the common
    // prefix where the engine can truncate, else evaluated from scratch.
    session->pending.reset();
    size_t p = 0;
    while (p < session->ctx.size() && p < ids.size() && session->ctx[p] == ids[p]) ++p;
    if (p == ids.size() && p > 0) --p;
    if (p < session->ctx.size()) {
      if (try_truncate(*session->s, static_cast<uint32_t>(p))) {
        session->ctx.resize(p);
      } else {
        session->s->reset();
        session->ctx.clear();
        p = 0;
      }
      session->logits_valid = false;
    }
    std::vector<int32_t> rest(ids.begin() + static_cast<std::ptrdiff_t>(p), ids.end());
    return run_generation(session, std::move(rest), gp, stops, callback, user_data, p);
  });
}

void moe_session_cancel(moe_session* session) {
  if (session) session->cancel.store(true, std::memory_order_relaxed);
}

void moe_session_reset(moe_session* session) {
  if (!session) return;
  session->s->reset();
  session->s->reset_stats();
  if (session->planner) session->planner->begin_request(++session->requests);
  session->sampler->reseed(session->params.sampling.seed);
  session->ctx.clear();
  session->pending.reset();
  session->logits_valid = false;
  session->prompt_tokens = session->generated_tokens = session->decode_evals = 0;
  session->prefill_s = session->decode_s = 0;
  session->last_prompt = session->last_reused = session->last_generated = session->last_decode_evals = 0;
  session->last_prefill_s = session->last_decode_s = 0;
  session->last_stop = MOE_STOP_NONE;
  session->cache_before = session->cache_after = {};
}

uint32_t moe_session_n_past(const moe_session* session) {
  return session ? static_cast<uint32_t>(session->ctx.size()) : 0;
}

moe_status moe_session_get_stats(const moe_session* session, moe_session_stats* stats) {
  return guard([&]() -> moe_status {
    MOE_REQUIRE(session && stats, "moe_session_get_stats: NULL argument");
    moe_session_stats r;
    std::memset(&r, 0, sizeof r);
    const moe_session& S = *session;
    r.n_ctx = S.s->n_ctx();
    r.n_past = static_cast<uint32_t>(S.ctx.size());
    r.prompt_tokens = S.prompt_tokens;
    r.generated_tokens = S.generated_tokens;
    r.prefill_seconds = S.prefill_s;
    r.decode_seconds = S.decode_s;
    r.prefill_tok_s = S.prefill_s > 0 ? double(S.prompt_tokens) / S.prefill_s : 0;
    r.decode_tok_s = S.decode_s > 0 ? double(S.generated_tokens) / S.decode_s : 0;
    r.expert_acquires = S.s->stats().expert_acquires;
    r.expert_bytes = S.s->stats().expert_bytes;
    r.last_prompt_tokens = S.last_prompt;
    r.last_reused_tokens = S.last_reused;
    r.last_generated_tokens = S.last_generated;
    r.last_prefill_tok_s = S.last_prefill_s > 0 ? double(S.last_prompt) / S.last_prefill_s : 0;
    // Decode speed counts the tokens sampled per second of the decode phase (each after one eval).
    r.last_decode_tok_s = S.last_decode_s > 0 ? double(S.last_generated) / S.last_decode_s : 0;
    r.last_stop_reason = S.last_stop;
    if (S.m->cache) {
      r.has_cache = true;
      const moe::StoreStats now = S.m->cache->stats();
      const moe::StoreStats& a = S.cache_before;
      const moe::StoreStats& b = S.cache_after;
      r.last_cache_hits = b.hits - a.hits;
      r.last_cache_misses = b.misses - a.misses;
      const uint64_t n = (b.hits - a.hits) + (b.inflight_hits - a.inflight_hits) + (b.misses - a.misses);
      r.last_cache_hit_rate = n ? double(b.hits - a.hits) / double(n) : 0;
      r.last_bytes_read = b.bytes_read - a.bytes_read;
      r.last_stall_seconds = b.stall_seconds - a.stall_seconds;
      r.cache_hits = now.hits;
      r.cache_misses = now.misses;
      r.cache_hit_rate = now.hit_rate();
      r.bytes_read = now.bytes_read;
    }
    *stats = r;
    return MOE_STATUS_OK;
  });
}

}  // extern "C"
