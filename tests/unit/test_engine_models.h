// tests/unit/test_engine_models.h — small random GGUF models of each architecture the engine runs,
// written here with GgufWriter (independently of `moe gen`, so a layout mistake shared by the
// generator and the engine cannot hide), and a runner for the numpy reference forward pass
// (tests/reference/forward.py). Test-only helpers; not thread-safe.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <random>
#include <string>
#include <vector>

#include "moe/gguf.h"
#include "moe/kernels/quant.h"
#include "moe/kernels/types.h"

namespace moe::test {

struct TinyModel {
  std::string arch = "llama";  // llama (Mixtral), qwen2moe, qwen3moe, olmoe, gpt-oss
  TensorType wtype = TensorType::F32;  // type of every 2-D matrix except the router
  bool mxfp4_experts = false;          // routed experts in MXFP4 (as released gpt-oss files) instead of wtype
  uint32_t n_swa = 3;                  // gpt-oss: sliding window of the even layers (shorter than test prompts)
  float oss_gate_up_scale = 3.0f;      // gpt-oss: expert gate/up weights this much larger (3: the SwiGLU clamp bites)
  uint32_t seed = 1;
  uint32_t n_layer = 2, n_embd = 256, n_head = 4, n_head_kv = 2, head_dim = 64;
  uint32_t n_vocab = 320, n_expert = 8, n_used = 2, n_ff = 256, n_ff_shared = 256;
  bool tied = false;  // no output.weight
};

// Writes the model to `path`.
inline void write_tiny_model(const TinyModel& m, const std::string& path) {
  using gguf::Value;
  gguf::GgufWriter w;
  const std::string a = m.arch;
  const bool qwen2 = a == "qwen2moe", qwen3 = a == "qwen3moe", olmoe = a == "olmoe", oss = a == "gpt-oss";
  w.set_string("general.architecture", a);
  w.set_string("general.name", "tiny-" + a);
  w.set_u32(a + ".block_count", m.n_layer);
  w.set_u32(a + ".context_length", 512);
  w.set_u32(a + ".embedding_length", m.n_embd);
  w.set_u32(a + ".feed_forward_length", m.n_ff);
  w.set_u32(a + ".attention.head_count", m.n_head);
  w.set_u32(a + ".attention.head_count_kv", m.n_head_kv);
  w.set_u32(a + ".attention.key_length", m.head_dim);
  w.set_u32(a + ".attention.value_length", m.head_dim);
  w.set_f32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_f32(a + ".rope.freq_base", qwen2 || qwen3 ? 1000000.0f : oss ? 150000.0f : 10000.0f);
  if (oss) {  // as the released gpt-oss: YaRN x32 over 4096 positions; a short window for the tests
    w.set_string(a + ".rope.scaling.type", "yarn");
    w.set_f32(a + ".rope.scaling.factor", 32.0f);
    w.set_u32(a + ".rope.scaling.original_context_length", 4096);
    w.set_u32(a + ".attention.sliding_window", m.n_swa);
  }
  w.set_u32(a + ".rope.dimension_count", m.head_dim);
  w.set_u32(a + ".expert_count", m.n_expert);
  w.set_u32(a + ".expert_used_count", m.n_used);
  w.set_u32(a + ".expert_feed_forward_length", m.n_ff);
  if (qwen2) w.set_u32(a + ".expert_shared_feed_forward_length", m.n_ff_shared);
  w.set_u32(a + ".vocab_size", m.n_vocab);
  {
    std::vector<Value> toks;
    for (uint32_t i = 0; i < m.n_vocab; ++i) toks.push_back(Value::make_string("t" + std::to_string(i)));
    w.set("tokenizer.ggml.tokens", Value::make_array(gguf::ValueType::STRING, std::move(toks)));
    w.set_string("tokenizer.ggml.model", "gpt2");
    w.set_u32("tokenizer.ggml.eos_token_id", 1);
    w.set_u32("tokenizer.ggml.bos_token_id", 2);
  }

  std::mt19937 rng(m.seed);
  std::vector<std::vector<uint8_t>> data;
  auto add = [&](const std::string& name, std::vector<uint64_t> ne, TensorType t, float scale, float offset) {
    uint64_t n = 1;
    for (auto d : ne) n *= d;
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = offset + scale * nd(rng);
    w.add_tensor(name, t, ne);
    std::vector<uint8_t> bytes;
    if (t == TensorType::F32) {
      bytes.resize(n * 4);
      std::memcpy(bytes.data(), v.data(), n * 4);
    } else {
      const uint64_t rb = *row_bytes(t, ne[0]);
      const uint64_t rows = n / ne[0];
      bytes.resize(rb * rows);
      for (uint64_t r = 0; r < rows; ++r)
        if (kernels::quantize_row(t, v.data() + r * ne[0], bytes.data() + r * rb, int64_t(ne[0])) != rb)
          throw std::runtime_error("quantize_row failed for " + name);
    }
    data.push_back(std::move(bytes));
  };
  const uint64_t E = m.n_embd, HQ = m.n_head * m.head_dim, HK = m.n_head_kv * m.head_dim, F = m.n_ff;
  const TensorType W = m.wtype, F32 = TensorType::F32;
  const TensorType WX = m.mxfp4_experts ? TensorType::MXFP4 : W;
  const float ws = 1.0f / std::sqrt(float(E));
  add("token_embd.weight", {E, m.n_vocab}, W, 1.0f, 0.0f);
  add("output_norm.weight", {E}, F32, 0.1f, 1.0f);
  if (!m.tied) add("output.weight", {E, m.n_vocab}, W, ws, 0.0f);
  for (uint32_t il = 0; il < m.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    add(p + "attn_norm.weight", {E}, F32, 0.1f, 1.0f);
    add(p + "attn_q.weight", {E, HQ}, W, ws, 0.0f);
    add(p + "attn_k.weight", {E, HK}, W, ws, 0.0f);
    add(p + "attn_v.weight", {E, HK}, W, ws, 0.0f);
    add(p + "attn_output.weight", {HQ, E}, W, 1.0f / std::sqrt(float(HQ)), 0.0f);
    if (oss) {
      // Biases and sinks large enough that leaving one out shows in the logits.
      add(p + "attn_q.bias", {HQ}, F32, 0.3f, 0.0f);
      add(p + "attn_k.bias", {HK}, F32, 0.3f, 0.0f);
      add(p + "attn_v.bias", {HK}, F32, 0.3f, 0.0f);
      add(p + "attn_output.bias", {E}, F32, 0.3f, 0.0f);
      add(p + "attn_sinks.weight", {m.n_head}, F32, 1.0f, 0.5f);
    }
    if (qwen2) {
      add(p + "attn_q.bias", {HQ}, F32, 0.1f, 0.0f);
      add(p + "attn_k.bias", {HK}, F32, 0.1f, 0.0f);
      add(p + "attn_v.bias", {HK}, F32, 0.1f, 0.0f);
    }
    if (qwen3) {
      add(p + "attn_q_norm.weight", {m.head_dim}, F32, 0.1f, 1.0f);
      add(p + "attn_k_norm.weight", {m.head_dim}, F32, 0.1f, 1.0f);
    }
    if (olmoe) {
      add(p + "attn_q_norm.weight", {HQ}, F32, 0.1f, 1.0f);
      add(p + "attn_k_norm.weight", {HK}, F32, 0.1f, 1.0f);
    }
    add(p + (oss ? "post_attention_norm.weight" : "ffn_norm.weight"), {E}, F32, 0.1f, 1.0f);
    add(p + "ffn_gate_inp.weight", {E, m.n_expert}, F32, 3.0f * ws, 0.0f);
    if (oss) add(p + "ffn_gate_inp.bias", {m.n_expert}, F32, 0.5f, 0.0f);
    // gpt-oss: gate/up 3x larger so the clamped SwiGLU's limit (7) is reached by some activations.
    const float gu = oss ? m.oss_gate_up_scale * ws : ws;
    add(p + "ffn_gate_exps.weight", {E, F, m.n_expert}, WX, gu, 0.0f);
    add(p + "ffn_down_exps.weight", {F, E, m.n_expert}, WX, 1.0f / std::sqrt(float(F)), 0.0f);
    add(p + "ffn_up_exps.weight", {E, F, m.n_expert}, WX, gu, 0.0f);
    if (oss) {
      add(p + "ffn_gate_exps.bias", {F, m.n_expert}, F32, 0.3f, 0.0f);
      add(p + "ffn_up_exps.bias", {F, m.n_expert}, F32, 0.3f, 0.0f);
      add(p + "ffn_down_exps.bias", {E, m.n_expert}, F32, 0.3f, 0.0f);
    }
    if (qwen2) {
      add(p + "ffn_gate_inp_shexp.weight", {E}, F32, ws, 0.0f);
      add(p + "ffn_gate_shexp.weight", {E, m.n_ff_shared}, W, ws, 0.0f);
      add(p + "ffn_up_shexp.weight", {E, m.n_ff_shared}, W, ws, 0.0f);
      add(p + "ffn_down_shexp.weight", {m.n_ff_shared, E}, W, 1.0f / std::sqrt(float(m.n_ff_shared)), 0.0f);
    }
  }
  w.write(path, data);
}

#if defined(MOE_TEST_PYTHON) && defined(MOE_REFERENCE_DIR)
struct Reference {
  std::vector<float> logits;  // n_tokens x n_vocab
  double min_margin = 0;      // smallest gap between the k-th and (k+1)-th routing score
  long clamped = -1;          // gpt-oss: expert activations the SwiGLU clamp changed (-1: not reported)
  bool ok = false;
  std::string error;
};

// Runs tests/reference/forward.py with MOE_TEST_PYTHON. Returns ok=false (with the output in error)
// when it fails.
// extra: more forward.py arguments (e.g. " --ctx 512").
inline Reference run_reference(const std::string& model, const std::vector<int32_t>& tokens, uint32_t n_vocab,
                               const std::string& extra = "") {
  Reference r;
  const std::string out = model + ".ref.f32";
  std::string ids;
  for (size_t i = 0; i < tokens.size(); ++i) ids += (i ? "," : "") + std::to_string(tokens[i]);
  const std::string cmd = std::string(MOE_TEST_PYTHON) + " " + MOE_REFERENCE_DIR + "/forward.py " + model +
                          " --tokens " + ids + " --out " + out + extra + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    r.error = "popen failed";
    return r;
  }
  char buf[512];
  std::string text;
  while (fgets(buf, sizeof buf, p)) text += buf;
  const int rc = pclose(p);
  if (rc != 0) {
    r.error = cmd + "\n" + text;
    return r;
  }
  auto pos = text.find("min_margin ");
  if (pos != std::string::npos) r.min_margin = std::stod(text.substr(pos + 11));
  if (auto c = text.find("swiglu_clamped "); c != std::string::npos) r.clamped = std::stol(text.substr(c + 15));
  FILE* f = std::fopen(out.c_str(), "rb");
  if (!f) {
    r.error = "no output file " + out;
    return r;
  }
  r.logits.resize(tokens.size() * n_vocab);
  const size_t got = std::fread(r.logits.data(), 4, r.logits.size(), f);
  std::fclose(f);
  r.ok = got == r.logits.size();
  if (!r.ok) r.error = "short output file " + out;
  return r;
}
#endif

}  // namespace moe::test
