#!/usr/bin/env bash
# Trains tachyon's DFlash drafter for SmolLM2-135M-Instruct on one GPU in a fixed wall-time budget, then exports it
# in z-lab's layout (what `tachyon generate --draft DIR` reads). Run from anywhere; it works in the repo root.
#
#   scripts/gpu/train_dflash.sh [GGUF]   train against GGUF (default models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   scripts/gpu/train_dflash.sh --pack   (development machine) xz the GGUF and split it into two carryable parts,
#                                        .cache/gguf-split/smollm2.gguf.xz.part-{0,1} + SHA256, and fetch the gguf wheel
#                                        into .cache/wheels (the GGUF, 94 MiB, is over the device tool's 64 MiB carry)
#   scripts/gpu/train_dflash.sh --stage  (GPU host, first call) keep the carried part(s) in /tmp/tachyon-gguf-parts
#
# When GGUF is missing, it is rebuilt from the parts found in .cache/gguf-split/, /tmp/tachyon-gguf-parts/ and
# .cache/gguf-staged/ (a part of each name is used once), and
# checked against .cache/gguf-split/SHA256. When `import gguf` fails (transformers needs it to read GGUF), the
# wheel in .cache/wheels is installed offline (pip --no-index --no-deps; its needs numpy and pyyaml come with
# transformers).
#
# Steps (tools/train_dflash.py train): target-regenerated data (greedy, batched HF generate on the GPU) for at most
# DATA_SECONDS, from a mix of prompt sources (MIX, default magpie=0.5,code=0.3,math=0.15,chat=0.05: requests the
# target writes itself from the chat template's user-turn prefix, function prefixes of the standard library and of
# the installed torch / transformers / numpy at several cut points, synthetic math, template chat; never the held-out
# prompts/ set); target features cached once; training until TOTAL_SECONDS minus RESERVE_SECONDS; export; held-out
# tau per prompt category (prompts/{chat,code,math}.jsonl) at b = BLOCK.
#
# Output ($OUT, else runs/dflash-smollm2; at most 8 files, each < 16 MiB, for the device tool):
#   drafter/{config.json, model.safetensors.index.json, model-0000i-of-0000n.safetensors}   bf16, z-lab names
#   train.log    versions, the command, data summary (magpie samples), loss / per-slot accuracy lines, eval lines
#   eval.json    final held-out tau per category and histogram, data and drafter summary, versions, command
#   data.jsonl.gz  every training sequence (token ids; SAVE_DATA=0: not written), DATA_IN of a later call
# Knobs (environment): TOTAL_SECONDS=490 DATA_SECONDS=120 RESERVE_SECONDS=40 LAYERS=3 BLOCK=16 MASK_TOKEN_ID=16
# TARGET_LAYERS="1 8 14 20 27" BATCH=16 ANCHORS=128 LR=6e-4 GENERATE_BATCH=768 MAX_NEW_TOKENS=256
# TRAIN_PROMPTS=30000 EVAL_TOKENS=128 EVAL_EVERY_SECONDS=90 SEED=0 MIX=(trainer default) SORT_CHUNK=4
# EXTRA_ARGS=... (e.g. "--magpie-max-tokens 48 --code-cuts 4") PYTHON=python3
# TOTAL_SECONDS is the whole call (GGUF rebuild and model load included); the trainer is killed at TOTAL_SECONDS + 20,
# so the device call's timeout_s must be at least TOTAL_SECONDS + 30 (TOTAL_SECONDS=540 with timeout_s=600, the most).
# The bigger run (docs/dflash.md): LAYERS=5 TOTAL_SECONDS=540 DATA_SECONDS=150 (a fresh drafter: a 3-layer one
# cannot initialize a 5-layer one).
# Continued training (a further call while the machine is still warm: the GGUF, $WORK/drafter and $WORK/data.jsonl
# are still there, nothing to carry):
#   INIT_DRAFTER=/tmp/dflash-work/drafter DATA_IN=/tmp/dflash-work/data.jsonl SEED=1 LR=3e-4 bash scripts/gpu/train_dflash.sh
# (same LAYERS as the drafter it continues; GENERATE_MORE=0 trains on DATA_IN only, for the whole budget.)
set -uo pipefail
start=$(date +%s)
cd "$(dirname "$0")/../.."
GGUF_DEFAULT=models/SmolLM2-135M-Instruct.Q4_1.gguf
SPLIT=.cache/gguf-split
STAGE_DIR=/tmp/tachyon-gguf-parts
PYTHON="${PYTHON:-python3}"

if [ "${1:-}" = "--pack" ]; then
  set -e
  mkdir -p "$SPLIT" .cache/wheels
  sha256sum "$GGUF_DEFAULT" | awk '{print $1}' > "$SPLIT/SHA256"
  [ -s "$SPLIT/smollm2.gguf.xz" ] || xz -6 -T0 -c "$GGUF_DEFAULT" > "$SPLIT/smollm2.gguf.xz"
  rm -f "$SPLIT"/smollm2.gguf.xz.part-*
  size=$(stat -c %s "$SPLIT/smollm2.gguf.xz")
  split -b $(( (size + 1) / 2 )) -d -a 1 "$SPLIT/smollm2.gguf.xz" "$SPLIT/smollm2.gguf.xz.part-"
  ls -l "$SPLIT"
  [ -n "$(ls .cache/wheels/gguf-*.whl 2>/dev/null)" ] || "$PYTHON" -m pip download gguf==0.19.0 --no-deps -d .cache/wheels
  exit 0
fi

if [ "${1:-}" = "--stage" ]; then  # two copies: /tmp and an ignored folder of the checkout both outlive the call
  mkdir -p "$STAGE_DIR" .cache/gguf-staged
  cp -v "$SPLIT"/smollm2.gguf.xz.part-* "$STAGE_DIR"/ || { echo "no carried parts in $SPLIT"; exit 1; }
  cp "$SPLIT"/smollm2.gguf.xz.part-* .cache/gguf-staged/
  ls -l "$STAGE_DIR" .cache/gguf-staged
  exit 0
fi

GGUF="${1:-$GGUF_DEFAULT}"
OUT="${OUT:-runs/dflash-smollm2}"
WORK="${WORK:-/tmp/dflash-work}"
mkdir -p "$OUT" "$WORK"
rm -f "$WORK/eval.json"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
LOG="$OUT/train.log"
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }

say "== $(date -u +%Y-%m-%dT%H:%M:%SZ) scripts/gpu/train_dflash.sh $* (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
"$PYTHON" -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tee -a "$LOG"

if ! "$PYTHON" -c 'import gguf' 2>/dev/null; then
  wheel=$(ls .cache/wheels/gguf-*.whl 2>/dev/null | head -1)
  [ -n "$wheel" ] || { say "gguf is not installed and no wheel is in .cache/wheels (carry it: --pack makes it)"; exit 2; }
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$wheel" 2>&1 | tee -a "$LOG"
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  "$PYTHON" -c 'import gguf' 2>/dev/null || export PYTHONPATH="$PWD/$wheel:$PYTHONPATH"  # a pure-Python wheel imports as a zip
fi
"$PYTHON" -c 'import gguf, importlib.metadata as m; print("gguf", m.version("gguf"))' 2>&1 | tee -a "$LOG" || exit 2

if [ ! -s "$GGUF" ]; then
  parts=$( (ls "$SPLIT"/smollm2.gguf.xz.part-* "$STAGE_DIR"/smollm2.gguf.xz.part-* .cache/gguf-staged/smollm2.gguf.xz.part-* 2>/dev/null) |
           awk -F/ '!seen[$NF]++' | awk -F/ '{print $NF "\t" $0}' | sort | cut -f2)
  say "rebuilding $GGUF from: $(echo $parts)"
  [ "$(echo "$parts" | grep -c part-)" -ge 2 ] || { say "need both GGUF parts (stage one first with --stage)"; exit 3; }
  mkdir -p "$(dirname "$GGUF")"
  unxz() { if command -v xz >/dev/null; then xz -d; else "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)'; fi; }
  # shellcheck disable=SC2086
  cat $parts | unxz > "$GGUF" || { say "decompressing the parts failed"; rm -f "$GGUF"; exit 3; }
  if [ -s "$SPLIT/SHA256" ] && [ "$(sha256sum "$GGUF" | awk '{print $1}')" != "$(cat "$SPLIT/SHA256")" ]; then
    say "checksum mismatch for the rebuilt $GGUF"; rm -f "$GGUF"; exit 3
  fi
  say "rebuilt $GGUF ($(stat -c %s "$GGUF") bytes, sha256 ok) at $(( $(date +%s) - start )) s"
fi

TOTAL_SECONDS="${TOTAL_SECONDS:-490}"
deadline=$(( start + TOTAL_SECONDS - 10 ))  # 10 s for copying the results
rm -rf "$OUT/drafter"
continue_args=()  # continued training on a machine still warm from a previous run (WORK keeps drafter and data)
# The data comes back in $OUT (gzip, < 15 MiB): a later call on a fresh machine can carry it as DATA_IN.
[ "${SAVE_DATA:-1}" = 1 ] && continue_args+=(--save-data "$OUT/data.jsonl.gz")
[ -n "${INIT_DRAFTER:-}" ] && continue_args+=(--init-drafter "$INIT_DRAFTER")
if [ -n "${DATA_IN:-}" ]; then
  # shellcheck disable=SC2206
  continue_args+=(--data $DATA_IN)
  [ "${GENERATE_MORE:-1}" = 1 ] && continue_args+=(--generate-more)
fi
# shellcheck disable=SC2086
timeout $(( TOTAL_SECONDS + 20 - ($(date +%s) - start) )) "$PYTHON" tools/train_dflash.py train \
  --target "$GGUF" --out "$WORK" --export "$OUT/drafter" \
  --mask-token-id "${MASK_TOKEN_ID:-16}" --drafter-layers "${LAYERS:-3}" --target-layer-ids ${TARGET_LAYERS:-1 8 14 20 27} \
  --block-size "${BLOCK:-16}" --anchors "${ANCHORS:-128}" --batch-size "${BATCH:-16}" --lr "${LR:-6e-4}" \
  --steps 1000000 --deadline "$deadline" --reserve "${RESERVE_SECONDS:-40}" \
  ${MIX:+--mix "$MIX"} --sort-chunk "${SORT_CHUNK:-4}" \
  --train-prompts "${TRAIN_PROMPTS:-30000}" --data-seconds "${DATA_SECONDS:-120}" --max-new-tokens "${MAX_NEW_TOKENS:-256}" \
  --generate-batch "${GENERATE_BATCH:-768}" --eval-tokens "${EVAL_TOKENS:-128}" \
  --eval-every-seconds "${EVAL_EVERY_SECONDS:-90}" --log-every 25 --max-shard-mb 12 --seed "${SEED:-0}" \
  ${continue_args[@]+"${continue_args[@]}"} ${EXTRA_ARGS:-} 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
cp "$WORK/eval.json" "$OUT/eval.json" 2>/dev/null
say "== train_dflash.py exit $rc after $(( $(date +%s) - start )) s; $OUT:"
ls -l "$OUT" "$OUT/drafter" 2>&1 | tee -a "$LOG"
exit "$rc"
