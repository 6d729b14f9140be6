// moe/tokenizer.h — text <-> token ids for the vocabularies GGUF files carry (tokenizer.ggml.*).
//
// Families (tokenizer.ggml.model):
//   "llama" — SentencePiece BPE: spaces become U+2581, an optional leading space is added
//             (add_space_prefix), adjacent pieces merge by score with a priority queue, pieces
//             missing from the vocabulary fall back to <0xNN> byte tokens.
//   "gpt2"  — byte-level BPE: the text is split by a pre-tokenizer (tokenizer.ggml.pre picks the
//             rules: gpt-2, llama3/llama-bpe, qwen2, deepseek-llm, deepseek-v3, deepseek-coder,
//             gpt-4o, falcon, starcoder, ...), every byte is mapped to a printable code point, and
//             tokenizer.ggml.merges are applied by rank.
// Control, unknown and user-defined tokens are matched in the raw text before pre-tokenization:
// user-defined ones always, control/unknown ones only when parse_special is set (the behaviour of
// llama.cpp's tokenizer, whose outputs the tests reproduce exactly).
//
// Thread-safety: a Tokenizer is immutable after construction; tokenize/detokenize/token_to_piece
// may be called from any number of threads at once. A StreamingDecoder is single-threaded state.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moe::gguf {
class GgufFile;
}

namespace moe {

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

// tokenizer.ggml.token_type values, as GGUF stores them.
enum class TokenType : uint8_t {
  Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

enum class VocabFamily : uint8_t { SentencePiece, BytePairBpe };

class Tokenizer {
 public:
  // Reads and validates tokenizer.ggml.* from an open GGUF file (a vocabulary-only file is fine).
  // Throws moe::Error naming f.path() and the cause: missing or mistyped keys, arrays of the wrong
  // length or element type, duplicate tokens, malformed byte tokens (<0x-1>, <0xZZ>), merges that
  // name unknown tokens, special ids out of range (Corrupt); unknown model or pre-tokenizer names
  // (Unsupported).
  static std::unique_ptr<Tokenizer> from_gguf(const gguf::GgufFile& f);
  // Convenience: opens `path` and calls from_gguf.
  static std::unique_ptr<Tokenizer> open(const std::string& path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // text: UTF-8 (invalid bytes are tolerated: SentencePiece keeps them as byte tokens, BPE reads
  // them as U+FFFD, as llama.cpp does). add_special: prepend BOS / append EOS where the vocabulary
  // asks for it (add_bos_token / add_eos_token). parse_special: match control and unknown tokens
  // written in the text ("<|im_start|>") as single ids.
  std::vector<TokenId> tokenize(std::string_view text, bool add_special = false,
                                bool parse_special = false) const;

  // The bytes token `id` stands for: U+2581 -> ' ' and <0xNN> -> byte for SentencePiece, the
  // byte-level mapping undone for BPE. Control/unknown tokens give "" unless `special`.
  // Precondition: 0 <= id < n_vocab() (MOE_ASSERT).
  std::string token_to_piece(TokenId id, bool special = false) const;

  // Concatenated pieces, with the family's clean-ups: the leading space SentencePiece added is
  // removed, and the BPE families that ask for it (clean_spaces) drop " ." " ," " ?" " !" and
  // contraction spaces. remove_special drops a leading BOS / trailing EOS the vocabulary adds;
  // unparse_special renders control tokens as their text. Ids out of range throw InvalidArgument.
  std::string detokenize(std::span<const TokenId> ids, bool remove_special = false,
                         bool unparse_special = false) const;

  int32_t n_vocab() const noexcept;
  VocabFamily family() const noexcept;
  const std::string& model_name() const noexcept;  // tokenizer.ggml.model
  const std::string& pre_name() const noexcept;    // tokenizer.ggml.pre ("" when absent)
  const std::string& token_text(TokenId id) const;  // as stored in the vocabulary
  TokenType token_type(TokenId id) const;
  float token_score(TokenId id) const;
  bool is_control(TokenId id) const;  // control or unknown: never produced from plain text
  bool is_eog(TokenId id) const;      // ends generation (EOS, EOT, <|im_end|>, ...)
  // kNoToken when the vocabulary has none.
  TokenId bos() const noexcept;
  TokenId eos() const noexcept;
  TokenId eot() const noexcept;
  TokenId unk() const noexcept;
  TokenId pad() const noexcept;
  bool add_bos() const noexcept;
  bool add_eos() const noexcept;
  bool add_space_prefix() const noexcept;
  bool clean_spaces() const noexcept;
  // Looks a token up by its exact stored text; kNoToken when absent.
  TokenId find_token(std::string_view text) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of ids into UTF-8 text as it arrives, holding back the bytes of a character whose
// remaining bytes are still to come, so what it returns is always valid UTF-8 (a byte that can
// never start or continue a valid sequence becomes U+FFFD). No clean_spaces pass is applied.
class StreamingDecoder {
 public:
  struct Options {
    bool special = false;              // render control tokens as their text
    bool strip_leading_space = false;  // drop one leading ' ' of the first piece (SentencePiece)
  };
  explicit StreamingDecoder(const Tokenizer& tok) : StreamingDecoder(tok, Options{}) {}
  StreamingDecoder(const Tokenizer& tok, Options opt);
  // Appends the piece of `id`; returns the newly complete text (possibly ""). Precondition as
  // Tokenizer::token_to_piece.
  std::string push(TokenId id);
  // Ends the stream: returns what is held back, each incomplete sequence as U+FFFD.
  std::string flush();
  void reset();
  size_t pending_bytes() const noexcept { return pending_.size(); }

 private:
  const Tokenizer& tok_;
  Options opt_;
  bool first_ = true;
  std::string pending_;
};

// Length of the longest prefix of `s` that is a sequence of complete, valid UTF-8 characters
// (no overlongs, no surrogates, nothing above U+10FFFF).
size_t utf8_valid_prefix(std::string_view s) noexcept;
inline bool utf8_is_valid(std::string_view s) noexcept { return utf8_valid_prefix(s) == s.size(); }

}  // namespace moe
