// moe/moe.hpp — C++ RAII wrappers over the C API (moe/moe.h); header-only, includes nothing of the
// library but moe.h, so a program embedding libmoe needs only these two headers.
//
// moe::api::Model and moe::api::Session own their handles (move-only). Failures throw
// moe::api::Error carrying the moe_status and moe_last_error()'s message. Cancellation is not an
// error: generate()/chat() return the stop reason (MOE_STOP_CANCELLED when cancelled). An exception
// thrown by a callback stops the generation and is rethrown from generate()/chat().
//
// Thread-safety: as the C API: a Model may be shared by sessions on different threads; a Session is
// used by one thread at a time, except cancel(), which any thread may call.
#pragma once
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/moe.h"

namespace moe::api {

class Error : public std::runtime_error {
 public:
  Error(moe_status status, const std::string& message)
      : std::runtime_error(message.empty() ? std::string(moe_status_string(status)) : message), status_(status) {}
  moe_status status() const noexcept { return status_; }

 private:
  moe_status status_;
};

inline void check(moe_status s) {
  if (s != MOE_STATUS_OK) throw Error(s, moe_last_error());
}

class Model {
 public:
  // Returns false to cancel the load (the constructor then throws Error with MOE_STATUS_CANCELLED).
  using Progress = std::function<bool(float progress)>;

  explicit Model(const std::string& path, const moe_model_params& params = moe_model_default_params(),
                 Progress progress = {}) {
    struct Ctx {
      Progress* fn;
      std::exception_ptr err;
    } ctx{&progress, nullptr};
    auto tramp = [](float f, void* ud) -> bool {
      auto* c = static_cast<Ctx*>(ud);
      try {
        return (*c->fn)(f);
      } catch (...) {
        c->err = std::current_exception();
        return false;
      }
    };
    const moe_status s = moe_model_load(path.c_str(), &params, progress ? +tramp : nullptr, &ctx, &m_);
    if (ctx.err) std::rethrow_exception(ctx.err);
    check(s);
  }
  ~Model() { moe_model_free(m_); }
  Model(Model&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
  Model& operator=(Model&& o) noexcept {
    if (this != &o) {
      moe_model_free(m_);
      m_ = std::exchange(o.m_, nullptr);
    }
    return *this;
  }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  moe_model* get() const noexcept { return m_; }

  moe_model_info info() const {
    moe_model_info i;
    check(moe_model_get_info(m_, &i));
    return i;
  }

  std::vector<int32_t> tokenize(std::string_view text, bool add_special = false, bool parse_special = false) const {
    size_t n = 0;
    moe_status s = moe_model_tokenize(m_, text.data(), text.size(), add_special, parse_special, nullptr, 0, &n);
    if (s != MOE_STATUS_OK && s != MOE_STATUS_INVALID_ARGUMENT) check(s);
    std::vector<int32_t> ids(n);
    check(moe_model_tokenize(m_, text.data(), text.size(), add_special, parse_special, ids.data(), ids.size(), &n));
    return ids;
  }

  std::string detokenize(const std::vector<int32_t>& ids) const {
    size_t len = 0;
    check(moe_model_detokenize(m_, ids.data(), ids.size(), nullptr, 0, &len));
    std::string out(len + 1, '\0');
    check(moe_model_detokenize(m_, ids.data(), ids.size(), out.data(), out.size(), &len));
    out.resize(len);
    return out;
  }

 private:
  moe_model* m_ = nullptr;
};

struct GenerateOptions {
  int32_t n_predict = -1;       // < 0: until end of generation or a full context
  bool add_special = true;      // text prompts: BOS when the session is empty
  bool parse_special = true;    // text prompts: control tokens written in the text
  bool ignore_eog = false;
  bool render_special = false;
  std::vector<std::string> stop;  // stop strings (not emitted)
};

struct Message {
  std::string role, content;
};

class Session {
 public:
  // text: newly complete UTF-8 text (may be empty); token: the id, or -1 for a final flush.
  // Return false to stop.
  using OnToken = std::function<bool(std::string_view text, int32_t token)>;

  explicit Session(const Model& model, const moe_session_params& params = moe_session_default_params()) {
    check(moe_session_new(model.get(), &params, &s_));
  }
  ~Session() { moe_session_free(s_); }
  Session(Session&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Session& operator=(Session&& o) noexcept {
    if (this != &o) {
      moe_session_free(s_);
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  moe_session* get() const noexcept { return s_; }

  moe_stop_reason generate(const std::string& prompt, const OnToken& on_token = {},
                           const GenerateOptions& o = {}) {
    return run(o, on_token, [&](const moe_generate_params* p, moe_token_callback cb, void* ud) {
      return moe_session_generate(s_, prompt.c_str(), p, cb, ud);
    });
  }

  moe_stop_reason generate(const std::vector<int32_t>& tokens, const OnToken& on_token = {},
                           const GenerateOptions& o = {}) {
    return run(o, on_token, [&](const moe_generate_params* p, moe_token_callback cb, void* ud) {
      return moe_session_generate_tokens(s_, tokens.data(), tokens.size(), p, cb, ud);
    });
  }

  // Renders the whole conversation with the model's chat template and generates the reply,
  // evaluating only what is not already in the KV cache.
  moe_stop_reason chat(const std::vector<Message>& messages, const OnToken& on_token = {},
                       const GenerateOptions& o = {}) {
    std::vector<moe_chat_message> msgs;
    msgs.reserve(messages.size());
    for (const auto& m : messages) msgs.push_back({m.role.c_str(), m.content.c_str()});
    return run(o, on_token, [&](const moe_generate_params* p, moe_token_callback cb, void* ud) {
      return moe_session_chat(s_, msgs.data(), msgs.size(), p, cb, ud);
    });
  }

  void cancel() noexcept { moe_session_cancel(s_); }
  void reset() noexcept { moe_session_reset(s_); }
  uint32_t n_past() const noexcept { return moe_session_n_past(s_); }

  moe_session_stats stats() const {
    moe_session_stats st;
    check(moe_session_get_stats(s_, &st));
    return st;
  }

 private:
  template <typename Call>
  moe_stop_reason run(const GenerateOptions& o, const OnToken& on_token, Call&& call) {
    std::vector<const char*> stops;
    for (const auto& s : o.stop) stops.push_back(s.c_str());
    moe_generate_params p = moe_generate_default_params();
    p.n_predict = o.n_predict;
    p.add_special = o.add_special;
    p.parse_special = o.parse_special;
    p.ignore_eog = o.ignore_eog;
    p.render_special = o.render_special;
    p.stop = stops.empty() ? nullptr : stops.data();
    p.n_stop = stops.size();
    struct Ctx {
      const OnToken* fn;
      std::exception_ptr err;
    } ctx{&on_token, nullptr};
    auto tramp = [](const char* text, size_t len, int32_t token, void* ud) -> bool {
      auto* c = static_cast<Ctx*>(ud);
      try {
        return (*c->fn)(std::string_view(text, len), token);
      } catch (...) {
        c->err = std::current_exception();
        return false;
      }
    };
    const moe_status s = call(&p, on_token ? +tramp : nullptr, &ctx);
    if (ctx.err) std::rethrow_exception(ctx.err);
    if (s != MOE_STATUS_CANCELLED) check(s);
    return stats().last_stop_reason;
  }

  moe_session* s_ = nullptr;
};

}  // namespace moe::api
