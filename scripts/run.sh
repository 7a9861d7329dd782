#!/usr/bin/env bash
# Installs what is missing, builds, and starts the worker on its default model: $WORKER_ORCD_MODEL,
# or Qwen2.5-0.5B-Instruct Q4_K_M fetched from Hugging Face into ~/.cache/worker-orcd/models/ on the
# first start, checked against the SHA-256 Hugging Face sends, and checked offline after that.
# Extra arguments go to `worker-orcd serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
exec build/worker-orcd serve "$@"
