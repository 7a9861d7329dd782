#!/usr/bin/env bash
# Installs the Debian packages worker-orcd builds and tests with. Idempotent: packages already
# present are skipped, so a second run costs one dpkg query and no network.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  clang libclang-rt-14-dev          # libFuzzer harness for the GGUF reader
  nlohmann-json3-dev libcpp-httplib-dev libssl-dev libtomlplusplus-dev libcli11-dev
  libspdlog-dev libfmt-dev libpcre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl python3
  prometheus                        # promtool checks the alert rules
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to apt-get install" >&2; exit 1; }
    SUDO=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
  echo "install-deps: the CUDA toolkit (nvcc) was not found at ${CUDA_HOME:-/usr/local/cuda}." >&2
  echo "install-deps: install CUDA 13 from NVIDIA's repository or set CUDA_HOME." >&2
  exit 1
fi
