#!/usr/bin/env bash
# Builds moe and runs the whole test suite (unit, integration; GPU tests skip with code 77 when no
# device is present). Set MOE_CUDA=OFF to skip compiling the CUDA backend.
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install-deps.sh
./tools/build.sh -DMOE_CUDA="${MOE_CUDA:-AUTO}"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j"$(nproc)"
# libFuzzer targets (clang): a short bounded run of each from its seed corpus.
./tools/fuzz.sh
# Sanitizers (tools/sanitize.sh: ASan+UBSan over the unit/integration tests, TSan over the concurrency
# tests; long on 2 cores): off unless MOE_SANITIZE_TESTS=1.
if [[ "${MOE_SANITIZE_TESTS:-0}" == 1 ]]; then
  ./tools/sanitize.sh
fi
