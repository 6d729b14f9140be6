#!/usr/bin/env bash
# Fresh Debian machine to a running demo: installs dependencies, builds, writes a small random-weight
# MoE model with a real tokenizer, and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install-deps.sh
./tools/build.sh
mkdir -p demo
MOE=./build/tools/moe
[ -f demo/tiny-qwen3moe.gguf ] || $MOE gen --arch qwen3moe --preset tiny --type q8_0 --out demo/tiny-qwen3moe.gguf
$MOE inspect demo/tiny-qwen3moe.gguf
