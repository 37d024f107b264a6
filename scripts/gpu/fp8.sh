#!/usr/bin/env bash
# FP8 dense weights (src/gpu/fp8_weights.h) on one GPU host, from the repo root, results under $OUT:
#   scripts/gpu/fp8.sh check NEW_DIR          the FP8 and gemv GPU tests, memcheck on the FP8 kernels, the gemv
#                                             kernel bench (bf16 vs FP8 rows; NEW_DIR/tachyon_kernel_bench), and
#                                             decode with and without --fp8 on four shapes
#   scripts/gpu/fp8.sh ab BASE_DIR NEW_DIR    decode A/B of two builds (bf16 paths) plus the --fp8 rows, twice,
#                                             the gemv k_split sweep, then the whole GPU suite of NEW_DIR
#   scripts/gpu/fp8.sh profile NEW_DIR        the FP8 model / checkpoint tests and memcheck, the kernel timelines of
#                                             Qwen3 NVFP4 decode with and without --fp8 (timeline.sh), and the DFlash
#                                             verify sweep on Qwen3 NVFP4 + FP8 (projected tokens/s)
#   scripts/gpu/fp8.sh real GGUF NEW_DIR      SmolLM2 real weights: its GPU tests (bf16, FP8, speculative), decode
#                                             with and without --fp8, and `bench --draft` at b = 16 and 8 (DFlash
#                                             against plain decode of the same binary)
#   scripts/gpu/fp8.sh final BASE_DIR NEW_DIR the whole GPU suite, memcheck on the FP8 tests, Qwen3 bf16 decode of
#                                             both builds, every shape with and without --fp8 (twice), the gemv bench
# *_DIR: folders with tachyon (+ tachyon_gpu_tests) and lib/ (scripts/gpu/pack.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
export TACHYON_SOURCE_DIR="$PWD"
mode="${1:?usage: fp8.sh check NEW_DIR | ab BASE_DIR NEW_DIR | final BASE_DIR NEW_DIR | profile NEW_DIR | real GGUF NEW_DIR}"
summary="$OUT/fp8-summary.txt"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ) $*" | tee "$summary"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$summary"

# decode BUILD TAG MODEL [extra args]: one `tachyon bench` decode run, its summary line appended.
decode() {
  local build="$1" tag="$2" model="$3"
  shift 3
  local args
  case "$model" in
    qwen3-bf16) args=(--random-weights qwen3-30b-a3b --experts bf16) ;;
    qwen3-nvfp4) args=(--random-weights qwen3-30b-a3b --experts nvfp4) ;;
    gpt-oss) args=(--random-weights gpt-oss-20b --experts mxfp4) ;;
    smollm2) args=(--random-weights smollm2-135m) ;;
  esac
  local log="$OUT/decode-$model-$tag.log"
  LD_LIBRARY_PATH="$PWD/$build/lib" timeout 150 "$build/tachyon" bench "${args[@]}" "$@" --context 1024 --steps 64 \
    --repeats 3 --prefill none --json-file "$OUT/decode-$model-$tag.json" > "$log" 2>&1
  echo "$model $tag rc=$?: $(grep -E "decode, batch 1" "$log" | head -1) | $(grep -E "bytes per decode token" "$log" | head -1 | cut -c1-60)" |
    tee -a "$summary"
}

fp8_groups() {
  case "$1" in smollm2) echo "attention,mlp,lm_head" ;; *) echo "attention,lm_head" ;; esac
}

if [ "$mode" = check ]; then
  new="${2:?NEW_DIR}"
  timeout 300 "$new/tachyon_gpu_tests" --gtest_filter='GpuGemvFp8*:GpuFp8TinyModel*:GpuGemv.*' > "$OUT/tests-fp8.log" 2>&1
  echo "fp8 + gemv tests rc=$?: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/tests-fp8.log" | tr '\n' ' ')" | tee -a "$summary"
  timeout 240 compute-sanitizer --tool memcheck "$new/tachyon_gpu_tests" \
    --gtest_filter='GpuGemvFp8.GatedSwiglu*:GpuGemvFp8.FusedResidual*:GpuGemvFp8.GpuQuantizer*:GpuFp8TinyModel.PassAndSteps*' \
    > "$OUT/memcheck-fp8.log" 2>&1
  echo "memcheck rc=$?: $(grep -E 'ERROR SUMMARY|PASSED|FAILED' "$OUT/memcheck-fp8.log" | tail -3 | tr '\n' ' ')" | tee -a "$summary"
  LD_LIBRARY_PATH="$PWD/$new/lib" timeout 200 "$new/tachyon_kernel_bench" gemv > "$OUT/kernel-gemv.md" 2>&1
  echo "kernel bench rc=$?" | tee -a "$summary"
  grep -E "gemv_(bf16|fp8) \|.*\| (1|16) \| tachyon" "$OUT/kernel-gemv.md" | tee -a "$summary"
  for model in smollm2 qwen3-nvfp4 gpt-oss qwen3-bf16; do
    decode "$new" new "$model"
    decode "$new" new-fp8 "$model" --fp8 "$(fp8_groups "$model")"
  done
elif [ "$mode" = ab ]; then
  base="${2:?BASE_DIR}" new="${3:?NEW_DIR}"
  for i in 1 2; do
    for model in smollm2 qwen3-nvfp4 gpt-oss qwen3-bf16; do
      decode "$base" "base-$i" "$model"
      decode "$new" "new-$i" "$model"
      decode "$new" "new-fp8-$i" "$model" --fp8 "$(fp8_groups "$model")"
    done
  done
  timeout 400 "$new/tachyon_gpu_tests" > "$OUT/tests-all.log" 2>&1
  echo "all GPU tests rc=$?: $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$OUT/tests-all.log" | tr '\n' ' ')" | tee -a "$summary"
  if [ -x "$new/tachyon_kernel_bench" ]; then  # every k_split of the bf16 and FP8 gemvs (launch heuristics)
    LD_LIBRARY_PATH="$PWD/$new/lib" timeout 150 "$new/tachyon_kernel_bench" gemv-sweep > "$OUT/kernel-gemv-sweep.md" 2>&1
    echo "kernel sweep rc=$?" | tee -a "$summary"
  fi
elif [ "$mode" = final ]; then
  base="${2:?BASE_DIR}" new="${3:?NEW_DIR}"
  timeout 300 "$new/tachyon_gpu_tests" > "$OUT/tests-all.log" 2>&1
  echo "all GPU tests rc=$?: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/tests-all.log" | tr '\n' ' ')" | tee -a "$summary"
  grep -E "FAILED|margin.*(fp8|FP8)|FP8" "$OUT/tests-all.log" | head -40 >> "$summary"
  timeout 150 compute-sanitizer --tool memcheck "$new/tachyon_gpu_tests" \
    --gtest_filter='GpuFp8Checkpoint*:GpuGemvFp8.FusedResidual*:GpuGemvFp8.GatedSwiglu*:GpuFp8TinyModel.GreedyGraph*/qwen3' \
    > "$OUT/memcheck-fp8.log" 2>&1
  echo "memcheck rc=$?: $(grep -E 'ERROR SUMMARY|PASSED|FAILED' "$OUT/memcheck-fp8.log" | tail -3 | tr '\n' ' ')" | tee -a "$summary"
  for i in 1 2; do
    decode "$base" "base-$i" qwen3-bf16
    decode "$new" "new-$i" qwen3-bf16
    for model in smollm2 qwen3-nvfp4 gpt-oss qwen3-bf16; do
      [ "$i" = 1 ] && [ "$model" != qwen3-bf16 ] && decode "$new" "new-$i" "$model"
      decode "$new" "new-fp8-$i" "$model" --fp8 "$(fp8_groups "$model")"
    done
  done
  LD_LIBRARY_PATH="$PWD/$new/lib" timeout 120 "$new/tachyon_kernel_bench" gemv > "$OUT/kernel-gemv.md" 2>&1
  echo "kernel bench rc=$?" | tee -a "$summary"
  grep -E "gemv_(bf16|fp8) \|.*\| (1|16) \| tachyon" "$OUT/kernel-gemv.md" | tee -a "$summary"
elif [ "$mode" = profile ]; then
  new="${2:?NEW_DIR}"
  timeout 120 "$new/tachyon_gpu_tests" --gtest_filter='GpuFp8*:GpuGemvFp8*' > "$OUT/tests-fp8.log" 2>&1
  echo "FP8 tests rc=$?: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/tests-fp8.log" | tr '\n' ' ')" | tee -a "$summary"
  grep -E "FP8 checkpoint|FP8 file|Failure" "$OUT/tests-fp8.log" | head -10 | tee -a "$summary"
  timeout 120 compute-sanitizer --tool memcheck "$new/tachyon_gpu_tests" --gtest_filter='GpuFp8Checkpoint*' \
    > "$OUT/memcheck-fp8.log" 2>&1
  echo "memcheck rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck-fp8.log" | tail -1)" | tee -a "$summary"
  OUT="$OUT" bash scripts/gpu/timeline.sh "$new" qwen3-nvfp4 --random-weights qwen3-30b-a3b --experts nvfp4 > /dev/null 2>&1
  OUT="$OUT" bash scripts/gpu/timeline.sh "$new" qwen3-nvfp4-fp8 --random-weights qwen3-30b-a3b --experts nvfp4 \
    --fp8 attention,lm_head > /dev/null 2>&1
  LD_LIBRARY_PATH="$PWD/$new/lib" timeout 200 "$new/tachyon" bench --random-weights qwen3-30b-a3b --experts nvfp4 \
    --fp8 attention,lm_head --context 1024 --repeats 3 --prefill none --verify-sweep 2,4,8,12,16 \
    --drafter-config qwen3-coder-30b-a3b-dflash > "$OUT/verify-sweep-fp8.log" 2>&1
  echo "verify sweep rc=$?" | tee -a "$summary"
  grep -A12 "verify sweep" "$OUT/verify-sweep-fp8.log" | tee -a "$summary"
elif [ "$mode" = real ]; then
  gguf="${2:?GGUF}" new="${3:?NEW_DIR}"
  export TACHYON_MODELS_DIR="$(cd "$(dirname "$gguf")" && pwd)"
  timeout 200 "$new/tachyon_gpu_tests" --gtest_filter='GpuSmolLM2*:GpuModelFeatures.SmolLM2*:GpuSpecSmolLM2*' \
    > "$OUT/tests-smollm2.log" 2>&1
  echo "SmolLM2 tests rc=$?: $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$OUT/tests-smollm2.log" | tr '\n' ' ')" | tee -a "$summary"
  grep -E "^\[ SmolLM2|Failure|GPU DFlash" "$OUT/tests-smollm2.log" | head -20 | tee -a "$summary"
  for fp8 in none attention,mlp attention,mlp,lm_head; do
    LD_LIBRARY_PATH="$PWD/$new/lib" timeout 120 "$new/tachyon" bench -m "$gguf" --fp8 "$fp8" --context 1024 --steps 64 \
      --repeats 3 --prefill none --json-file "$OUT/decode-smollm2-real-$fp8.json" > "$OUT/decode-smollm2-real-$fp8.log" 2>&1
    echo "smollm2 real --fp8 $fp8 rc=$?: $(grep -E "decode, batch 1" "$OUT/decode-smollm2-real-$fp8.log" | head -1)" |
      tee -a "$summary"
  done
  for b in 16 8; do
    LD_LIBRARY_PATH="$PWD/$new/lib" timeout 150 "$new/tachyon" bench -m "$gguf" --draft drafters/smollm2-135m-instruct-dflash \
      --block-size "$b" --max-tokens 128 --context 512 --json-file "$OUT/spec-bench-b$b.json" > "$OUT/spec-bench-b$b.log" 2>&1
    echo "bench --draft b=$b rc=$?" | tee -a "$summary"
    grep -iE "tau|speedup|tok/s|identical" "$OUT/spec-bench-b$b.log" | head -14 | tee -a "$summary"
  done
fi
