#!/usr/bin/env bash
# Runs tachyon's GPU checks on a GPU host, from the repo root:
#   1. finds the binaries: $TACHYON_GPU_BIN (default build-gpu-carry/, a stripped folder shipped from a
#      development machine by scripts/gpu-check.sh --pack), else builds build-gpu/ here;
#   2. tachyon_gpu_tests (all), then a subset again under compute-sanitizer (memcheck, racecheck);
#   3. tachyon_kernel_bench ($BENCH, default "all"; "gemv-sweep" adds the k_split variants);
#   4. writes every log to $OUT (or ./gpu-results) and prints a short table last.
#   scripts/gpu-check.sh --pack   (on a development machine) builds build-cuda/ and copies the stripped
#                                 binaries into build-gpu-carry/ (< 40 MB) for `run --carry build-gpu-carry`.
# Environment: SANITIZE=0 skips compute-sanitizer; GTEST_FILTER limits the tests; BENCH=none skips benchmarks;
# TEST_TIMEOUT / SANITIZER_TIMEOUT / BENCH_TIMEOUT (seconds) bound each stage (rc 124 = timed out);
# GTEST_XML=path keeps the gtest XML report (off $OUT by default: the device tool returns at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--pack" ]; then
  set -e
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DTACHYON_CUDA=ON >/dev/null
  cmake --build build-cuda --parallel --target tachyon_gpu_tests tachyon_kernel_bench
  rm -rf build-gpu-carry && mkdir -p build-gpu-carry
  cp build-cuda/tachyon_gpu_tests build-cuda/tachyon_kernel_bench build-gpu-carry/
  strip build-gpu-carry/tachyon_gpu_tests build-gpu-carry/tachyon_kernel_bench
  git rev-parse --short HEAD > build-gpu-carry/COMMIT
  git status --porcelain -- kernels src/cuda tests/gpu CMakeLists.txt | grep -q . && echo "+local changes" >> build-gpu-carry/COMMIT
  du -sh build-gpu-carry
  exit 0
fi

OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
BIN="${TACHYON_GPU_BIN:-build-gpu-carry}"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(cat "$BIN/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1
} | tee "$OUT/device.txt"

if [ ! -x "$BIN/tachyon_gpu_tests" ]; then
  echo "== no shipped binaries in $BIN: building build-gpu/ here"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DTACHYON_CUDA=ON > "$OUT/build.log" 2>&1 &&
    cmake --build build-gpu --parallel --target tachyon_gpu_tests tachyon_kernel_bench >> "$OUT/build.log" 2>&1 ||
    { echo "build failed: see $OUT/build.log"; tail -20 "$OUT/build.log"; exit 1; }
  BIN=build-gpu
fi
ldd "$BIN/tachyon_gpu_tests" > "$OUT/ldd.txt" 2>&1
if grep -q "not found" "$OUT/ldd.txt"; then echo "missing shared libraries:"; grep "not found" "$OUT/ldd.txt"; fi

echo "== tachyon_gpu_tests"
start=$(date +%s)
timeout "${TEST_TIMEOUT:-300}" "$BIN/tachyon_gpu_tests" --gtest_filter="${GTEST_FILTER:-*}" --gtest_output="xml:${GTEST_XML:-/tmp/tachyon-gpu-tests.xml}" > "$OUT/gpu-tests.log" 2>&1
tests_rc=$?
tests_s=$(( $(date +%s) - start ))
grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[       OK \]|Failure|outside the bound" "$OUT/gpu-tests.log" | head -60

sanitizer_summary="skipped"
if [ "${SANITIZE:-1}" != "0" ] && command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer (subset)"
  subset='GpuGemv.BiasAndRagged*:GpuGemv.GatedSwiglu*:GpuNorm.*:GpuEmbedding.*:GpuRope.*:GpuAttention.SmolLM2Shapes:GpuAttention.SlidingWindowAndSinks:GpuMoe.GroupingIsSortedStableAndInvertible:GpuMoe.SoftmaxRouterTopK:GpuSampling.ArgmaxMatchesCpuOnLargeVocab:GpuSampling.Frequencies*'
  timeout "${SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/tachyon_gpu_tests" --gtest_filter="$subset" > "$OUT/sanitizer-memcheck.log" 2>&1
  memcheck_rc=$?
  timeout "${SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool racecheck --error-exitcode 9 "$BIN/tachyon_gpu_tests" \
    --gtest_filter='GpuAttention.SmolLM2Shapes:GpuGemv.BiasAndRagged*:GpuMoe.GroupingIsSortedStableAndInvertible:GpuSampling.SamplesStayInsideTopKTopPSet' \
    > "$OUT/sanitizer-racecheck.log" 2>&1
  racecheck_rc=$?
  sanitizer_summary="memcheck rc=$memcheck_rc ($(grep -m1 -E 'ERROR SUMMARY' "$OUT/sanitizer-memcheck.log")), racecheck rc=$racecheck_rc ($(grep -m1 -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/sanitizer-racecheck.log"))"
fi

if [ "${BENCH:-all}" != "none" ]; then
  echo "== tachyon_kernel_bench ${BENCH:-all}"
  timeout "${BENCH_TIMEOUT:-240}" "$BIN/tachyon_kernel_bench" "${BENCH:-all}" > "$OUT/bench.log" 2>&1
  echo "bench rc=$?" >> "$OUT/bench.log"
fi

echo
echo "== summary ($(cat "$OUT/device.txt" | sed -n 3p))"
echo "tests: rc=$tests_rc in ${tests_s}s: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+ test' "$OUT/gpu-tests.log" | tr '\n' ' ')"
echo "sanitizer: $sanitizer_summary"
[ -f "$OUT/bench.log" ] && grep -E "^\| |^device:|rc=" "$OUT/bench.log"
exit $tests_rc
