#!/usr/bin/env bash
# DFlash block size against cost on the Qwen3-30B-A3B shape (issue 5 item 6; method in docs/dflash.md, "Block size
# against cost"), in at most DEADLINE = 230 s: `tachyon bench --random-weights qwen3-30b-a3b --verify-sweep` with
# NVFP4 experts, then (if time is left) bf16 experts. For each block size b it MEASURES one target verify pass of b
# tokens at KV length CONTEXT, one pass of b tokens through a random-weights 8-layer dense drafter PROXY of the
# z-lab Qwen3-Coder-30B-A3B-DFlash size, and the distinct experts per MoE layer; then PROJECTS tokens/s from the
# published tau at b = 16 (6.4 and 8 on code) and prints the block size the policy picks vs fixed b = 16. The
# projection is a model, never a measurement.
#
#   here:            bash scripts/gpu/fp4.sh --pack        (build-fp4-cuda -> build-fp4-carry)
#   on the device:   run(command="bash scripts/gpu/block_size.sh", carry=["build-fp4-carry"])
#                    (or carry .cache/fp4carry.tar.xz, made by
#                     `tar -C . -cf - build-fp4-carry | xz -T2 -6 > .cache/fp4carry.tar.xz`: when present it is
#                     unpacked here, replacing any build-fp4-carry)
# Results in $OUT (or ./gpu-results): block-size-summary.txt (this output), block-size-{nvfp4,bf16}.{log,json}.
# Environment: FP4_BIN (build-fp4-carry), CONTEXT (1024), BLOCKS (2,3,4,6,8,12,16), TAU ("6.4,8"), REPEATS (5),
# EXPERTS ("nvfp4 bf16"), DEADLINE (230 s; each bench gets at most RUN_TIMEOUT = 110 s of what is left).
set -uo pipefail
cd "$(dirname "$0")/../.."

OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
BIN="${FP4_BIN:-build-fp4-carry}"
# A carried tarball always wins over a build-fp4-carry left on a warm machine by an earlier call.
if [ "$BIN" = build-fp4-carry ] && [ -f .cache/fp4carry.tar.xz ]; then
  rm -rf build-fp4-carry && xz -dc .cache/fp4carry.tar.xz | tar -xf - || echo "unpacking .cache/fp4carry.tar.xz failed"
fi
export LD_LIBRARY_PATH="$PWD/$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CONTEXT="${CONTEXT:-1024}"
BLOCKS="${BLOCKS:-2,3,4,6,8,12,16}"
TAU="${TAU:-6.4,8}"
REPEATS="${REPEATS:-5}"
EXPERTS="${EXPERTS:-nvfp4 bf16}"
START_S=$(date +%s)
budget() { local left=$(( ${DEADLINE:-230} - ($(date +%s) - START_S) - 5 )); [ "$left" -lt "$1" ] && echo "$(( left > 1 ? left : 1 ))" || echo "$1"; }

run_all() {
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(cat "$BIN/COMMIT" 2>/dev/null | tr '\n' ' ' || echo unknown)"
  echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
  if [ ! -x "$BIN/tachyon" ]; then echo "no $BIN/tachyon: pack with scripts/gpu/fp4.sh --pack and carry $BIN"; return 2; fi
  if ! "$BIN/tachyon" bench --help 2>/dev/null | grep -q -- --verify-sweep; then
    echo "$BIN/tachyon has no bench --verify-sweep: repack (scripts/gpu/fp4.sh --pack) from commit 12d8f2b or later"; return 2
  fi
  if ldd "$BIN/tachyon" | grep -q "not found"; then echo "missing shared libraries:"; ldd "$BIN/tachyon" | grep "not found"; fi
  for experts in $EXPERTS; do
    local t; t=$(budget "${RUN_TIMEOUT:-110}")
    if [ "$t" -lt 40 ]; then echo "== $experts experts skipped: time budget spent"; continue; fi
    echo "== Qwen3-30B-A3B shape, random weights, $experts experts, context $CONTEXT, verify sweep $BLOCKS (timeout ${t}s)"
    timeout "$t" "$BIN/tachyon" bench --random-weights qwen3-30b-a3b --experts "$experts" --prefill none \
      --context "$CONTEXT" --repeats "$REPEATS" --verify-sweep "$BLOCKS" --drafter-config qwen3-coder-30b-a3b-dflash \
      --tau "$TAU" --label "block size sweep, $(cat "$BIN/COMMIT" 2>/dev/null | tr '\n' ' ')" \
      --json-file "$OUT/block-size-$experts.json" > "$OUT/block-size-$experts.log" 2>&1
    local rc=$?
    echo "bench rc=$rc" >> "$OUT/block-size-$experts.log"
    [ $rc -ne 0 ] && { echo "bench rc=$rc"; tail -5 "$OUT/block-size-$experts.log"; }
    grep -E "^  decode, batch 1|MoE:|verify sweep|^    |PROJECTION" "$OUT/block-size-$experts.log"
  done
  echo "elapsed: $(( $(date +%s) - START_S )) s"
}

run_all 2>&1 | tee "$OUT/block-size-summary.txt"
