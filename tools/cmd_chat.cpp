// `moe chat`: an interactive multi-turn chat on the command line, built only on the public API
// (moe/moe.hpp over moe/moe.h).
//   moe chat -m MODEL [--ram SIZE --vram SIZE --policy NAME --predictor NAMES --scope global|layer --io auto|uring|pread]
//            [--system TEXT] [--temp T --top-k K --top-p P --min-p M --repeat-penalty R --seed S]
//            [-n N] [-c CTX] [-t THREADS]
// Each line read from stdin is one user turn (a "> " prompt is shown only when stdin is a terminal,
// so the command can be scripted). The reply is streamed token by token; the conversation is
// re-rendered with the model's chat template every turn and only the tokens after the prefix already
// in the KV cache are evaluated. Commands: /reset (forget the conversation), /stats (session and
// cache statistics), /exit (or end of input). Ctrl-C stops the current reply, not the program.
// After each reply one line of statistics goes to stderr.
//
// Thread-safety: single-threaded, apart from the SIGINT handler, which only calls the
// async-signal-safe moe_session_cancel() (one atomic store) and write().
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cli.h"
#include "moe/moe.hpp"

namespace moe::tools {
namespace {

struct ChatArgs {
  std::string model, system, policy = "arc", scope = "global", io = "auto", ram, vram, predictor = "pregated";
  int n_predict = 512;
  uint32_t n_ctx = 0;
  int threads = 0;
  bool no_mmap = false;
  moe_sampling_params sp = moe_session_default_params().sampling;
};

// The session the SIGINT handler cancels (null while no reply is being generated).
std::atomic<moe_session*> g_active{nullptr};

extern "C" void on_sigint(int) {
  if (moe_session* s = g_active.load()) {
    moe_session_cancel(s);
  } else {
    static const char msg[] = "\n(Ctrl-C stops a reply; use /exit or Ctrl-D to quit)\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
  }
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", b, units[u]);
  return buf;
}

void print_turn_stats(const moe_session_stats& st) {
  std::string line = "[" + std::to_string(st.last_generated_tokens) + " tokens";
  char buf[160];
  std::snprintf(buf, sizeof buf, ", prompt %llu new + %llu cached at %.1f tok/s, decode %.1f tok/s",
                (unsigned long long)st.last_prompt_tokens, (unsigned long long)st.last_reused_tokens,
                st.last_prefill_tok_s, st.last_decode_tok_s);
  line += buf;
  if (st.has_cache) {
    std::snprintf(buf, sizeof buf, ", hit rate %.1f%%, read %s, stall %.2f s", 100.0 * st.last_cache_hit_rate,
                  human_bytes(double(st.last_bytes_read)).c_str(), st.last_stall_seconds);
    line += buf;
  } else {
    line += ", experts via mmap";
  }
  std::snprintf(buf, sizeof buf, ", ctx %u/%u]", st.n_past, st.n_ctx);
  line += buf;
  std::fprintf(stderr, "%s\n", line.c_str());
}

void print_stats(const moe_session_stats& st, const moe_model_info& info) {
  std::printf("stats: context %u/%u tokens\n", st.n_past, st.n_ctx);
  std::printf("stats: prompt %llu tokens in %.2f s (%.1f tok/s), generated %llu tokens in %.2f s (%.1f tok/s)\n",
              (unsigned long long)st.prompt_tokens, st.prefill_seconds, st.prefill_tok_s,
              (unsigned long long)st.generated_tokens, st.decode_seconds, st.decode_tok_s);
  std::printf("stats: experts used %llu times, %s of expert weights read by the kernels\n",
              (unsigned long long)st.expert_acquires, human_bytes(double(st.expert_bytes)).c_str());
  if (st.has_cache)
    std::printf("stats: cache %u slots, hit rate %.1f%% (%llu hits, %llu misses), %s read from the file\n",
                info.cache_slots, 100.0 * st.cache_hit_rate, (unsigned long long)st.cache_hits,
                (unsigned long long)st.cache_misses, human_bytes(double(st.bytes_read)).c_str());
  else
    std::printf("stats: no expert cache (experts read through the memory map)\n");
  std::fflush(stdout);
}

int chat(const ChatArgs& a) {
  moe_model_params mp = moe_model_default_params();
  mp.n_threads = a.threads;
  mp.ram_budget_bytes = a.ram.empty() ? 0 : parse_bytes(a.ram);
  mp.load_to_ram = a.no_mmap;
  mp.cache_policy = a.policy.c_str();
  mp.cache_scope = a.scope.c_str();
  mp.io_backend = a.io.c_str();
  mp.predictor = a.predictor.c_str();
  mp.n_ctx = a.n_ctx;
  const bool tty_err = isatty(STDERR_FILENO);
  int last_pct = -1;
  api::Model model(a.model, mp, [&](float f) {
    if (!tty_err) return true;
    const int pct = static_cast<int>(f * 100.0f + 0.5f);
    if (pct == last_pct) return true;
    last_pct = pct;
    const int w = 30, fill = pct * w / 100;
    std::fprintf(stderr, "\rloading [%.*s%.*s] %3d%%", fill, "##############################", w - fill,
                 "..............................", pct);
    if (pct >= 100) std::fprintf(stderr, "\n");
    std::fflush(stderr);
    return true;
  });
  const moe_model_info info = model.info();
  if (!info.has_tokenizer) {
    std::fprintf(stderr, "moe chat: %s has no tokenizer; chat needs one\n", a.model.c_str());
    return 1;
  }
  if (!info.has_chat_template)
    std::fprintf(stderr, "moe chat: %s has no chat template; using a plain 'User:/Assistant:' format\n",
                 a.model.c_str());

  moe_session_params sp = moe_session_default_params();
  sp.sampling = a.sp;
  sp.vram_bytes = a.vram.empty() ? 0 : parse_bytes(a.vram);
  api::Session session(model, sp);

  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_sa;
  sigaction(SIGINT, &sa, &old_sa);

  std::vector<api::Message> history;
  if (!a.system.empty()) history.push_back({"system", a.system});
  const bool tty_in = isatty(STDIN_FILENO);
  api::GenerateOptions go;
  go.n_predict = a.n_predict;
  std::string line;
  for (;;) {
    if (tty_in) {
      std::printf("> ");
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      session.reset();
      history.clear();
      if (!a.system.empty()) history.push_back({"system", a.system});
      std::printf("(conversation reset)\n");
      std::fflush(stdout);
      continue;
    }
    if (line == "/stats") {
      print_stats(session.stats(), info);
      continue;
    }
    if (line[0] == '/' && line.find(' ') == std::string::npos) {
      std::printf("(unknown command %s; commands: /reset /stats /exit)\n", line.c_str());
      std::fflush(stdout);
      continue;
    }
    history.push_back({"user", line});
    std::string reply;
    moe_stop_reason why = MOE_STOP_NONE;
    g_active.store(session.get());
    try {
      why = session.chat(history, [&](std::string_view text, int32_t) {
        reply.append(text);
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
        return true;
      }, go);
    } catch (const api::Error& e) {
      g_active.store(nullptr);
      std::printf("\n");
      std::fprintf(stderr, "moe chat: %s\n", e.what());
      history.pop_back();  // the turn did not happen; the conversation goes on
      if (e.status() == MOE_STATUS_CONTEXT_FULL)
        std::fprintf(stderr, "moe chat: the context is full; /reset starts a new conversation\n");
      continue;
    }
    g_active.store(nullptr);
    std::printf("\n");
    std::fflush(stdout);
    if (why == MOE_STOP_CANCELLED) std::fprintf(stderr, "(reply stopped)\n");
    if (why == MOE_STOP_CONTEXT_FULL)
      std::fprintf(stderr, "(the context is full; /reset starts a new conversation)\n");
    history.push_back({"assistant", reply});
    print_turn_stats(session.stats());
  }
  sigaction(SIGINT, &old_sa, nullptr);
  if (tty_in) std::printf("\n");
  return 0;
}

Registrar reg("chat", "Chat with a model (its chat template, streamed replies, multi-turn)", [](CLI::App& app) -> Action {
  auto a = std::make_shared<ChatArgs>();
  app.add_option("-m,--model", a->model, "GGUF model file")->required();
  app.add_option("--system", a->system, "System message");
  app.add_option("--ram", a->ram, "Memory budget of the process (e.g. 8G): experts are cached in RAM");
  app.add_flag("--no-mmap", a->no_mmap,
               "Copy the whole model into RAM (transparent huge pages) instead of mapping the file. Not with --ram");
  app.add_option("--vram", a->vram, "Run on the GPU with this much device memory (e.g. 12G); default: CPU");
  app.add_option("--policy", a->policy, "Expert cache eviction policy: arc, lru, lfu, lfru")->capture_default_str();
  app.add_option("--predictor", a->predictor,
                 "With --ram on the CPU: prefetch predictors (pregated, transition, popularity, history; "
                 "comma-separated to combine) or none")
      ->capture_default_str();
  app.add_option("--scope", a->scope, "Cache scope: global or layer");
  app.add_option("--io", a->io, "Expert read backend: auto, uring, pread");
  app.add_option("-n,--n-predict", a->n_predict, "Tokens per reply at most (-1 = until the end of turn)");
  app.add_option("-c,--ctx-size", a->n_ctx, "Context size in tokens (0 = min(training context, 4096))");
  app.add_option("-t,--threads", a->threads, "Threads (0 = all cores)");
  app.add_option("--temp", a->sp.temperature, "Temperature (0 = greedy)");
  app.add_option("--top-k", a->sp.top_k, "Top-k (0 = off)");
  app.add_option("--top-p", a->sp.top_p, "Top-p (1 = off)");
  app.add_option("--min-p", a->sp.min_p, "Min-p (0 = off)");
  app.add_option("--repeat-penalty", a->sp.repeat_penalty, "Repetition penalty (1 = off)");
  app.add_option("--repeat-last-n", a->sp.penalty_last_n, "Penalty window in tokens (-1 = all)");
  app.add_option("-s,--seed", a->sp.seed, "Sampling seed");
  return [a] {
    try {
      return chat(*a);
    } catch (const api::Error& e) {
      std::fprintf(stderr, "moe chat: error: %s\n", e.what());
      return 1;
    }
  };
});

}  // namespace
}  // namespace moe::tools
