#!/usr/bin/env bash
# The test suite: set up (packages, model, build), run every CPU test, then run the tests of
# bad-input handling again under AddressSanitizer + UBSan. GPU tests are labelled and run on a
# GPU host through scripts/gpu-check.sh, not here.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== tests (build/)"
ctest --test-dir build --output-on-failure --timeout 900 -j "$(nproc)" -LE gpu

echo "== server end-to-end tests (tachyon serve on loopback, the openai client, curl)"
TACHYON_BIN=build/tachyon tests/server_e2e/run.sh

echo "== bad-input tests under ASan/UBSan (build-asan/)"
# CUDA off here: the main build above already compiled the CUDA code, and the bad-input paths are host code.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTACHYON_SANITIZE=ON -DTACHYON_CUDA=OFF >/dev/null
cmake --build build-asan --parallel --target tachyon_tests
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  build-asan/tachyon_tests --gtest_filter="${ASAN_TEST_FILTER:-*Bad*:*Corrupt*:*Truncat*:*Malformed*:*Invalid*:*Error*}"
echo "== all tests passed"
