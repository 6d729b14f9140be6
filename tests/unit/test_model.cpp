// Model specs, expert tables, `moe gen` and `moe inspect`: generated files of every generator
// architecture read back with the values asked for; expert slices located exactly inside the stacked
// tensors (and in the per-expert, fused gate_up and biased layouts); byte accounting; the error
// messages for unsupported or broken files; router skew; determinism; inspect --json.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "moe/error.h"
#include "moe/gen.h"
#include "moe/gguf.h"
#include "moe/kernels/quant.h"
#include "moe/model.h"

using namespace moe;
using gguf::GgufFile;
using gguf::GgufWriter;

namespace {

std::string tmp(const std::string& name) { return std::string(MOE_TEST_TMP) + "/" + name; }

std::vector<uint8_t> slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

GenOptions small(const std::string& arch, const std::string& file) {
  GenOptions o;
  o.arch = arch;
  o.out = tmp(file);
  o.n_layer = 3;
  o.n_embd = 64;
  o.n_ff = 96;
  o.n_expert = 6;
  o.n_expert_used = 2;
  o.n_head = 4;
  o.n_head_kv = arch == "olmoe" ? 4 : 2;
  o.vocab = "none";
  o.n_vocab = 300;
  o.seed = 7;
  return o;
}

std::string error_of(const std::function<void()>& fn, ErrorCode* code = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

// A hand-made GGUF (zero-filled tensors) for layouts and architectures the generator does not write.
struct Mini {
  GgufWriter w;
  std::string arch;
  explicit Mini(std::string a) : arch(std::move(a)) { w.set_string("general.architecture", arch); }
  void u32(const std::string& k, uint32_t v) { w.set_u32(arch + "." + k, v); }
  void f32(const std::string& k, float v) { w.set_f32(arch + "." + k, v); }
  void t(const std::string& name, std::vector<uint64_t> ne, TensorType ty = TensorType::F32) { w.add_tensor(name, ty, ne); }
  // Base llama-like dims: n_embd 32, 2 heads of 16, vocab 40, per-layer attention + norms.
  void base(uint32_t n_layer, bool layer_norm = false) {
    u32("block_count", n_layer);
    u32("context_length", 512);
    u32("embedding_length", 32);
    u32("attention.head_count", 2);
    f32(layer_norm ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon", 1e-5f);
    t("token_embd.weight", {32, 40});
    t("output_norm.weight", {32});
    for (uint32_t il = 0; il < n_layer; ++il) {
      std::string p = "blk." + std::to_string(il) + ".";
      t(p + "attn_norm.weight", {32});
      t(p + "attn_q.weight", {32, 32});
      t(p + "attn_k.weight", {32, 32});
      t(p + "attn_v.weight", {32, 32});
      t(p + "attn_output.weight", {32, 32});
    }
  }
  void stacked(uint32_t il, uint64_t ff, uint64_t ne, TensorType ty = TensorType::F32) {
    std::string p = "blk." + std::to_string(il) + ".";
    t(p + "ffn_gate_inp.weight", {32, ne});
    t(p + "ffn_gate_exps.weight", {32, ff, ne}, ty);
    t(p + "ffn_up_exps.weight", {32, ff, ne}, ty);
    t(p + "ffn_down_exps.weight", {ff, 32, ne}, ty);
  }
  void dense(uint32_t il, uint64_t ff) {
    std::string p = "blk." + std::to_string(il) + ".";
    t(p + "ffn_gate.weight", {32, ff});
    t(p + "ffn_up.weight", {32, ff});
    t(p + "ffn_down.weight", {ff, 32});
  }
  std::string write(const std::string& file) {
    std::string path = tmp(file);
    // Each tensor filled with its index + byte position pattern so slices are distinguishable.
    w.write(path, [&](size_t i, const GgufWriter::Sink& sink) {
      std::vector<uint8_t> b(w.tensors()[i].nbytes);
      for (size_t j = 0; j < b.size(); ++j) b[j] = static_cast<uint8_t>(i * 31 + j * 7 + j / 251);
      sink(b.data(), b.size());
    });
    return path;
  }
};

// Minimal JSON reader for inspect's output: objects, strings, numbers, true/false.
struct Json {
  std::map<std::string, Json> obj;
  std::string str;
  double num = 0;
  bool is_obj = false;
};
struct JsonParser {
  const std::string& s;
  size_t i = 0;
  void ws() { while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i; }
  Json parse() {
    ws();
    Json j;
    REQUIRE(i < s.size());
    if (s[i] == '{') {
      j.is_obj = true;
      ++i;
      ws();
      if (s[i] == '}') return ++i, j;
      for (;;) {
        ws();
        Json k = parse();
        ws();
        REQUIRE(s[i] == ':');
        ++i;
        j.obj[k.str] = parse();
        ws();
        if (s[i] == ',') { ++i; continue; }
        REQUIRE(s[i] == '}');
        ++i;
        return j;
      }
    }
    if (s[i] == '"') {
      ++i;
      while (s[i] != '"') {
        if (s[i] == '\\') ++i;
        j.str += s[i++];
      }
      ++i;
      return j;
    }
    if (s.compare(i, 4, "true") == 0) return i += 4, j.num = 1, j;
    if (s.compare(i, 5, "false") == 0) return i += 5, j;
    size_t end = 0;
    j.num = std::stod(s.substr(i), &end);
    REQUIRE(end > 0);
    i += end;
    return j;
  }
};

}  // namespace

TEST_CASE("generated models of every generator architecture read back as asked") {
  for (const char* arch : {"llama", "qwen2moe", "qwen3moe", "olmoe", "granitemoe", "dbrx", "arctic", "grok", "phimoe"}) {
    INFO(std::string(arch));
    GenOptions o = small(arch, std::string("spec_") + arch + ".gguf");
    if (std::string(arch) == "qwen3moe") o.head_dim = 32;  // qwen3 allows n_head * head_dim != n_embd
    GenResult r = generate_model(o);
    auto f = GgufFile::open(o.out);
    ModelSpec s = load_model_spec(*f);
    CHECK(s.arch_name == arch);
    CHECK(std::string(arch_gguf_name(s.arch)) == arch);
    CHECK(s.n_layer == 3);
    CHECK(s.n_embd == 64);
    CHECK(s.n_head == 4);
    CHECK(s.n_head_kv == o.n_head_kv);
    CHECK(s.head_dim_k == (std::string(arch) == "qwen3moe" ? 32u : 16u));
    CHECK(s.head_dim_v == s.head_dim_k);
    CHECK(s.n_rot == s.head_dim_k);
    CHECK(s.n_vocab == 300);
    CHECK(s.n_expert == 6);
    CHECK(s.n_expert_used == 2);
    CHECK(s.n_ff_expert == 96);
    CHECK(s.n_moe_layer == 3);
    CHECK(!s.tied_embeddings);
    CHECK(s.ffn_act == (std::string(arch) == "grok" ? FfnAct::GeluGlu : FfnAct::SiluGlu));
    REQUIRE(s.layers.size() == 3);
    for (const auto& L : s.layers) {
      CHECK(L.is_moe);
      CHECK(L.n_expert == 6);
      CHECK(L.n_ff_expert == 96);
    }
    CHECK(r.resolved.n_vocab == 300);
    const std::string a = arch;
    const bool granite = a == "granitemoe";
    CHECK(s.rope_style == (a == "llama" || granite || a == "arctic" ? RopeStyle::Normal : RopeStyle::NeoX));
    const bool is_grok = a == "grok";
    CHECK(s.embedding_scale == (granite ? 12.0f : is_grok ? 78.38367176906169f : 0.0f));
    CHECK(s.residual_scale == (granite ? 0.22f : 0.0f));
    CHECK(s.attention_scale == (granite ? 0.015625f : is_grok ? 1.0f / std::sqrt(16.0f) : 0.0f));
    CHECK(s.logit_mul == (is_grok ? 0.5773502691896257f : 0.0f));
    CHECK(s.logit_scale == (granite ? 6.0f : 0.0f));
    const bool dbrx = a == "dbrx";
    CHECK(s.layer_norm == dbrx);
    CHECK(s.fused_qkv == dbrx);
    CHECK(s.clamp_kqv == (dbrx ? 2.0f : 0.0f));
    CHECK(s.qk_norm == (a == "qwen3moe" ? QkNorm::PerHead : a == "olmoe" ? QkNorm::Full : QkNorm::None));
    const bool phi = a == "phimoe";
    CHECK(s.attn_bias == (a == "qwen2moe" || phi));
    CHECK(s.attn_out_bias == phi);
    CHECK(s.norm_bias == phi);
    CHECK(s.output_bias == phi);
    CHECK(s.rope_factors == phi);
    if (phi) {  // LongRoPE as the Phi-3 converter writes it: original context 256 of 2048
      CHECK(s.yarn_orig_ctx == 256.0f);
      CHECK(s.rope_attn_factor == doctest::Approx(std::sqrt(1.0 + std::log(8.0) / std::log(256.0))));
      CHECK(s.rope_scaling == RopeScaling::None);
      CHECK(s.n_swa == 0);  // attention.sliding_window is written (as the converter does) and ignored
    } else {
      CHECK(s.rope_attn_factor == 1.0f);
    }
    CHECK(s.gating.func == GatingFunc::Softmax);
    const bool arctic = a == "arctic";
    CHECK(s.gating.topk_before_norm == (a == "llama" || granite || dbrx || arctic || is_grok || phi));
    CHECK(s.moe_parallel_dense == arctic);
    CHECK(s.attn_post_norm == is_grok);
    CHECK(s.ffn_post_norm == is_grok);
    CHECK(s.attn_softcap == (is_grok ? 2.0f : 0.0f));
    CHECK(s.final_softcap == (is_grok ? 10.0f : 0.0f));
    if (arctic) CHECK(s.layers[0].n_ff_dense == s.n_embd);
    CHECK(s.gating.renormalize == (a == "qwen3moe"));
    CHECK(s.gating.shared_gate == (a == "qwen2moe"));
    CHECK(s.n_expert_shared == (a == "qwen2moe" ? 1u : 0u));
    if (a == "qwen2moe") CHECK(s.layers[0].n_ff_shared == 192);
  }
}

TEST_CASE("expert slices are the e-th slabs of the stacked tensors; dense + experts = all tensors") {
  for (const char* type : {"f32", "q8_0"}) {
    INFO(std::string(type));
    GenOptions o = small("qwen2moe", std::string("slices_") + type + ".gguf");
    o.type = type;
    o.n_ff = 64;  // a multiple of the q8_0 block for the down projection rows
    generate_model(o);
    auto f = GgufFile::open(o.out);
    ModelSpec s = load_model_spec(*f);
    ExpertTable t = ExpertTable::build(*f, s);
    CHECK(t.n_layer() == 3);
    CHECK(t.n_expert() == 6);
    const auto bytes = f->bytes();
    uint64_t sum = 0;
    for (const auto& ti : f->tensors()) sum += ti.nbytes;
    CHECK(t.dense_bytes() + t.total_bytes() == sum);
    CHECK(t.expert_tensor_names().size() == 9);
    for (uint32_t il = 0; il < 3; ++il) {
      const auto* g = f->find_tensor("blk." + std::to_string(il) + ".ffn_gate_exps.weight");
      const auto* u = f->find_tensor("blk." + std::to_string(il) + ".ffn_up_exps.weight");
      const auto* d = f->find_tensor("blk." + std::to_string(il) + ".ffn_down_exps.weight");
      REQUIRE((g && u && d));
      CHECK(g->type == *type_from_name(type));
      for (uint32_t e = 0; e < 6; ++e) {
        const ExpertSlices* x = t.at(il, e);
        REQUIRE(x);
        const uint64_t slab = g->nbytes / 6;
        CHECK(x->gate.nbytes == slab);
        CHECK(x->gate.type == g->type);
        CHECK(x->gate.offset == g->offset + e * slab);
        CHECK(std::memcmp(bytes.data() + x->gate.offset, f->data(*g).data() + e * slab, slab) == 0);
        CHECK(std::memcmp(bytes.data() + x->up.offset, f->data(*u).data() + e * (u->nbytes / 6), u->nbytes / 6) == 0);
        CHECK(std::memcmp(bytes.data() + x->down.offset, f->data(*d).data() + e * (d->nbytes / 6), d->nbytes / 6) == 0);
        CHECK(x->gate_bias.nbytes == 0);
        CHECK(x->bytes() == 3 * slab);
        if (std::string(type) == "f32") {
          // Element (row r, col c) of expert e's gate is element ((e * n_ff + r) * n_embd + c).
          float a, b;
          std::memcpy(&a, bytes.data() + x->gate.offset + (5 * 64 + 3) * 4, 4);
          std::memcpy(&b, f->data(*g).data() + ((uint64_t(e) * 64 + 5) * 64 + 3) * 4, 4);
          CHECK(a == b);
        }
      }
    }
    CHECK(t.at(0, 6) == nullptr);
    CHECK(t.at(3, 0) == nullptr);
    ModelBytes mb = model_bytes(*f, s, t);
    CHECK(mb.experts == t.total_bytes());
    CHECK(mb.dense == t.dense_bytes());
    CHECK(mb.per_expert == t.at(0, 0)->bytes());
    CHECK(mb.active_per_token == mb.dense + 3 * 2 * mb.per_expert);
    CHECK(mb.file == slurp(o.out).size());
  }
}

TEST_CASE("per-expert, fused gate_up and biased expert layouts") {
  SUBCASE("old Mixtral per-expert tensors") {
    Mini m("llama");
    m.base(2);
    m.u32("feed_forward_length", 64);
    m.u32("expert_count", 4);
    m.u32("expert_used_count", 2);
    for (uint32_t il = 0; il < 2; ++il) {
      std::string p = "blk." + std::to_string(il) + ".";
      m.t(p + "ffn_gate_inp.weight", {32, 4});
      for (int e = 0; e < 4; ++e) {
        m.t(p + "ffn_gate." + std::to_string(e) + ".weight", {32, 64});
        m.t(p + "ffn_up." + std::to_string(e) + ".weight", {32, 64});
        m.t(p + "ffn_down." + std::to_string(e) + ".weight", {64, 32});
      }
    }
    auto f = GgufFile::open(m.write("per_expert.gguf"));
    ModelSpec s = load_model_spec(*f);
    CHECK(s.tied_embeddings);
    CHECK(s.n_ff_expert == 64);
    ExpertTable t = ExpertTable::build(*f, s);
    const auto* d = f->find_tensor("blk.1.ffn_down.3.weight");
    CHECK(t.at(1, 3)->down.offset == d->offset);
    CHECK(t.at(1, 3)->down.nbytes == d->nbytes);
    CHECK(t.total_bytes() == 2 * 4 * 3 * 64 * 32 * 4);
  }
  SUBCASE("fused ffn_gate_up_exps") {
    Mini m("qwen3moe");
    m.base(1);
    m.u32("expert_count", 4);
    m.u32("expert_used_count", 2);
    m.u32("expert_feed_forward_length", 64);
    m.t("blk.0.attn_q_norm.weight", {16});
    m.t("blk.0.attn_k_norm.weight", {16});
    m.t("blk.0.ffn_gate_inp.weight", {32, 4});
    m.t("blk.0.ffn_gate_up_exps.weight", {32, 128, 4}, TensorType::Q8_0);
    m.t("blk.0.ffn_down_exps.weight", {64, 32, 4}, TensorType::Q8_0);
    auto f = GgufFile::open(m.write("fused.gguf"));
    ModelSpec s = load_model_spec(*f);
    ExpertTable t = ExpertTable::build(*f, s);
    const auto* gu = f->find_tensor("blk.0.ffn_gate_up_exps.weight");
    const uint64_t rb = 34;  // q8_0 row of 32
    CHECK(t.at(0, 2)->gate.offset == gu->offset + 2 * 128 * rb);
    CHECK(t.at(0, 2)->up.offset == gu->offset + (2 * 128 + 64) * rb);
    CHECK(t.at(0, 2)->up.nbytes == 64 * rb);
    uint64_t sum = 0;
    for (const auto& ti : f->tensors()) sum += ti.nbytes;
    CHECK(t.dense_bytes() + t.total_bytes() == sum);
  }
  SUBCASE("gpt-oss biases, sinks and router bias") {
    Mini m("gpt-oss");
    m.base(1);
    m.u32("expert_count", 4);
    m.u32("expert_used_count", 2);
    m.u32("expert_feed_forward_length", 64);
    m.u32("attention.sliding_window", 128);
    m.t("blk.0.attn_sinks.weight", {2});
    m.t("blk.0.attn_output.bias", {32});
    m.stacked(0, 64, 4, TensorType::MXFP4);
    m.t("blk.0.ffn_gate_inp.bias", {4});
    m.t("blk.0.ffn_gate_exps.bias", {64, 4});
    m.t("blk.0.ffn_up_exps.bias", {64, 4});
    m.t("blk.0.ffn_down_exps.bias", {32, 4});
    auto f = GgufFile::open(m.write("gptoss.gguf"));
    ModelSpec s = load_model_spec(*f);
    CHECK(s.arch == Arch::GptOss);
    CHECK(s.rope_style == RopeStyle::NeoX);
    CHECK(s.ffn_act == FfnAct::SwigluOai);
    CHECK(s.gating.topk_before_norm);
    CHECK(s.gating.router_bias);
    CHECK(s.attn_sinks);
    CHECK(s.attn_out_bias);
    CHECK(s.n_swa == 128);
    ExpertTable t = ExpertTable::build(*f, s);
    const auto* db = f->find_tensor("blk.0.ffn_down_exps.bias");
    CHECK(t.at(0, 3)->down_bias.offset == db->offset + 3 * 32 * 4);
    CHECK(t.at(0, 3)->down_bias.nbytes == 32 * 4);
    CHECK(t.at(0, 1)->gate_bias.nbytes == 64 * 4);
    CHECK(t.at(0, 1)->gate.type == TensorType::MXFP4);
    CHECK(t.at(0, 1)->gate.nbytes == 64 * 17);  // 64 rows of 32 = one mxfp4 block of 17 bytes
    uint64_t sum = 0;
    for (const auto& ti : f->tensors()) sum += ti.nbytes;
    CHECK(t.dense_bytes() + t.total_bytes() == sum);
  }
}

TEST_CASE("specs of the architectures read but not generated") {
  SUBCASE("deepseek2: leading dense layers, shared experts, sigmoid + bias, groups") {
    Mini m("deepseek2");
    m.base(3);
    m.u32("feed_forward_length", 128);
    m.u32("leading_dense_block_count", 1);
    m.u32("expert_count", 8);
    m.u32("expert_used_count", 2);
    m.u32("expert_shared_count", 2);
    m.u32("expert_feed_forward_length", 32);
    m.u32("expert_gating_func", 2);
    m.u32("expert_group_count", 4);
    m.u32("expert_group_used_count", 2);
    m.u32("attention.kv_lora_rank", 16);
    m.u32("attention.key_length", 24);
    m.u32("attention.value_length", 16);
    m.u32("rope.dimension_count", 8);
    m.f32("expert_weights_scale", 2.5f);
    m.w.set_bool("deepseek2.expert_weights_norm", true);
    m.dense(0, 128);
    m.t("blk.0.attn_kv_a_mqa.weight", {32, 24});  // kv_lora_rank + rope dims
    for (uint32_t il = 1; il < 3; ++il) {
      std::string p = "blk." + std::to_string(il) + ".";
      m.stacked(il, 32, 8);
      m.t(p + "exp_probs_b.bias", {8});
      m.t(p + "ffn_gate_shexp.weight", {32, 64});
      m.t(p + "ffn_up_shexp.weight", {32, 64});
      m.t(p + "ffn_down_shexp.weight", {64, 32});
    }
    auto f = GgufFile::open(m.write("ds2.gguf"));
    ModelSpec s = load_model_spec(*f);
    CHECK(s.rope_style == RopeStyle::Normal);
    CHECK(!s.layers[0].is_moe);
    CHECK(s.layers[0].n_ff_dense == 128);
    CHECK(s.layers[1].is_moe);
    CHECK(s.layers[2].n_ff_shared == 64);
    CHECK(s.n_expert_shared == 2);
    CHECK(s.n_moe_layer == 2);
    CHECK(s.gating.func == GatingFunc::Sigmoid);
    CHECK(s.gating.has_bias);
    CHECK(s.gating.renormalize);
    CHECK(s.gating.scale == doctest::Approx(2.5f));
    CHECK(s.gating.n_group == 4);
    CHECK(s.gating.topk_group == 2);
    CHECK(s.kv_lora_rank == 16);
    // An attn_kv_b file: key/value_length are the per-head sizes; the spec then describes the latent
    // cache (one row of kv_lora_rank + rope dims, values = the latent).
    CHECK(!s.mla_split_kv_b);
    CHECK(s.mla_head_dim_k == 24);
    CHECK(s.mla_head_dim_v == 16);
    CHECK(s.n_head_kv == 1);
    CHECK(s.head_dim_k == 16 + 8);
    CHECK(s.head_dim_v == 16);
    CHECK(s.n_rot == 8);
    ExpertTable t = ExpertTable::build(*f, s);
    CHECK(t.at(0, 0) == nullptr);
    CHECK(t.at(1, 7) != nullptr);
    ModelBytes b = model_bytes(*f, s, t);
    CHECK(b.active_per_token == b.dense + 2 * 2 * b.per_expert);
  }
  SUBCASE("llama4: interleaved MoE layers, sigmoid top-1, shared expert") {
    Mini m("llama4");
    m.base(4);
    m.u32("feed_forward_length", 96);
    m.u32("expert_feed_forward_length", 32);
    m.u32("expert_count", 4);
    m.u32("expert_used_count", 1);
    m.u32("interleave_moe_layer_step", 2);
    for (uint32_t il = 0; il < 4; ++il) {
      if (il % 2 == 0) {
        m.dense(il, 96);
        continue;
      }
      std::string p = "blk." + std::to_string(il) + ".";
      m.stacked(il, 32, 4);
      m.t(p + "ffn_gate_shexp.weight", {32, 32});
      m.t(p + "ffn_up_shexp.weight", {32, 32});
      m.t(p + "ffn_down_shexp.weight", {32, 32});
    }
    auto f = GgufFile::open(m.write("llama4.gguf"));
    ModelSpec s = load_model_spec(*f);
    CHECK(!s.layers[0].is_moe);
    CHECK(s.layers[1].is_moe);
    CHECK(!s.layers[2].is_moe);
    CHECK(s.layers[3].is_moe);
    CHECK(s.gating.func == GatingFunc::Sigmoid);
    CHECK(s.gating.weight_before_ffn);
    CHECK(!s.gating.shared_gate);
    CHECK(s.n_expert_shared == 1);
    CHECK(s.no_rope_layer_step == 4);
    // llama.cpp's fixed values when the file has no keys for them (all real llama4 files).
    CHECK(s.n_chunk == 8192);
    CHECK(s.attn_temp_length == 8192);
    CHECK(s.attn_temp_scale == doctest::Approx(0.1f));
    CHECK(s.attn_temp_offset == 1.0f);
    CHECK(s.qk_l2_norm);  // not 128 experts (Maverick)
    CHECK(s.gating.topk_before_norm);
    for (uint32_t il = 0; il < 4; ++il) {
      CHECK(s.layers[il].chunked == (il != 3));  // sliding_window_pattern 4: 3 chunked, 1 full
      CHECK(s.layers[il].rope == (il != 3));
    }
    // sliding_window = 0 (MobileLLM-style, no chunking) is refused; so is a per-layer pattern array.
    m.u32("attention.sliding_window", 0);
    auto f0 = GgufFile::open(m.write("llama4_noswa.gguf"));
    ErrorCode code{};
    CHECK(error_of([&] { load_model_spec(*f0); }, &code).find("sliding_window") != std::string::npos);
    CHECK(code == ErrorCode::Unsupported);
  }
  SUBCASE("dbrx, granitemoe") {
    for (const char* a : {"dbrx", "granitemoe"}) {
      INFO(std::string(a));
      const bool ln = std::string(a) != "granitemoe";
      Mini m(a);
      m.base(1, ln);
      m.u32("feed_forward_length", 64);
      m.u32("expert_count", 4);
      m.u32("expert_used_count", 2);
      m.stacked(0, 64, 4);
      auto f = GgufFile::open(m.write(std::string(a) + ".gguf"));
      ModelSpec s = load_model_spec(*f);
      CHECK(s.layer_norm == ln);
      CHECK(s.gating.topk_before_norm);
      CHECK(s.rope_style == (std::string(a) == "granitemoe" ? RopeStyle::Normal : RopeStyle::NeoX));
      CHECK(s.n_ff_expert == 64);
    }
  }
  SUBCASE("phimoe: llama.cpp's loader (RMSNorm + bias, biased LM head, LongRoPE factors)") {
    // A Phi-3.5-MoE-shaped file: every bias llama.cpp's phimoe loader requires, the rms epsilon key.
    auto phi = [&](bool ffn_norm_bias, bool out_bias, int factors) {
      Mini m("phimoe");
      m.base(1);
      m.u32("feed_forward_length", 64);
      m.u32("expert_count", 4);
      m.u32("expert_used_count", 2);
      m.u32("context_length", 4096);
      m.u32("rope.scaling.original_context_length", 1024);
      m.f32("rope.scaling.attn_factor", 1.25f);
      m.stacked(0, 64, 4);
      m.t("output.weight", {32, 40});
      if (out_bias) m.t("output.bias", {40});
      m.t("output_norm.bias", {32});
      m.t("blk.0.attn_norm.bias", {32});
      if (ffn_norm_bias) m.t("blk.0.ffn_norm.bias", {32});
      m.t("blk.0.ffn_norm.weight", {32});
      for (const char* b : {"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias"})
        m.t(std::string("blk.0.") + b, {32});
      if (factors >= 1) m.t("rope_factors_long.weight", {8});
      if (factors >= 2) m.t("rope_factors_short.weight", {factors == 3 ? 16u : 8u});
      return GgufFile::open(m.write("phimoe.gguf"));
    };
    auto f = phi(true, true, 2);
    ModelSpec s = load_model_spec(*f);
    CHECK(!s.layer_norm);  // RMSNorm + bias, as llama.cpp runs phimoe (the HF release: LayerNorm)
    CHECK(s.rms_eps == doctest::Approx(1e-5f));
    CHECK((s.norm_bias && s.output_bias && s.attn_bias && s.attn_out_bias));
    CHECK(s.rope_style == RopeStyle::NeoX);
    CHECK(s.rope_factors);
    CHECK(s.yarn_orig_ctx == 1024.0f);
    CHECK(s.rope_attn_factor == 1.25f);
    CHECK(s.gating.topk_before_norm);  // softmax over the top-2 logits (the HF release: sparsemixer)
    CHECK(s.n_ff_expert == 64);
    ErrorCode code{};
    auto g = phi(false, true, 2);
    CHECK(error_of([&] { load_model_spec(*g); }, &code).find("ffn_norm.bias") != std::string::npos);
    CHECK(code == ErrorCode::Corrupt);
    g = phi(true, false, 2);
    CHECK(error_of([&] { load_model_spec(*g); }, &code).find("output.bias") != std::string::npos);
    g = phi(true, true, 1);  // a long factor tensor without the short one
    CHECK(error_of([&] { load_model_spec(*g); }, &code).find("rope_factors_short") != std::string::npos);
    g = phi(true, true, 3);  // short factors of the wrong size
    CHECK(error_of([&] { load_model_spec(*g); }, &code).find("rope_factors_short") != std::string::npos);
    CHECK(code == ErrorCode::Corrupt);
  }
}

TEST_CASE("bad files give errors naming the file and the cause") {
  ErrorCode code{};
  SUBCASE("unsupported architecture") {
    std::string vocab = std::string(MOE_SHARED_DATA) + "/tokenizers/ggml-vocab-gpt-2.gguf";
    auto f = GgufFile::open(vocab);
    std::string msg = error_of([&] { load_model_spec(*f); }, &code);
    CHECK(code == ErrorCode::Unsupported);
    CHECK(msg.find("'gpt2'") != std::string::npos);
    CHECK(msg.find("ggml-vocab-gpt-2.gguf") != std::string::npos);
  }
  SUBCASE("missing key") {
    Mini m("qwen3moe");
    m.base(1);
    m.u32("expert_count", 4);
    m.stacked(0, 64, 4);
    m.t("blk.0.attn_q_norm.weight", {16});
    auto path = m.write("missing_key.gguf");
    auto f = GgufFile::open(path);
    std::string msg = error_of([&] { load_model_spec(*f); }, &code);
    CHECK(code == ErrorCode::Corrupt);
    CHECK(msg.find("'qwen3moe.expert_used_count'") != std::string::npos);
    CHECK(msg.find("missing_key.gguf") != std::string::npos);
  }
  SUBCASE("ill-typed key") {
    Mini m("olmoe");
    m.base(1);
    m.w.set_string("olmoe.block_count", "one");
    auto f = GgufFile::open(m.write("typed_key.gguf"));
    std::string msg = error_of([&] { load_model_spec(*f); }, &code);
    CHECK(code == ErrorCode::Corrupt);
    CHECK(msg.find("olmoe.block_count") != std::string::npos);
    CHECK(msg.find("typed_key.gguf") != std::string::npos);
  }
  SUBCASE("router shape disagrees with expert_count") {
    Mini m("olmoe");
    m.base(1);
    m.u32("expert_count", 8);
    m.u32("expert_used_count", 2);
    m.stacked(0, 64, 4);
    m.t("blk.0.attn_q_norm.weight", {32});
    auto f = GgufFile::open(m.write("router_shape.gguf"));
    std::string msg = error_of([&] { load_model_spec(*f); }, &code);
    CHECK(code == ErrorCode::Corrupt);
    CHECK(msg.find("blk.0.ffn_gate_inp.weight") != std::string::npos);
    CHECK(msg.find("expert_count") != std::string::npos);
  }
  SUBCASE("missing expert tensor") {
    Mini m("olmoe");
    m.base(1);
    m.u32("expert_count", 4);
    m.u32("expert_used_count", 2);
    m.t("blk.0.attn_q_norm.weight", {32});
    m.t("blk.0.ffn_gate_inp.weight", {32, 4});
    auto f = GgufFile::open(m.write("no_experts.gguf"));
    std::string msg = error_of([&] { load_model_spec(*f); }, &code);
    CHECK(code == ErrorCode::Corrupt);
    CHECK(msg.find("ffn_down_exps") != std::string::npos);
  }
  SUBCASE("generator option errors") {
    GenOptions o = small("qwen3moe", "never.gguf");
    o.n_expert_used = 7;
    CHECK(error_of([&] { generate_model(o); }, &code).find("top-k") != std::string::npos);
    CHECK(code == ErrorCode::InvalidArgument);
    o = small("phi3", "never.gguf");  // not one moe gen writes
    CHECK(error_of([&] { generate_model(o); }).find("phi3") != std::string::npos);
    o = small("deepseek2", "never.gguf");  // grouped kv heads do not exist in latent attention
    CHECK(error_of([&] { generate_model(o); }).find("deepseek2") != std::string::npos);
    o.n_head_kv = 0;
    o.preset = "mixtral-8x7b";
    CHECK(error_of([&] { generate_model(o); }).find("preset") != std::string::npos);
    o.preset = "tiny-v3";
    o.n_expert = 6;  // 4 groups do not divide 6 experts
    CHECK(error_of([&] { generate_model(o); }).find("groups") != std::string::npos);
    o = small("qwen3moe", "never.gguf");
    o.preset = "mixtral-8x7b";
    CHECK(error_of([&] { generate_model(o); }).find("preset") != std::string::npos);
  }
}

TEST_CASE("router skew makes expert popularity Zipf-like and grows with S") {
  // Route random hidden states through layer 0's router: the normalized entropy of the top-k
  // counts falls and the most/least popular ratio rises as S grows.
  double prev_entropy = 2, prev_ratio = 0;
  for (float skew : {0.0f, 0.5f, 1.0f, 2.0f}) {
    GenOptions o = small("qwen3moe", "skew.gguf");
    o.n_expert = 16;
    o.n_layer = 1;
    o.router_skew = skew;
    generate_model(o);
    auto f = GgufFile::open(o.out);
    const auto* r = f->find_tensor("blk.0.ffn_gate_inp.weight");
    REQUIRE(r);
    REQUIRE(r->type == TensorType::F32);
    const float* w = reinterpret_cast<const float*>(f->data(*r).data());
    std::mt19937 rng(123);
    std::normal_distribution<float> nd;
    std::vector<double> count(16, 0.0);
    std::vector<float> x(64), logit(16);
    std::vector<int> idx(16);
    for (int n = 0; n < 4000; ++n) {
      for (auto& v : x) v = nd(rng);
      for (int e = 0; e < 16; ++e) {
        float acc = 0;
        for (int j = 0; j < 64; ++j) acc += w[e * 64 + j] * x[j];
        logit[e] = acc;
        idx[e] = e;
      }
      std::partial_sort(idx.begin(), idx.begin() + 2, idx.end(), [&](int a, int b) { return logit[a] > logit[b]; });
      count[idx[0]] += 1;
      count[idx[1]] += 1;
    }
    double tot = 0, h = 0;
    for (double c : count) tot += c;
    for (double c : count)
      if (c > 0) h -= c / tot * std::log(c / tot);
    const double entropy = h / std::log(16.0);
    const double ratio = *std::max_element(count.begin(), count.end()) / std::max(1.0, *std::min_element(count.begin(), count.end()));
    INFO("skew " << skew << " entropy " << entropy << " ratio " << ratio);
    if (skew == 0.0f) {
      CHECK(entropy > 0.99);
      CHECK(ratio < 1.6);
    } else {
      CHECK(entropy < prev_entropy);
      CHECK(ratio > prev_ratio);
    }
    if (skew == 2.0f) CHECK(ratio > 10);
    prev_entropy = entropy;
    prev_ratio = ratio;
  }
}

TEST_CASE("same seed gives identical bytes, whatever the thread count; another seed differs") {
  GenOptions o = small("olmoe", "det_a.gguf");
  o.type = "q8_0";
  o.n_ff = 64;
  o.threads = 2;
  generate_model(o);
  o.out = tmp("det_b.gguf");
  o.threads = 1;
  generate_model(o);
  o.out = tmp("det_c.gguf");
  o.seed = 8;
  generate_model(o);
  auto a = slurp(tmp("det_a.gguf")), b = slurp(tmp("det_b.gguf")), c = slurp(tmp("det_c.gguf"));
  REQUIRE(!a.empty());
  CHECK(a == b);
  CHECK(a.size() == c.size());
  CHECK(a != c);
}

TEST_CASE("weights are quantized to the asked type and stay sane") {
  GenOptions o = small("llama", "types.gguf");
  o.n_embd = 256;
  o.n_ff = 256;
  o.n_head = 4;
  o.n_head_kv = 4;
  for (const char* type : {"q4_K", "f16", "bf16", "q8_0", "q6_K", "q5_K", "q4_0", "mxfp4"}) {
    INFO(std::string(type));
    TensorType want = *type_from_name(type);
    if (!traits(want).quantizable) continue;
    o.type = type;
    generate_model(o);
    auto f = GgufFile::open(o.out);
    const auto* g = f->find_tensor("blk.0.ffn_gate_exps.weight");
    CHECK(g->type == want);
    CHECK(f->find_tensor("blk.0.ffn_gate_inp.weight")->type == TensorType::F32);
    CHECK(f->find_tensor("blk.0.attn_norm.weight")->type == TensorType::F32);
    if (want == TensorType::Q4_K) CHECK(f->find_tensor("output.weight")->type == TensorType::Q6_K);
    // Dequantized expert rows have the planned spread: std 1/sqrt(256) = 0.0625.
    std::vector<float> row(256);
    double ss = 0;
    for (int r = 0; r < 64; ++r) {
      REQUIRE(kernels::dequantize_row(g->type, f->data(*g).data() + r * g->row_bytes(), row.data(), 256));
      for (float v : row) ss += double(v) * v;
    }
    const double sd = std::sqrt(ss / (64 * 256));
    CHECK(sd > 0.05);
    CHECK(sd < 0.08);
    ModelSpec s = load_model_spec(*f);
    ExpertTable t = ExpertTable::build(*f, s);
    CHECK(t.at(0, 0)->gate.type == want);
  }
  // Rows that do not fit the block size fall back (n_embd 64 is not a multiple of 256).
  GenOptions q = small("qwen3moe", "fallback.gguf");
  q.type = "q4_K";
  q.n_ff = 64;
  if (traits(TensorType::Q4_K).quantizable) {
    generate_model(q);
    auto f = GgufFile::open(q.out);
    CHECK(f->find_tensor("blk.0.ffn_gate_exps.weight")->type == TensorType::Q8_0);
  }
}

TEST_CASE("real vocabularies: tokenizer metadata copied, padded on request") {
  GenOptions o = small("llama", "vocab_llama.gguf");
  o.vocab = "";  // default for llama: llama-spm
  o.n_vocab = 0;
  o.n_layer = 1;
  o.data_dir = MOE_SHARED_DATA;
  generate_model(o);
  auto f = GgufFile::open(o.out);
  ModelSpec s = load_model_spec(*f);
  CHECK(s.n_vocab == 32000);
  CHECK(s.bos_id == 1u);
  CHECK(s.eos_id == 2u);
  CHECK(f->get_string("tokenizer.ggml.model") == "llama");
  CHECK(f->get_string_array("tokenizer.ggml.tokens").size() == 32000);

  GenOptions p = small("olmoe", "vocab_olmoe.gguf");
  p.vocab = "gpt-2";
  p.n_vocab = 50304;  // OLMoE's padded embedding
  p.n_layer = 1;
  p.n_embd = 32;
  p.n_head = 2;
  p.n_head_kv = 2;
  p.data_dir = MOE_SHARED_DATA;
  generate_model(p);
  auto g = GgufFile::open(p.out);
  ModelSpec t = load_model_spec(*g);
  CHECK(t.n_vocab == 50304);
  auto toks = g->get_string_array("tokenizer.ggml.tokens");
  REQUIRE(toks.size() == 50304);
  CHECK(toks[50303] == "<|moe_pad_50303|>");
  CHECK(g->get_int_array("tokenizer.ggml.token_type").size() == 50304);
  CHECK(t.eos_id == 50256u);
}

TEST_CASE("moe gen gpt-oss: llama.cpp's tensor names and keys, MXFP4 experts, SWA on even layers") {
  GenOptions o = small("gpt-oss", "gen_gpt_oss.gguf");
  o.n_swa = 5;
  GenResult r = generate_model(o);
  CHECK(r.resolved.expert_type == "mxfp4");  // the default, as released
  auto f = GgufFile::open(o.out);
  ModelSpec s = load_model_spec(*f);
  CHECK(s.arch == Arch::GptOss);
  CHECK(s.rope_style == RopeStyle::NeoX);
  CHECK(s.rope_scaling == RopeScaling::Yarn);
  CHECK(s.rope_freq_base == 150000.0f);
  CHECK(s.rope_freq_scale == doctest::Approx(1.0 / 32));
  CHECK(s.yarn_orig_ctx == 4096.0f);
  CHECK(s.ffn_act == FfnAct::SwigluOai);
  CHECK(s.attn_bias);
  CHECK(s.attn_out_bias);
  CHECK(s.attn_sinks);
  CHECK(s.ffn_norm_post_attention);
  CHECK(s.gating.router_bias);
  CHECK(s.gating.topk_before_norm);
  CHECK(s.n_swa == 5);
  REQUIRE(s.layers.size() == 3);
  CHECK(s.layers[0].swa);  // llama.cpp: il % 2 < 1
  CHECK_FALSE(s.layers[1].swa);
  CHECK(s.layers[2].swa);
  for (uint32_t il = 0; il < 3; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    for (const char* t : {"attn_norm.weight", "attn_q.weight", "attn_q.bias", "attn_k.bias", "attn_v.bias",
                          "attn_output.weight", "attn_output.bias", "attn_sinks.weight", "post_attention_norm.weight",
                          "ffn_gate_inp.weight", "ffn_gate_inp.bias"})
      CHECK_MESSAGE(f->find_tensor(p + t) != nullptr, std::string(p + t));
    CHECK(f->find_tensor(p + "ffn_norm.weight") == nullptr);
    CHECK(f->find_tensor(p + "attn_sinks.weight")->ne[0] == 4);  // n_head
    CHECK(f->find_tensor(p + "ffn_gate_exps.weight")->type == TensorType::MXFP4);
    CHECK(f->find_tensor(p + "ffn_down_exps.weight")->type == TensorType::MXFP4);
    CHECK(f->find_tensor(p + "attn_q.weight")->type == TensorType::F32);
    const auto* db = f->find_tensor(p + "ffn_down_exps.bias");
    REQUIRE(db != nullptr);
    CHECK(db->ne[0] == 64);
    CHECK(db->ne[1] == 6);
    CHECK(db->type == TensorType::F32);
  }
  ExpertTable t = ExpertTable::build(*f, s);
  CHECK(t.at(2, 5)->up_bias.nbytes == 96 * 4);
  CHECK(f->get_uint("general.file_type") == 38u);  // LLAMA_FTYPE_MOSTLY_MXFP4_MOE
  CHECK_FALSE(f->get_string("tokenizer.chat_template"));  // vocab none: no template

  // Other expert types for tests; a sliding window is a gpt-oss option only.
  o.expert_type = "q8_0";
  generate_model(o);
  CHECK(GgufFile::open(o.out)->find_tensor("blk.0.ffn_up_exps.weight")->type == TensorType::Q8_0);
  GenOptions q = small("qwen3moe", "swa_qwen.gguf");
  q.n_swa = 4;
  CHECK_THROWS_AS(resolve_gen_options(q), Error);

  // With a vocabulary (gpt-2: o200k is not in the shared data) the released chat template is embedded.
  GenOptions v = small("gpt-oss", "gen_gpt_oss_vocab.gguf");
  v.n_layer = 1;
  v.vocab = "";
  v.n_vocab = 0;
  v.data_dir = MOE_SHARED_DATA;
  generate_model(v);
  auto g = GgufFile::open(v.out);
  CHECK(g->get_string("tokenizer.ggml.pre") == "gpt-2");
  auto tmpl = g->get_string("tokenizer.chat_template");
  REQUIRE(tmpl);
  std::string want;
  {
    std::ifstream in(std::string(MOE_SHARED_DATA) + "/chat-templates/openai-gpt-oss-120b.jinja", std::ios::binary);
    want.assign(std::istreambuf_iterator<char>(in), {});
  }
  CHECK(*tmpl == want);
}

TEST_CASE("moe gen llama4: llama.cpp's tensor names and keys, interleaved dense/MoE layers, top-1") {
  GenOptions o = small("llama4", "gen_llama4.gguf");
  o.n_layer = 4;
  o.n_expert_used = 0;  // llama4's default: top-1
  GenResult r = generate_model(o);
  CHECK(r.resolved.n_expert_used == 1);
  auto f = GgufFile::open(o.out);
  CHECK(f->get_uint("llama4.interleave_moe_layer_step") == 2u);
  CHECK(f->get_uint("llama4.expert_feed_forward_length") == 96u);
  CHECK(f->get_uint("llama4.feed_forward_length") == 192u);
  CHECK_FALSE(f->find("llama4.attention.chunk_size"));  // llama.cpp's fixed 8192
  ModelSpec s = load_model_spec(*f);
  CHECK(s.arch == Arch::Llama4);
  CHECK(s.rope_style == RopeStyle::Normal);
  CHECK(s.rope_freq_base == 500000.0f);
  CHECK(s.n_chunk == 8192);
  for (uint32_t il = 0; il < 4; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    const bool moe = il % 2 == 1;
    CHECK(s.layers[il].is_moe == moe);
    for (const char* t : {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                          "ffn_norm.weight"})
      CHECK_MESSAGE(f->find_tensor(p + t) != nullptr, std::string(p + t));
    for (const char* t : {"ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight",
                          "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight"})
      CHECK_MESSAGE((f->find_tensor(p + t) != nullptr) == moe, std::string(p + t));
    for (const char* t : {"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"})
      CHECK_MESSAGE((f->find_tensor(p + t) != nullptr) == !moe, std::string(p + t));
    CHECK(f->find_tensor(p + "ffn_gate_inp_shexp.weight") == nullptr);
  }
  CHECK(s.layers[1].n_ff_shared == 96);  // the shared expert has the routed expert's size
  CHECK(s.layers[0].n_ff_dense == 192);
  // --chunk writes moe's own keys (chunk and temperature floor); it is a llama4 option only.
  o.n_chunk = 5;
  generate_model(o);
  ModelSpec c = load_model_spec(*GgufFile::open(o.out));
  CHECK(c.n_chunk == 5);
  CHECK(c.attn_temp_length == 5);
  GenOptions q = small("qwen3moe", "chunk_qwen.gguf");
  q.n_chunk = 4;
  CHECK_THROWS_AS(resolve_gen_options(q), Error);
}

TEST_CASE("moe inspect --json reports the spec and the byte split") {
  GenOptions o = small("qwen2moe", "inspect.gguf");
  generate_model(o);
  auto f = GgufFile::open(o.out);
  ModelSpec s = load_model_spec(*f);
  ExpertTable t = ExpertTable::build(*f, s);
  ModelBytes b = model_bytes(*f, s, t);
  if (!std::filesystem::exists(MOE_TOOL_PATH)) {
    MESSAGE("moe binary not built; inspect checked through the library only");
    return;
  }
  std::string cmd = std::string(MOE_TOOL_PATH) + " inspect --json " + o.out + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int st = pclose(p);
  INFO(out);
  REQUIRE(WEXITSTATUS(st) == 0);
  JsonParser jp{out};
  Json j = jp.parse();
  REQUIRE(j.is_obj);
  CHECK(j.obj["architecture"].str == "qwen2moe");
  CHECK(j.obj["n_layer"].num == 3);
  CHECK(j.obj["n_expert"].num == 6);
  CHECK(j.obj["n_expert_used"].num == 2);
  CHECK(j.obj["n_expert_shared"].num == 1);
  CHECK(j.obj["n_embd"].num == 64);
  CHECK(j.obj["n_ff_expert"].num == 96);
  CHECK(j.obj["n_vocab"].num == 300);
  CHECK(j.obj["expert_bytes"].num == double(b.per_expert));
  CHECK(j.obj["dense_bytes"].num == double(b.dense));
  CHECK(j.obj["experts_bytes"].num == double(b.experts));
  CHECK(j.obj["active_bytes_per_token"].num == double(b.active_per_token));
  CHECK(j.obj["file_bytes"].num == double(b.file));
  CHECK(j.obj["tensor_types"].obj["f32"].obj["count"].num == double(f->tensors().size()));

  // A bad file: non-zero exit and the message naming the file.
  std::string bad = std::string(MOE_TOOL_PATH) + " inspect " + std::string(MOE_SHARED_DATA) +
                    "/tokenizers/ggml-vocab-gpt-2.gguf 2>&1";
  p = popen(bad.c_str(), "r");
  REQUIRE(p);
  out.clear();
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  st = pclose(p);
  CHECK(WEXITSTATUS(st) != 0);
  CHECK(out.find("unsupported architecture 'gpt2'") != std::string::npos);
}

TEST_CASE("moe gen writes deepseek2 (V2 and V3 flavours) as llama.cpp's deepseek2 loader reads it") {
  struct Case {
    const char* preset;
    bool kv_b;
  };
  for (Case c : {Case{"tiny", false}, Case{"tiny-v3", false}, Case{"tiny-v3", true}}) {
    CAPTURE(c.preset);
    CAPTURE(c.kv_b);
    GenOptions o;
    o.arch = "deepseek2";
    o.preset = c.preset;
    o.mla_kv_b = c.kv_b;
    o.out = tmp(std::string("ds2-") + c.preset + (c.kv_b ? "-kvb" : "") + ".gguf");
    o.vocab = "none";
    o.type = "q8_0";
    GenResult r = generate_model(o);
    auto f = GgufFile::open(o.out);
    const bool v3 = std::string(c.preset) == "tiny-v3";
    // Metadata keys llama.cpp requires or reads for deepseek2.
    for (const char* k : {"attention.kv_lora_rank", "attention.q_lora_rank", "leading_dense_block_count",
                          "expert_shared_count", "expert_feed_forward_length", "expert_weights_scale",
                          "rope.dimension_count", "rope.scaling.yarn_log_multiplier", "feed_forward_length"})
      CHECK_MESSAGE(f->find(std::string("deepseek2.") + k) != nullptr, k);
    CHECK((f->find("deepseek2.attention.key_length_mla") != nullptr) == !c.kv_b);
    CHECK((f->find("deepseek2.expert_gating_func") != nullptr) == v3);  // V2 files omit it (softmax)
    ModelSpec s = load_model_spec(*f);
    CHECK(s.arch == Arch::Deepseek2);
    CHECK(s.kv_lora_rank == 64);
    CHECK(s.q_lora_rank == (v3 ? 64u : 0u));
    CHECK(s.mla_split_kv_b == !c.kv_b);
    CHECK(s.mla_head_dim_k == 48);  // qk_nope 32 + qk_rope 16
    CHECK(s.mla_head_dim_v == 32);
    CHECK(s.n_rot == 16);
    CHECK(s.n_head_kv == 1);
    CHECK(s.head_dim_k == 64 + 16);
    CHECK(s.head_dim_v == 64);
    CHECK(s.rope_style == RopeStyle::Normal);
    CHECK(s.rope_scaling == RopeScaling::Yarn);
    CHECK(s.rope_freq_scale == doctest::Approx(0.25f));
    CHECK(s.yarn_log_mul == doctest::Approx(v3 ? 0.1f : 0.0707f));
    CHECK(!s.layers[0].is_moe);
    CHECK(s.layers[0].n_ff_dense == 256);
    CHECK(s.n_moe_layer == r.resolved.n_layer - 1);
    CHECK(s.n_expert_shared == 1);
    CHECK(s.layers[1].n_ff_shared == s.layers[1].n_ff_expert);
    CHECK(s.gating.func == (v3 ? GatingFunc::Sigmoid : GatingFunc::Softmax));
    CHECK(s.gating.has_bias == v3);
    CHECK(s.gating.renormalize == v3);
    CHECK(s.gating.n_group == (v3 ? 4u : 0u));
    CHECK(s.gating.topk_group == (v3 ? 2u : 0u));
    CHECK(s.gating.scale == doctest::Approx(v3 ? 2.5f : 1.5f));
    // Shared experts and the dense layer are dense bytes; only the routed experts are slices.
    ExpertTable t = ExpertTable::build(*f, s);
    CHECK(t.at(0, 0) == nullptr);
    for (const auto& name : t.expert_tensor_names()) CHECK(name.find("_exps.") != std::string::npos);
    uint64_t sum = 0;
    for (const auto& ti : f->tensors()) sum += ti.nbytes;
    CHECK(t.dense_bytes() + t.total_bytes() == sum);
  }
}

// glm4moe (GLM-4.5/4.6) as llama.cpp's glm4moe loader reads it: q/k/v biases, optional per-head q/k
// norms, post_attention_norm, a dense first layer, sigmoid routing with exp_probs_b, normalised weights
// times a routed scale, a shared expert, RoPE (NeoX) on half of a head size other than n_embd / n_head,
// and a trailing NextN layer that block_count counts but nobody runs.
TEST_CASE("moe gen glm4moe: llama.cpp's tensor names and keys; NextN layers counted and skipped") {
  for (bool qk : {false, true}) {
    CAPTURE(qk);
    GenOptions o;
    o.arch = "glm4moe";
    o.preset = "tiny";
    o.qk_norm = qk;
    o.type = "q8_0";
    o.vocab = "none";
    o.out = tmp(std::string("glm4moe") + (qk ? "-qk" : "") + ".gguf");
    GenResult r = generate_model(o);
    CHECK(r.resolved.n_nextn == 1);
    CHECK(r.resolved.head_dim == 64);
    auto f = GgufFile::open(o.out);
    for (const char* k : {"leading_dense_block_count", "expert_shared_count", "expert_feed_forward_length",
                          "expert_weights_scale", "expert_weights_norm", "expert_gating_func", "nextn_predict_layers",
                          "rope.dimension_count", "attention.key_length", "feed_forward_length"})
      CHECK_MESSAGE(f->find(std::string("glm4moe.") + k) != nullptr, k);
    CHECK(f->get_uint("glm4moe.block_count") == 5u);  // 4 run layers + 1 NextN
    ModelSpec s = load_model_spec(*f);
    CHECK(s.arch == Arch::Glm4Moe);
    CHECK(s.arch_name == "glm4moe");
    CHECK(s.n_layer == 4);
    CHECK(s.n_layer_nextn == 1);
    CHECK(s.layers.size() == 4);
    CHECK(s.head_dim_k == 64);
    CHECK(s.head_dim_v == 64);
    CHECK(uint64_t(s.n_head) * s.head_dim_k != s.n_embd);
    CHECK(s.n_rot == 32);
    CHECK(s.rope_style == RopeStyle::NeoX);
    CHECK(s.attn_bias);
    CHECK_FALSE(s.attn_out_bias);
    CHECK(s.qk_norm == (qk ? QkNorm::PerHead : QkNorm::None));
    CHECK(s.ffn_norm_post_attention);
    CHECK_FALSE(s.layers[0].is_moe);
    CHECK(s.layers[0].n_ff_dense == 256);
    CHECK(s.n_moe_layer == 3);
    CHECK(s.n_expert_shared == 1);
    CHECK(s.layers[1].n_ff_shared == s.layers[1].n_ff_expert);
    CHECK(s.gating.func == GatingFunc::Sigmoid);
    CHECK(s.gating.has_bias);
    CHECK(s.gating.renormalize);
    CHECK_FALSE(s.gating.topk_before_norm);
    CHECK_FALSE(s.gating.shared_gate);
    CHECK(s.gating.n_group == 0);
    CHECK(s.gating.scale == doctest::Approx(2.5f));
    // The NextN layer: a full MoE block plus its own tensors, in the file but outside the model.
    for (const char* t : {"blk.4.nextn.eh_proj.weight", "blk.4.nextn.enorm.weight", "blk.4.nextn.hnorm.weight",
                          "blk.4.ffn_gate_exps.weight", "blk.4.exp_probs_b.bias", "blk.4.attn_q.bias"})
      CHECK_MESSAGE(f->find_tensor(t) != nullptr, t);
    CHECK(f->find_tensor("blk.3.nextn.eh_proj.weight") == nullptr);
    CHECK(f->find_tensor("blk.0.ffn_norm.weight") == nullptr);
    CHECK(f->find_tensor("blk.0.ffn_gate_inp.weight") == nullptr);
    ExpertTable t = ExpertTable::build(*f, s);
    CHECK(t.n_layer() == 4);
    CHECK(t.at(0, 0) == nullptr);
    CHECK(t.at(3, 0) != nullptr);
    for (const auto& name : t.expert_tensor_names()) CHECK(name.rfind("blk.4.", 0) != 0);
    uint64_t sum = 0, blk4 = 0;
    for (const auto& ti : f->tensors()) {
      sum += ti.nbytes;
      if (ti.name.rfind("blk.4.", 0) == 0) blk4 += ti.nbytes;
    }
    CHECK(t.skipped_bytes() == blk4);
    CHECK(t.skipped_tensor_names().size() >= 15);
    CHECK(t.dense_bytes() + t.total_bytes() + t.skipped_bytes() == sum);
    CHECK(model_bytes(*f, s, t).skipped == blk4);
  }

  // Without NextN layers; options of other archs are refused.
  GenOptions o = small("glm4moe", "glm4moe-small.gguf");
  o.preset = "tiny";
  o.n_nextn = 0;
  o.head_dim = 24;
  generate_model(o);
  auto f = GgufFile::open(o.out);
  ModelSpec s = load_model_spec(*f);
  CHECK(s.n_layer == 3);
  CHECK(s.n_layer_nextn == 0);
  CHECK(s.head_dim_k == 24);
  CHECK(s.n_rot == 12);
  CHECK(ExpertTable::build(*f, s).skipped_bytes() == 0);
  GenOptions bad = small("qwen3moe", "glm_opt_qwen.gguf");
  bad.qk_norm = true;
  CHECK_THROWS_AS(resolve_gen_options(bad), Error);
  GenOptions air;
  air.preset = "glm-4.5-air";
  air.out = tmp("glm_air_unused.gguf");
  const GenOptions ra = resolve_gen_options(air);  // GLM-4.5-Air's shapes (not written: ~100 GB)
  CHECK(ra.arch == "glm4moe");
  CHECK(ra.head_dim == 128);
  CHECK(ra.n_head == 96);
  CHECK(ra.n_head_kv == 8);
  CHECK(ra.n_layer == 46);
  CHECK(ra.n_nextn == 1);
  CHECK(ra.n_ff_shared == 1408);
  GenOptions odd = small("glm4moe", "glm_odd.gguf");
  odd.head_dim = 18;  // half of it (9) is odd
  CHECK_THROWS_AS(resolve_gen_options(odd), Error);

  // With a vocabulary, GLM-4.6's chat template is embedded.
  GenOptions v = small("glm4moe", "glm4moe_vocab.gguf");
  v.n_layer = 2;
  v.vocab = "gpt-2";
  v.n_vocab = 0;
  v.data_dir = MOE_SHARED_DATA;
  generate_model(v);
  auto g = GgufFile::open(v.out);
  auto tmpl = g->get_string("tokenizer.chat_template");
  REQUIRE(tmpl);
  std::string want;
  {
    std::ifstream in(std::string(MOE_SHARED_DATA) + "/chat-templates/GLM-4.6.jinja", std::ios::binary);
    want.assign(std::istreambuf_iterator<char>(in), {});
  }
  CHECK(*tmpl == want);
}

TEST_CASE("glm4moe spec: NextN count, M-RoPE, the selection bias and the head sizes are checked") {
  // 3 blocks: a dense one, a MoE one, and a NextN one (a MoE block by its tensors).
  auto build = [](const std::string& file, const std::function<void(Mini&)>& tweak) {
    Mini m("glm4moe");
    m.base(3);
    m.u32("attention.head_count_kv", 2);
    m.u32("rope.dimension_count", 8);
    m.u32("feed_forward_length", 48);
    m.u32("expert_count", 4);
    m.u32("expert_used_count", 2);
    m.u32("expert_feed_forward_length", 16);
    m.u32("expert_shared_count", 1);
    m.u32("leading_dense_block_count", 1);
    m.u32("nextn_predict_layers", 1);
    for (uint32_t il = 0; il < 3; ++il) {
      const std::string p = "blk." + std::to_string(il) + ".";
      m.t(p + "post_attention_norm.weight", {32});
      m.t(p + "attn_q.bias", {32});
      if (il == 0) {
        m.dense(0, 48);
        continue;
      }
      m.stacked(il, 16, 4);
      m.t(p + "exp_probs_b.bias", {4});
      m.t(p + "ffn_gate_shexp.weight", {32, 16});
      m.t(p + "ffn_up_shexp.weight", {32, 16});
      m.t(p + "ffn_down_shexp.weight", {16, 32});
    }
    tweak(m);
    return GgufFile::open(m.write(file));
  };
  {
    auto f = build("glm_ok.gguf", [](Mini&) {});
    ModelSpec s = load_model_spec(*f);
    CHECK(s.n_layer == 2);
    CHECK(s.n_layer_nextn == 1);
    CHECK(s.n_rot == 8);
    CHECK(s.rope_style == RopeStyle::NeoX);
    CHECK(s.gating.func == GatingFunc::Sigmoid);  // absent expert_gating_func: sigmoid for glm4moe
    CHECK(s.gating.has_bias);
    CHECK_FALSE(s.gating.renormalize);
    CHECK(s.n_moe_layer == 1);
    ExpertTable t = ExpertTable::build(*f, s);
    CHECK(t.at(2, 0) == nullptr);
    CHECK(t.skipped_tensor_names().size() == 15);  // block 2: 7 attention/norm, router + 3 experts + bias, 3 shexp
  }
  ErrorCode code{};
  auto f = build("glm_nextn.gguf", [](Mini& m) { m.u32("nextn_predict_layers", 3); });
  CHECK(error_of([&] { load_model_spec(*f); }, &code).find("nextn_predict_layers") != std::string::npos);
  CHECK(code == ErrorCode::Corrupt);
  f = build("glm_mrope.gguf", [](Mini& m) {
    std::vector<gguf::Value> sec = {gguf::Value::make_i32(4), gguf::Value::make_i32(2), gguf::Value::make_i32(2),
                                    gguf::Value::make_i32(0)};
    m.w.set("glm4moe.rope.dimension_sections", gguf::Value::make_array(gguf::ValueType::INT32, sec));
  });
  CHECK(error_of([&] { load_model_spec(*f); }, &code).find("M-RoPE") != std::string::npos);
  CHECK(code == ErrorCode::Unsupported);
  f = build("glm_kv.gguf", [](Mini& m) {
    m.u32("attention.key_length", 16);
    m.u32("attention.value_length", 8);
  });
  CHECK(error_of([&] { load_model_spec(*f); }, &code).find("one head size") != std::string::npos);
  CHECK(code == ErrorCode::Corrupt);
  {
    // No exp_probs_b: llama.cpp requires it for glm4moe.
    Mini m("glm4moe");
    m.base(2);
    m.u32("expert_count", 4);
    m.u32("expert_used_count", 2);
    m.u32("expert_shared_count", 0);
    m.u32("leading_dense_block_count", 1);
    m.u32("feed_forward_length", 48);
    m.dense(0, 48);
    m.stacked(1, 16, 4);
    m.t("blk.0.post_attention_norm.weight", {32});
    m.t("blk.1.post_attention_norm.weight", {32});
    auto g = GgufFile::open(m.write("glm_nobias.gguf"));
    CHECK(error_of([&] { load_model_spec(*g); }, &code).find("exp_probs_b") != std::string::npos);
    CHECK(code == ErrorCode::Corrupt);
  }
}
