#!/usr/bin/env bash
# A/B decode timings of one tachyon build under several values of an environment variable, in one call (same card),
# from the repo root: each model runs every value in turn, twice (v1 v2 .. v1 v2 ..), so drift of the card shows up
# as the spread between a value's two runs. Results: $OUT/env-<model>-<value>-<i>.{json,log} and one summary table.
#   scripts/gpu/env_ab.sh BUILD_DIR VARIABLE "VALUE..." [MODEL...]
# e.g. scripts/gpu/env_ab.sh build-fin TACHYON_L2_PREFETCH "off bulk lines" qwen3-bf16 qwen3-nvfp4
# MODEL: as scripts/gpu/decode_ab.sh (qwen3-bf16 qwen3-nvfp4 gpt-oss-mxfp4 smollm2). BUILD_DIR: a pack.sh folder.
set -uo pipefail
cd "$(dirname "$0")/../.."
build="${1:?usage: env_ab.sh BUILD_DIR VARIABLE \"VALUE...\" [MODEL...]}"
variable="${2:?usage: env_ab.sh BUILD_DIR VARIABLE \"VALUE...\" [MODEL...]}"
values="${3:?usage: env_ab.sh BUILD_DIR VARIABLE \"VALUE...\" [MODEL...]}"
shift 3
models="${*:-qwen3-bf16 qwen3-nvfp4 gpt-oss-mxfp4 smollm2}"
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
gguf="${TACHYON_MODELS_DIR:-models}/SmolLM2-135M-Instruct.Q4_1.gguf"
summary="$OUT/env-ab.txt"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ) build: $(tr '\n' ' ' < "$build/COMMIT") $variable in: $values" | tee -a "$summary"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$summary"
for model in $models; do
  case "$model" in
    qwen3-bf16) args=(--random-weights qwen3-30b-a3b --experts bf16) ;;
    qwen3-nvfp4) args=(--random-weights qwen3-30b-a3b --experts nvfp4) ;;
    gpt-oss-mxfp4) args=(--random-weights gpt-oss-20b --experts mxfp4) ;;
    smollm2) [ -f "$gguf" ] || { echo "$model: no $gguf, skipped" | tee -a "$summary"; continue; }
             args=(-m "$gguf") ;;
    *) echo "unknown model $model" | tee -a "$summary"; continue ;;
  esac
  for i in 1 2; do
    for value in $values; do
      log="$OUT/env-$model-$value-$i"
      env "$variable=$value" LD_LIBRARY_PATH="$PWD/$build/lib" timeout 120 "$build/tachyon" bench "${args[@]}" \
        --context 1024 --steps 64 --repeats 3 --prefill none --json-file "$log.json" > "$log.log" 2>&1
      rc=$?
      line=$(grep -E "decode, batch 1" "$log.log" | head -1)
      echo "$model $variable=$value run $i rc=$rc: $line" | tee -a "$summary"
    done
  done
done
