#!/usr/bin/env bash
# Kernel timeline of batch-1 decode steps as they run inside the CUDA graph (programmatic launches overlapping),
# on a GPU host, from the repo root: nsys traces `tachyon bench` (8 graph steps), and timeline_summary.py prints
# per kernel (name, grid) the time it adds to a step ("exposed"). ncu serializes kernels and flushes caches, so it
# cannot show this.
#   scripts/gpu/timeline.sh BUILD_DIR NAME BENCH_ARGS...
# e.g. scripts/gpu/timeline.sh build-fin qwen3 --random-weights qwen3-30b-a3b --experts bf16
# Writes $OUT/NAME_cuda_gpu_trace.csv and $OUT/NAME-timeline.txt.
# The hosts' nsys is the one bundled with Nsight Compute; turning its raw .qdstrm into a report needs
# QdstrmImporter, which needs libdw.so.1 (absent on the hosts): carry Debian's libdw1 and libelf1 shared objects
# in .cache/dwlib (`apt-get download libdw1 libelf1`, `dpkg-deb -x`).
set -uo pipefail
cd "$(dirname "$0")/../.."
build="${1:?usage: timeline.sh BUILD_DIR NAME BENCH_ARGS...}"
name="${2:?usage: timeline.sh BUILD_DIR NAME BENCH_ARGS...}"
shift 2
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
host=$(ls -d /opt/nvidia/nsight-compute/*/host 2>/dev/null | tail -1)
nsys="$host/target-linux-x64/nsys"
[ -x "$nsys" ] || { echo "no nsys under /opt/nvidia/nsight-compute"; exit 1; }
LD_LIBRARY_PATH="$PWD/$build/lib" timeout 300 "$nsys" profile --cuda-graph-trace=node -t cuda -o "$OUT/$name" \
  "$build/tachyon" bench "$@" --context 1024 --steps 8 --repeats 1 --prefill none > "$OUT/$name-nsys.log" 2>&1
if [ ! -f "$OUT/$name.nsys-rep" ]; then
  root="$PWD"
  (cd "$OUT" && LD_LIBRARY_PATH="$root/.cache/dwlib" timeout 300 \
     "$host/linux-desktop-glibc_2_11_3-x64/QdstrmImporter" -i "$name.qdstrm" >> "$name-nsys.log" 2>&1)
fi
timeout 300 "$nsys" stats -r cuda_gpu_trace -f csv -o "$OUT/$name" "$OUT/$name.nsys-rep" >> "$OUT/$name-nsys.log" 2>&1
# `--steps 8 --repeats 1` ends with 8 graph steps, 8 stream-launched steps and one 16-token pass: skip 9 passes.
python3 scripts/gpu/timeline_summary.py "$OUT/${name}_cuda_gpu_trace.csv" 4 9 | tee "$OUT/$name-timeline.txt"
rm -f "$OUT/$name.nsys-rep" "$OUT/$name.sqlite" "$OUT/$name.qdstrm"
