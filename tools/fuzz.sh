#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (all project code instrumented with ASan+UBSan) in
# ${FUZZ_BUILD_DIR:-build-fuzz} and runs each for MOE_FUZZ_SECONDS (default 20) from its seed corpus.
# Skips (exit 0 with a notice) when clang is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ not found, skipping libFuzzer targets"
  exit 0
fi
DIR=${FUZZ_BUILD_DIR:-build-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$DIR" -G Ninja -DMOE_FUZZ=ON -DMOE_CUDA=OFF \
  -DMOE_FUZZ_SECONDS="${MOE_FUZZ_SECONDS:-20}" >/dev/null
targets=$(cd "$DIR" && ninja -t targets all | grep -oE '^fuzz_[a-z_]+:' | grep -v replay | tr -d ':' | sort -u)
cmake --build "$DIR" -j"$(nproc)" --target $targets
ctest --test-dir "$DIR" --output-on-failure -R '_libfuzzer$'
