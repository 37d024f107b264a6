#!/usr/bin/env bash
# One build's correctness on a GPU host, from the repo root: the whole GPU suite, compute-sanitizer memcheck and
# racecheck on the tests a change touches, and a section of the kernel bench. Results under $OUT, summary in
# $OUT/check.txt.
#   scripts/gpu/check.sh BUILD_DIR [SANITIZER_FILTER] [KERNEL_BENCH_SECTION]
# BUILD_DIR: a scripts/gpu/pack.sh folder (tachyon_gpu_tests, optionally tachyon_kernel_bench, lib/).
# e.g. scripts/gpu/check.sh .cache/new 'GpuAttention.*' attention
set -uo pipefail
cd "$(dirname "$0")/../.."
build="${1:?usage: check.sh BUILD_DIR [SANITIZER_FILTER] [KERNEL_BENCH_SECTION]}"
filter="${2:-}" section="${3:-}"
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
export TACHYON_SOURCE_DIR="$PWD"  # fixtures are read relative to the repo root
summary="$OUT/check.txt"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ) build: $(tr '\n' ' ' < "$build/COMMIT")" | tee "$summary"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$summary"
timeout 420 "$build/tachyon_gpu_tests" > "$OUT/tests-all.log" 2>&1
echo "all GPU tests rc=$?: $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$OUT/tests-all.log" | tr '\n' ' ')" | tee -a "$summary"
grep -E '^\[  FAILED' "$OUT/tests-all.log" | head -20 | tee -a "$summary"
if [ -n "$filter" ]; then
  for tool in memcheck racecheck; do
    timeout 240 compute-sanitizer --tool "$tool" "$build/tachyon_gpu_tests" --gtest_filter="$filter" \
      > "$OUT/$tool.log" 2>&1
    echo "$tool rc=$?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|^\[  (PASSED|FAILED)' "$OUT/$tool.log" | tail -3 |
      tr '\n' ' ')" | tee -a "$summary"
  done
fi
if [ -n "$section" ] && [ -x "$build/tachyon_kernel_bench" ]; then
  LD_LIBRARY_PATH="$PWD/$build/lib" timeout 200 "$build/tachyon_kernel_bench" "$section" > "$OUT/kernel-$section.md" 2>&1
  echo "kernel bench $section rc=$?" | tee -a "$summary"
  grep -E '^\|' "$OUT/kernel-$section.md" | tee -a "$summary"
fi
