/* moe/moe.h — the C API for embedding the moe runtime: load a Mixture-of-Experts GGUF model (experts
 * optionally served from a RAM-budgeted cache over the file), open sessions on it, generate text
 * token by token with a callback, chat with the model's own chat template.
 *
 * Conventions
 * - Opaque handles: moe_model (immutable weights, tokenizer, chat template, expert source) and
 *   moe_session (KV cache, sampler, scratch). *_default_params() return structs by value; change the
 *   fields you care about and pass them to the constructor.
 * - Every fallible call returns a moe_status. On failure, moe_last_error() returns a message naming
 *   the file and the cause. No C++ exception ever crosses this boundary; the library never calls
 *   exit() or abort() on bad input.
 * - No global mutable state: the only per-process state is the thread-local last-error string.
 * - Strings are UTF-8 and NUL-terminated unless a length is passed; strings passed in params are
 *   copied during the call (they need not outlive it).
 *
 * Thread-safety (per function, also repeated below)
 * - moe_model_*: load/free on one thread each; a loaded model is immutable and may be shared by
 *   sessions used on different threads at once (the expert cache is internally synchronised).
 *   moe_model_free only after every session on it was freed.
 * - moe_session_*: a session is used by one thread at a time, EXCEPT moe_session_cancel(), which may
 *   be called from any thread (or a signal handler) while another thread generates.
 * - moe_status_string, moe_*_default_params: pure, any thread.
 * - moe_last_error: per thread.
 */
#ifndef MOE_MOE_H
#define MOE_MOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define MOE_API __declspec(dllexport)
#elif defined(__GNUC__)
#define MOE_API __attribute__((visibility("default")))
#else
#define MOE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define MOE_API_VERSION 1

/* ---- status ------------------------------------------------------------------------------------ */

/* Values are stable and contiguous (no holes). */
typedef enum moe_status {
  MOE_STATUS_OK = 0,
  MOE_STATUS_INVALID_ARGUMENT = 1, /* the caller passed something impossible (NULL, bad name, budget) */
  MOE_STATUS_IO = 2,               /* open/read failed */
  MOE_STATUS_CORRUPT = 3,          /* the file is not what it claims (bad magic, truncated) */
  MOE_STATUS_UNSUPPORTED = 4,      /* a well-formed file this build cannot run */
  MOE_STATUS_OUT_OF_MEMORY = 5,
  MOE_STATUS_CANCELLED = 6,        /* a progress callback or moe_session_cancel() stopped the call */
  MOE_STATUS_CONTEXT_FULL = 7,     /* the prompt does not fit in the session's context */
  MOE_STATUS_INTERNAL = 8,         /* a bug: please report the message */
  MOE_STATUS_COUNT = 9
} moe_status;

/* A static English name ("ok", "io error", ...); "unknown status" for values out of range.
 * Thread-safe. */
MOE_API const char* moe_status_string(moe_status status);

/* The message of the most recent call on THIS thread that failed (returned a status other than
 * MOE_STATUS_OK); "" when none has. Successful calls leave it unchanged. The pointer stays valid
 * until the next failing call on this thread. Thread-safe (thread-local). */
MOE_API const char* moe_last_error(void);

/* The library's version, e.g. "0.1.0". Thread-safe. */
MOE_API const char* moe_version(void);

/* ---- model ------------------------------------------------------------------------------------- */

typedef struct moe_model moe_model;

typedef struct moe_model_params {
  int32_t n_threads;         /* compute threads per session; 0 = all cores */
  uint64_t ram_budget_bytes; /* memory for the whole process; 0 = no budget (experts read through
                                the file's memory map, the page cache is the cache) */
  const char* cache_policy;  /* with a budget: "arc" (NULL = "arc"), "lru", "lfu", "lfru", "static" */
  const char* cache_scope;   /* "global" (NULL) = one pool; "layer" = the budget split per layer */
  const char* usage_profile; /* "static" policy: path of a usage profile (moe trace); else NULL */
  const char* io_backend;    /* "auto" (NULL), "uring" or "pread" */
  bool direct_io;            /* O_DIRECT expert reads (falls back to buffered when refused) */
  /* The sessions the RAM budget reserves room for (KV cache and scratch are sized from these). With
     a budget, moe_session_new refuses a session larger than this reservation. */
  uint32_t n_sessions;       /* sessions alive at once (>= 1) */
  uint32_t n_ctx;            /* their context in tokens; 0 = min(training context, 4096) */
  uint32_t n_batch;          /* their prefill batch in tokens (>= 1) */
  bool warm_dense;           /* read the dense (non-expert) weights once during load, reporting
                                progress, so the first token does not pay their page faults */
  /* With a budget, sessions on the CPU prefetch the next layer's experts while a layer computes:
     "pregated" (NULL), "none", or predictors combined with commas (pregated, transition, popularity,
     history). Never changes the output. */
  const char* predictor;
  /* Copy the whole model into RAM (transparent huge pages) instead of mapping the file: faster weight
     streaming, but the OS cannot reclaim the memory. Only without a budget (ram_budget_bytes 0). */
  bool load_to_ram;
} moe_model_params;

/* Defaults: all cores, no budget, arc/global/auto, direct IO on, 1 session, n_ctx 0, n_batch 64,
 * warm_dense on, pregated prefetch, the file mapped (load_to_ram off). Thread-safe. */
MOE_API moe_model_params moe_model_default_params(void);

/* Load progress in [0, 1] (monotonic; 1 is reported once at the end). Return false to cancel the
 * load (moe_model_load then returns MOE_STATUS_CANCELLED). Called on the loading thread. */
typedef bool (*moe_progress_callback)(float progress, void* user_data);

/* Opens and validates `path`, builds the tokenizer and chat template, sets up the expert source
 * (a RAM cache when params->ram_budget_bytes > 0) and optionally warms the dense weights.
 * params: NULL = defaults. progress: may be NULL. On success *out is a new model (free with
 * moe_model_free); on failure *out is NULL and moe_last_error() names the file and cause.
 * Thread-safety: reentrant (different threads may load different models at once). */
MOE_API moe_status moe_model_load(const char* path, const moe_model_params* params,
                                  moe_progress_callback progress, void* user_data, moe_model** out);

/* Frees the model. NULL is a no-op. PRECONDITION: every session on it was freed. */
MOE_API void moe_model_free(moe_model* model);

typedef struct moe_model_info {
  char architecture[32];        /* general.architecture, e.g. "qwen3moe" */
  uint32_t n_vocab;
  uint32_t n_ctx_train;
  uint32_t n_layer;
  uint32_t n_embd;
  uint32_t n_expert;            /* routed experts per MoE layer */
  uint32_t n_expert_used;       /* experts chosen per token */
  uint64_t file_bytes;
  uint64_t expert_bytes;        /* bytes of all routed experts */
  bool has_tokenizer;           /* false: only token-id prompts work */
  bool has_chat_template;       /* false: moe_session_chat uses a plain fallback format */
  bool has_cache;               /* experts served by a RAM cache (ram_budget_bytes > 0) */
  uint32_t cache_slots;         /* experts the cache holds (0 without a cache) */
  int32_t bos_token;            /* -1 when none */
  int32_t eos_token;            /* -1 when none */
} moe_model_info;

/* Fills *info. Thread-safe (the model is immutable). */
MOE_API moe_status moe_model_get_info(const moe_model* model, moe_model_info* info);

/* Tokenizes UTF-8 text. add_special: prepend BOS where the vocabulary asks for it; parse_special:
 * match control tokens written in the text. Writes up to `capacity` ids to `tokens` (may be NULL
 * when capacity is 0) and the full count to *n_tokens; returns MOE_STATUS_INVALID_ARGUMENT when
 * capacity is too small (call again with *n_tokens). Thread-safe. */
MOE_API moe_status moe_model_tokenize(const moe_model* model, const char* text, size_t text_len,
                                      bool add_special, bool parse_special, int32_t* tokens,
                                      size_t capacity, size_t* n_tokens);

/* The text of a whole token sequence (no leading-space or special-token clean-up beyond the
 * vocabulary's own rules). Writes at most `capacity` bytes plus a NUL to `buf` (truncating) and
 * the full length to *length (may be NULL). Thread-safe. */
MOE_API moe_status moe_model_detokenize(const moe_model* model, const int32_t* tokens, size_t n_tokens,
                                        char* buf, size_t capacity, size_t* length);

/* ---- session ----------------------------------------------------------------------------------- */

typedef struct moe_session moe_session;

typedef struct moe_sampling_params {
  float temperature;       /* <= 0: greedy (argmax, ties to the lowest id) */
  int32_t top_k;           /* <= 0: off */
  float top_p;             /* >= 1: off */
  float min_p;             /* <= 0: off */
  float repeat_penalty;    /* 1: off */
  float presence_penalty;  /* 0: off */
  float frequency_penalty; /* 0: off */
  int32_t penalty_last_n;  /* window of the penalties in tokens (0: off, -1: the whole context) */
  uint64_t seed;           /* same seed, same model, same calls: same tokens */
} moe_sampling_params;

typedef struct moe_session_params {
  uint32_t n_ctx;    /* KV cache positions; 0 = the model's n_ctx param */
  uint32_t n_batch;  /* prefill batch; 0 = the model's n_batch param */
  int32_t n_threads; /* 0 = the model's n_threads param */
  moe_sampling_params sampling;
  uint64_t vram_bytes; /* CUDA backend: device memory to use (dense weights, KV cache, scratch, then
                          an expert cache); 0 = run on the CPU. Without CUDA or a device: a notice
                          on stderr and the CPU. */
  int32_t gpu_device;  /* CUDA device index (with vram_bytes) */
} moe_session_params;

/* Defaults: n_ctx/n_batch/n_threads from the model; temperature 0.8, top_k 40, top_p 0.95, min_p
 * 0.05, penalties off (window 64), seed 0xC0FFEE. Thread-safe. */
MOE_API moe_session_params moe_session_default_params(void);

/* Creates a session (allocates its KV cache and scratch). params: NULL = defaults. Fails with
 * MOE_STATUS_INVALID_ARGUMENT when, under a RAM budget, the session exceeds what the model
 * reserved (moe_model_params.n_ctx / n_batch). Thread-safety: several threads may create sessions
 * on one model at once. */
MOE_API moe_status moe_session_new(moe_model* model, const moe_session_params* params, moe_session** out);

/* Frees the session. NULL is a no-op. PRECONDITION: no call on it is running. */
MOE_API void moe_session_free(moe_session* session);

/* Called once per generated token, on the generating thread. `text` holds the newly complete UTF-8
 * text (`len` bytes, also NUL-terminated): it may be empty (a partial character, or a possible
 * stop-string prefix, is held back until it resolves) and may include bytes of earlier tokens.
 * Return false to stop generating (the call then returns MOE_STATUS_OK, stop reason CALLBACK).
 * When generation ends with text still held back, one last call delivers it with token -1 (its
 * return value is ignored). */
typedef bool (*moe_token_callback)(const char* text, size_t len, int32_t token, void* user_data);

typedef enum moe_stop_reason {
  MOE_STOP_NONE = 0,         /* no generation has run */
  MOE_STOP_EOG = 1,          /* the model produced an end-of-generation token (not emitted) */
  MOE_STOP_N_PREDICT = 2,    /* n_predict tokens were generated */
  MOE_STOP_STRING = 3,       /* a stop string appeared (it is not emitted) */
  MOE_STOP_CALLBACK = 4,     /* the token callback returned false */
  MOE_STOP_CANCELLED = 5,    /* moe_session_cancel() */
  MOE_STOP_CONTEXT_FULL = 6, /* the KV cache is full */
  MOE_STOP_ERROR = 7         /* the call failed (see its status) */
} moe_stop_reason;

typedef struct moe_generate_params {
  int32_t n_predict;         /* tokens to generate at most; < 0 = until EOG or a full context */
  bool add_special;          /* text prompts: prepend BOS (where the vocabulary asks) when the
                                session is empty */
  bool parse_special;        /* text prompts: "<|im_start|>" written in the text is one token */
  bool ignore_eog;           /* keep generating past end-of-generation tokens */
  bool render_special;       /* control tokens appear in `text` as their text (else "") */
  const char* const* stop;   /* stop strings (n_stop of them; may be NULL) */
  size_t n_stop;
} moe_generate_params;

/* Defaults: n_predict -1, add_special true, parse_special true, others false/none. Thread-safe. */
MOE_API moe_generate_params moe_generate_default_params(void);

/* Appends the prompt to the session's context (after everything evaluated so far), then samples up
 * to n_predict tokens, calling `callback` (may be NULL) for each. Prefill runs in chunks of n_batch
 * tokens; moe_session_cancel() is honoured between chunks and between tokens (then returns
 * MOE_STATUS_CANCELLED; everything evaluated so far stays in the context). Returns
 * MOE_STATUS_CONTEXT_FULL when the prompt does not fit (nothing is evaluated). params: NULL =
 * defaults. Not thread-safe on one session. */
MOE_API moe_status moe_session_generate(moe_session* session, const char* prompt,
                                        const moe_generate_params* params, moe_token_callback callback,
                                        void* user_data);

/* As moe_session_generate with a prompt of token ids (n_tokens may be 0 to continue generating). */
MOE_API moe_status moe_session_generate_tokens(moe_session* session, const int32_t* tokens, size_t n_tokens,
                                               const moe_generate_params* params,
                                               moe_token_callback callback, void* user_data);

typedef struct moe_chat_message {
  const char* role;    /* "system", "user", "assistant", ... */
  const char* content; /* UTF-8 text */
} moe_chat_message;

/* Renders the WHOLE conversation (every message so far, with the assistant replies the caller kept)
 * with the model's chat template (tokenizer.chat_template; a plain "System:/User:/Assistant:" format
 * when the model has none) and a generation prompt, then evaluates only the tokens after the longest
 * prefix already in the session's KV cache and generates the reply. params: NULL = defaults (for
 * chat, add_special/parse_special are decided by the template path). Not thread-safe on one session. */
MOE_API moe_status moe_session_chat(moe_session* session, const moe_chat_message* messages, size_t n_messages,
                                    const moe_generate_params* params, moe_token_callback callback,
                                    void* user_data);

/* Asks the generation running on `session` to stop at the next token or prefill chunk. Callable
 * from any thread and from a signal handler (one lock-free atomic store). A cancel issued while no
 * generation runs is forgotten when the next generation starts. */
MOE_API void moe_session_cancel(moe_session* session);

/* Forgets the context (KV cache), reseeds the sampler with the session's seed and zeroes the
 * statistics: the session then behaves as a new one. Not thread-safe on one session. */
MOE_API void moe_session_reset(moe_session* session);

/* Tokens now in the session's context (KV cache). */
MOE_API uint32_t moe_session_n_past(const moe_session* session);

typedef struct moe_session_stats {
  uint32_t n_ctx;                 /* context size */
  uint32_t n_past;                /* tokens in the context */
  /* Totals since the session was created or reset. */
  uint64_t prompt_tokens;         /* prompt tokens evaluated */
  uint64_t generated_tokens;      /* tokens sampled and emitted */
  double prefill_seconds, decode_seconds;
  double prefill_tok_s, decode_tok_s;
  uint64_t expert_acquires;       /* expert uses by this session */
  uint64_t expert_bytes;          /* bytes of the experts used (what the kernels read) */
  /* The last generate/chat call. */
  uint64_t last_prompt_tokens;    /* tokens evaluated before sampling (the new part only) */
  uint64_t last_reused_tokens;    /* chat: prompt tokens found in the KV cache, not re-evaluated */
  uint64_t last_generated_tokens;
  double last_prefill_tok_s, last_decode_tok_s;
  moe_stop_reason last_stop_reason;
  /* The model's expert cache (shared by all sessions of the model), during the last call; all 0
     and has_cache false without a RAM budget. */
  bool has_cache;
  uint64_t last_cache_hits, last_cache_misses;
  double last_cache_hit_rate;     /* hits / (hits + in-flight hits + misses) */
  uint64_t last_bytes_read;       /* bytes read from the model file into the cache */
  double last_stall_seconds;      /* time spent waiting for expert reads */
  /* The same, cumulative since the model was loaded. */
  uint64_t cache_hits, cache_misses;
  double cache_hit_rate;
  uint64_t bytes_read;
} moe_session_stats;

/* Fills *stats. Not thread-safe on one session (call between generations). */
MOE_API moe_status moe_session_get_stats(const moe_session* session, moe_session_stats* stats);

#ifdef __cplusplus
}
#endif

#endif /* MOE_MOE_H */
