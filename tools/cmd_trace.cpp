// `moe trace`: write a routing trace (.moetrace) from a synthetic generator or a converter, or
// print a trace's summary. Recording from a model run is added with the engine.
#include <fmt/format.h>

#include <memory>

#include "cli.h"
#include "moe/trace.h"

namespace moe::tools {
namespace {

struct TraceOpts {
  std::string out, from_jsonl, from_popularity, info;
  bool synthetic = false;
  trace::SynthOptions synth;
  uint32_t top_k = 0;
  uint32_t n_expert_hint = 0;
};

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
  if (!o.from_jsonl.empty()) {
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
  return [o] { return run(*o); };
});

}  // namespace
}  // namespace moe::tools
