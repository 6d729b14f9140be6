// `moe trace`: write a routing trace (.moetrace) from a synthetic generator or a converter, or
// print a trace's summary, or record one from a model run:
//   moe trace -m MODEL -p PROMPT | --prompts FILE -o TRACE [-n N] [--predictor pregated,transition,...]
// Recording evaluates every token alone (batch 1, so each token's routing is known), greedy decoding;
// each prompt (one per line of FILE) is a request. Per token and layer it stores the chosen experts,
// their weights and, per enabled predictor, the one-layer-ahead guess made before the layer ran
// (`moe sim --predictor recorded:<name>` replays them).
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <thread>

#include "cli.h"
#include "offload.h"
#include "moe/engine.h"
#include "moe/error.h"
#include "moe/planner.h"
#include "moe/sampler.h"
#include "moe/tokenizer.h"
#include "moe/trace.h"

namespace moe::tools {
namespace {

struct TraceOpts {
  std::string out, from_jsonl, from_popularity, info;
  bool synthetic = false;
  trace::SynthOptions synth;
  uint32_t top_k = 0;
  uint32_t n_expert_hint = 0;
  // Recording from a model.
  std::string model, prompt, prompts_file, predictor = "pregated,transition,popularity,history";
  int n_predict = 32, threads = 0;
  uint32_t depth = 1;
};

trace::Trace record(const TraceOpts& o) {
  auto model = Model::load(o.model);
  const ModelSpec& spec = model->spec();
  std::vector<std::string> prompts;
  if (!o.prompt.empty()) prompts.push_back(o.prompt);
  if (!o.prompts_file.empty()) {
    std::ifstream in(o.prompts_file);
    if (!in) fail(ErrorCode::Io, "cannot open the prompts file '{}'", o.prompts_file);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) prompts.push_back(line);
  }
  if (prompts.empty()) fail(ErrorCode::InvalidArgument, "moe trace: no prompt (-p or --prompts FILE)");
  auto tok = Tokenizer::from_gguf(model->file());
  SessionOptions so;
  so.n_threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  so.n_batch = 1;  // why: every token's routing is recorded, and last_experts() holds a batch's last
  MmapExpertSource src(*model);
  PlannerOptions po;
  po.predictor = o.predictor;
  po.depth = o.depth;
  PrefetchPlanner planner(*model, nullptr, po, 1);
  std::vector<std::string> names;
  for (size_t c = 0; c < planner.n_components(); ++c) names.push_back(planner.component_name(c));
  uint32_t n_expert = 1;
  for (const LayerSpec& ls : spec.layers) n_expert = std::max(n_expert, ls.n_expert);
  trace::TraceBuilder tb(spec.n_layer, n_expert, true, names);
  tb.set_source(o.model);
  tb.set_expert_bytes(model->experts().max_expert_bytes());
  std::vector<uint16_t> ids;
  std::vector<std::vector<uint16_t>> guesses(names.size());
  for (size_t r = 0; r < prompts.size(); ++r) {
    const std::vector<int32_t> ptoks = tok->tokenize(prompts[r], true, true);
    if (ptoks.empty()) continue;
    so.n_ctx = uint32_t(ptoks.size() + std::max(0, o.n_predict) + 1);
    Session sess(*model, src, so);
    sess.set_observer(&planner);
    planner.begin_request(uint32_t(r));
    auto step = [&](int32_t t, uint8_t phase) {
      auto logits = sess.eval(std::span<const int32_t>(&t, 1));
      tb.begin_token(uint32_t(r), phase);
      for (uint32_t l = 0; l < spec.n_layer; ++l) {
        auto ex = sess.last_experts(l);
        ids.assign(ex.begin(), ex.end());
        for (size_t c = 0; c < names.size(); ++c) {
          auto g = planner.last_guess(c, l);
          guesses[c].assign(g.begin(), g.end());
        }
        tb.add_layer(ids, sess.last_expert_weights(l), guesses);
      }
      return logits;
    };
    std::span<const float> logits;
    for (int32_t t : ptoks) logits = step(t, 0);
    for (int i = 0; i < o.n_predict && sess.pos() < sess.n_ctx(); ++i) {
      const int32_t t = argmax(logits);
      if (tok->is_eog(t)) break;
      logits = step(t, 1);
    }
  }
  fmt::print(stderr, "{}", planner.stats().to_text());
  return tb.finish();
}

void print_summary(const trace::Trace& t, const std::string& name) {
  uint64_t routed = t.ids.size();
  fmt::print("{}: {} tokens x {} layers, {} experts, max top-k {}, {} routing decisions{}\n", name, t.n_tokens(),
             t.n_layer, t.n_expert, t.max_k, routed, t.has_weights ? " (with weights)" : "");
  if (!t.source.empty()) fmt::print("  source: {}\n", t.source);
  for (size_t p = 0; p < t.predictors.size(); ++p) fmt::print("  predictor {}: {}\n", p, t.predictors[p]);
}

int run(const TraceOpts& o) {
  if (!o.info.empty()) {
    print_summary(trace::read(o.info), o.info);
    return 0;
  }
  trace::Trace t;
  if (!o.model.empty()) {
    t = record(o);
  } else if (!o.from_jsonl.empty()) {
    t = trace::from_jsonl(o.from_jsonl, o.n_expert_hint);
  } else if (!o.from_popularity.empty()) {
    t = trace::from_popularity(o.from_popularity, o.synth, o.top_k);
  } else if (o.synthetic) {
    trace::SynthOptions s = o.synth;
    if (o.top_k) s.k = o.top_k;
    t = trace::synthesize(s);
  } else {
    throw CLI::ValidationError("trace", "give --synthetic, --from-jsonl FILE, --from-popularity FILE or --info TRACE");
  }
  if (o.out.empty()) throw CLI::ValidationError("trace", "-o/--out TRACE is required");
  trace::write(t, o.out);
  print_summary(t, o.out);
  return 0;
}

Registrar reg("trace", "Record or convert expert routing traces (.moetrace)", [](CLI::App& app) {
  auto o = std::make_shared<TraceOpts>();
  app.add_option("-o,--out", o->out, "Output trace file");
  app.add_flag("--synthetic", o->synthetic, "Generate a synthetic trace");
  app.add_option("--from-jsonl", o->from_jsonl, "Convert a JSONL routing log (one record per token and layer)");
  app.add_option("--from-popularity", o->from_popularity,
                 "Sample a trace from a per-layer expert popularity matrix (JSON, Fiddler format); needs --top-k");
  app.add_option("--info", o->info, "Print a trace's summary");
  app.add_option("--layers", o->synth.n_layer, "Synthetic: layers")->capture_default_str();
  app.add_option("--experts", o->synth.n_expert, "Synthetic: experts per layer")->capture_default_str();
  app.add_option("--top-k", o->top_k, "Experts per token (synthetic default 8)");
  app.add_option("--tokens", o->synth.n_tokens, "Tokens to generate")->capture_default_str();
  app.add_option("--requests", o->synth.n_requests, "Requests the tokens are split into")->capture_default_str();
  app.add_option("--skew", o->synth.skew, "Zipf exponent of per-layer expert popularity (0 = uniform)")
      ->capture_default_str();
  app.add_option("--repeat", o->synth.repeat_prob, "Probability an expert is re-chosen at the next token")
      ->capture_default_str();
  app.add_option("--layer-corr", o->synth.layer_corr, "Probability of following the layer-to-layer mapping")
      ->capture_default_str();
  app.add_option("--seed", o->synth.seed, "Random seed")->capture_default_str();
  app.add_option("--expert-bytes", o->synth.expert_bytes, "Bytes of one expert, recorded for the simulator");
  app.add_option("--n-expert", o->n_expert_hint, "JSONL: number of experts when the log does not use them all");
  app.add_option("-m,--model", o->model, "Record from this GGUF model (greedy decoding)");
  app.add_option("-p,--prompt", o->prompt, "Recording: the prompt");
  app.add_option("--prompts", o->prompts_file, "Recording: a file of prompts, one request per line");
  app.add_option("-n,--n-predict", o->n_predict, "Recording: tokens to generate per prompt")->capture_default_str();
  app.add_option("--predictor", o->predictor, "Recording: predictors whose guesses are stored (comma-separated)")
      ->capture_default_str();
  app.add_option("--prefetch-depth", o->depth, "Recording: predictor depth")->capture_default_str();
  app.add_option("-t,--threads", o->threads, "Recording: threads (default: all cores)");
  return [o] { return run(*o); };
});

}  // namespace
}  // namespace moe::tools
