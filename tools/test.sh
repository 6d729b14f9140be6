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
# Sanitizers (tools/sanitize.sh: ASan+UBSan+LeakSanitizer over the unit and integration tests, TSan
# over the cache, transfer-engine and prefetch tests). On by default in CI (CI=true), where it took
# 11.5 minutes on 2 cores with the smaller "ci" test set; off by default locally, where the two extra
# instrumented builds are slow. MOE_SANITIZE_TESTS=1 / 0 forces it on / off; MOE_SANITIZE_SCOPE=full|ci
# picks the test set (default: full, every test but the two whose RSS bounds ASan inflates).
ci=0
[[ "${CI:-}" == true ]] && ci=1
if [[ "${MOE_SANITIZE_TESTS:-$ci}" == 1 ]]; then
  MOE_SANITIZE_SCOPE="${MOE_SANITIZE_SCOPE:-full}" ./tools/sanitize.sh
fi
