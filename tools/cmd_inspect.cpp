// `moe inspect MODEL [--json]`: what a GGUF MoE model is and where its bytes are — architecture,
// dimensions, gating rules, tensor types, and the byte split between always-resident (dense)
// weights and routed experts, which is what sizes the expert caches. With --vram/--ram: the placement
// plan (what sits in VRAM, DRAM and on disk, and the bytes one token moves). Single-threaded.
#include <fmt/format.h>

#include <cstdio>
#include <map>
#include <string>

#include "cli.h"
#include "moe/engine.h"
#include "moe/error.h"
#include "moe/expert_store.h"
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
  if (g.func == GatingFunc::Sigmoid)
    return g.weight_before_ffn ? "sigmoid of the top-k logits, weight applied to the expert input" : "sigmoid";
  return g.topk_before_norm ? "softmax over top-k" : "softmax";
}

struct PlaceArgs {
  std::string vram, ram, gpu_misses = "upload";
  uint32_t n_ctx = 4096;
};

// Where the experts sit under --vram/--ram and what one decoded token moves, assuming uniform routing
// (every expert equally likely; a skewed model caches better): a VRAM miss crosses PCIe, a DRAM miss
// is read from the disk. The VRAM split is the CUDA backend's own (plan_gpu_memory), the DRAM split the
// tiered store's (plan_store_memory), so this is what `moe run --vram --ram` would allocate.
void print_placement(const std::string& path, const PlaceArgs& pa, bool json) {
  auto m = Model::load(path);
  const ModelSpec& s = m->spec();
  SessionOptions so;
  so.n_ctx = pa.n_ctx;
  so.vram_bytes = pa.vram.empty() ? 0 : parse_bytes(pa.vram);
  so.n_batch = 512;  // moe run's prefill batch with --vram (sizes the GEMM scratch)
  so.gpu_miss = pa.gpu_misses == "cpu"    ? GpuMissMode::Cpu
                : pa.gpu_misses == "auto" ? GpuMissMode::Auto
                                          : GpuMissMode::Upload;
  uint32_t n_experts = 0;
  for (const LayerSpec& ls : s.layers) n_experts += ls.is_moe ? ls.n_expert : 0;
  const double expert_bytes = n_experts ? double(m->experts().total_bytes()) / n_experts : 0;
  const double routed_per_token = double(s.n_expert_used) * s.n_moe_layer;
  double vram_frac = 0, dram_frac = 1;
  GpuMemoryPlan g;
  if (so.vram_bytes) {
    g = plan_gpu_memory(*m, so, pa.n_ctx);
    if (!g.fits())
      fail(ErrorCode::InvalidArgument, "{}: --vram {} is too small: {}; at least {:.3f} GiB", path, pa.vram,
           g.to_text(), double(g.minimum) / (1u << 30));
    vram_frac = n_experts ? double(g.slots) / n_experts : 0;
  }
  StoreMemoryPlan d;
  if (!pa.ram.empty()) {
    StoreOptions o;
    o.ram_budget_bytes = parse_bytes(pa.ram);
    o.session = so;
    o.session.vram_bytes = 0;
    d = plan_store_memory(*m, o);
    if (!d.fits())
      fail(ErrorCode::InvalidArgument, "{}: --ram {} is too small: {}; at least {:.3f} GiB", path, pa.ram, d.to_text(),
           double(d.minimum) / (1u << 30));
    dram_frac = n_experts ? double(d.slots) / n_experts : 0;
  }
  // The DRAM cache holds what crossed to the GPU too (inclusive), so a VRAM miss that hits DRAM costs PCIe only.
  const double pcie = so.vram_bytes ? (1 - vram_frac) * routed_per_token * expert_bytes : 0;
  const double disk = (1 - std::max(dram_frac, vram_frac)) * routed_per_token * expert_bytes;
  const uint32_t vram_slots = so.vram_bytes ? g.slots : 0, dram_slots = pa.ram.empty() ? n_experts : d.slots;
  if (json) {
    fmt::print("{{\"vram_bytes\": {}, \"ram_bytes\": {}, \"n_experts\": {}, \"vram_expert_slots\": {}, "
               "\"dram_expert_slots\": {}, \"vram_dense_bytes\": {}, \"vram_kv_bytes\": {}, "
               "\"expected_pcie_bytes_per_token\": {:.0f}, \"expected_disk_bytes_per_token\": {:.0f}}}\n",
               so.vram_bytes, pa.ram.empty() ? 0 : d.budget, n_experts, vram_slots, dram_slots, g.dense, g.kv, pcie,
               disk);
    return;
  }
  fmt::print("placement ({} experts of {}, {} routed per token, n_ctx {}; uniform routing assumed)\n", n_experts,
             human(uint64_t(expert_bytes)), uint64_t(routed_per_token), pa.n_ctx);
  if (so.vram_bytes)
    fmt::print("  VRAM  {}\n        dense weights, KV cache, scratch; {} experts ({:.1f}%)\n", g.to_text(), g.slots,
               100 * vram_frac);
  else
    fmt::print("  VRAM  none (CPU backend)\n");
  if (!pa.ram.empty())
    fmt::print("  DRAM  {}\n        {} experts cached ({:.1f}%), the rest read from the file with O_DIRECT\n",
               d.to_text(), d.slots, 100 * dram_frac);
  else
    fmt::print("  DRAM  no budget: the memory map (the page cache holds what fits)\n");
  fmt::print("  disk  {} experts ({:.1f}%) not cached in DRAM\n",
             uint32_t(n_experts - std::min(n_experts, std::max(dram_slots, vram_slots))),
             100 * (1 - std::max(dram_frac, vram_frac)));
  fmt::print("  per token: {} over PCIe, {} from disk (expected)\n", human(uint64_t(pcie)), human(uint64_t(disk)));
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
    kv("n_layer_nextn", std::to_string(s.n_layer_nextn));
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
    kv("skipped_bytes", std::to_string(b.skipped));
    kv("active_bytes_per_token", std::to_string(b.active_per_token));
    kv("tensor_bytes", std::to_string(b.tensors));
    o += fmt::format("  \"file_bytes\": {}\n}}\n", b.file);
    std::fputs(o.c_str(), stdout);
    return 0;
  }
  fmt::print("file           {} ({})\n", path, human(b.file));
  fmt::print("architecture   {}{}\n", s.arch_name, s.name.empty() ? "" : fmt::format(" ({})", s.name));
  fmt::print("layers         {} ({} MoE, {} dense){}\n", s.n_layer, s.n_moe_layer, n_dense_layers,
             s.n_layer_nextn ? fmt::format(" + {} NextN (not run)", s.n_layer_nextn) : std::string());
  fmt::print("experts        {} routed, {} used per token, {} shared\n", s.n_expert, s.n_expert_used, s.n_expert_shared);
  fmt::print("dims           n_embd {}, n_ff_expert {}, heads {} (kv {}), head dim {}, vocab {}, ctx {}\n", s.n_embd,
             s.n_ff_expert, s.n_head, s.n_head_kv, s.head_dim_k, s.n_vocab, s.n_ctx_train);
  fmt::print("gating         {}{}{}{}{}{}\n", gating_name(s.gating), s.gating.renormalize ? ", renormalized" : "",
             s.gating.has_bias ? ", selection bias" : "", s.gating.shared_gate ? ", gated shared expert" : "",
             s.gating.n_group > 1 ? fmt::format(", best {} of {} expert groups", s.gating.topk_group, s.gating.n_group)
                                  : std::string(),
             s.gating.scale != 1.0f ? fmt::format(", scaled x{}", s.gating.scale) : std::string());
  if (s.kv_lora_rank > 0)
    fmt::print("attention      multi-head latent: kv rank {}, q rank {}, head k {} (rope {}) / v {}, cache {} per "
               "token per layer\n",
               s.kv_lora_rank, s.q_lora_rank, s.mla_head_dim_k, s.n_rot, s.mla_head_dim_v, s.head_dim_k);
  if (s.n_chunk > 0) {
    uint32_t n_chunked = 0, n_nope = 0;
    for (const auto& L : s.layers) n_chunked += L.chunked, n_nope += !L.rope;
    fmt::print("attention      chunks of {} on {} layers; {} NoPE layers (temperature tuning, floor {}){}\n", s.n_chunk,
               n_chunked, n_nope, s.attn_temp_length, s.qk_l2_norm ? "; q/k RMS norm on RoPE layers" : "");
  }
  fmt::print("rope           {}, base {}, {} dims rotated\n", s.rope_style == RopeStyle::NeoX ? "neox" : "normal",
             s.rope_freq_base, s.n_rot);
  fmt::print("tensors        {}\n", f->tensors().size());
  for (const auto& [name, h] : hist) fmt::print("  {:<8} {:>6} tensors  {:>12}\n", name, h.count, human(h.bytes));
  fmt::print("bytes\n");
  fmt::print("  dense (always resident)  {:>12}\n", human(b.dense));
  fmt::print("  one expert               {:>12}\n", human(b.per_expert));
  fmt::print("  all experts              {:>12}\n", human(b.experts));
  if (b.skipped) fmt::print("  NextN layers (not read)  {:>12}\n", human(b.skipped));
  fmt::print("  active per token         {:>12}  (dense + {} experts x {} MoE layers)\n", human(b.active_per_token),
             s.n_expert_used, s.n_moe_layer);
  return 0;
}

Registrar reg("inspect", "Describe a GGUF MoE model: architecture, experts, byte split", [](CLI::App& app) -> Action {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto pa = std::make_shared<PlaceArgs>();
  app.add_option("model", *path, "GGUF model file")->required();
  app.add_flag("--json", *json, "Print JSON");
  app.add_option("--vram", pa->vram, "Print the placement plan for this much GPU memory (e.g. 12G)");
  app.add_option("--ram", pa->ram, "... and this DRAM budget (e.g. 32G)");
  app.add_option("--ctx", pa->n_ctx, "KV cache positions for the plan")->capture_default_str();
  app.add_option("--gpu-misses", pa->gpu_misses, "upload, cpu or auto (as moe run)")->capture_default_str();
  return [path, json, pa] {
    if (!pa->vram.empty() || !pa->ram.empty()) {
      print_placement(*path, *pa, *json);
      return 0;
    }
    return run_inspect(*path, *json);
  };
});

}  // namespace
}  // namespace moe::tools
