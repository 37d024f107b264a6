#!/usr/bin/env bash
# Builds every libFuzzer target (fuzz/*.cpp) with clang, ASan and UBSan into build-fuzz/, then runs
# each one for SECONDS (default 60) on a scratch copy of its seed corpus fuzz/corpus/<name>/
# (fuzz_gguf -> fuzz/corpus/gguf/). Exits non-zero if any target crashes, leaks, times out or
# hits a sanitizer; the offending input is kept in build-fuzz/artifacts/<target>/.
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DTACHYON_FUZZ=ON -DTACHYON_TESTS=OFF -DTACHYON_CUDA=OFF >/dev/null

targets=()
for source in "$root"/fuzz/*.cpp; do
  targets+=("$(basename "$source" .cpp)")
done
ninja -C "$build" "${targets[@]}"

summary=()
status=0
for target in "${targets[@]}"; do
  corpus="$build/corpus/$target"         # the fuzzer adds inputs here; the committed seeds stay as they are
  artifacts="$build/artifacts/$target"
  log="$build/logs/$target.log"
  rm -rf "$corpus"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  seeds="$root/fuzz/corpus/${target#fuzz_}"
  if [[ -d "$seeds" ]]; then
    cp -r "$seeds/." "$corpus/"
  fi
  echo "== $target: ${seconds}s on $(find "$corpus" -type f | wc -l) seed files"
  # -rss_limit_mb also bounds single allocations: a loader that trusts a size field fails here.
  if "$build/$target" "$corpus" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    result="ok"
  else
    result="FAILED (see $log and $artifacts/)"
    status=1
    tail -n 40 "$log"
  fi
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  corpus_size="$(find "$corpus" -type f | wc -l)"
  summary+=("$target: $result, $execs executions, corpus $corpus_size files")
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit "$status"
