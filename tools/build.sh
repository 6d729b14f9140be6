#!/usr/bin/env bash
# Configures and builds moe into ${BUILD_DIR:-build} (Release with debug info, Ninja).
# Extra arguments go to CMake's configure step (e.g. -DMOE_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
