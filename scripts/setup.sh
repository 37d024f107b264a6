#!/usr/bin/env bash
# Everything a fresh Debian 12 machine needs for tachyon: system packages, the test model, a build.
#   scripts/setup.sh            install packages (if missing), fetch the test model, build into build/
#   SKIP_MODEL=1 scripts/setup.sh   ... without fetching the model
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential cmake ninja-build pkg-config python3 python3-pip unzip
          nlohmann-json3-dev libpcre2-dev libcli11-dev libfmt-dev libgtest-dev libbenchmark-dev
          clang libclang-rt-14-dev
          libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev  # the HTTP server (its Cflags include TLS, zlib, brotli)
          python3-venv curl)  # the server's end-to-end tests (tests/server_e2e/run.sh)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if [ "${SKIP_MODEL:-0}" != "1" ]; then
  scripts/fetch_model.sh
fi

echo "== building (build/)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --parallel
