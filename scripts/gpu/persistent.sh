#!/usr/bin/env bash
# The persistent decode kernels (resident and streamed) on a GPU host, from the repo root: their GPU tests, then one
# run printing the kernel's per-phase times, and a same-call A/B of the decode step with and without --persistent.
#   scripts/gpu/persistent.sh BUILD_DIR [MODEL...]   (MODEL as scripts/gpu/decode_ab.sh; default smollm2-shape)
# PHASE_ARGS: the phase run's model arguments (default --random-weights smollm2-135m; e.g. --random-weights
# qwen3-30b-a3b --experts bf16 for the streamed kernel; add --streamed for FP4 experts, which keep the per-op step by
# default). FILTER: the tests (default every persistent test). BASE_ARGS / NEW_ARGS: the A/B's two sides (default
# --no-persistent / --persistent; NEW_ARGS="--persistent --streamed" for FP4 experts in the streamed kernel).
# BUILD_DIR: a scripts/gpu/pack.sh folder. Results and logs under $OUT.
# MEMCHECK=1 also runs two of its tests under compute-sanitizer memcheck: $OUT/memcheck.log. (Not racecheck: it does
# not model the producer warp's flag or the TMA copies' mbarriers, and it runs blocks too slowly for the grid barrier,
# whose poll limit then traps: "unspecified launch failure", as designed for a block that never runs.)
# NCU=1 also profiles one launch of the kernel (SmolLM2 shape) with ncu's source-level stall sampling:
# $OUT/ncu-source.csv (SASS lines with their samples; read it with scripts/gpu/ncu_source_top.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
build="${1:?usage: persistent.sh BUILD_DIR [MODEL...]}"
shift
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
export TACHYON_SOURCE_DIR="$PWD"
timeout 300 "$build/tachyon_gpu_tests" --gtest_filter="${FILTER:-PersistentDecode.*:*Persistent*}" > "$OUT/tests.log" 2>&1
echo "tests rc=$?: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/tests.log" | tr '\n' ' ')"
grep -E '^\[  FAILED|Failure|persistent|Persistent' "$OUT/tests.log" | grep -v '^\[ RUN' | head -30
read -r -a phase_args <<< "${PHASE_ARGS:---random-weights smollm2-135m}"
LD_LIBRARY_PATH="$PWD/$build/lib" timeout 120 "$build/tachyon" bench "${phase_args[@]}" --persistent \
  --context "${CONTEXT:-1024}" --steps 64 --repeats 3 --prefill none > "$OUT/phases.log" 2>&1
grep -E "decode, batch 1|persistent" "$OUT/phases.log"
OUT="$OUT" BASE_ARGS="${BASE_ARGS:---no-persistent}" NEW_ARGS="${NEW_ARGS:---persistent}" bash scripts/gpu/decode_ab.sh "$build" "$build" "${@:-smollm2-shape}" | grep run
if [ "${NCU:-0}" = 1 ] && command -v ncu >/dev/null; then
  LD_LIBRARY_PATH="$PWD/$build/lib" timeout 240 ncu --kernel-name regex:persistent_decode --launch-skip 3 --launch-count 1 \
    --section SourceCounters --section WarpStateStats --page source --print-source sass --csv \
    "$build/tachyon" bench --random-weights smollm2-135m --persistent --context "${CONTEXT:-1024}" --steps 4 \
    --repeats 1 --prefill none > "$OUT/ncu-source.csv" 2> "$OUT/ncu.err"
  echo "ncu rc=$? ($(wc -l < "$OUT/ncu-source.csv") lines)"
  python3 scripts/gpu/ncu_source_top.py "$OUT/ncu-source.csv" 40 > "$OUT/ncu-top.txt" 2>&1
  xz -T8 "$OUT/ncu-source.csv"  # (the device tool brings back few files: keep their count low)
fi
if [ "${MEMCHECK:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  subset="${MEMCHECK_FILTER:-PersistentDecode.HeadDim128WithFourQueryHeadsPerKvHead:PersistentDecode.GraphEqualsStreamAndRepeats}"
  for tool in memcheck; do
    timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 9 "$build/tachyon_gpu_tests" --gtest_filter="$subset" \
      > "$OUT/$tool.log" 2>&1
    echo "$tool rc=$?: $(grep -m1 -E 'ERROR SUMMARY' "$OUT/$tool.log") $(grep -E '^\[  (PASSED|FAILED)' "$OUT/$tool.log" | tr '\n' ' ')"
  done
fi
