#!/usr/bin/env bash
# Installs what is missing, builds, and starts the worker on its default model
# (Qwen2.5-0.5B-Instruct Q4_K_M from $WORKER_ORCD_MODEL or ~/.cache/worker-orcd/models/).
# Extra arguments go to `worker-orcd serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
exec build/worker-orcd serve "$@"
