#!/usr/bin/env bash
# DFlash speculative decoding on a GPU host (issues 5 and 6), from the repo root:
#   1. the GPU tests of the speculative path (drafter vs CPU, target features, the on-device round: greedy
#      identity, stops, sampling, SmolLM2 with the committed drafter), then every GPU test;
#   2. compute-sanitizer memcheck on the speculative tests;
#   3. `tachyon bench --draft` on SmolLM2-135M-Instruct with drafters/smollm2-135m-instruct-dflash over the fixed
#      prompt set (prompts/*.jsonl): b = 16, b = 8 and the adaptive policy -> $OUT/spec-bench-*.json;
#   4. `tachyon serve --device cuda --draft`: a few requests, greedy text equal to the server without a drafter.
#   scripts/gpu/spec.sh GGUF     binaries from $BIN (default build-lead-carry, made by scripts/gpu/pack.sh)
# STEPS="tests memcheck bench serve" selects stages.
set -uo pipefail
cd "$(dirname "$0")/../.."
GGUF="${1:?usage: scripts/gpu/spec.sh GGUF}"
FINAL_OUT="${OUT:-./gpu-results}"
# Everything goes to a scratch folder, packed into $FINAL_OUT/spec-results.tar.gz at the end (the device tool
# returns at most 8 files); spec.log is also copied beside it.
OUT="$(mktemp -d)"
BIN="${BIN:-build-lead-carry}"
STEPS="${STEPS:-tests memcheck bench serve}"
DRAFTER="${DRAFTER:-drafters/smollm2-135m-instruct-dflash}"
mkdir -p "$FINAL_OUT"
export LD_LIBRARY_PATH="$PWD/$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TACHYON_SOURCE_DIR="$PWD" TACHYON_MODELS_DIR="$(cd "$(dirname "$GGUF")" && pwd)"
log="$OUT/spec.log"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
has() { [[ " $STEPS " == *" $1 "* ]]; }
say "date: $(date -u +%Y-%m-%dT%H:%MZ) commit: $(tr '\n' ' ' < "$BIN/COMMIT" 2>/dev/null)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
spec_tests='GpuSpec*.*:*GpuSpecGreedy*:GpuDrafter*.*:*GpuDrafter*:*Features*'

if has tests; then
  say "== speculative GPU tests"
  timeout 150 "$BIN/tachyon_gpu_tests" --gtest_filter="$spec_tests" > "$OUT/spec-tests.log" 2>&1
  say "spec tests rc=$?: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|SKIPPED \]' "$OUT/spec-tests.log" | tr '\n' ' ')"
  grep -E "^\[  FAILED  \]|Failure|Expected|Which is|GPU DFlash" "$OUT/spec-tests.log" | head -40 | tee -a "$log"
  say "== all GPU tests"
  start=$(date +%s)
  timeout 240 "$BIN/tachyon_gpu_tests" > "$OUT/gpu-tests.log" 2>&1
  say "gpu tests rc=$? in $(( $(date +%s) - start )) s: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]' "$OUT/gpu-tests.log" | tr '\n' ' ')"
  grep -E "^\[  FAILED  \]" "$OUT/gpu-tests.log" | head -20 | tee -a "$log"
fi

if has memcheck; then
  say "== compute-sanitizer memcheck on the speculative tests"
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/tachyon_gpu_tests" \
    --gtest_filter="$spec_tests" > "$OUT/spec-memcheck.log" 2>&1
  say "memcheck rc=$?: $(grep -E 'ERROR SUMMARY|^\[  PASSED  \]|^\[  FAILED  \]' "$OUT/spec-memcheck.log" | tr '\n' ' ')"
fi

if has bench; then
  for variant in "b16:--block-size 16" "b8:--block-size 8" "adaptive:--block-size 16 --adaptive-block-size"; do
    name="${variant%%:*}"
    say "== tachyon bench --draft ($name)"
    # shellcheck disable=SC2086
    timeout 150 "$BIN/tachyon" bench -m "$GGUF" --draft "$DRAFTER" ${variant#*:} --max-tokens 128 --context 512 \
      --label "$(tr '\n' ' ' < "$BIN/COMMIT" 2>/dev/null)" --json-file "$OUT/spec-bench-$name.json" >> "$log" 2>&1
    say "bench --draft $name rc=$?"
  done
fi

if has serve; then
  say "== tachyon serve --device cuda --draft (greedy text equal to the server without a drafter)"
  port=18431
  for mode in plain draft; do
    extra=()
    [ "$mode" = draft ] && extra=(--draft "$DRAFTER")
    "$BIN/tachyon" serve -m "$GGUF" --device cuda --port "$port" "${extra[@]}" > "$OUT/serve-$mode.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 1; done
    model=$(curl -s "http://127.0.0.1:$port/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
    for i in 0 1 2; do
      prompt=$(sed -n "$((i + 1))p" prompts/chat.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["prompt"])')
      body=$(python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[2], "messages": [{"role": "user", "content": sys.argv[1]}], "max_tokens": 96, "temperature": 0}))' "$prompt" "$model")
      curl -s "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' -d "$body" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps(r["choices"][0]["message"]["content"]))' \
        > "$OUT/serve-$mode-$i.txt" 2>&1
    done
    curl -s "http://127.0.0.1:$port/metrics" | grep -E "^tachyon_speculative|^tachyon_requests_total" > "$OUT/serve-$mode-metrics.txt"
    kill "$pid"; wait "$pid" 2>/dev/null
  done
  same=0
  for i in 0 1 2; do
    grep -q '^"' "$OUT/serve-draft-$i.txt" && cmp -s "$OUT/serve-plain-$i.txt" "$OUT/serve-draft-$i.txt" && same=$((same + 1))
  done
  say "serve: $same/3 greedy completions identical with and without the drafter"
  head -c 300 "$OUT/serve-draft-0.txt" | tee -a "$log"; echo | tee -a "$log"
  cat "$OUT/serve-draft-metrics.txt" | tee -a "$log"
fi
say "== done"
tar -czf "$FINAL_OUT/spec-results.tar.gz" -C "$OUT" .
cp "$log" "$FINAL_OUT/spec.log"
rm -rf "$OUT"
