#!/usr/bin/env bash
# A/B decode timings of two tachyon builds on one GPU host, in the same call (so on the same card), from the repo
# root. Each model runs BASE, NEW, BASE, NEW (`tachyon bench`, batch-1 decode at a 1k context, CUDA graph), so drift
# of the card shows up as a BASE/BASE spread. Results: $OUT/ab-<model>-<build>-<i>.json and one summary table.
#   [CONTEXT=1024] scripts/gpu/decode_ab.sh BASE_DIR NEW_DIR [MODEL...]
# MODEL: qwen3-bf16 qwen3-nvfp4 qwen3-mxfp4 gpt-oss-mxfp4 smollm2 (needs $TACHYON_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf),
# smollm2-shape (random weights), qwen3-nvfp4-fp8 / gpt-oss-fp8 / qwen3-bf16-fp8 / smollm2-shape-fp8
# (`--fp8 attention,lm_head`).
# BASE_DIR / NEW_DIR: folders made by scripts/gpu/pack.sh (tachyon + lib/); they may be the same folder when
# NEW_ARGS / BASE_ARGS (extra `tachyon bench` arguments for the NEW / BASE runs only, e.g. BASE_ARGS=--no-persistent)
# make the difference. Dense models (smollm2) run the persistent decode kernel by default since session 11: pass
# BASE_ARGS=--no-persistent NEW_ARGS=--no-persistent to A/B kernel-per-op changes on them.
set -uo pipefail
cd "$(dirname "$0")/../.."
base="${1:?usage: decode_ab.sh BASE_DIR NEW_DIR [MODEL...]}"
new="${2:?usage: decode_ab.sh BASE_DIR NEW_DIR [MODEL...]}"
shift 2
models="${*:-qwen3-bf16 qwen3-nvfp4 gpt-oss-mxfp4 smollm2}"
OUT="${OUT:-./gpu-results}"
context="${CONTEXT:-1024}"
mkdir -p "$OUT"
gguf="${TACHYON_MODELS_DIR:-models}/SmolLM2-135M-Instruct.Q4_1.gguf"
summary="$OUT/decode-ab-ctx$context.txt"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ) base: $(tr '\n' ' ' < "$base/COMMIT") new: $(tr '\n' ' ' < "$new/COMMIT")" | tee "$summary"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$summary"
for model in $models; do
  case "$model" in
    qwen3-bf16) args=(--random-weights qwen3-30b-a3b --experts bf16) ;;
    qwen3-nvfp4) args=(--random-weights qwen3-30b-a3b --experts nvfp4) ;;
    qwen3-mxfp4) args=(--random-weights qwen3-30b-a3b --experts mxfp4) ;;
    gpt-oss-mxfp4) args=(--random-weights gpt-oss-20b --experts mxfp4) ;;
    qwen3-nvfp4-fp8) args=(--random-weights qwen3-30b-a3b --experts nvfp4 --fp8 attention,lm_head) ;;
    gpt-oss-fp8) args=(--random-weights gpt-oss-20b --experts mxfp4 --fp8 attention,lm_head) ;;
    qwen3-bf16-fp8) args=(--random-weights qwen3-30b-a3b --experts bf16 --fp8 attention,lm_head) ;;
    smollm2-shape-fp8) args=(--random-weights smollm2-135m --fp8 attention,lm_head) ;;
    smollm2-shape) args=(--random-weights smollm2-135m) ;;
    smollm2) [ -f "$gguf" ] || { echo "$model: no $gguf, skipped" | tee -a "$summary"; continue; }
             args=(-m "$gguf") ;;
    *) echo "unknown model $model" | tee -a "$summary"; continue ;;
  esac
  for i in 1 2; do
    for role in base new; do
      build="$base" extra=()
      [ "$role" = base ] && read -r -a extra <<< "${BASE_ARGS:-}"
      [ "$role" = new ] && build="$new" && read -r -a extra <<< "${NEW_ARGS:-}"
      name="$role-$(basename "$build")"
      tag="$model-$name-$i-ctx$context"
      LD_LIBRARY_PATH="$PWD/$build/lib" timeout 120 "$build/tachyon" bench "${args[@]}" "${extra[@]}" --context "$context" \
        --steps 64 --repeats 3 --prefill none --json-file "$OUT/ab-$tag.json" > "$OUT/ab-$tag.log" 2>&1
      rc=$?
      line=$(grep -E "decode, batch 1" "$OUT/ab-$tag.log" | head -1)
      echo "$model $name run $i rc=$rc: $line" | tee -a "$summary"
    done
  done
done
