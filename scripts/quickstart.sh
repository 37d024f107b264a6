#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, fetch the test model, and generate an answer
# with SmolLM2-135M-Instruct on the CPU. Extra arguments go to `tachyon generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
prompt="${PROMPT:-What is the capital of France? Answer in one sentence.}"
build/tachyon generate -m models/SmolLM2-135M-Instruct.Q4_1.gguf --chat -p "$prompt" -n 128 --stats "$@"
