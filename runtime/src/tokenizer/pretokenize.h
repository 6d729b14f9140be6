// tokenizer/pretokenize.h — the byte-level BPE pre-tokenizers (private to moe_tokenizer).
// Owns: the map from tokenizer.ggml.pre names to rule sets, and the splitting of a code point
// sequence into words. Each rule set is the ordered list of regular expressions the model's
// tokenizer.json declares, implemented as hand-written matchers over Unicode categories (no
// std::regex). As in llama.cpp, each expression runs over every piece the previous one produced,
// and the text between two matches stays a piece of its own. Pure functions: thread-safe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace moe::tok {

enum class PreKind : uint8_t {
  Default,        // no/"default" name: punctuation runs, GPT-2 rules, digit runs, 3-digit groups
  Gpt2,           // 's|'t|... | ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Llama3,         // contractions (any case), [^\r\n\p{L}\p{N}]?\p{L}+, \p{N}{1,3}, ...
  Qwen2,          // as Llama3 with single digits
  SeedCoder,      // as Qwen2 without trailing newlines after punctuation
  MiniCpm5,       // \p{N}{1,3} pass, then Llama3 rules with \p{N}+
  Laguna,         // line / newline-run pass, then Qwen2 rules
  DeepseekLlm,    // [\r\n] | \s?[letters]+ | \s?[punct]+ | \s+$ | [CJK]+ | \p{N}+
  Deepseek3,      // \p{N}{1,3} | [CJK kana]+ | punct-led words, letters+marks, ...
  DeepseekCoder,  // [\r\n] | \s?\p{L}+ | \s?\p{P}+ | [CJK]+ | \p{N}
  Falcon,         // punctuation runs, GPT-2 rules, 3-digit groups
  Starcoder,      // single digits, then GPT-2 rules
  Gpt4o,          // o200k: case-split words with contractions, \p{N}{1,3}, ...
  Tekken,         // as Gpt4o without contractions, single digits
  Poro,           //  ?[^(\s|.,!?…。，、।۔،)]+
  Viking,         // Poro rules, then single digits
};

struct PreInfo {
  PreKind kind = PreKind::Default;
  bool clean_spaces = true;    // detokenizer removes " ." " ," " ?" " !" and contraction spaces
  bool ignore_merges = false;  // a word that is a token is taken whole
  bool add_bos = false;        // the family's default for add_bos_token
  bool no_bos = false;         // the family has no BOS token
};

// False when `name` is not a known pre-tokenizer. The empty name means "absent" (Default rules).
bool lookup_pre(std::string_view name, PreInfo& out);

// Splits `cpts` into words; returns their lengths in code points (summing to cpts.size()).
std::vector<size_t> pre_split(PreKind kind, const std::vector<uint32_t>& cpts);

}  // namespace moe::tok
