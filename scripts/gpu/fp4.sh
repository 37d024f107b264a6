#!/usr/bin/env bash
# FP4 experts (issue 4) on a GPU host, from the repo root, in at most DEADLINE = 330 s (stages cut to fit):
#   1. the FP4 kernel GPU tests (kernels/fp4_moe against the CPU reference: both formats, 1..16 tokens, uneven and
#      skewed routing, EVERY kernel version and configuration the bench can select; exact decoding of every code
#      and scale; tile helpers), then compute-sanitizer memcheck + racecheck on the exact-decoding test (both
#      versions of the down kernel);
#   2. the FP4 kernel bench at Qwen3-30B-A3B expert shapes (hidden 2048, expert width 768, 128 experts, top-8), 1..16
#      tokens, NVFP4 and MXFP4, default (version 2) and version 1, BF16 expert kernels beside, and at 1 and 16 tokens
#      each kernel alone over every configuration plus both with the fastest of each ("best tuning" lines)
#      (`tachyon eval --kernel-bench qwen3 --sweep`);
#   3. if ncu is installed: one launch of each FP4 kernel (versions 1 and 2, 1 and 16 tokens, NVFP4) profiled
#      (SpeedOfLight, memory workload, warp states, occupancy, scheduler) with TACHYON_FP4_BENCH_PROFILE=1;
#   4. batch-1 decode of the Qwen3-30B-A3B shape with random weights, context 1024: bf16 experts, nvfp4 with the
#      default configuration and, if the sweep found a faster one at 1 token, nvfp4 with that (TACHYON_FP4_MOE);
#   then a compact summary (last). Logs go to $OUT (or ./gpu-results): fp4-summary.txt (this output), fp4-tests.log,
#   fp4-sanitizer.log, fp4-kernels.log, fp4-ncu.txt, fp4-decode.log, fp4-decode.json (seven; the tool returns eight).
#
#   scripts/gpu/fp4.sh --pack   (on a development machine) builds build-fp4-cuda/ and puts the stripped binaries
#                               plus the shared libraries they need beyond glibc and cuBLASLt (the `tachyon` CLI
#                               links Debian's cpp-httplib for the server: it and its TLS / zlib / brotli / libstdc++
#                               dependencies go to lib/) into build-fp4-carry/ (git-ignored, ~30 MB).
#   On the device:  run(command="bash scripts/gpu/fp4.sh", carry=["build-fp4-carry"])
# Environment: FP4_BIN (default build-fp4-carry), STAGES (default "tests sanitizer kernels ncu decode"; they run in
# the order tests, kernels, decode, ncu, sanitizer), CONTEXT (1024), STEPS (64), REPEATS (3), per-stage timeouts in
# seconds TEST_TIMEOUT (110), KERNEL_TIMEOUT (90), DECODE_TIMEOUT (35, each of up to three runs), NCU_TIMEOUT (50),
# SANITIZER_TIMEOUT (25, each of two runs), all cut to what is left of DEADLINE (330 s) so that the summary prints.
set -uo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--pack" ]; then
  set -e
  cmake -S . -B build-fp4-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DTACHYON_CUDA=ON >/dev/null
  nice cmake --build build-fp4-cuda --target tachyon_gpu_tests tachyon
  rm -rf build-fp4-carry && mkdir -p build-fp4-carry/lib
  cp build-fp4-cuda/tachyon_gpu_tests build-fp4-cuda/tachyon build-fp4-carry/
  strip build-fp4-carry/tachyon_gpu_tests build-fp4-carry/tachyon
  # Everything ldd resolves except glibc itself and cuBLASLt (the hosts' CUDA 13 toolkit provides it).
  for lib in $(ldd build-fp4-carry/tachyon build-fp4-carry/tachyon_gpu_tests | awk '/=> \//{print $3}' | sort -u); do
    case "$(basename "$lib")" in
      libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*|libcublasLt.so.*|libcublas.so.*) ;;
      *) cp -L "$lib" build-fp4-carry/lib/ ;;
    esac
  done
  git rev-parse --short HEAD > build-fp4-carry/COMMIT
  git status --porcelain -- kernels src tests/gpu tools CMakeLists.txt | grep -q . && echo "+local changes" >> build-fp4-carry/COMMIT
  ls build-fp4-carry build-fp4-carry/lib
  du -sh build-fp4-carry
  exit 0
fi

OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
BIN="${FP4_BIN:-build-fp4-carry}"
STAGES="${STAGES:-tests sanitizer kernels ncu decode}"
export LD_LIBRARY_PATH="$PWD/$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The device tool returns at most 8 files from $OUT: seven come back (summary, tests, sanitizer, kernels, ncu,
# decode log, decode json); intermediate files stay in $WORK.
WORK="$(mktemp -d)"

run_all() {
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(cat "$BIN/COMMIT" 2>/dev/null | tr '\n' ' ' || echo unknown)"
  device="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
  echo "device: $device"
  for b in tachyon tachyon_gpu_tests; do
    if [ ! -x "$BIN/$b" ]; then echo "no $BIN/$b: pack with scripts/gpu/fp4.sh --pack and carry $BIN"; return 2; fi
  done
  ldd "$BIN/tachyon" "$BIN/tachyon_gpu_tests" > "$WORK/ldd.txt" 2>&1
  if grep -q "not found" "$WORK/ldd.txt"; then echo "missing shared libraries:"; grep "not found" "$WORK/ldd.txt"; fi

  # Every stage's timeout is cut to what is left of DEADLINE seconds (default 330: the device call is <= 6 min) so
  # that the summary always prints; order: tests, kernel sweep, decode, ncu, sanitizer.
  START_S=$(date +%s)
  budget() { local left=$(( ${DEADLINE:-330} - ($(date +%s) - START_S) - 5 )); [ "$left" -lt "$1" ] && echo "$(( left > 1 ? left : 1 ))" || echo "$1"; }
  tests_line="skipped"
  if [[ " $STAGES " == *" tests "* ]]; then
    echo "== FP4 GPU tests"
    start=$(date +%s)
    timeout "$(budget "${TEST_TIMEOUT:-110}")" "$BIN/tachyon_gpu_tests" --gtest_filter='GpuFp4Moe.*:GpuFp4Tiles.*' \
      > "$OUT/fp4-tests.log" 2>&1
    rc=$?
    grep -E "^\[  (FAILED|PASSED) |Failure|outside the bound" "$OUT/fp4-tests.log" | head -20
    tests_line="rc=$rc in $(( $(date +%s) - start ))s: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+ test' "$OUT/fp4-tests.log" | tr '\n' ' ')"
  fi

  if [[ " $STAGES " == *" kernels "* ]]; then
    echo "== FP4 kernel bench (Qwen3-30B-A3B experts)"
    timeout "$(budget "${KERNEL_TIMEOUT:-90}")" "$BIN/tachyon" eval --kernel-bench qwen3 --sweep > "$OUT/fp4-kernels.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && tail -5 "$OUT/fp4-kernels.log"
    echo "kernel bench rc=$rc" >> "$OUT/fp4-kernels.log"
  fi

  declare -A tok_s
  if [[ " $STAGES " == *" decode "* ]]; then
    best="$(sed -nE 's/^best tuning tokens=1 nvfp4: (.*)$/\1/p' "$OUT/fp4-kernels.log" 2>/dev/null | head -1)"
    runs="bf16 nvfp4"
    [ -n "$best" ] && runs="$runs nvfp4-best"
    for run in $runs; do
      [ "$(budget 35)" -lt 10 ] && { echo "decode $run skipped: time budget spent"; continue; }
      experts="${run%-best}"
      tuning=""
      [ "$run" = "nvfp4-best" ] && tuning="$best"
      echo "== decode, Qwen3-30B-A3B shape, random weights, $experts experts${tuning:+ (TACHYON_FP4_MOE=$tuning)}"
      TACHYON_FP4_MOE="$tuning" timeout "$(budget "${DECODE_TIMEOUT:-35}")" "$BIN/tachyon" bench --random-weights qwen3-30b-a3b \
        --experts "$experts" --context "${CONTEXT:-1024}" --steps "${STEPS:-64}" --repeats "${REPEATS:-3}" \
        --prefill none --json-file "$WORK/decode-$run.json" > "$WORK/decode-$run.log" 2>&1
      rc=$?
      [ $rc -ne 0 ] && tail -5 "$WORK/decode-$run.log"
      echo "bench rc=$rc" >> "$WORK/decode-$run.log"
      grep -E "bytes per decode token|decode, batch 1|rc=" "$WORK/decode-$run.log"
      tok_s[$run]=$(sed -nE 's/.*decode, batch 1.* = ([0-9.]+) tok\/s.*/\1/p' "$WORK/decode-$run.log" | head -1)
      { echo "== $run ${tuning:+TACHYON_FP4_MOE=$tuning}"; cat "$WORK/decode-$run.log"; } >> "$OUT/fp4-decode.log"
    done
    {
      echo "{"
      sep=""
      for run in $runs; do
        if [ -s "$WORK/decode-$run.json" ]; then
          printf '%s"%s": ' "$sep" "$run"
          cat "$WORK/decode-$run.json"
          sep=","
        fi
      done
      echo "}"
    } > "$OUT/fp4-decode.json"
  fi

  ncu_line="skipped"
  if [[ " $STAGES " == *" ncu "* ]]; then
    if command -v ncu >/dev/null && [ "$(budget 50)" -ge 20 ]; then
      echo "== ncu: one launch of each FP4 kernel (v1, v2; 1 and 16 tokens; nvfp4)"
      TACHYON_FP4_BENCH_PROFILE=1 timeout "$(budget "${NCU_TIMEOUT:-50}")" ncu --target-processes all -k 'regex:fp4_(gate_up|down)' \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
        --section LaunchStats --section SchedulerStats --section ComputeWorkloadAnalysis \
        "$BIN/tachyon" eval --kernel-bench qwen3 > "$OUT/fp4-ncu.txt" 2>&1
      ncu_line="rc=$? ($(grep -c 'fp4_.*kernel' "$OUT/fp4-ncu.txt") kernel sections in fp4-ncu.txt)"
    else
      ncu_line="no ncu on this host"
    fi
    echo "ncu: $ncu_line"
  fi

  sanitizer_line="skipped"
  if [[ " $STAGES " == *" sanitizer "* ]] && command -v compute-sanitizer >/dev/null && [ "$(budget 60)" -ge 20 ]; then
    echo "== compute-sanitizer on the exact-decoding test (memcheck; racecheck of the down kernels' shared-memory combine)"
    timeout "$(budget "${SANITIZER_TIMEOUT:-25}")" compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/tachyon_gpu_tests" \
      --gtest_filter='GpuFp4Moe.EveryCodeAndScaleDecodesExactly:GpuFp4Tiles.*' \
      > "$WORK/memcheck.log" 2>&1
    memcheck_rc=$?
    timeout "$(budget "${SANITIZER_TIMEOUT:-25}")" compute-sanitizer --tool racecheck --error-exitcode 9 "$BIN/tachyon_gpu_tests" \
      --gtest_filter='GpuFp4Moe.EveryCodeAndScaleDecodesExactly' > "$WORK/racecheck.log" 2>&1
    racecheck_rc=$?
    { echo "== memcheck rc=$memcheck_rc"; cat "$WORK/memcheck.log"; echo "== racecheck rc=$racecheck_rc";
      cat "$WORK/racecheck.log"; } > "$OUT/fp4-sanitizer.log"
    sanitizer_line="memcheck rc=$memcheck_rc ($(grep -m1 'ERROR SUMMARY' "$WORK/memcheck.log")), racecheck rc=$racecheck_rc ($(grep -m1 -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$WORK/racecheck.log"))"
    echo "$sanitizer_line"
  fi

  echo
  echo "== FP4 summary ($device)"
  echo "tests: $tests_line"
  echo "sanitizer: $sanitizer_line"
  echo "ncu: $ncu_line"
  if [ -f "$OUT/fp4-kernels.log" ]; then
    grep -E "^\| stream_read" "$OUT/fp4-kernels.log"
    echo "| kernel | shape | tokens | variant | MB read | us | GB/s | % of stream read |"
    grep -E "^\| (fp4 experts|bf16 experts) .*\| (1|16) \|" "$OUT/fp4-kernels.log"
    for n in 1 16; do
      for k in fp4_expert_gate_up fp4_expert_down_combine; do
        echo "fastest 3 $k, $n tokens, nvfp4 (of $(grep -cE "^\| $k .*\| $n \| nvfp4 " "$OUT/fp4-kernels.log")):"
        grep -E "^\| $k .*\| $n \| nvfp4 " "$OUT/fp4-kernels.log" | sort -t'|' -k7,7g | head -3 |
          awk -F'|' '{printf "  %s: %s us, %s\n", $5, $7, $9}'
        grep -E "^\| $k .*\| $n \| nvfp4 v1 " "$OUT/fp4-kernels.log" | awk -F'|' '{printf "  v1 %s: %s us, %s\n", $5, $7, $9}' | head -1
      done
    done
    grep -E "^best tuning|rc=" "$OUT/fp4-kernels.log"
  fi
  if [ -s "$OUT/fp4-ncu.txt" ]; then
    echo "ncu (per kernel: duration, DRAM throughput, achieved occupancy, registers, issue slots busy):"
    awk 'match($0, /fp4_(gate_up|down)[a-z_0-9]*kernel<[^>]*>/) && !/^==/ {
           rest = substr($0, RSTART + RLENGTH); sub(/^\([^)]*\) /, "", rest);
           print "  " substr($0, RSTART, RLENGTH) " " substr(rest, 1, 40) }
         /^ +(Duration|DRAM Throughput|Achieved Occupancy|Registers Per Thread|Issue Slots Busy|Eligible Warps Per Scheduler|Warp Cycles Per Issued Instruction) / {
           printf "    %s\n", $0 }' "$OUT/fp4-ncu.txt" | sed 's/  \+/ /g' | head -80
  fi
  for run in nvfp4 nvfp4-best; do
    [ -n "${tok_s[$run]:-}" ] && [ -n "${tok_s[bf16]:-}" ] &&
      awk -v a="${tok_s[$run]}" -v b="${tok_s[bf16]}" -v e="$run" \
        'BEGIN { printf "decode Qwen3-30B-A3B shape: %s experts %.1f tok/s vs bf16 %.1f tok/s = %.2fx\n", e, a, b, a / b }'
  done
  for run in bf16 nvfp4 nvfp4-best; do
    [ -f "$WORK/decode-$run.log" ] &&
      echo "$run: $(grep -E 'decode, batch 1' "$WORK/decode-$run.log" | sed 's/^ *//')"
  done
  return 0
}

run_all 2>&1 | tee "$OUT/fp4-summary.txt"
rc=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$rc"
