// Engine logits against the numpy reference, on generated models of every supported architecture (llama/Mixtral,
// qwen2moe, qwen3moe, olmoe), f32 and quantized (q8_0, q4_K): engine logits against the independent
// numpy reference (tests/reference/forward.py), prefill == token-by-token decode, identical results
// for 1 and 2 threads, the expert-source seam, and the errors bad input must give.
//
// Tolerances (max |engine - reference| over all positions and vocab, divided by max |reference|):
//   f32:  2e-3 — the engine keeps K/V in f16 (relative rounding 2^-11 on every cached value) and
//         accumulates in f32; the reference is float64 with exact K/V.
//   q8_0: 3e-2 — both sides read the same quantized weights; the engine's SIMD kernels also quantize
//         the activations to 8 bits per block of 32 (about 0.4% relative per product), through
//         2 layers x 4 products each plus the LM head.
//   q4_K: 3e-2 — same, with 8-bit activations per block of 256.
// Routing is discontinuous: a test model is used only when, in the reference, every routing decision
// has a gap between the k-th and (k+1)-th router logit of at least 1% of that token's logit spread
// (the quantized paths perturb router logits by well under that), else the next seed, so rounding
// cannot flip an expert choice; the seed is chosen from the reference alone, never from engine results.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "moe/engine.h"
#include "moe/error.h"
#include "moe/gen.h"
#include "moe/kernels/quant.h"
#include "moe/sampler.h"
#include "test_engine_models.h"

using namespace moe;

namespace {

std::string tmp(const std::string& name) {
  std::filesystem::create_directories(MOE_TEST_TMP);
  return std::string(MOE_TEST_TMP) + "/" + name;
}

bool have_python() { return std::string(MOE_TEST_PYTHON).size() > 0; }

const std::vector<int32_t> kPrompt = {5, 17, 200, 3, 99, 42, 255, 7};  // < 256: fits every test vocabulary
const std::vector<int32_t> kShort = {5, 200, 99, 42};  // moe gen's tiny preset has 4 layers: fewer decisions

double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  double mx = 0, ref_mx = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    mx = std::max(mx, std::fabs(double(a[i]) - ref[i]));
    ref_mx = std::max(ref_mx, std::fabs(double(ref[i])));
  }
  return mx / std::max(ref_mx, 1e-30);
}

std::vector<float> engine_logits(const Model& m, const std::vector<int32_t>& toks, int threads, uint32_t n_batch,
                                 uint32_t n_ctx = 64) {
  MmapExpertSource src(m);
  SessionOptions o;
  o.n_ctx = n_ctx;
  o.n_threads = threads;
  o.n_batch = n_batch;
  Session s(m, src, o);
  std::vector<float> all(toks.size() * m.spec().n_vocab);
  s.eval(toks, all.data());
  return all;
}

// Without a python3 that imports numpy the reference cannot run: the whole binary reports "skipped".
void skip_without_python() {
  if (have_python()) return;
  MESSAGE("no python3 with numpy (MOE_TEST_PYTHON): reference comparison skipped");
  std::exit(77);  // ctest: skipped
}

// Writes g.out with moe gen for seeds 1, 2, ... until the reference's routing decisions on `prompt`
// all have a margin of at least 1% (so quantization noise cannot flip an expert choice); g.seed is
// left at the seed used. A vocabulary of 256 tokens (g.n_vocab) is assumed.
test::Reference generate_with_margin(GenOptions& g, const std::vector<int32_t>& prompt) {
  test::Reference ref;
  for (g.seed = 1; g.seed < 40; ++g.seed) {
    generate_model(g);
    ref = test::run_reference(g.out, prompt, 256);
    REQUIRE_MESSAGE(ref.ok, ref.error);
    if (ref.min_margin >= 0.01) break;
  }
  REQUIRE(ref.min_margin >= 0.01);
  return ref;
}

// The same for a test::TinyModel written at `path` (tm.seed is left at the seed used), on kPrompt.
test::Reference write_tiny_with_margin(test::TinyModel& tm, const std::string& path) {
  test::Reference ref;
  for (tm.seed = 1; tm.seed < 40; ++tm.seed) {
    test::write_tiny_model(tm, path);
    ref = test::run_reference(path, kPrompt, tm.n_vocab);
    REQUIRE_MESSAGE(ref.ok, ref.error);
    if (ref.min_margin >= 0.01) break;
  }
  REQUIRE(ref.min_margin >= 0.01);
  return ref;
}

const char* type_label(TensorType t) { return type_name(t); }

}  // namespace

TEST_CASE("engine logits match the numpy reference on every architecture and type") {
  skip_without_python();
  struct Case {
    const char* arch;
    bool tied;
  };
  for (Case c : {Case{"llama", false}, Case{"qwen2moe", false}, Case{"qwen3moe", true}, Case{"olmoe", false}}) {
    for (TensorType t : {TensorType::F32, TensorType::Q8_0, TensorType::Q4_K}) {
      const double tol = t == TensorType::F32 ? 2e-3 : 3e-2;
      test::TinyModel tm;
      tm.arch = c.arch;
      tm.wtype = t;
      tm.tied = c.tied;
      const std::string path = tmp(std::string("ref-") + c.arch + "-" + type_label(t) + ".gguf");
      const test::Reference ref = write_tiny_with_margin(tm, path);
      auto m = Model::load(path);
      auto got = engine_logits(*m, kPrompt, 2, 64);
      const double err = rel_err(got, ref.logits);
      INFO(std::string(c.arch), " ", std::string(type_label(t)), " seed ", tm.seed, " rel err ", err, " tol ", tol);
      CHECK(err <= tol);
      // The same argmax at every position (the logits are well separated for random weights).
      for (size_t p = 0; p < kPrompt.size(); ++p) {
        std::span<const float> a(got.data() + p * tm.n_vocab, tm.n_vocab), b(ref.logits.data() + p * tm.n_vocab, tm.n_vocab);
        if (std::fabs(*std::max_element(b.begin(), b.end()) - b[argmax(b)]) < 1e-9) {
          std::vector<float> sb(b.begin(), b.end());
          std::sort(sb.rbegin(), sb.rend());
          if ((sb[0] - sb[1]) > 2 * tol * std::fabs(sb[0])) CHECK(argmax(a) == argmax(b));
        }
      }
      MESSAGE(std::string(c.arch), " ", std::string(type_label(t)), ": max rel logit error vs reference ", err, " (tol ", tol, ")");
    }
  }
}


TEST_CASE("engine matches the reference on models written by moe gen (generate_model)") {
  skip_without_python();
  for (const char* arch : {"llama", "qwen2moe", "qwen3moe", "olmoe", "granitemoe", "dbrx", "arctic", "grok"}) {
    // bf16: on AVX512_BF16 CPUs the activations are rounded to bfloat16 for vdpbf16ps (relative error
    // 2^-8 each; about 2.3e-3 measured here).
    for (const char* type : {"f32", "q8_0", "bf16"}) {
      const std::string ty = type;
      const double tol = ty == "f32" ? 2e-3 : (ty == "bf16" ? 1e-2 : 3e-2);
      GenOptions g;
      g.arch = arch;
      g.preset = "tiny";
      g.type = type;
      g.vocab = "none";
      g.n_vocab = 256;
      g.out = tmp(std::string("gen-") + arch + "-" + type + ".gguf");
      const test::Reference ref = generate_with_margin(g, kShort);
      auto m = Model::load(g.out);
      REQUIRE(m->spec().n_vocab == 256);
      auto got = engine_logits(*m, kShort, 2, 64);
      const double err = rel_err(got, ref.logits);
      INFO(std::string(arch), " ", std::string(type), " seed ", g.seed, " rel err ", err);
      CHECK(err <= tol);
      MESSAGE("moe gen ", std::string(arch), " ", std::string(type), ": max rel logit error ", err, " (tol ", tol, ")");
    }
  }
}

// DeepSeek-V2/V3 (deepseek2) from moe gen: multi-head latent attention (the engine's absorbed form over
// the latent cache against the reference's decompressed per-head keys and values), a dense first layer,
// a shared expert, YaRN, the routed scale; V2 softmax routing with a plain attn_q, V3 a compressed q,
// sigmoid routing with exp_probs_b and group-limited top-k (the reference's margin also covers the
// group choice); both kv_b layouts. q4_K at n_embd 256 (the K-quant block), where most matrices take
// it (the head-sized ones fall back to q8_0 as moe gen writes them).
TEST_CASE("engine matches the reference on deepseek2 (V2 and V3 flavours, both kv_b layouts)") {
  skip_without_python();
  struct Case {
    const char* preset;
    bool kv_b;
    const char* type;
    uint32_t n_embd;
  };
  for (Case c : {Case{"tiny", false, "f32", 0}, Case{"tiny", false, "q8_0", 0},
                 Case{"tiny-v3", false, "f32", 0},
                 Case{"tiny-v3", true, "q8_0", 0}, Case{"tiny-v3", false, "q4_K", 256}}) {
    const double tol = std::string(c.type) == "f32" ? 2e-3 : 3e-2;
    GenOptions g;
    g.arch = "deepseek2";
    g.preset = c.preset;
    g.type = c.type;
    g.mla_kv_b = c.kv_b;
    g.n_embd = c.n_embd;
    g.vocab = "none";
    g.n_vocab = 256;
    g.out = tmp(std::string("gen-ds2-") + c.preset + (c.kv_b ? "-kvb-" : "-") + c.type + ".gguf");
    const test::Reference ref = generate_with_margin(g, kShort);
    auto m = Model::load(g.out);
    REQUIRE(m->spec().kv_lora_rank > 0);
    REQUIRE(m->spec().mla_split_kv_b == !c.kv_b);
    auto got = engine_logits(*m, kShort, 2, 64);
    const double err = rel_err(got, ref.logits);
    const std::string label = std::string(c.preset) + (c.kv_b ? " (attn_kv_b) " : " ") + c.type;
    INFO(label, " seed ", g.seed, " rel err ", err);
    CHECK(err <= tol);
    // Token by token (the latent cache read back at every step) gives the same bits as one batch.
    CHECK(engine_logits(*m, kShort, 1, 1) == got);
    CHECK(engine_logits(*m, kShort, 1, 3) == got);  // one thread, batches of 3 and 1
    MESSAGE("moe gen deepseek2 ", label, ": max rel logit error ", err, " (tol ", tol, ")");
  }
}

// gpt-oss: attention sinks, sliding-window layers (window 3 < the 8-token prompt, so the even layers' mask
// cuts keys), q/k/v/o biases, router bias, per-expert biases, the clamped SwiGLU and YaRN RoPE, against
// the reference's forward_gpt_oss (written from the published model). Experts f32 or MXFP4 (as released);
// MXFP4 experts take the quantized tolerance (the engine's MXFP4 kernels quantize activations to 8 bits;
// with the scalar kernels the same models measured 7e-4).
TEST_CASE("gpt-oss: engine logits match the numpy reference (f32, MXFP4 experts, q8_0 dense)") {
  skip_without_python();
  struct Case {
    TensorType dense;
    bool mxfp4;
  };
  for (Case c : {Case{TensorType::F32, false}, Case{TensorType::F32, true}, Case{TensorType::Q8_0, true}}) {
    const double tol = c.dense == TensorType::F32 && !c.mxfp4 ? 2e-3 : 3e-2;
    test::TinyModel tm;
    tm.arch = "gpt-oss";
    tm.wtype = c.dense;
    tm.mxfp4_experts = c.mxfp4;
    tm.n_swa = 3;
    // f32: gate/up 3x larger so the SwiGLU clamp (7) bites and is checked exactly. Quantized: the usual
    // scale, since the 8-bit activation error grows with the experts' share of the residual stream
    // (3x measured 1.5e-2 / 4.4e-2 here; the scalar kernels, which do not quantize activations, 7e-4).
    tm.oss_gate_up_scale = c.mxfp4 ? 1.0f : 3.0f;
    REQUIRE(tm.n_swa < kPrompt.size());
    const std::string label = std::string(type_label(c.dense)) + (c.mxfp4 ? " + mxfp4 experts" : "");
    const std::string path =
        tmp(std::string("ref-gpt-oss-") + type_label(c.dense) + (c.mxfp4 ? "-mxfp4" : "") + ".gguf");
    const test::Reference ref = write_tiny_with_margin(tm, path);
    auto m = Model::load(path);
    const ModelSpec& s = m->spec();
    REQUIRE(s.n_swa == 3);
    CHECK(s.layers[0].swa);
    CHECK_FALSE(s.layers[1].swa);
    auto got = engine_logits(*m, kPrompt, 2, 64);
    const double err = rel_err(got, ref.logits);
    INFO("gpt-oss ", label, " seed ", tm.seed, " rel err ", err, " tol ", tol);
    CHECK(err <= tol);
    if (!c.mxfp4) CHECK(ref.clamped > 0);  // the clamp was exercised
    // Token by token (decode: the window and the sinks per step) gives the prefill's bits.
    auto one = engine_logits(*m, kPrompt, 1, 1);
    CHECK(one == got);
    MESSAGE("gpt-oss ", label, ": max rel logit error vs reference ", err, " (tol ", tol, ")");
  }
}

TEST_CASE("gpt-oss written by moe gen (f32; MXFP4 experts) matches the reference") {
  skip_without_python();
  for (const char* et : {"f32", "mxfp4"}) {
    const double tol = std::string(et) == "f32" ? 2e-3 : 3e-2;
    GenOptions g;
    g.arch = "gpt-oss";
    g.preset = "tiny";
    g.n_swa = 2;  // < the 4-token prompt, so the even layers' window cuts keys
    g.type = "f32";
    g.expert_type = et;
    g.vocab = "none";
    g.n_vocab = 256;
    g.out = tmp(std::string("gen-gpt-oss-") + et + ".gguf");
    const test::Reference ref = generate_with_margin(g, kShort);
    auto m = Model::load(g.out);
    REQUIRE(m->spec().n_swa < kShort.size());
    auto got = engine_logits(*m, kShort, 2, 64);
    const double err = rel_err(got, ref.logits);
    INFO("gpt-oss experts ", std::string(et), " seed ", g.seed, " rel err ", err);
    CHECK(err <= tol);
    CHECK(ref.clamped > 0);  // moe gen's gpt-oss expert scale reaches the SwiGLU clamp
    MESSAGE("moe gen gpt-oss experts ", std::string(et), ": max rel logit error ", err, " (tol ", tol, ")");
  }
}

// llama4 from moe gen: MoE layers (1, 3: top-1 sigmoid routing whose weight scales the expert input, a
// shared expert) between dense layers (0, 2), chunked attention on layers 0-2 with a chunk of 3 < the
// 8-token prompt (moe's chunk_size key; llama.cpp's is a fixed 8192), NoPE layer 3 with attention
// temperature tuning (floor 3, so positions 2.. get a factor above 1), q/k RMS norm on the RoPE layers;
// against the reference's forward_llama4 (written from the published model).
TEST_CASE("llama4 written by moe gen (f32, q8_0; rope_freqs) matches the reference") {
  skip_without_python();
  // The third case carries Llama-3.1-style rope_freqs divisors (as Scout's files do); they change the
  // reference's logits by ~2% of the largest, 10x the f32 tolerance.
  for (int c = 0; c < 3; ++c) {
    const char* type = c == 1 ? "q8_0" : "f32";
    const double tol = std::string(type) == "f32" ? 2e-3 : 3e-2;
    GenOptions g;
    g.arch = "llama4";
    g.preset = "tiny";
    g.type = type;
    g.n_chunk = 3;
    g.rope_freqs = c == 2;
    g.vocab = "none";
    g.n_vocab = 256;
    g.out = tmp(std::string("gen-llama4-") + type + (g.rope_freqs ? "-rf" : "") + ".gguf");
    const test::Reference ref = generate_with_margin(g, kPrompt);
    auto m = Model::load(g.out);
    const ModelSpec& s = m->spec();
    REQUIRE(s.n_chunk == 3);
    REQUIRE(s.n_chunk < kPrompt.size());
    REQUIRE(s.rope_freqs == g.rope_freqs);
    CHECK(s.attn_temp_length == 3);
    CHECK(s.qk_l2_norm);
    CHECK((s.layers[0].chunked && s.layers[2].chunked && !s.layers[3].chunked));
    CHECK((s.layers[0].rope && !s.layers[3].rope));
    CHECK((!s.layers[0].is_moe && s.layers[1].is_moe && s.layers[1].n_expert_used == 1));
    auto got = engine_logits(*m, kPrompt, 2, 64);
    const double err = rel_err(got, ref.logits);
    INFO("llama4 ", std::string(type), " seed ", g.seed, " rel err ", err);
    CHECK(err <= tol);
    // Token by token (the chunk boundary and the temperature per step) gives the prefill's bits.
    CHECK(engine_logits(*m, kPrompt, 1, 1) == got);
    MESSAGE("moe gen llama4 ", std::string(type), std::string(g.rope_freqs ? " rope_freqs" : ""), ": max rel logit error ", err, " (tol ", tol, ")");
  }
}

// phimoe (Phi-3.5-MoE as llama.cpp runs it) from moe gen: RMSNorm + bias on every norm, q/k/v/o biases, an
// LM-head bias, top-2 softmax routing, NeoX RoPE with LongRoPE factors and rope.scaling.attn_factor. The
// factors depend on the session's context (llama.cpp's rule: long when the context rounded up to 256
// exceeds the original 256): n_ctx 64 runs the short ones, 512 the long ones; the reference is told the
// same context (--ctx). f32 and q8_0, short and long.
TEST_CASE("phimoe written by moe gen (f32, q8_0; short and long LongRoPE factors) matches the reference") {
  skip_without_python();
  struct Case {
    const char* type;
    uint32_t n_ctx;
  };
  for (Case c : {Case{"f32", 64}, Case{"f32", 512}, Case{"q8_0", 64}, Case{"q8_0", 512}}) {
    const double tol = std::string(c.type) == "f32" ? 2e-3 : 3e-2;
    GenOptions g;
    g.arch = "phimoe";
    g.preset = "tiny";
    g.type = c.type;
    g.vocab = "none";
    g.n_vocab = 256;
    g.out = tmp(std::string("gen-phimoe-") + c.type + ".gguf");
    const std::string ctx = " --ctx " + std::to_string(c.n_ctx);
    test::Reference ref;
    for (g.seed = 1; g.seed < 40; ++g.seed) {
      generate_model(g);
      ref = test::run_reference(g.out, kShort, 256, ctx);
      REQUIRE_MESSAGE(ref.ok, ref.error);
      if (ref.min_margin >= 0.01) break;
    }
    REQUIRE(ref.min_margin >= 0.01);
    auto m = Model::load(g.out);
    const ModelSpec& s = m->spec();
    CHECK((s.norm_bias && s.output_bias && s.attn_bias && s.attn_out_bias && s.rope_factors && !s.layer_norm));
    CHECK(s.rope_attn_factor > 1.0f);
    CHECK(m->rope_factors(true) != m->rope_factors(false));
    auto got = engine_logits(*m, kShort, 2, 64, c.n_ctx);
    const double err = rel_err(got, ref.logits);
    INFO("phimoe ", std::string(c.type), " n_ctx ", c.n_ctx, " seed ", g.seed, " rel err ", err);
    CHECK(err <= tol);
    MESSAGE("moe gen phimoe ", std::string(c.type), " n_ctx ", c.n_ctx, ": max rel logit error ", err, " (tol ", tol,
            ")");
  }
}

// glm4moe (GLM-4.5/4.6) from moe gen: q/k/v biases, per-head q/k norms (one case each way), RoPE (NeoX) on
// half of each 64-wide head (n_head * head_dim = 256 != n_embd 128), a dense first layer, sigmoid routing
// with exp_probs_b, normalised weights times 2.5, a shared expert, and a trailing NextN layer in the
// file that neither side runs (the reference reads nextn_predict_layers itself).
TEST_CASE("glm4moe: engine logits match the numpy reference (f32, q8_0; with and without q/k norms)") {
  skip_without_python();
  struct Case {
    const char* type;
    bool qk_norm;
  };
  for (Case c : {Case{"f32", false}, Case{"f32", true}, Case{"q8_0", true}}) {
    const double tol = std::string(c.type) == "f32" ? 2e-3 : 3e-2;
    GenOptions g;
    g.arch = "glm4moe";
    g.preset = "tiny";
    g.type = c.type;
    g.qk_norm = c.qk_norm;
    g.vocab = "none";
    g.n_vocab = 256;
    g.out = tmp(std::string("gen-glm4moe-") + c.type + (c.qk_norm ? "-qk" : "") + ".gguf");
    const test::Reference ref = generate_with_margin(g, kShort);
    auto m = Model::load(g.out);
    REQUIRE(m->spec().n_layer_nextn == 1);
    REQUIRE(m->spec().n_rot * 2 == m->spec().head_dim_k);
    auto got = engine_logits(*m, kShort, 2, 64);
    const double err = rel_err(got, ref.logits);
    const std::string label = std::string(c.type) + (c.qk_norm ? " qk-norm" : "");
    INFO("glm4moe ", label, " seed ", g.seed, " rel err ", err);
    CHECK(err <= tol);
    if (c.qk_norm) CHECK(engine_logits(*m, kShort, 1, 1) == got);  // decode token by token: the prefill's bits
    MESSAGE("moe gen glm4moe ", label, ": max rel logit error ", err, " (tol ", tol, ")");
  }
}
