#!/usr/bin/env bash
# Issue 3's SmolLM2 measurements and checks on a GPU host, from the repo root, in about 8 minutes:
#   1. `tachyon bench -m GGUF` (decode at batch 1, 1k context; prefill 1k/8k) -> $OUT/smollm2-bench.json
#   2. Hugging Face transformers generate() on the same card, same GGUF, same prompt length and steps
#      (scripts/gpu/peers_smollm2.py: eager, static cache + torch.compile) -> $OUT/smollm2-peers.json
#   3. every GPU test (tachyon_gpu_tests; TACHYON_MODELS_DIR = the folder of GGUF), then
#      compute-sanitizer memcheck on the model tests (tiny fixtures and SmolLM2 greedy)
#   scripts/gpu/smollm2.sh GGUF       binaries from $BIN (default build-fp4-carry; see scripts/gpu/fp4.sh --pack)
# The gguf Python package (transformers reads GGUF through it) comes from .cache/wheels when missing.
set -uo pipefail
cd "$(dirname "$0")/../.."
GGUF="${1:?usage: scripts/gpu/smollm2.sh GGUF}"
OUT="${OUT:-./gpu-results}"
BIN="${BIN:-build-fp4-carry}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log="$OUT/smollm2.log"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
say "date: $(date -u +%Y-%m-%dT%H:%MZ) commit: $(tr '\n' ' ' < "$BIN/COMMIT" 2>/dev/null)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"

if ! python3 -c 'import gguf' 2>/dev/null; then
  wheel=$(ls .cache/wheels/gguf-*.whl 2>/dev/null | head -1)
  [ -n "$wheel" ] && export PYTHONPATH="$PWD/$wheel${PYTHONPATH:+:$PYTHONPATH}"
fi

say "== tachyon bench (SmolLM2, real weights)"
timeout 120 "$BIN/tachyon" bench -m "$GGUF" --context 1024 --steps 64 --repeats 5 --prefill 1024,8192 \
  --json-file "$OUT/smollm2-bench.json" >> "$log" 2>&1
say "bench rc=$?"
grep -E "bytes per decode|roofline floor|decode, batch 1|prefill" "$log" | tail -6

say "== transformers generate() on the same card"
timeout 240 python3 scripts/gpu/peers_smollm2.py --gguf "$GGUF" --context 1024 --steps 64 --repeats 3 \
  --tachyon-json "$OUT/smollm2-bench.json" --out "$OUT/smollm2-peers.json" 2>&1 |
  grep -vE "it/s\]|s/it\]" >> "$log"
say "peers rc=${PIPESTATUS[0]}"
grep -E "^(eager|static_compile[a-z_]*|tachyon /|torch )" "$log"

say "== tachyon_gpu_tests (all)"
start=$(date +%s)
TACHYON_SOURCE_DIR="$PWD" TACHYON_MODELS_DIR="$(dirname "$GGUF")" timeout 200 "$BIN/tachyon_gpu_tests" > "$OUT/smollm2-gpu-tests.log" 2>&1
say "gpu tests rc=$? in $(( $(date +%s) - start )) s: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]' "$OUT/smollm2-gpu-tests.log" | tr '\n' ' ')"
say "== compute-sanitizer memcheck on the model tests"
TACHYON_SOURCE_DIR="$PWD" TACHYON_MODELS_DIR="$(dirname "$GGUF")" timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/tachyon_gpu_tests" \
  --gtest_filter='Fixtures/GpuTinyModel.*:GpuSmolLM2*.*' > "$OUT/smollm2-memcheck.log" 2>&1
say "memcheck rc=$?: $(grep -E 'ERROR SUMMARY|^\[  PASSED  \]|^\[  FAILED  \]' "$OUT/smollm2-memcheck.log" | tr '\n' ' ')"
