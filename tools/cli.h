// tools/cli.h — subcommand registry for the `moe` tool. Each cmd_<name>.cpp defines a static
// Registrar whose setup() adds its options to a CLI11 subcommand and returns the action to run.
// Actions return the process exit code; moe::Error escaping an action is printed by main().
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace moe::tools {

using Action = std::function<int()>;
struct CommandDef {
  std::string name;
  std::string help;
  std::function<Action(CLI::App&)> setup;
};

std::vector<CommandDef>& commands();

struct Registrar {
  Registrar(std::string name, std::string help, std::function<Action(CLI::App&)> setup) {
    commands().push_back({std::move(name), std::move(help), std::move(setup)});
  }
};

// Parses "12G", "512MiB", "3GB", "1000000" into bytes (binary units: K/M/G/T = 1024^n).
// Throws CLI::ValidationError on bad input.
uint64_t parse_bytes(const std::string& s);
// "1.5GiB", "512B": bytes with a binary unit, one decimal (none for plain bytes).
std::string human_bytes(uint64_t b);

// The --version text: version, compiled backends, CPU features and the kernel level in use.
std::string version_string();

}  // namespace moe::tools
