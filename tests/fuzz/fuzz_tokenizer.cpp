// libFuzzer target for the tokenizers: arbitrary text through real vocabularies. The vocabularies
// (SentencePiece: llama-spm, phi-3; byte-level BPE with three pre-tokenizers: gpt-2, deepseek-llm,
// deepseek-coder) are loaded once, on first use, from $MOE_FUZZ_VOCAB_DIR or MOE_SHARED_DATA/tokenizers.
// Input: byte 0 picks the vocabulary (low 3 bits) and the flags (add_special, parse_special,
// remove_special, unparse_special in bits 3-6); the rest is the text. Each run tokenizes the text,
// detokenizes the ids, streams them through a StreamingDecoder, then reads the text's bytes as token ids
// (little-endian u16, modulo the vocabulary) and detokenizes and streams those.
// Checked (abort() on violation, which libFuzzer reports): ids in range, streamed output always valid
// UTF-8, only moe::Error escapes. A crash, a sanitizer report or a timeout is a bug.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "moe/error.h"
#include "moe/tokenizer.h"

#ifndef MOE_SHARED_DATA
#define MOE_SHARED_DATA "."
#endif

namespace {

constexpr const char* kVocabs[] = {"llama-spm", "gpt-2", "deepseek-llm", "deepseek-coder", "phi-3"};
constexpr size_t kNumVocabs = sizeof(kVocabs) / sizeof(kVocabs[0]);

const moe::Tokenizer& vocab(size_t i) {
  static std::unique_ptr<moe::Tokenizer> toks[kNumVocabs];
  if (!toks[i]) {
    const char* dir = std::getenv("MOE_FUZZ_VOCAB_DIR");
    const std::string base = dir ? std::string(dir) : std::string(MOE_SHARED_DATA) + "/tokenizers";
    toks[i] = moe::Tokenizer::open(base + "/ggml-vocab-" + kVocabs[i] + ".gguf");  // throws: setup error
  }
  return *toks[i];
}

void check(bool ok) {
  if (!ok) std::abort();
}

void stream(const moe::Tokenizer& tok, const std::vector<moe::TokenId>& ids, bool special) {
  moe::StreamingDecoder::Options o;
  o.special = special;
  o.strip_leading_space = tok.family() == moe::VocabFamily::SentencePiece;
  moe::StreamingDecoder dec(tok, o);
  std::string out;
  for (moe::TokenId id : ids) {
    std::string piece = dec.push(id);
    check(moe::utf8_is_valid(piece));
    out += piece;
  }
  out += dec.flush();
  check(moe::utf8_is_valid(out));
  check(dec.pending_bytes() == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 4096) return 0;
  const uint8_t sel = data[0];
  const moe::Tokenizer& tok = vocab((sel & 7u) % kNumVocabs);
  const bool add_special = sel & 8u, parse_special = sel & 16u, remove_special = sel & 32u,
             unparse_special = sel & 64u;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const int32_t n = tok.n_vocab();
  try {
    std::vector<moe::TokenId> ids = tok.tokenize(text, add_special, parse_special);
    for (moe::TokenId id : ids) check(id >= 0 && id < n);
    (void)tok.detokenize(ids, remove_special, unparse_special);
    stream(tok, ids, unparse_special);
    // The same bytes as token ids.
    std::vector<moe::TokenId> raw;
    for (size_t i = 0; i + 1 < text.size(); i += 2)
      raw.push_back(moe::TokenId((uint8_t(text[i]) | uint32_t(uint8_t(text[i + 1])) << 8) % uint32_t(n)));
    (void)tok.detokenize(raw, remove_special, unparse_special);
    for (moe::TokenId id : raw) (void)tok.token_to_piece(id, unparse_special);
    stream(tok, raw, unparse_special);
  } catch (const moe::Error&) {
  }
  return 0;
}
