#!/usr/bin/env bash
# Fresh Debian machine to a running demo: installs dependencies, builds, writes a small random-weight
# MoE model (real GGUF layout, real GPT-2 tokenizer from ../shared/data) and generates text with it,
# first from the memory map, then with its experts served from a small DRAM cache over the file.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install-deps.sh
./tools/build.sh
mkdir -p demo
MOE=./build/tools/moe
[ -f demo/tiny-qwen3moe.gguf ] || $MOE gen --arch qwen3moe --preset tiny --type q8_0 --out demo/tiny-qwen3moe.gguf
$MOE inspect demo/tiny-qwen3moe.gguf
$MOE run -m demo/tiny-qwen3moe.gguf -p "The quick brown fox" -n 32 --temp 0
echo
# The same tokens with the experts in an 81 MiB budget (about half of them fit): an ARC cache over the
# file, read with io_uring + O_DIRECT, the next layer's experts prefetched; --stats shows the cache.
$MOE run -m demo/tiny-qwen3moe.gguf -p "The quick brown fox" -n 32 --temp 0 --ram 81M --stats
echo
$MOE bench -m demo/tiny-qwen3moe.gguf -t "$(nproc)"
