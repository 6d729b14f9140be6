// `moe inspect MODEL [--json]`: what a GGUF MoE model is and where its bytes are — architecture,
// dimensions, gating rules, tensor types, and the byte split between always-resident (dense)
// weights and routed experts, which is what sizes the expert caches. Single-threaded.
#include <fmt/format.h>

#include <cstdio>
#include <map>
#include <string>

#include "cli.h"
#include "moe/gguf.h"
#include "moe/model.h"

namespace moe::tools {
namespace {

std::string json_escape(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += static_cast<char>(c);
    else if (c < 0x20) o += fmt::format("\\u{:04x}", c);
    else o += static_cast<char>(c);
  }
  return o;
}

std::string human(uint64_t b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int i = 0;
  while (v >= 1024 && i < 4) v /= 1024, ++i;
  return i == 0 ? fmt::format("{} B", b) : fmt::format("{:.2f} {}", v, u[i]);
}

const char* gating_name(const Gating& g) {
  if (g.func == GatingFunc::Sigmoid) return "sigmoid";
  return g.topk_before_norm ? "softmax over top-k" : "softmax";
}

int run_inspect(const std::string& path, bool json) {
  auto f = gguf::GgufFile::open(path);
  const ModelSpec s = load_model_spec(*f);
  const ExpertTable t = ExpertTable::build(*f, s);
  const ModelBytes b = model_bytes(*f, s, t);
  struct Hist {
    uint64_t count = 0, bytes = 0;
  };
  std::map<std::string, Hist> hist;
  for (const auto& ti : f->tensors()) {
    auto& h = hist[type_name(ti.type)];
    ++h.count;
    h.bytes += ti.nbytes;
  }
  uint32_t n_dense_layers = s.n_layer - s.n_moe_layer;
  if (json) {
    std::string o = "{\n";
    auto kv = [&](const char* k, const std::string& v) { o += fmt::format("  \"{}\": {},\n", k, v); };
    auto str = [&](const std::string& v) { return "\"" + json_escape(v) + "\""; };
    kv("file", str(path));
    kv("architecture", str(s.arch_name));
    kv("name", str(s.name));
    kv("n_layer", std::to_string(s.n_layer));
    kv("n_moe_layer", std::to_string(s.n_moe_layer));
    kv("n_expert", std::to_string(s.n_expert));
    kv("n_expert_used", std::to_string(s.n_expert_used));
    kv("n_expert_shared", std::to_string(s.n_expert_shared));
    kv("n_embd", std::to_string(s.n_embd));
    kv("n_ff_expert", std::to_string(s.n_ff_expert));
    kv("n_head", std::to_string(s.n_head));
    kv("n_head_kv", std::to_string(s.n_head_kv));
    kv("head_dim", std::to_string(s.head_dim_k));
    kv("n_vocab", std::to_string(s.n_vocab));
    kv("n_ctx_train", std::to_string(s.n_ctx_train));
    kv("rope", str(s.rope_style == RopeStyle::NeoX ? "neox" : "normal"));
    kv("gating", str(gating_name(s.gating)));
    kv("renormalize", s.gating.renormalize ? "true" : "false");
    std::string types = "{";
    for (const auto& [name, h] : hist)
      types += fmt::format("{}\"{}\": {{\"count\": {}, \"bytes\": {}}}", types.size() > 1 ? ", " : "", name, h.count, h.bytes);
    kv("tensor_types", types + "}");
    kv("n_tensors", std::to_string(f->tensors().size()));
    kv("expert_bytes", std::to_string(b.per_expert));
    kv("dense_bytes", std::to_string(b.dense));
    kv("experts_bytes", std::to_string(b.experts));
    kv("active_bytes_per_token", std::to_string(b.active_per_token));
    kv("tensor_bytes", std::to_string(b.tensors));
    o += fmt::format("  \"file_bytes\": {}\n}}\n", b.file);
    std::fputs(o.c_str(), stdout);
    return 0;
  }
  fmt::print("file           {} ({})\n", path, human(b.file));
  fmt::print("architecture   {}{}\n", s.arch_name, s.name.empty() ? "" : fmt::format(" ({})", s.name));
  fmt::print("layers         {} ({} MoE, {} dense)\n", s.n_layer, s.n_moe_layer, n_dense_layers);
  fmt::print("experts        {} routed, {} used per token, {} shared\n", s.n_expert, s.n_expert_used, s.n_expert_shared);
  fmt::print("dims           n_embd {}, n_ff_expert {}, heads {} (kv {}), head dim {}, vocab {}, ctx {}\n", s.n_embd,
             s.n_ff_expert, s.n_head, s.n_head_kv, s.head_dim_k, s.n_vocab, s.n_ctx_train);
  fmt::print("gating         {}{}{}{}\n", gating_name(s.gating), s.gating.renormalize ? ", renormalized" : "",
             s.gating.has_bias ? ", selection bias" : "", s.gating.shared_gate ? ", gated shared expert" : "");
  fmt::print("rope           {}, base {}, {} dims rotated\n", s.rope_style == RopeStyle::NeoX ? "neox" : "normal",
             s.rope_freq_base, s.n_rot);
  fmt::print("tensors        {}\n", f->tensors().size());
  for (const auto& [name, h] : hist) fmt::print("  {:<8} {:>6} tensors  {:>12}\n", name, h.count, human(h.bytes));
  fmt::print("bytes\n");
  fmt::print("  dense (always resident)  {:>12}\n", human(b.dense));
  fmt::print("  one expert               {:>12}\n", human(b.per_expert));
  fmt::print("  all experts              {:>12}\n", human(b.experts));
  fmt::print("  active per token         {:>12}  (dense + {} experts x {} MoE layers)\n", human(b.active_per_token),
             s.n_expert_used, s.n_moe_layer);
  return 0;
}

Registrar reg("inspect", "Describe a GGUF MoE model: architecture, experts, byte split", [](CLI::App& app) -> Action {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  app.add_option("model", *path, "GGUF model file")->required();
  app.add_flag("--json", *json, "Print JSON");
  return [path, json] { return run_inspect(*path, *json); };
});

}  // namespace
}  // namespace moe::tools
