#!/usr/bin/env bash
# The serving benchmark on a GPU host (BENCHMARKS.md, "Server"): `tachyon serve --device cuda` with 1, 8 and 32
# concurrent streaming chat clients (tests/server_e2e/bench_serving.py, standard library only: no pip, no
# internet), for
#   (a) SmolLM2-135M-Instruct: the GGUF when models/SmolLM2-135M-Instruct.Q4_1.gguf is there, else random weights
#       of its shape (same speed: speed does not depend on the values);
#   (b) the Qwen3-30B-A3B shape with random weights (61 GB of bf16 on the GPU);
#   (c) smollm2-draft (only when named in MODELS): the GGUF with the committed DFlash drafter (serve --draft,
#       block DRAFT_BLOCK=8), requests one at a time through the GPU speculative round.
# Random-weight servers take the tokenizer from tests/fixtures/tokenizers/smollm2 (ids < 49152, so the
# Qwen3 shape samples among its first 49152 logits). Prints one Markdown table and writes it to $OUT.
#
#   scripts/gpu/serve_bench.sh            (repo root of the carried checkout; binaries from scripts/gpu/pack.sh)
# Environment: CARRY=build-serve-carry (tachyon + lib/, given to the server only through LD_LIBRARY_PATH), or
# TACHYON_BIN=path/to/tachyon; SECONDS_PER=15 (per
# client count: 3 x 15 s per model); CLIENTS="1 8 32"; MAX_TOKENS=64; MODELS="smollm2 qwen3"; OUT=.cache/serve-bench;
# BATCH=32 (--max-batch; 1 on the GPU: requests one at a time through the resident decode loop); KV_POSITIONS=16384;
# SERVE_ARGS: more `tachyon serve` arguments (e.g. --no-persistent); TEMPERATURE=0 (> 0: sampled requests);
# CPU=1 runs the same on the CPU (checks the script, no GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
CARRY="${CARRY:-build-serve-carry}"
BIN="${TACHYON_BIN:-$CARRY/tachyon}"
# The carried shared libraries go to the server only (python3 must keep the host's libssl / libz).
LIB_DIR="$(dirname "$BIN")/lib"
lib_args=()
[ -d "$LIB_DIR" ] && lib_args=(--lib-dir "$LIB_DIR")
OUT="${OUT:-.cache/serve-bench}"
SECONDS_PER="${SECONDS_PER:-15}"
CLIENTS="${CLIENTS:-1 8 32}"
MAX_TOKENS="${MAX_TOKENS:-64}"
MODELS="${MODELS:-smollm2 qwen3}"
BATCH="${BATCH:-32}"
KV_POSITIONS="${KV_POSITIONS:-16384}"
GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
TOKENIZER=tests/fixtures/tokenizers/smollm2
mkdir -p "$OUT"

[ -x "$BIN" ] || { echo "no tachyon binary at $BIN (run scripts/gpu/pack.sh on the development machine)"; exit 1; }
missing=$(LD_LIBRARY_PATH="$LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$BIN" | grep "not found")
[ -z "$missing" ] || { echo "missing shared libraries:"; echo "$missing"; exit 1; }
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  commit: $(cat "$CARRY/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null)"
  if [ "${CPU:-0}" = "1" ]; then echo "device: cpu ($(nproc) cores)"; else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1; fi
  echo "clients: $CLIENTS, ${SECONDS_PER} s each, max_tokens $MAX_TOKENS, temperature ${TEMPERATURE:-0}, ignore_eos, --max-batch $BATCH"
} | tee "$OUT/serve_bench.md"

device=(--device cuda --kv-positions "$KV_POSITIONS")
[ "${CPU:-0}" = "1" ] && device=(--device cpu)
header=""
status=0
for m in $MODELS; do
  case "$m" in
    smollm2)
      if [ -f "$GGUF" ]; then label="SmolLM2-135M Q4_1"; args=(--model "$GGUF" -- "${device[@]}")
      elif [ "${CPU:-0}" = "1" ]; then echo "no $GGUF"; continue
      else label="SmolLM2-135M shape, random"; args=(--model "$TOKENIZER" -- "${device[@]}" --random-weights smollm2-135m); fi ;;
    smollm2-draft)  # the GPU DFlash round with the committed drafter: one request at a time (--max-batch ignored)
      [ -f "$GGUF" ] || { echo "no $GGUF: smollm2-draft needs the real model"; continue; }
      label="SmolLM2-135M Q4_1 + DFlash drafter (b = ${DRAFT_BLOCK:-8})"
      args=(--model "$GGUF" -- "${device[@]}" --draft drafters/smollm2-135m-instruct-dflash --block-size "${DRAFT_BLOCK:-8}") ;;
    qwen3)
      [ "${CPU:-0}" = "1" ] && continue
      label="Qwen3-30B-A3B shape, random"; args=(--model "$TOKENIZER" -- "${device[@]}" --random-weights qwen3-30b-a3b) ;;
    *) echo "unknown model $m"; continue ;;
  esac
  echo "== $label" >&2
  # A budget for the whole run of this model: start (loading), warm-up, the client counts, shutdown.
  budget=$(( 120 + SECONDS_PER * $(echo $CLIENTS | wc -w) * 2 ))
  timeout "$budget" python3 tests/server_e2e/bench_serving.py --bin "$BIN" "${lib_args[@]}" --label "$label" $header \
      --clients $CLIENTS --seconds "$SECONDS_PER" --max-tokens "$MAX_TOKENS" --temperature "${TEMPERATURE:-0}" \
      "${args[0]}" "${args[1]}" -- \
      --max-batch "$BATCH" --max-queue $(( 2 * BATCH )) "${args[@]:3}" ${SERVE_ARGS:-} \
      2> "$OUT/serve-$m.log" | tee -a "$OUT/serve_bench.md"
  rc=${PIPESTATUS[0]}
  if [ "$rc" != 0 ]; then
    status=1
    echo "| $label | failed (exit $rc; $OUT/serve-$m.log) |" | tee -a "$OUT/serve_bench.md"
    tail -15 "$OUT/serve-$m.log"
  fi
  header="--no-header"
done
exit $status
