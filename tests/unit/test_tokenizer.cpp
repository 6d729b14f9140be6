// Tests for moe::Tokenizer: the reference .inp/.out pairs of every vocabulary in
// MOE_SHARED_DATA/tokenizers, round trips, streaming decode, and malformed vocabularies.
// Single-threaded test code.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "moe/error.h"
#include "moe/gguf.h"
#include "moe/tokenizer.h"

using namespace moe;
namespace fs = std::filesystem;

namespace {

const fs::path kTokDir = fs::path(MOE_SHARED_DATA) / "tokenizers";

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// .inp: each test string is followed by "\n__ggml_vocab_test__\n" (so the file ends with the
// marker and a string may itself contain newlines or be empty).
std::vector<std::string> read_inputs(const fs::path& p) {
  const std::string s = read_all(p);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  for (;;) {
    size_t m = s.find(sep, pos);
    if (m == std::string::npos) break;
    out.push_back(s.substr(pos, m - pos));
    pos = m + sep.size();
  }
  REQUIRE_MESSAGE(pos == s.size(), "trailing text after the last marker in " << p);
  return out;
}

// .out: one line of space-separated ids per input string.
std::vector<std::vector<TokenId>> read_outputs(const fs::path& p) {
  std::vector<std::vector<TokenId>> out;
  std::istringstream in(read_all(p));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<TokenId> ids;
    long v;
    while (ls >> v) ids.push_back(static_cast<TokenId>(v));
    out.push_back(std::move(ids));
  }
  return out;
}

std::string show(const std::vector<TokenId>& v) {
  std::string s;
  for (auto id : v) s += std::to_string(id) + " ";
  return s;
}

struct Case {
  std::string name;
  fs::path gguf, inp, out;
};

std::vector<Case> reference_cases(std::vector<std::string>* missing_vocab = nullptr) {
  std::vector<Case> cases;
  for (const auto& e : fs::directory_iterator(kTokDir)) {
    const std::string fn = e.path().filename().string();
    const std::string suffix = ".gguf.inp";
    if (fn.size() <= suffix.size() || fn.compare(fn.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    std::string base = fn.substr(0, fn.size() - 4);  // ggml-vocab-NAME.gguf
    Case c{base, kTokDir / base, e.path(), kTokDir / (base + ".out")};
    if (!fs::exists(c.gguf)) {
      if (missing_vocab) missing_vocab->push_back(base);
      continue;
    }
    cases.push_back(c);
  }
  std::sort(cases.begin(), cases.end(), [](const Case& a, const Case& b) { return a.name < b.name; });
  return cases;
}

}  // namespace

TEST_CASE("reference tokenizations in shared/data/tokenizers reproduce exactly") {
  std::vector<std::string> missing;
  auto cases = reference_cases(&missing);
  REQUIRE(cases.size() >= 5);  // llama-spm, phi-3, gpt-2, deepseek-llm, deepseek-coder
  static bool reported = false;  // doctest re-enters the test case once per subcase
  if (!reported)
    for (const auto& m : missing) MESSAGE("no vocabulary file for " << m << " (only .inp/.out): not checked");
  reported = true;
  for (const auto& c : cases) {
    SUBCASE(c.name.c_str()) {
      auto tok = Tokenizer::open(c.gguf.string());
      auto inputs = read_inputs(c.inp);
      auto outputs = read_outputs(c.out);
      REQUIRE(inputs.size() == outputs.size());
      REQUIRE(inputs.size() > 10);
      size_t mismatches = 0;
      for (size_t i = 0; i < inputs.size(); ++i) {
        auto got = tok->tokenize(inputs[i], /*add_special=*/false, /*parse_special=*/false);
        if (got != outputs[i]) {
          ++mismatches;
          FAIL_CHECK(c.name << " #" << i << " '" << inputs[i] << "'\n  want " << show(outputs[i]) << "\n  got  "
                            << show(got));
        }
      }
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("detokenize(tokenize(s)) == s where the family is lossless") {
  for (const auto& c : reference_cases()) {
    SUBCASE(c.name.c_str()) {
      auto tok = Tokenizer::open(c.gguf.string());
      for (const auto& s : read_inputs(c.inp)) {
        auto ids = tok->tokenize(s);
        std::string back = tok->detokenize(ids);
        if (tok->clean_spaces()) {
          // gpt-2's detokenizer removes spaces before punctuation and contractions (by design):
          // only strings without those patterns round-trip.
          bool cleaned = false;
          for (const char* pat : {" ?", " !", " .", " ,", " '"}) cleaned |= s.find(pat) != std::string::npos;
          if (cleaned) continue;
        }
        CHECK_MESSAGE(back == s, c.name << ": '" << s << "' came back as '" << back << "'");
        // With BOS added and removed again.
        if (tok->add_bos()) {
          auto with_bos = tok->tokenize(s, /*add_special=*/true);
          REQUIRE(!with_bos.empty());
          CHECK(with_bos.front() == tok->bos());
          CHECK(std::vector<TokenId>(with_bos.begin() + 1, with_bos.end()) == ids);
        }
      }
    }
  }
}

TEST_CASE("special tokens: parse_special and user-defined tokens") {
  auto tok = Tokenizer::open((kTokDir / "ggml-vocab-phi-3.gguf").string());
  const TokenId user = tok->find_token("<|user|>");
  const TokenId end = tok->find_token("<|end|>");
  REQUIRE(user != kNoToken);
  REQUIRE(end != kNoToken);
  auto ids = tok->tokenize("<|user|>\nHi<|end|>", false, true);
  REQUIRE(ids.size() >= 3);
  CHECK(ids.front() == user);
  CHECK(ids.back() == end);
  // Phi-3 strips the whitespace after its special tokens ("\n" after <|user|> vanishes), and
  // SentencePiece adds a space prefix to text that follows a special token.
  CHECK(tok->detokenize(ids, false, true) == "<|user|> Hi<|end|>");
  // Without parse_special the control token text is ordinary text.
  auto plain = tok->tokenize("<|user|>", false, false);
  CHECK(std::find(plain.begin(), plain.end(), user) == plain.end());
  CHECK(tok->detokenize(plain) == "<|user|>");
  // </s> is user-defined in this vocabulary but, as an end-of-generation marker, is treated as a
  // control token: matched only with parse_special.
  auto s = tok->tokenize("a</s>", false, true);
  CHECK(s.back() == tok->find_token("</s>"));
  CHECK(tok->is_control(s.back()));
  CHECK(tok->is_eog(s.back()));
  CHECK(tok->is_eog(end));
  CHECK(tok->is_eog(tok->eos()));

  auto gpt2 = Tokenizer::open((kTokDir / "ggml-vocab-gpt-2.gguf").string());
  auto e = gpt2->tokenize("Hi<|endoftext|>", false, true);
  CHECK(e.back() == 50256);
  CHECK(gpt2->token_to_piece(50256, false) == "");
  CHECK(gpt2->token_to_piece(50256, true) == "<|endoftext|>");
}

TEST_CASE("SentencePiece byte fallback and pieces") {
  auto tok = Tokenizer::open((kTokDir / "ggml-vocab-llama-spm.gguf").string());
  CHECK(tok->family() == VocabFamily::SentencePiece);
  CHECK(tok->add_space_prefix());
  CHECK(tok->bos() == 1);
  CHECK(tok->eos() == 2);
  auto ids = tok->tokenize("\xF0\x9F\xA6\x99", false, false);  // 🦙: byte tokens
  CHECK(ids == std::vector<TokenId>{29871, 243, 162, 169, 156});
  CHECK(tok->token_to_piece(243) == "\xF0");
  CHECK(tok->token_to_piece(29871) == " ");
  CHECK(tok->detokenize(ids) == "\xF0\x9F\xA6\x99");
}

TEST_CASE("streaming decode never emits invalid UTF-8") {
  for (const char* name : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-deepseek-llm.gguf"}) {
    auto tok = Tokenizer::open((kTokDir / name).string());
    std::mt19937 rng(1234);
    std::uniform_int_distribution<TokenId> any(0, tok->n_vocab() - 1);
    for (int seq = 0; seq < 200; ++seq) {
      StreamingDecoder dec(*tok);
      std::string all;
      for (int k = 0; k < 64; ++k) {
        // Bias towards byte tokens and fragments of multi-byte characters.
        TokenId id = any(rng);
        std::string out = dec.push(id);
        REQUIRE_MESSAGE(utf8_is_valid(out), name << ": invalid UTF-8 after id " << id);
        all += out;
      }
      std::string rest = dec.flush();
      REQUIRE(utf8_is_valid(rest));
      CHECK(dec.pending_bytes() == 0);
      all += rest;
      REQUIRE(utf8_is_valid(all));
    }
    // Decoding the tokens of a valid string one at a time gives the string back.
    const std::string s = "Cửa Việt 🦙 我想在apple工作 нещо";
    auto ids = tok->tokenize(s);
    StreamingDecoder dec(*tok, {.special = false, .strip_leading_space = tok->add_space_prefix()});
    std::string got;
    for (TokenId id : ids) {
      std::string piece = dec.push(id);
      CHECK(utf8_is_valid(piece));
      got += piece;
    }
    got += dec.flush();
    CHECK(got == s);
  }
}

TEST_CASE("streaming decoder holds back partial characters") {
  auto tok = Tokenizer::open((kTokDir / "ggml-vocab-llama-spm.gguf").string());
  StreamingDecoder dec(*tok);
  // 🦙 = F0 9F A6 99 as byte tokens <0xF0>=243, <0x9F>=162, <0xA6>=169, <0x99>=156.
  CHECK(dec.push(243) == "");
  CHECK(dec.push(162) == "");
  CHECK(dec.push(169) == "");
  CHECK(dec.pending_bytes() == 3);
  CHECK(dec.push(156) == "\xF0\x9F\xA6\x99");
  // An incomplete character at the end becomes U+FFFD; a stray continuation byte too.
  CHECK(dec.push(243) == "");
  CHECK(dec.flush() == "\xEF\xBF\xBD");
  CHECK(dec.push(162) == "\xEF\xBF\xBD");
}

TEST_CASE("utf8 validation") {
  CHECK(utf8_is_valid("abc"));
  CHECK(utf8_is_valid("\xE2\x96\x81"));
  CHECK_FALSE(utf8_is_valid("\xC0\x80"));          // overlong
  CHECK_FALSE(utf8_is_valid("\xED\xA0\x80"));      // surrogate
  CHECK_FALSE(utf8_is_valid("\xF4\x90\x80\x80"));  // above U+10FFFF
  CHECK(utf8_valid_prefix("ab\xF0\x9F") == 2);
}

// ---------------------------------------------------------------------------------------------
// Malformed vocabularies

namespace {

struct Vocab {
  std::string model = "gpt2";
  std::string pre = "gpt-2";
  std::vector<std::string> tokens = {"a", "b", "ab", "\xC4\xA0", "<|end|>"};
  std::vector<int32_t> types = {1, 1, 1, 1, 3};
  std::vector<std::string> merges = {"a b"};
  std::optional<gguf::Value> scores;
  std::optional<gguf::Value> types_override;
  std::optional<uint32_t> bos;
};

std::string write_vocab(const Vocab& v, const std::string& name) {
  gguf::GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", v.model);
  if (!v.pre.empty()) w.set_string("tokenizer.ggml.pre", v.pre);
  std::vector<gguf::Value> toks, types, merges;
  for (auto& t : v.tokens) toks.push_back(gguf::Value::make_string(t));
  for (auto t : v.types) types.push_back(gguf::Value::make_i32(t));
  for (auto& m : v.merges) merges.push_back(gguf::Value::make_string(m));
  w.set("tokenizer.ggml.tokens", gguf::Value::make_array(gguf::ValueType::STRING, toks));
  w.set("tokenizer.ggml.token_type", v.types_override ? *v.types_override
                                                      : gguf::Value::make_array(gguf::ValueType::INT32, types));
  if (v.model == "gpt2") w.set("tokenizer.ggml.merges", gguf::Value::make_array(gguf::ValueType::STRING, merges));
  if (v.scores) w.set("tokenizer.ggml.scores", *v.scores);
  if (v.bos) w.set_u32("tokenizer.ggml.bos_token_id", *v.bos);
  std::string path = std::string(MOE_TEST_TMP) + "/" + name + ".gguf";
  w.write(path, std::vector<std::vector<uint8_t>>{});
  return path;
}

// Expects Tokenizer::open to fail with `code` and a message naming the file and containing `what`.
void expect_error(const Vocab& v, const std::string& name, ErrorCode code, const std::string& what) {
  std::string path = write_vocab(v, name);
  try {
    Tokenizer::open(path);
    FAIL("expected an error for " << name);
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK_MESSAGE(e.code() == code, msg);
    CHECK_MESSAGE(msg.find(path) != std::string::npos, msg);
    CHECK_MESSAGE(msg.find(what) != std::string::npos, msg);
  }
}

gguf::Value f32_array(size_t n) {
  std::vector<gguf::Value> v;
  for (size_t i = 0; i < n; ++i) v.push_back(gguf::Value::make_f32(-float(i)));
  return gguf::Value::make_array(gguf::ValueType::FLOAT32, v);
}

Vocab spm_vocab() {
  Vocab v;
  v.model = "llama";
  v.pre = "";
  v.tokens = {"<unk>", "<s>", "</s>", "<0x41>", "\xE2\x96\x81", "a"};
  v.types = {2, 3, 3, 6, 1, 1};
  v.merges = {};
  v.scores = f32_array(6);
  return v;
}

}  // namespace

TEST_CASE("a small valid vocabulary works") {
  auto tok = Tokenizer::open(write_vocab(Vocab{}, "valid"));
  CHECK(tok->tokenize("ab a") == std::vector<TokenId>{2, 3, 0});
  CHECK(tok->detokenize(std::vector<TokenId>{2, 3, 0}) == "ab a");
  auto spm = Tokenizer::open(write_vocab(spm_vocab(), "valid_spm"));
  CHECK(spm->tokenize("A") == std::vector<TokenId>{4, 3});  // "▁" then byte fallback for 'A'
  CHECK(spm->detokenize(std::vector<TokenId>{4, 3}) == "A");
}

TEST_CASE("malformed vocabularies give clear errors") {
  {
    Vocab v;
    v.merges = {"a zz"};
    expect_error(v, "merge_unknown", ErrorCode::Corrupt, "not in the vocabulary");
  }
  {
    Vocab v;
    v.merges = {"ab"};
    expect_error(v, "merge_form", ErrorCode::Corrupt, "LEFT RIGHT");
  }
  {
    Vocab v = spm_vocab();
    v.tokens[3] = "<0x-1>";
    expect_error(v, "byte_minus", ErrorCode::Corrupt, "<0xNN>");
  }
  {
    Vocab v = spm_vocab();
    v.tokens[3] = "<0xZZ>";
    expect_error(v, "byte_zz", ErrorCode::Corrupt, "<0xNN>");
  }
  {
    Vocab v = spm_vocab();
    v.scores = f32_array(5);
    expect_error(v, "scores_len", ErrorCode::Corrupt, "tokenizer.ggml.scores has 5 entries for 6 tokens");
  }
  {
    Vocab v = spm_vocab();
    std::vector<gguf::Value> s;
    for (int i = 0; i < 6; ++i) s.push_back(gguf::Value::make_string("x"));
    v.scores = gguf::Value::make_array(gguf::ValueType::STRING, s);
    expect_error(v, "scores_type", ErrorCode::Corrupt, "tokenizer.ggml.scores must be an array of float32");
  }
  {
    Vocab v = spm_vocab();
    v.scores.reset();
    expect_error(v, "scores_missing", ErrorCode::Corrupt, "without tokenizer.ggml.scores");
  }
  {
    Vocab v;
    v.types = {1, 1, 1, 1};
    expect_error(v, "types_len", ErrorCode::Corrupt, "token_type has 4 entries for 5 tokens");
  }
  {
    Vocab v;
    v.types = {1, 1, 1, 1, 9};
    expect_error(v, "types_value", ErrorCode::Corrupt, "is not a token type");
  }
  {
    Vocab v;
    v.types_override = gguf::Value::make_string("nope");
    expect_error(v, "types_kind", ErrorCode::Corrupt, "token_type must be an array");
  }
  {
    Vocab v;
    v.bos = 99;
    expect_error(v, "bos_range", ErrorCode::Corrupt, "tokenizer.ggml.bos_token_id = 99 is out of range");
  }
  {
    Vocab v;
    v.tokens = {"a", "b", "ab", "a", "<|end|>"};
    expect_error(v, "duplicate", ErrorCode::Corrupt, "duplicate token 'a'");
  }
  {
    Vocab v;
    v.pre = "no-such-pre";
    expect_error(v, "pre_unknown", ErrorCode::Unsupported, "unknown pre-tokenizer 'no-such-pre'");
  }
  {
    Vocab v;
    v.model = "t5";
    expect_error(v, "model_unknown", ErrorCode::Unsupported, "tokenizer model 't5' is not supported");
  }
  {
    Vocab v;
    v.merges = {};
    v.model = "gpt2";
    // an empty merges array is fine (every character a token); a missing one is not:
    CHECK_NOTHROW(Tokenizer::open(write_vocab(v, "merges_empty")));
  }
  {
    Vocab v;
    v.tokens = {};
    v.types = {};
    v.merges = {};
    expect_error(v, "tokens_empty", ErrorCode::Corrupt, "tokenizer.ggml.tokens is empty");
  }
}

TEST_CASE("the moe tool tokenizes a vocabulary-only file") {
  const std::string tool = MOE_TOOL_PATH;
  if (!fs::exists(tool)) {
    MESSAGE("moe tool not built at " << tool << "; skipping");
    return;
  }
  const std::string out = std::string(MOE_TEST_TMP) + "/tokenize_out.txt";
  const std::string cmd = "'" + tool + "' tokenize -m '" + (kTokDir / "ggml-vocab-llama-spm.gguf").string() +
                          "' 'Hello world' > '" + out + "' 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::string got = read_all(out);
  CHECK(got == "15043 3186\n");
}
