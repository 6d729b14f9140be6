// tools/cmd_tokenize.cpp — `moe tokenize`: prints the token ids of a text for a model's vocabulary
// (works on vocabulary-only GGUF files). Single-threaded.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli.h"
#include "moe/error.h"
#include "moe/tokenizer.h"

namespace moe::tools {
namespace {

struct TokenizeArgs {
  std::string model;
  std::string text;
  std::string file;
  bool bos = false;
  bool no_special = false;
  bool pieces = false;
};

// Piece as printable text: control characters escaped so one token stays on one line.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else out.push_back(static_cast<char>(c));
  }
  return out;
}

int run_tokenize(const TokenizeArgs& a) {
  std::string text = a.text;
  if (!a.file.empty()) {
    std::ifstream f(a.file, std::ios::binary);
    if (!f) fail(ErrorCode::Io, "{}: cannot open", a.file);
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  }
  auto tok = Tokenizer::open(a.model);
  std::vector<TokenId> ids = tok->tokenize(text, /*add_special=*/false, /*parse_special=*/!a.no_special);
  if (a.bos) {
    if (tok->bos() == kNoToken) fail(ErrorCode::InvalidArgument, "{}: the vocabulary has no BOS token", a.model);
    ids.insert(ids.begin(), tok->bos());
  }
  if (a.pieces) {
    for (TokenId id : ids) std::printf("%d\t'%s'\n", id, printable(tok->token_to_piece(id, true)).c_str());
    return 0;
  }
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line.push_back(' ');
    line += std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
  return 0;
}

const Registrar reg("tokenize", "Print the token ids of a text (no BOS unless --bos)", [](CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  app.add_option("-m,--model", a->model, "GGUF file with a tokenizer (a vocabulary-only file is fine)")->required();
  app.add_option("text", a->text, "Text to tokenize");
  app.add_option("-f,--file", a->file, "Read the text from this file instead");
  app.add_flag("--bos", a->bos, "Prepend the BOS token");
  app.add_flag("--no-special", a->no_special, "Do not match control tokens written in the text");
  app.add_flag("--ids,--pieces", a->pieces, "Print one 'id<TAB>piece' line per token");
  return [a]() { return run_tokenize(*a); };
});

}  // namespace
}  // namespace moe::tools
