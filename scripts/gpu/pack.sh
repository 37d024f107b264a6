#!/usr/bin/env bash
# Packs what serving on a GPU host needs into one folder to carry there (run on a development machine):
#   scripts/gpu/pack.sh [CARRY_DIR]      (default build-serve-carry/; BUILD=build-server-cuda, the CUDA build to use)
# builds `tachyon` and tachyon_gpu_tests with CUDA, copies them stripped, and copies into CARRY_DIR/lib the
# shared libraries `tachyon` links that a GPU host may lack: libcpp-httplib.so.0.11 and what it needs
# (libssl3, libcrypto3, zlib, brotli, the shared libstdc++ that cpp-httplib itself uses). Left out: the C
# library, libm, libgcc_s, the dynamic loader, and the CUDA libraries (libcuda, libcublasLt: the host has its
# own driver and CUDA install, as for scripts/gpu-check.sh).
# On the GPU host: LD_LIBRARY_PATH=CARRY_DIR/lib CARRY_DIR/tachyon ... (scripts/gpu/serve_bench.sh does it).
set -euo pipefail
cd "$(dirname "$0")/../.."
carry="${1:-build-serve-carry}"
build="${BUILD:-build-server-cuda}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTACHYON_CUDA=ON >/dev/null
nice cmake --build "$build" --parallel 2 --target tachyon tachyon_gpu_tests
rm -rf "$carry" && mkdir -p "$carry/lib"
cp "$build/tachyon" "$build/tachyon_gpu_tests" "$carry/"
strip "$carry/tachyon" "$carry/tachyon_gpu_tests"
ldd "$build/tachyon" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
  case "$name" in
    libc.so.*|libm.so.*|libgcc_s.so.*|ld-linux*|libpthread.so.*|libdl.so.*|librt.so.*) continue ;;
    libcuda.so.*|libcublas*|libcudart*|libnvJitLink*|libnvrtc*) continue ;;  # the host's CUDA install
  esac
  cp -L "$path" "$carry/lib/$name"
done
git rev-parse --short HEAD > "$carry/COMMIT"
git status --porcelain -- src kernels tools tests/gpu CMakeLists.txt | grep -q . && echo "+local changes" >> "$carry/COMMIT"
ls "$carry/lib"
du -sh "$carry"
