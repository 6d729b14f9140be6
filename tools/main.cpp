// The `moe` command: dispatches to the registered subcommands (tools/cmd_*.cpp).
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "cli.h"
#include "moe/error.h"
#include "moe/kernels/cpu_features.h"
#include "moe/kernels/matmul.h"

namespace moe::tools {

std::vector<CommandDef>& commands() {
  static std::vector<CommandDef> defs;
  return defs;
}

std::string human_bytes(uint64_t b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int i = 0;
  while (v >= 1024 && i < 4) v /= 1024, ++i;
  return fmt::format("{:.{}f}{}", v, i ? 1 : 0, u[i]);
}

uint64_t parse_bytes(const std::string& s) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    throw CLI::ValidationError("size", "not a size: '" + s + "'");
  }
  std::string unit = s.substr(pos);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mul = 1;
  if (unit.empty() || unit == "B") mul = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") mul = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") mul = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") mul = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") mul = 1024.0 * 1024 * 1024 * 1024;
  else throw CLI::ValidationError("size", "unknown unit in '" + s + "' (use K, M, G or T)");
  if (v < 0) throw CLI::ValidationError("size", "negative size: '" + s + "'");
  return static_cast<uint64_t>(v * mul);
}

// "moe 0.1.0\nbackends: cpu[, cuda]\ncpu: avx2 fma f16c avx512f ... (kernels: avx512)"
std::string version_string() {
  const auto& f = moe::kernels::cpu_features();
  std::string feats;
  auto add = [&](bool on, const char* n) {
    if (on) feats += std::string(feats.empty() ? "" : " ") + n;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512vnni, "avx512vnni");
  add(f.avx512bf16, "avx512bf16");
  std::string s = std::string("moe ") + MOE_VERSION + "\nbackends: cpu";
#ifdef MOE_HAVE_CUDA
  s += ", cuda (sm_75 sm_80 sm_86 sm_89 sm_90 + PTX)";
#endif
  s += "\ncpu features: " + (feats.empty() ? std::string("none") : feats) +
       "\ncpu kernels: " + moe::kernels::simd_level_name(moe::kernels::best_simd_level());
  return s;
}

}  // namespace moe::tools

int main(int argc, char** argv) {
  using namespace moe::tools;
  CLI::App app{"moe: run Mixture-of-Experts models larger than your memory"};
  app.require_subcommand(1);
  app.set_version_flag("--version", [] { return version_string(); });
  std::vector<std::pair<CLI::App*, Action>> actions;
  for (auto& def : commands()) {
    CLI::App* sub = app.add_subcommand(def.name, def.help);
    actions.emplace_back(sub, def.setup(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const moe::Error& e) {
    std::fprintf(stderr, "moe: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "moe: error: out of memory\n");
    return 1;
  }
  return 0;
}
