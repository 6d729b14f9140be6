// `moe run`: generate text from a prompt on the CPU engine.
//   moe run -m MODEL -p PROMPT|-f FILE -n N [--temp T --top-k K --top-p P --min-p M --seed S -t THREADS] [--json]
// Prints the generated text as it is produced, or with --json one object: prompt_tokens and
// generated_tokens (id lists), text, prefill_tok_s, decode_tok_s. Generation stops after N tokens,
// at an end-of-generation token (unless --ignore-eos) or when the text contains a --stop string
// (the stop string itself is not printed).
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"
#include "offload.h"
#include "moe/cache/profile.h"
#include "moe/engine.h"
#include "moe/error.h"
#include "moe/json.h"
#include "moe/sampler.h"
#include "moe/tokenizer.h"

namespace moe::tools {
namespace {

struct RunArgs {
  std::string model, prompt, prompt_ids, prompt_file;
  int n_predict = 64;
  SamplerParams sp;
  int threads = 0;
  uint32_t n_ctx = 0, n_batch = 0;  // n_batch 0: 64 on the CPU, 512 with --vram
  std::vector<std::string> stop;
  bool json = false, ignore_eos = false, stats = false;
  std::string save_profile;
  OffloadArgs offload;
};

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    try {
      ids.push_back(static_cast<int32_t>(std::stol(item)));
    } catch (...) {
      fail(ErrorCode::InvalidArgument, "--prompt-ids: '{}' is not a token id", item);
    }
  }
  return ids;
}

// The whole file as the prompt (as llama.cpp's -f); "-" reads standard input.
std::string read_prompt_file(const std::string& path) {
  FILE* f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (!f) fail(ErrorCode::Io, "moe run: cannot open the prompt file '{}': {}", path, std::strerror(errno));
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool bad = std::ferror(f) != 0;
  const int err = errno;
  if (f != stdin) std::fclose(f);
  if (bad) fail(ErrorCode::Io, "moe run: cannot read the prompt file '{}': {}", path, std::strerror(err));
  return text;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(const RunArgs& a) {
  auto model = a.offload.load_model(a.model);
  const ModelSpec& spec = model->spec();
  std::unique_ptr<Tokenizer> tok;
  if (model->file().find("tokenizer.ggml.tokens") && model->file().get_string("tokenizer.ggml.model") != "none") {
    try {
      tok = Tokenizer::from_gguf(model->file());
    } catch (const Error& e) {
      // Ids in, ids out still works without a usable vocabulary.
      if (a.prompt_ids.empty()) throw;
      std::fprintf(stderr, "moe run: no tokenizer (%s); printing token ids\n", e.what());
    }
  }

  std::vector<int32_t> prompt;
  if (!a.prompt_ids.empty()) {
    prompt = parse_ids(a.prompt_ids);
  } else {
    if (!tok) fail(ErrorCode::InvalidArgument, "{}: the model has no tokenizer; pass --prompt-ids", a.model);
    prompt = tok->tokenize(a.prompt, /*add_special=*/true, /*parse_special=*/true);
  }
  if (prompt.empty()) fail(ErrorCode::InvalidArgument, "the prompt is empty (no tokens)");

  SessionOptions so;
  so.n_threads = a.threads > 0 ? a.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  so.n_batch = a.n_batch ? a.n_batch : (a.offload.vram.empty() ? 64 : 512);
  so.n_ctx = a.n_ctx ? a.n_ctx : static_cast<uint32_t>(prompt.size() + std::max(0, a.n_predict));
  a.offload.apply_gpu(so);
  std::unique_ptr<ExpertSource> src_owner = a.offload.make_source(*model, so);
  ExpertSource& src = *src_owner;
  std::unique_ptr<PrefetchPlanner> planner = a.offload.make_planner(*model, src, so);
  Session sess(*model, src, so);
  sess.set_observer(planner.get());
  if (planner) planner->begin_request(0);
  // --save-profile: per (layer, expert) activation counts of the last prompt token and every
  // generated token (what the static hot-set policy loads).
  cache::UsageProfile profile;
  profile.resize(spec.n_layer, std::max<uint32_t>(spec.n_expert, 1));
  auto record_routing = [&] {
    if (a.save_profile.empty()) return;
    ++profile.total_tokens;
    for (uint32_t l = 0; l < spec.n_layer; ++l)
      for (int32_t e : sess.last_experts(l)) profile.add({l, static_cast<uint32_t>(e)});
  };
  Sampler sampler(a.sp, spec.n_vocab);

  std::vector<int32_t> history = prompt, generated;
  history.reserve(prompt.size() + a.n_predict);
  auto t0 = std::chrono::steady_clock::now();
  std::span<const float> logits = sess.eval(prompt);
  const double prefill_s = seconds_since(t0);
  record_routing();
  if (a.stats) reset_offload_stats(src, planner.get());  // --stats: decode-only counters
  const OffloadReport after_prefill = offload_report(src);

  std::unique_ptr<StreamingDecoder> dec;
  if (tok) {
    StreamingDecoder::Options o;
    dec = std::make_unique<StreamingDecoder>(*tok, o);
  }
  std::string text;
  size_t printed = 0;
  auto emit = [&](bool final) {
    // Print what cannot be the start of a stop string any more.
    size_t safe = text.size();
    if (!final)
      for (const auto& s : a.stop)
        for (size_t k = std::min(s.size() - 1, text.size()); k > 0; --k)
          if (text.compare(text.size() - k, k, s, 0, k) == 0) {
            safe = std::min(safe, text.size() - k);
            break;
          }
    if (!a.json && safe > printed) {
      std::fwrite(text.data() + printed, 1, safe - printed, stdout);
      std::fflush(stdout);
      printed = safe;
    }
  };

  auto t1 = std::chrono::steady_clock::now();
  int decoded = 0;
  for (int i = 0; i < a.n_predict; ++i) {
    const int32_t t = sampler.sample(logits, history);
    const bool eog = tok ? tok->is_eog(t) : (spec.eos_id && uint32_t(t) == *spec.eos_id);
    if (eog && !a.ignore_eos) break;
    generated.push_back(t);
    history.push_back(t);
    text += dec ? dec->push(t) : (generated.size() > 1 ? " " : "") + std::to_string(t);
    bool stop = false;
    for (const auto& s : a.stop) {
      auto pos = s.empty() ? std::string::npos : text.find(s);
      if (pos != std::string::npos) {
        text.resize(pos);
        stop = true;
      }
    }
    if (stop) break;
    emit(false);
    if (i + 1 == a.n_predict || sess.pos() >= sess.n_ctx()) break;
    logits = sess.eval(std::span<const int32_t>(&t, 1));
    record_routing();
    ++decoded;
  }
  const double decode_s = seconds_since(t1);
  if (dec) text += dec->flush();
  emit(true);

  const double prefill_tok_s = prefill_s > 0 ? prompt.size() / prefill_s : 0;
  const double decode_tok_s = decode_s > 0 && decoded > 0 ? decoded / decode_s : 0;
  if (!a.save_profile.empty()) {
    cache::CacheStatus st = cache::write_usage_profile(a.save_profile, profile);
    if (!st.ok()) fail(ErrorCode::Io, "{}", st.message);
  }
  const OffloadReport off = offload_report(src);
  // Decode-only figures: the cache counters after prefill subtracted.
  const double dec_hits = double(off.hits - after_prefill.hits), dec_miss = double(off.misses - after_prefill.misses);
  const double decode_hit_rate = dec_hits + dec_miss > 0 ? dec_hits / (dec_hits + dec_miss) : 0;
  const double decode_read_per_tok = decoded ? double(off.bytes_read - after_prefill.bytes_read) / decoded : 0;
  if (a.json) {
    json::Value o = json::Value::object();
    json::Value p = json::Value::array(), g = json::Value::array();
    for (int32_t t : prompt) p.push(json::Value(int64_t(t)));
    for (int32_t t : generated) g.push(json::Value(int64_t(t)));
    o.set("prompt_tokens", std::move(p));
    o.set("generated_tokens", std::move(g));
    o.set("text", json::Value(text));
    o.set("prefill_tok_s", json::Value(prefill_tok_s));
    o.set("decode_tok_s", json::Value(decode_tok_s));
    o.set("threads", json::Value(so.n_threads));
    o.set("backend", json::Value(std::string(sess.backend())));
    if (std::string(sess.backend()) == "cuda") {
      const SessionStats& ss = sess.stats();
      o.set("backend_info", json::Value(sess.backend_info()));
      o.set("vram_hits", json::Value(int64_t(ss.vram_hits)));
      o.set("vram_misses", json::Value(int64_t(ss.vram_misses)));
      o.set("vram_upload_bytes", json::Value(int64_t(ss.vram_upload_bytes)));
      o.set("cpu_expert_runs", json::Value(int64_t(ss.cpu_expert_runs)));
      o.set("gpu_graph_launches", json::Value(int64_t(ss.gpu_graph_launches)));
      o.set("vram_prefetches", json::Value(int64_t(ss.vram_prefetches)));
      o.set("vram_prefetch_hits", json::Value(int64_t(ss.vram_prefetch_hits)));
    }
    if (off.cached) {
      o.set("hit_rate", json::Value(decode_hit_rate));
      o.set("expert_bytes_read_per_token", json::Value(decode_read_per_tok));
      o.set("stall_s", json::Value(off.stall_s));
    }
    if (a.stats) add_offload_metrics(o, offload_metrics(src, planner.get(), uint64_t(decoded), decode_s));
    std::printf("%s\n", o.dump().c_str());
  } else {
    std::printf("\n");
    std::fprintf(stderr, "prompt: %zu tokens, %.2f tok/s | generated: %zu tokens, decode %.2f tok/s\n",
                 prompt.size(), prefill_tok_s, generated.size(), decode_tok_s);
    if (std::string(sess.backend()) == "cuda") {
      const SessionStats& ss = sess.stats();
      std::fprintf(stderr, "%s\nvram: %llu expert hits, %llu misses, %.1f MB uploaded, %llu experts run on the CPU\n",
                   sess.backend_info().c_str(), (unsigned long long)ss.vram_hits, (unsigned long long)ss.vram_misses,
                   ss.vram_upload_bytes / 1e6, (unsigned long long)ss.cpu_expert_runs);
    }
    if (off.cached)
      std::fprintf(stderr, "expert cache: decode hit rate %.1f%%, %.1f MB read per token, %.2f s stalled on IO\n",
                   100 * decode_hit_rate, decode_read_per_tok / 1e6, off.stall_s);
    if (a.stats)
      std::fprintf(stderr, "%s", offload_metrics(src, planner.get(), uint64_t(decoded), decode_s).to_text().c_str());
  }
  return 0;
}

Registrar reg("run", "Generate text from a prompt (CPU engine)", [](CLI::App& app) -> Action {
  auto a = std::make_shared<RunArgs>();
  a->sp.temperature = 0.8f;
  app.add_option("-m,--model", a->model, "GGUF model file")->required();
  auto* p_text = app.add_option("-p,--prompt", a->prompt, "Prompt text");
  auto* p_file = app.add_option("-f,--file", a->prompt_file, "Prompt text from this file (- = standard input)");
  auto* p_ids = app.add_option("--prompt-ids", a->prompt_ids, "Prompt as comma-separated token ids (instead of -p)");
  p_text->excludes(p_file)->excludes(p_ids);
  p_file->excludes(p_ids);
  app.add_option("-n,--n-predict", a->n_predict, "Tokens to generate")->check(CLI::NonNegativeNumber);
  app.add_option("--temp", a->sp.temperature, "Temperature (0 = greedy)");
  app.add_option("--top-k", a->sp.top_k, "Top-k (0 = off)");
  app.add_option("--top-p", a->sp.top_p, "Top-p (1 = off)");
  app.add_option("--min-p", a->sp.min_p, "Min-p (0 = off)");
  app.add_option("--repeat-penalty", a->sp.repeat_penalty, "Repetition penalty (1 = off)");
  app.add_option("--presence-penalty", a->sp.presence_penalty, "Presence penalty (0 = off)");
  app.add_option("--frequency-penalty", a->sp.frequency_penalty, "Frequency penalty (0 = off)");
  app.add_option("--repeat-last-n", a->sp.penalty_last_n, "Penalty window in tokens (-1 = all)");
  app.add_option("-s,--seed", a->sp.seed, "Sampling seed");
  app.add_option("-t,--threads", a->threads, "Threads (default: all cores)");
  app.add_option("-c,--ctx-size", a->n_ctx, "KV cache size in tokens (default: prompt + n)");
  app.add_option("-b,--batch-size", a->n_batch, "Prefill batch size (default 64 on the CPU, 512 with --vram)")
      ->check(CLI::PositiveNumber);
  app.add_option("--stop", a->stop, "Stop when the text contains this string (repeatable)");
  app.add_option("--save-profile", a->save_profile,
                 "Write per-expert activation counts (a usage profile for --policy static)");
  a->offload.add_to(app);
  app.add_flag("--ignore-eos", a->ignore_eos, "Do not stop at end-of-generation tokens");
  app.add_flag("--json", a->json, "Print one JSON object instead of the text");
  app.add_flag("--stats", a->stats,
               "Decode metrics of the expert cache and prefetch (hit rate, precision/recall per layer, overlap, "
               "stalls); with --json as keys of the object");
  return [a] {
    if (!a->prompt_file.empty()) a->prompt = read_prompt_file(a->prompt_file);
    if (a->prompt.empty() && a->prompt_ids.empty())
      fail(ErrorCode::InvalidArgument, "moe run: give a prompt with -p, -f or --prompt-ids{}",
           a->prompt_file.empty() ? "" : " (the prompt file '" + a->prompt_file + "' is empty)");
    return run(*a);
  };
});

}  // namespace
}  // namespace moe::tools
