#!/usr/bin/env bash
# Runs on the GPU machine over a packed .carry/ (see device-pack.sh): recreates the absolute
# paths the build recorded, runs the GPU test suite through ctest, and writes logs to $OUT.
set -uo pipefail
ROOT=$PWD
[ -f .carry/build.tar.xz ] && [ ! -d .carry/build ] && tar -C .carry -xJf .carry/build.tar.xz
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# ctest files and compiled-in test paths point at /work/main/build and /work/shared/testdata.
mkdir -p /work/shared
[ "$ROOT" = /work/main ] || ln -sfn "$ROOT" /work/main
ln -sfn "$ROOT/.carry/testdata" /work/shared/testdata
rm -rf "$ROOT/build" && ln -sfn "$ROOT/.carry/build" "$ROOT/build"
export LD_LIBRARY_PATH="$ROOT/.carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/gpu.txt"
cd /work/main/build
ctest -L "${LABEL:-gpu}" ${CTEST_ARGS:-} --output-on-failure --timeout 300 2>&1 | tee "$OUT/ctest-gpu.log"
