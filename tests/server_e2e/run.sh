#!/usr/bin/env bash
# The server end-to-end tests: a venv with the pinned openai client and pytest (.cache/server-e2e-venv,
# rebuilt when requirements.txt changes), then pytest against a real `tachyon serve` on loopback.
#   tests/server_e2e/run.sh [pytest args]     TACHYON_BIN (default build/tachyon), TACHYON_MODEL,
#                                             TACHYON_LOAD_CLIENTS, TACHYON_LOAD_SECONDS
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.cache/server-e2e-venv
if ! cmp -s tests/server_e2e/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  echo "== server e2e: installing the pinned openai client and pytest into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/server_e2e/requirements.txt
  cp tests/server_e2e/requirements.txt "$venv/requirements.txt"
fi
exec "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider tests/server_e2e "$@"
