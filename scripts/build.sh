#!/usr/bin/env bash
# Configures and builds worker-orcd into build/ (Release, CUDA arch 90a unless CUDA_ARCH is set).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
args=(-DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}")
[ -n "${CUDA_ARCH:-}" ] && args+=(-DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH")
[ -n "${SANITIZE:-}" ] && args+=(-DWORKER_ORCD_SANITIZE=ON)
cmake -S . -B "$BUILD_DIR" "${args[@]}" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
