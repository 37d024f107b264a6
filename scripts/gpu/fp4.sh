#!/usr/bin/env bash
# FP4 experts (issue 4) on a GPU host, from the repo root, in about 8 minutes at most:
#   1. the FP4 GPU tests: kernels/fp4_moe against the CPU reference (both formats, 1..16 tokens, uneven routing,
#      every k_split), the tile helpers, and the GPU model with FP4 experts against the CPU model on the same
#      dequantized weights (tiny Qwen3-MoE fixtures, prefill / 16-token pass / graph decode; random padded shape),
#      a checkpoint that stores NVFP4 experts (ModelOpt, compressed-tensors) loaded without requantizing, and the
#      bf16 MoE model tests again (the runner's MoE path changed); compute-sanitizer on the small FP4 tests;
#   2. the FP4 kernel bench at Qwen3-30B-A3B expert shapes (hidden 2048, expert width 768, 128 experts, top-8):
#      1..16 tokens, NVFP4 and MXFP4, bytes read (union of touched experts, codes + scales), us, GB/s and % of the
#      same run's stream read, with the BF16 expert kernels beside, and each FP4 kernel alone for every k_split
#      (`tachyon eval --kernel-bench qwen3 --sweep`);
#   3. batch-1 decode of the Qwen3-30B-A3B shape with random weights and bf16 / nvfp4 / mxfp4 experts
#      (`tachyon bench --random-weights qwen3-30b-a3b --experts F`, context 1024): tok/s, bytes/token, roofline
#      efficiency (FP4 bytes counted), and the FP4-over-BF16 speedups from these runs on this card;
#   then a compact summary. Logs go to $OUT (or ./gpu-results): fp4-summary.txt (this output), fp4-tests.log,
#   fp4-sanitizer.log, fp4-kernels.log, fp4-decode.log, fp4-decode.json (six files: the device tool returns eight).
#
#   scripts/gpu/fp4.sh --pack   (on a development machine) builds build-fp4-cuda/ and puts the stripped binaries
#                               plus the shared libraries they need beyond glibc and cuBLASLt (the `tachyon` CLI
#                               links Debian's cpp-httplib for the server: it and its TLS / zlib / brotli / libstdc++
#                               dependencies go to lib/) into build-fp4-carry/ (git-ignored, ~30 MB).
#   On the device:  run(command="bash scripts/gpu/fp4.sh", carry=["build-fp4-carry"])
# Environment: FP4_BIN (default build-fp4-carry), STAGES (default "tests sanitizer kernels decode"), CONTEXT
# (1024), STEPS (64), REPEATS (3), per-stage timeouts TEST_TIMEOUT / SANITIZER_TIMEOUT (each of two runs) /
# KERNEL_TIMEOUT / DECODE_TIMEOUT (each of three runs), in seconds: 150 + 80 + 80 + 165 at most (under 8 minutes).
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
STAGES="${STAGES:-tests sanitizer kernels decode}"
export LD_LIBRARY_PATH="$PWD/$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The device tool returns at most 8 files from $OUT: six come back (summary, tests, sanitizer, kernels, decode log,
# decode json); intermediate files stay in $WORK.
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

  tests_line="skipped"
  if [[ " $STAGES " == *" tests "* ]]; then
    echo "== FP4 GPU tests"
    start=$(date +%s)
    timeout "${TEST_TIMEOUT:-150}" "$BIN/tachyon_gpu_tests" \
      --gtest_filter='GpuFp4Moe.*:GpuFp4Tiles.*:*GpuFp4TinyModel.*:GpuRandomWeightsFp4.*:GpuFp4ExpertsConfig.*:GpuFp4Checkpoint.*:Fixtures/GpuTinyModel.*/3:Fixtures/GpuTinyModel.*/4:GpuRandomWeights.*' \
      > "$OUT/fp4-tests.log" 2>&1
    rc=$?
    grep -E "^\[  (FAILED|PASSED) |Failure|outside the bound|^\[ .* \] (prefill|16-token|random|stored|tiles)" \
      "$OUT/fp4-tests.log" | head -40
    tests_line="rc=$rc in $(( $(date +%s) - start ))s: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]+ test' "$OUT/fp4-tests.log" | tr '\n' ' ')"
  fi

  sanitizer_line="skipped"
  if [[ " $STAGES " == *" sanitizer "* ]] && command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer on the small FP4 tests (memcheck; racecheck of the down kernel's shared-memory combine)"
    timeout "${SANITIZER_TIMEOUT:-40}" compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/tachyon_gpu_tests" \
      --gtest_filter='GpuFp4Moe.EveryCodeAndScaleDecodesExactly:GpuFp4Tiles.*:GpuRandomWeightsFp4.*' \
      > "$WORK/memcheck.log" 2>&1
    memcheck_rc=$?
    timeout "${SANITIZER_TIMEOUT:-40}" compute-sanitizer --tool racecheck --error-exitcode 9 "$BIN/tachyon_gpu_tests" \
      --gtest_filter='GpuFp4Moe.EveryCodeAndScaleDecodesExactly' > "$WORK/racecheck.log" 2>&1
    racecheck_rc=$?
    { echo "== memcheck rc=$memcheck_rc"; cat "$WORK/memcheck.log"; echo "== racecheck rc=$racecheck_rc";
      cat "$WORK/racecheck.log"; } > "$OUT/fp4-sanitizer.log"
    sanitizer_line="memcheck rc=$memcheck_rc ($(grep -m1 'ERROR SUMMARY' "$WORK/memcheck.log")), racecheck rc=$racecheck_rc ($(grep -m1 -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$WORK/racecheck.log"))"
    echo "$sanitizer_line"
  fi

  if [[ " $STAGES " == *" kernels "* ]]; then
    echo "== FP4 kernel bench (Qwen3-30B-A3B experts)"
    timeout "${KERNEL_TIMEOUT:-80}" "$BIN/tachyon" eval --kernel-bench qwen3 --sweep > "$OUT/fp4-kernels.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && tail -5 "$OUT/fp4-kernels.log"
    echo "kernel bench rc=$rc" >> "$OUT/fp4-kernels.log"
  fi

  declare -A tok_s
  if [[ " $STAGES " == *" decode "* ]]; then
    for experts in bf16 nvfp4 mxfp4; do
      echo "== decode, Qwen3-30B-A3B shape, random weights, $experts experts"
      timeout "${DECODE_TIMEOUT:-55}" "$BIN/tachyon" bench --random-weights qwen3-30b-a3b --experts "$experts" \
        --context "${CONTEXT:-1024}" --steps "${STEPS:-64}" --repeats "${REPEATS:-3}" --prefill none \
        --json-file "$WORK/decode-$experts.json" > "$WORK/decode-$experts.log" 2>&1
      rc=$?
      [ $rc -ne 0 ] && tail -5 "$WORK/decode-$experts.log"
      echo "bench rc=$rc" >> "$WORK/decode-$experts.log"
      grep -E "weights|bytes per decode token|roofline floor|decode, batch 1|rc=" "$WORK/decode-$experts.log"
      tok_s[$experts]=$(sed -nE 's/.*decode, batch 1.* = ([0-9.]+) tok\/s.*/\1/p' "$WORK/decode-$experts.log" | head -1)
      { echo "== --experts $experts"; cat "$WORK/decode-$experts.log"; } >> "$OUT/fp4-decode.log"
    done
    {
      echo "{"
      sep=""
      for experts in bf16 nvfp4 mxfp4; do
        if [ -s "$WORK/decode-$experts.json" ]; then
          printf '%s"%s": ' "$sep" "$experts"
          cat "$WORK/decode-$experts.json"
          sep=","
        fi
      done
      echo "}"
    } > "$OUT/fp4-decode.json"
  fi

  echo
  echo "== FP4 summary ($device)"
  echo "tests: $tests_line"
  echo "sanitizer: $sanitizer_line"
  if [ -f "$OUT/fp4-kernels.log" ]; then
    grep -E "^\| stream_read" "$OUT/fp4-kernels.log"
    echo "| kernel | shape | tokens | variant | MB read | us | GB/s | % of stream read |"
    grep -E "^\| (fp4 experts|bf16 experts|fp4 MoE layer|bf16 MoE layer|fp4_expert_down_combine) .*\| (1|16) \|" \
      "$OUT/fp4-kernels.log"
    grep -E "rc=" "$OUT/fp4-kernels.log"
  fi
  if [ -n "${tok_s[bf16]:-}" ]; then
    for experts in nvfp4 mxfp4; do
      [ -n "${tok_s[$experts]:-}" ] &&
        awk -v a="${tok_s[$experts]}" -v b="${tok_s[bf16]}" -v e="$experts" \
          'BEGIN { printf "decode Qwen3-30B-A3B shape: %s experts %.1f tok/s vs bf16 %.1f tok/s = %.2fx\n", e, a, b, a / b }'
    done
  fi
  for experts in bf16 nvfp4 mxfp4; do
    [ -f "$WORK/decode-$experts.log" ] &&
      echo "$experts: $(grep -E 'decode, batch 1' "$WORK/decode-$experts.log" | sed 's/^ *//')"
  done
  return 0
}

run_all 2>&1 | tee "$OUT/fp4-summary.txt"
rc=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$rc"
